package mdclient_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mdclient/mdclient"
	"github.com/mdclient/mdclient/codec"
	"github.com/mdclient/mdclient/conn"
	"github.com/mdclient/mdclient/internal/fakebroker"
	"github.com/mdclient/mdclient/internal/faultproxy"
	"github.com/mdclient/mdclient/mdtest"
)

// Faults that need a proxy between the client and a broker (internal/faultproxy) or a
// broker that breaks the protocol (internal/fakebroker).

// TestStalledConnection: a path that stalls (sockets open, nothing forwarded) is detected
// by keep-alive within 1.5 intervals; the client reports the server down, fails over to
// the standby, and resends the at-least-once messages that were in flight there.
func TestStalledConnection(t *testing.T) {
	const ka = time.Second
	// The last read from the server comes after the publish that precedes the stall, and
	// the connection is dropped once nothing arrived for 1.5 intervals, checked every ka/8.
	const limit = 3*ka/2 + ka/8 + 500*time.Millisecond

	type setup struct {
		c               *mdclient.Client
		px              *faultproxy.Proxy
		proxied, second string
		sub1, sub2      *mdtest.Subscription
		before          time.Time // just before the last exchange through the proxy
		ctx             context.Context
	}
	start := func(t *testing.T, opts ...mdclient.Option) *setup {
		first, second := embedded(t), embedded(t)
		s := &setup{second: second.TCPAddr(), ctx: ctxTimeout(t, 30*time.Second)}
		s.sub1, s.sub2 = subscribe(t, first, "stall/#"), subscribe(t, second, "stall/#")
		s.px = newFaultProxy(t, hostPort(first.TCPAddr()))
		s.proxied = "tcp://" + s.px.Addr()
		// Weight 0 makes the second server a standby: the first choice is the proxy, and
		// the standby is chosen once the proxy has failed.
		opts = append(opts, mdclient.WithKeepAlive(ka))
		s.c = newClient(t, allowToken, []string{"100 " + s.proxied, "0 " + s.second}, opts...)
		awaitEvent(t, s.c, mdclient.NotifyServerUp, s.proxied, 10*time.Second)
		s.before = time.Now()
		st, err := s.c.Publish(s.ctx, mdclient.Message{Subject: "stall/before", Content: []byte("x")})
		wantStatus(t, st, err, mdclient.NotifyPublishOK, nil)
		return s
	}
	// checkDown checks when and why the stalled server was reported down.
	checkDown := func(t *testing.T, s *setup, down mdclient.Event, stalled, detected time.Time) {
		t.Helper()
		if d := detected.Sub(stalled); d > limit {
			t.Errorf("stall detected %v after it began, want within %v (1.5 keep-alive intervals and a margin)", d.Round(time.Millisecond), limit)
		}
		if d := detected.Sub(s.before); d < 3*ka/2 {
			t.Errorf("connection dropped %v after the last exchange, before 1.5 keep-alive intervals", d.Round(time.Millisecond))
		}
		if !errors.Is(down.Err, conn.ErrKeepAlive) {
			t.Errorf("NOTIFY_SERVER_DOWN error %v, want keep-alive", down.Err)
		}
		t.Logf("stall detected after %v", detected.Sub(stalled).Round(time.Millisecond))
	}

	t.Run("in flight", func(t *testing.T) {
		s := start(t)
		s.px.Stall()
		stalled := time.Now()
		const n = 20
		results := make(chan mdclient.PublishResult, n)
		for i := range n {
			s.c.PublishAsync(s.ctx, mdclient.PublishRequest{Result: results, Message: mdclient.Message{
				Subject: "stall/x", Content: []byte(fmt.Sprintf("message %d", i)), Closure: fmt.Sprint(i), QoS: mdclient.QoSGuaranteed}})
		}
		down, detected := awaitEvent(t, s.c, mdclient.NotifyServerDown, s.proxied, 10*time.Second)
		checkDown(t, s, down, stalled, detected)
		awaitEvent(t, s.c, mdclient.NotifyServerUp, s.second, 10*time.Second)

		for _, r := range collect(t, results, n, 15*time.Second) {
			if r.Status != mdclient.NotifyPublishOK || r.Err != nil || r.Server != s.second {
				t.Errorf("closure %s: %s %v from %q, want OK from %s", r.Closure, r.Status, r.Err, r.Server, s.second)
			}
		}
		noMore(t, results)
		// They were in flight on the stalled connection and were sent again.
		if st := s.c.Stats(); st.Resent != n {
			t.Errorf("%d messages resent after the stalled connection was dropped, want the %d in flight there (stats %+v)", st.Resent, n, st)
		}
		for range n {
			select {
			case m := <-s.sub2.Messages():
				if m.Topic != "stall/x" {
					t.Errorf("standby got %q", m.Topic)
				}
			case <-s.ctx.Done():
				t.Fatal("the standby's subscriber did not get every message")
			}
		}
		// Nothing went through the stalled path.
		if m := <-s.sub1.Messages(); m.Topic != "stall/before" {
			t.Errorf("first server got %q", m.Topic)
		}
		select {
		case m := <-s.sub1.Messages():
			t.Errorf("a message went through the stalled proxy: %q", m.Topic)
		default:
		}
	})

	// More is in flight than the socket buffers hold, so the client's writer is blocked
	// in a write to the stalled path: detection must not depend on the writer.
	t.Run("writer blocked", func(t *testing.T) {
		s := start(t, mdclient.WithDrainTimeout(time.Second))
		s.px.Stall()
		stalled := time.Now()
		const n, size = 256, 64 << 10 // 16 MB
		results := make(chan mdclient.PublishResult, n)
		content := make([]byte, size)
		for i := range n {
			s.c.PublishAsync(s.ctx, mdclient.PublishRequest{Result: results, Message: mdclient.Message{
				Subject: "stall/big", Content: content, Closure: fmt.Sprint(i), QoS: mdclient.QoSGuaranteed}})
		}
		down, detected, seen, ok := nextEvent(s.c, mdclient.NotifyServerDown, s.proxied, limit+time.Second)
		if !ok {
			// Release the client (its writer fails once the sockets close) so that the
			// test can end.
			s.px.Cut()
			t.Fatalf("a stalled server is not detected while the connection's writer is blocked in a write: "+
				"no NOTIFY_SERVER_DOWN %v after the stall with keep-alive %v (events: %v)", limit+time.Second, ka, seen)
		}
		checkDown(t, s, down, stalled, detected)
		for _, r := range collect(t, results, n, 20*time.Second) {
			if r.Status != mdclient.NotifyPublishOK || r.Server != s.second {
				t.Errorf("closure %s: %s %v from %q, want OK from %s", r.Closure, r.Status, r.Err, r.Server, s.second)
			}
		}
		noMore(t, results)
	})
}

// TestSlowBroker: through a link throttled to a low byte rate, a producer with short
// contexts and a small WithMaxQueued keeps memory flat: callers wait for room and give up
// by their context, what was never written ends FAILED wrapping ErrTimeout, what was
// written and not answered in time ends TIMEOUT, and every request gets one result.
func TestSlowBroker(t *testing.T) {
	const (
		maxQueued   = 8
		maxInflight = 8
	)
	start := func(t *testing.T) (*mdclient.Client, *faultproxy.Proxy) {
		srv := embedded(t)
		px := newFaultProxy(t, hostPort(srv.TCPAddr()))
		proxied := "tcp://" + px.Addr()
		c := newClient(t, allowToken, []string{proxied},
			mdclient.WithMaxQueued(maxQueued), mdclient.WithMaxInflight(maxInflight))
		awaitEvent(t, c, mdclient.NotifyServerUp, proxied, 10*time.Second)
		return c, px
	}

	t.Run("throttled", func(t *testing.T) {
		const (
			rate    = 64 << 10 // bytes per second each way: eight 8 KiB messages a second
			n       = 3000
			size    = 8 << 10 // 24 MB of content in all
			short   = 30 * time.Millisecond
			patient = 3
			// What may legitimately stay: the requests WithMaxQueued and WithMaxInflight
			// allow, plus buffers.
			documented = (maxQueued+maxInflight)*size + 2<<20
			// Far above that, far below n*size: requests kept after their result.
			leak = 10 << 20
		)
		c, px := start(t)
		px.Throttle(rate)

		// A few patient publishes go through the same slow link meanwhile.
		patientRes := make(chan mdclient.PublishResult, patient)
		var wg sync.WaitGroup
		for i := range patient {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				defer cancel()
				st, err := c.Publish(ctx, mdclient.Message{Subject: "slow/patient", Content: []byte("small"), Closure: fmt.Sprint(i)})
				patientRes <- mdclient.PublishResult{Status: st, Err: err, Closure: fmt.Sprint(i)}
			}()
		}

		heap := func() uint64 {
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			return ms.HeapInuse
		}
		// The producer runs on its own while the test consumes results as they come and
		// releases each request's context with its result, so that the test itself keeps
		// nothing per request: what it keeps (the contexts' cancel functions, the ledger's
		// record of each request, with room for its result) is there before the heap's
		// baseline is taken.
		results := make(chan mdclient.PublishResult, 64)
		cancels := make([]context.CancelFunc, n)
		led := newLedger(t.Name(), "")
		led.expect(n)
		base := heap()
		var peak uint64
		var longest, produced time.Duration
		blocked := 0
		done := make(chan struct{})
		go func() {
			defer close(done)
			began := time.Now()
			for i := range n {
				ctx, cancel := context.WithTimeout(context.Background(), short)
				cancels[i] = cancel           // read once i's result is in: after PublishAsync
				content := make([]byte, size) // a fresh buffer each: kept by the client, it would show
				content[0] = byte(i)
				t0 := time.Now()
				c.PublishAsync(ctx, mdclient.PublishRequest{Result: results, Message: mdclient.Message{
					Subject: "slow/flood", Content: content, Closure: fmt.Sprint(i)}})
				d := time.Since(t0)
				longest = max(longest, d)
				if d >= short/3 {
					blocked++
				}
				if i%100 == 99 {
					peak = max(peak, heap())
				}
			}
			produced = time.Since(began)
		}()
		counts := map[mdclient.Status]int{}
		led.take(t, results, n, 60*time.Second, func(e *ledgerEntry, r mdclient.PublishResult) {
			cancels[e.seq]()
			counts[r.Status]++
			switch r.Status {
			case mdclient.NotifyPublishOK, mdclient.NotifyPublishNoSubscriber:
			case mdclient.NotifyPublishTimeout:
				if !errors.Is(r.Err, mdclient.ErrTimeout) || !errors.Is(r.Err, context.DeadlineExceeded) {
					t.Errorf("closure %s: TIMEOUT with %v", r.Closure, r.Err)
				}
			case mdclient.NotifyPublishFailed:
				if !errors.Is(r.Err, mdclient.ErrFailed) || !errors.Is(r.Err, mdclient.ErrTimeout) ||
					errors.Is(r.Err, mdclient.ErrNoServers) || errors.Is(r.Err, mdclient.ErrClosed) {
					t.Errorf("closure %s: FAILED with %v, want ErrTimeout (never written) on a live connection", r.Closure, r.Err)
				}
				if r.Server != "" {
					t.Errorf("closure %s: FAILED names server %q", r.Closure, r.Server)
				}
			default:
				t.Errorf("closure %s: %s %v", r.Closure, r.Status, r.Err)
			}
		})
		<-done
		noMore(t, results)
		wg.Wait()
		close(patientRes)
		for r := range patientRes {
			if !acknowledged(r.Status) {
				t.Errorf("patient publish %s: %s %v, want it acknowledged", r.Closure, r.Status, r.Err)
			}
		}
		t.Logf("%d requests in %v: %v; %d calls blocked ≥ %v, longest %v; heap in use %d KiB at start, peak %d KiB",
			n, produced.Round(time.Millisecond), counts, blocked, short/3, longest.Round(time.Millisecond), base>>10, peak>>10)

		if counts[mdclient.NotifyPublishFailed] == 0 || counts[mdclient.NotifyPublishTimeout] == 0 {
			t.Errorf("outcomes %v: want both FAILED (never written) and TIMEOUT (written, unanswered)", counts)
		}
		if blocked == 0 {
			t.Errorf("no PublishAsync call waited: WithMaxQueued(%d) did not push back", maxQueued)
		}
		// A caller waits for room at most until its context ends.
		if longest > short+time.Second {
			t.Errorf("a PublishAsync call blocked %v with a %v context", longest, short)
		}
		if peak > base+leak {
			t.Fatalf("heap in use grew from %d KiB to %d KiB: requests are kept after their result", base>>10, peak>>10)
		}
		if peak > base+documented {
			t.Fatalf("heap in use grew by %d KiB, above the %d KiB that %d queued and %d in-flight requests of %d KiB explain: "+
				"the client holds more requests than WithMaxQueued allows (see the stalled subtest)",
				(peak-base)>>10, documented>>10, maxQueued, maxInflight, size>>10)
		}
	})

	// fill stalls the path and calls PublishAsync with contexts of ctxFor until a call
	// waits for room (at least ctxFor/2). Nothing completes while stalled, so the calls
	// before it are what the client holds: in flight and queued. It returns their number
	// and the channel where the results of those and of the call that waited arrive.
	const ctxFor = 500 * time.Millisecond
	fill := func(t *testing.T) (int, chan mdclient.PublishResult) {
		c, px := start(t)
		px.Stall()
		const limit = 2000
		results := make(chan mdclient.PublishResult, limit)
		for i := range limit {
			ctx, cancel := context.WithTimeout(context.Background(), ctxFor)
			t.Cleanup(cancel)
			t0 := time.Now()
			c.PublishAsync(ctx, mdclient.PublishRequest{Result: results, Message: mdclient.Message{
				Subject: "slow/stalled", Content: []byte("x"), Closure: fmt.Sprint(i)}})
			if time.Since(t0) >= ctxFor/2 {
				t.Logf("%d requests taken before PublishAsync waited", i)
				return i, results
			}
		}
		t.Fatalf("%d requests taken without waiting: no backpressure at all", limit)
		return 0, nil
	}

	// The client holds no more than those in flight and WithMaxQueued more.
	t.Run("stalled queue bound", func(t *testing.T) {
		accepted, _ := fill(t)
		if want := maxQueued + maxInflight; accepted > want+1 {
			t.Fatalf("PublishAsync took %d requests without waiting, with WithMaxQueued(%d) and %d in flight (want at most %d)",
				accepted, maxQueued, maxInflight, want+1)
		}
	})

	// While the path is stalled, every request still ends when its context does: FAILED
	// if it was never written, TIMEOUT if it was.
	t.Run("stalled results by context", func(t *testing.T) {
		accepted, results := fill(t)
		n := accepted + 1
		counts := map[mdclient.Status]int{}
		// Logged also when results are missing: collectEach then fails the test, as every
		// request must get its result 2 s after its context ended, while the path is stalled.
		defer func() { t.Logf("outcomes %v", counts) }()
		collectEach(t, results, n, ctxFor+2*time.Second, func(_ int, r mdclient.PublishResult) {
			counts[r.Status]++
			if r.Status != mdclient.NotifyPublishFailed && r.Status != mdclient.NotifyPublishTimeout ||
				!errors.Is(r.Err, mdclient.ErrTimeout) {
				t.Errorf("closure %s: %s %v through a stalled path, want FAILED or TIMEOUT with ErrTimeout", r.Closure, r.Status, r.Err)
			}
		})
		noMore(t, results)
	})
}

// TestCloseUnderLoadFailover: Close while messages stream through a stalled or slow path,
// or while the client fails over, returns within the drain timeout (plus a margin) and
// leaves every request with exactly one result.
func TestCloseUnderLoadFailover(t *testing.T) {
	const margin = 1500 * time.Millisecond

	// check collects the n results after Close: acknowledged, FAILED with ErrClosed (never
	// written), or TIMEOUT with ErrClosed (written, unacknowledged).
	// pre are results already taken from results.
	check := func(t *testing.T, results chan mdclient.PublishResult, produced chan struct{}, n int, okServer string, pre ...mdclient.PublishResult) map[mdclient.Status]int {
		t.Helper()
		<-produced
		counts := map[mdclient.Status]int{}
		for _, r := range collect(t, results, n, 10*time.Second, pre...) {
			counts[r.Status]++
			switch {
			case acknowledged(r.Status):
				if okServer != "" && r.Server != okServer {
					t.Errorf("closure %s acknowledged by %q, want %q", r.Closure, r.Server, okServer)
				}
			case r.Status == mdclient.NotifyPublishFailed && errors.Is(r.Err, mdclient.ErrClosed):
			case r.Status == mdclient.NotifyPublishTimeout && errors.Is(r.Err, mdclient.ErrClosed) && errors.Is(r.Err, mdclient.ErrTimeout):
			default:
				t.Errorf("closure %s: %s %v, want acknowledged, or FAILED or TIMEOUT with ErrClosed", r.Closure, r.Status, r.Err)
			}
		}
		noMore(t, results)
		return counts
	}

	// start returns a client with the drain timeout connected through a new proxy.
	start := func(t *testing.T, drain time.Duration) (*mdclient.Client, *faultproxy.Proxy, string) {
		srv := embedded(t)
		px := newFaultProxy(t, hostPort(srv.TCPAddr()))
		proxied := "tcp://" + px.Addr()
		c := openClient(t, allowToken, []string{proxied}, mdclient.WithDrainTimeout(drain))
		awaitEvent(t, c, mdclient.NotifyServerUp, proxied, 10*time.Second)
		return c, px, proxied
	}
	const drain = 500 * time.Millisecond

	// Small messages: the socket buffers of the stalled path hold all that is in flight.
	t.Run("stalled", func(t *testing.T) {
		c, px, proxied := start(t, drain)
		const n = 3000
		results, produced := streamUntilClosed(c, n, 100, "close/stalled")
		// Stall once the first results are in, while the rest still stream.
		first := <-results
		px.Stall()
		took, ok := closeWithin(t, c, drain+margin, px.Cut)
		if !ok {
			t.Errorf("Close took %v with a drain timeout of %v", took, drain)
		}
		counts := check(t, results, produced, n, proxied, first)
		t.Logf("Close took %v; outcomes %v", took.Round(time.Millisecond), counts)
		if counts[mdclient.NotifyPublishFailed] == 0 {
			t.Errorf("outcomes %v: nothing was left for Close to fail", counts)
		}
	})

	// 64 MB in flight, more than the socket buffers hold: the client's writer is blocked
	// in a write to the stalled path when Close comes.
	t.Run("stalled writer blocked", func(t *testing.T) {
		c, px, _ := start(t, drain)
		px.Stall()
		const n = 1000
		results, produced := streamUntilClosed(c, n, 64<<10, "close/full")
		<-produced // all accepted: Close drains them into the stalled path
		took, ok := closeWithin(t, c, drain+margin, px.Cut)
		counts := check(t, results, produced, n, "")
		t.Logf("Close took %v; outcomes %v", took.Round(time.Millisecond), counts)
		if !ok {
			t.Fatalf("Close hung (released after %v by cutting the connection) with a drain timeout of %v: "+
				"the connection's writer is blocked in a write to a stalled server and nothing interrupts it", took.Round(time.Millisecond), drain)
		}
	})

	// Small messages through a slow link: acknowledgements still arrive while Close drains.
	t.Run("slow", func(t *testing.T) {
		c, px, proxied := start(t, drain)
		px.Throttle(16 << 10)
		const n = 3000
		results, produced := streamUntilClosed(c, n, 300, "close/slow")
		first := <-results
		took, ok := closeWithin(t, c, drain+margin, px.Cut)
		if !ok {
			t.Errorf("Close took %v with a drain timeout of %v", took, drain)
		}
		counts := check(t, results, produced, n, proxied, first)
		t.Logf("Close took %v; outcomes %v", took.Round(time.Millisecond), counts)
	})

	// 32 MB in flight through a slow link: the writer is blocked in a write that takes
	// minutes at this rate when Close comes.
	t.Run("slow writer blocked", func(t *testing.T) {
		c, px, proxied := start(t, drain)
		px.Throttle(256 << 10)
		const n = 512
		results, produced := streamUntilClosed(c, n, 64<<10, "close/slowfull")
		first := <-results
		took, ok := closeWithin(t, c, drain+margin, px.Cut)
		counts := check(t, results, produced, n, proxied, first)
		t.Logf("Close took %v; outcomes %v", took.Round(time.Millisecond), counts)
		if !ok {
			t.Fatalf("Close hung (released after %v by cutting the connection) with a drain timeout of %v: "+
				"the connection's writer is blocked in a write to a slow server and nothing interrupts it", took.Round(time.Millisecond), drain)
		}
	})

	// Close while the client fails over from a stalled server to a standby and resends.
	t.Run("failover", func(t *testing.T) {
		first, second := embedded(t), embedded(t)
		subscribe(t, second, "close/#")
		px := newFaultProxy(t, hostPort(first.TCPAddr()))
		proxied := "tcp://" + px.Addr()
		const drain = 2 * time.Second
		c := openClient(t, allowToken, []string{"100 " + proxied, "0 " + second.TCPAddr()},
			mdclient.WithDrainTimeout(drain), mdclient.WithKeepAlive(time.Second))
		awaitEvent(t, c, mdclient.NotifyServerUp, proxied, 10*time.Second)
		px.Stall()
		const n = 2000
		results, produced := streamUntilClosed(c, n, 100, "close/failover")
		awaitEvent(t, c, mdclient.NotifyServerDown, proxied, 10*time.Second)
		took, ok := closeWithin(t, c, drain+margin, px.Cut)
		if !ok {
			t.Errorf("Close took %v with a drain timeout of %v", took, drain)
		}
		counts := check(t, results, produced, n, second.TCPAddr())
		t.Logf("Close took %v; outcomes %v", took.Round(time.Millisecond), counts)
	})
}

// TestMalformedFrames: a server that sends a malformed or forbidden frame is dropped with
// the reason logged, without a panic, and the message in flight is resent to a second,
// real server, where it ends OK.
func TestMalformedFrames(t *testing.T) {
	real := embedded(t)
	sub := subscribe(t, real, "mal/#")
	const recvMax = 16
	// The client logs why it dropped the connection: a record about the fake server whose
	// reason is the protocol violation. dropped matches the client dropping it for a
	// frame: the reason wraps sentinel (when not nil) and says text.
	dropped := func(sentinel error, text string) func(error) bool {
		return func(err error) bool {
			return (sentinel == nil || errors.Is(err, sentinel)) && strings.Contains(err.Error(), text)
		}
	}
	// notInFlight matches the engine aborting the connection for an unknown packet id.
	notInFlight := func(err error) bool { return strings.Contains(err.Error(), "not in flight") }
	for _, tc := range []struct {
		name   string
		frame  func(id uint16) []byte
		logged func(reason error) bool
	}{
		{"oversized remaining length", func(uint16) []byte { return fakebroker.Oversized() }, dropped(codec.ErrTooLarge, "")},
		{"5-byte variable byte integer", func(uint16) []byte { return fakebroker.LongVarint() }, dropped(codec.ErrMalformed, "variable byte integer")},
		{"reserved packet type 0", func(uint16) []byte { return fakebroker.ReservedType() }, dropped(codec.ErrMalformed, "type 0")},
		{"SUBSCRIBE from the server", func(uint16) []byte { return fakebroker.Subscribe() }, dropped(codec.ErrUnsupported, "")},
		{"unsolicited PUBLISH", func(uint16) []byte { return fakebroker.Publish("mal/x", []byte("p")) }, dropped(nil, "unexpected packet type 3")},
		{"truncated PUBACK", func(uint16) []byte { return fakebroker.TruncatedPuback() }, dropped(codec.ErrMalformed, "")},
		{"PUBACK with flags", fakebroker.PubackBadFlags, dropped(codec.ErrMalformed, "")},
		{"PUBACK for packet id 0", func(uint16) []byte { return fakebroker.Puback(0, 0) }, dropped(codec.ErrMalformed, "")},
		{"PUBACK for an id not in flight", func(id uint16) []byte { return fakebroker.Puback(id%recvMax+1, 0) }, notInFlight},
		{"PUBACK for an id above Receive Maximum", func(uint16) []byte { return fakebroker.Puback(recvMax+100, 0) }, notInFlight},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake, err := fakebroker.Start(fakebroker.Script{
				When: fakebroker.AfterPublish, Frame: tc.frame, ReceiveMaximum: recvMax, Linger: 20 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { fake.Close() })
			rec := newLogRecorder()
			c := newClient(t, allowToken, []string{"100 " + fake.Addr(), "0 " + real.TCPAddr()},
				mdclient.WithLogger(rec.Logger()))
			ctx := ctxTimeout(t, 10*time.Second)
			res := <-c.PublishAsync(ctx, mdclient.PublishRequest{Message: mdclient.Message{
				Subject: "mal/x", Content: []byte(tc.name), Closure: tc.name}})
			if res.Status != mdclient.NotifyPublishOK || res.Server != real.TCPAddr() {
				t.Errorf("result %s %v from %q, want OK from %s", res.Status, res.Err, res.Server, real.TCPAddr())
			}

			down, _ := awaitEvent(t, c, mdclient.NotifyServerDown, fake.Addr(), 5*time.Second)
			if !errors.Is(down.Err, conn.ErrProtocol) {
				t.Errorf("NOTIFY_SERVER_DOWN error %v, want a protocol violation", down.Err)
			}
			if _, ok := rec.Await(5*time.Second, func(r logRecord) bool {
				reason := r.attrErr("reason")
				return r.attr("server") == fake.Addr() && errors.Is(reason, conn.ErrProtocol) && tc.logged(reason)
			}); !ok {
				t.Errorf("no log of the connection being dropped for the frame; log:%s", rec.Dump())
			}
			select {
			case s := <-fake.Sessions():
				if !s.Sent || !s.ClientClosed || s.PacketID == 0 {
					t.Errorf("fake broker session %+v: want the frame sent after a PUBLISH, then the client hanging up", s)
				}
			case <-time.After(5 * time.Second):
				t.Error("the client did not close the connection to the fake broker")
			}
			select {
			case m := <-sub.Messages():
				if string(m.Payload) != tc.name {
					t.Errorf("real server got %q", m.Payload)
				}
			case <-ctx.Done():
				t.Error("the real server did not get the message")
			}
		})
	}
}

// TestStandbyAfterWeightedServersFail: a standby (weight 0) is chosen once every weighted
// server has failed, as cluster.Server documents ("chosen only when every weighted server
// failed"), also when there are two weighted servers that keep failing.
func TestStandbyAfterWeightedServersFail(t *testing.T) {
	srv := embedded(t)
	// Two ports where nothing listens: taken together, so that they differ, then freed.
	var dead []string
	var lns []net.Listener
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		dead = append(dead, "tcp://"+ln.Addr().String())
	}
	for _, ln := range lns {
		ln.Close()
	}
	rec := newLogRecorder()
	c := newClient(t, allowToken, []string{"100 " + dead[0], "100 " + dead[1], "0 " + srv.TCPAddr()}, mdclient.WithLogger(rec.Logger()),
		mdclient.WithReconnectTimeInterval(10*time.Millisecond), mdclient.WithReconnectMaxDelay(50*time.Millisecond))
	st, err := c.Publish(ctxTimeout(t, 3*time.Second), mdclient.Message{Subject: "standby/x", Content: []byte("x")})
	if st == mdclient.NotifyPublishFailed && errors.Is(err, mdclient.ErrNoServers) {
		t.Fatalf("with two failing weighted servers the standby is never chosen; "+
			"after 3 s the publish ends %v; the client's last log records:%s", err, rec.Tail(20))
	}
	wantStatus(t, st, err, mdclient.NotifyPublishNoSubscriber, mdclient.ErrNoSubscriber)
}
