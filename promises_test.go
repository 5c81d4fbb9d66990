package mdclient_test

// Regression tests for the promises a newcomer broke from outside the module (issue 10):
// each test is one observation of that issue, made again against a real broker, and
// fails on the code before the fix.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mdclient/mdclient"
	"github.com/mdclient/mdclient/mdtest"
)

// Observation 1: a context already done when PublishAsync is called sends nothing.
func TestDoneContextSendsNothing(t *testing.T) {
	srv := embedded(t)
	sub := subscribe(t, srv, "never/#")
	transports(t, srv.WSAddr(), srv.TCPAddr(), func(t *testing.T, addr string) {
		c := newClient(t, allowToken, []string{addr})
		if st, err := c.Publish(ctxTimeout(t, 10*time.Second), mdclient.Message{Subject: "never/warmup", Content: []byte("warmup")}); st != mdclient.NotifyPublishOK {
			t.Fatal(st, err)
		}
		receivedUntilMarker(t, sub, "warmup")
		done, cancel := context.WithCancel(context.Background())
		cancel()
		for i := range 1000 {
			st, err := c.Publish(done, mdclient.Message{Subject: "never/x", Content: []byte(strconv.Itoa(i))})
			if st != mdclient.NotifyPublishFailed || !errors.Is(err, mdclient.ErrTimeout) || !errors.Is(err, context.Canceled) {
				t.Fatalf("publish %d with a cancelled context: %s %v, want FAILED wrapping ErrTimeout and the cause", i, st, err)
			}
		}
		if st, err := c.Publish(ctxTimeout(t, 10*time.Second), mdclient.Message{Subject: "never/marker", Content: []byte("marker")}); st != mdclient.NotifyPublishOK {
			t.Fatal(st, err)
		}
		if got := receivedUntilMarker(t, sub, "marker"); len(got) > 0 {
			t.Fatalf("%d messages published with a cancelled context reached the subscriber", len(got))
		}
	})
}

// Observation 1, second part: a stream with contexts of a few milliseconds, so that many
// end while their message waits in a batch. No FAILED message may reach the subscriber,
// and every OK one must (the ledger checks both, and exactly one result per request).
func TestShortContextsFailedNeverDelivered(t *testing.T) {
	srv := embedded(t)
	sub := subscribe(t, srv, "short/#")
	transports(t, srv.WSAddr(), srv.TCPAddr(), func(t *testing.T, addr string) {
		c := newClient(t, allowToken, []string{addr})
		led := newLedger(t.Name(), "short/")
		const n = 20000
		results := make(chan mdclient.PublishResult, 512)
		go func() {
			for i := range n {
				// From a millisecond, ending while queued or batched, to a second.
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(1+i%8)*time.Millisecond)
				switch {
				case i%50 == 0:
					cancel() // ends at once
				case i%10 == 0:
					ctx, cancel = context.WithTimeout(context.Background(), time.Second)
				}
				m := mdclient.Message{Subject: "short/x", Closure: strconv.Itoa(i)}
				m.Content = led.payload(m.Closure, 0)
				e := led.add(&m, ledgerRequest{how: "PublishAsync", ch: results, ctxDone: ctx.Err() != nil})
				led.returned(e, c.PublishAsync(ctx, mdclient.PublishRequest{Result: results, Message: m}))
				context.AfterFunc(ctx, cancel)
			}
		}()
		counts := map[mdclient.Status]int{}
		led.take(t, results, n, 60*time.Second, func(_ *ledgerEntry, r mdclient.PublishResult) {
			counts[r.Status]++
			if r.Status == mdclient.NotifyPublishFailed && !errors.Is(r.Err, mdclient.ErrTimeout) {
				t.Errorf("%s: FAILED with %v, want ErrTimeout", r.Closure, r.Err)
			}
		})
		if st, err := c.Publish(ctxTimeout(t, 10*time.Second), mdclient.Message{Subject: "short/marker", Content: []byte("marker")}); st != mdclient.NotifyPublishOK {
			t.Fatal(st, err)
		}
		for payload, k := range receivedUntilMarker(t, sub, "marker") {
			for range k {
				led.receipt("sub", "short/x", []byte(payload))
			}
		}
		failViolations(t, "", led.check())
		t.Logf("outcomes %v", counts)
		if counts[mdclient.NotifyPublishFailed] == 0 {
			t.Errorf("no context ended before its message was written: the test proves nothing")
		}
	})
}

// Observation 2: Close with a server that never acknowledges, a small Result channel read
// without pause: every accepted request's result reaches the reader, also those still
// waiting for room when Close returns; Close returns within the drain timeout plus 1 s.
func TestCloseDeliversEveryResultToAReader(t *testing.T) {
	srv := embedded(t)
	srv.DropAcks("#", true)
	const drain = time.Second
	c := openClient(t, allowToken, []string{srv.TCPAddr()}, mdclient.WithDrainTimeout(drain))
	awaitEvent(t, c, mdclient.NotifyServerUp, "", 10*time.Second)
	const n = 5000
	results := make(chan mdclient.PublishResult, 16)
	// The calls and Close go on in a goroutine of their own; the test reads every result
	// meanwhile, as a pipeline's reader does.
	closed := make(chan error, 1)
	var took time.Duration
	go func() {
		for i := range n {
			c.PublishAsync(context.Background(), mdclient.PublishRequest{Result: results, Message: mdclient.Message{
				Subject: "close/x", Content: []byte("x"), Closure: strconv.Itoa(i)}})
		}
		start := time.Now()
		err := c.Close()
		took = time.Since(start)
		closed <- err
	}()
	counts := map[mdclient.Status]int{}
	collectEach(t, results, n, 30*time.Second, func(_ int, r mdclient.PublishResult) {
		counts[r.Status]++
		if !errors.Is(r.Err, mdclient.ErrClosed) {
			t.Fatalf("%s %v, want ErrClosed", r.Status, r.Err)
		}
	})
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if took > drain+time.Second {
		t.Errorf("Close took %v, want at most the drain timeout %v plus 1 s", took, drain)
	}
	if counts[mdclient.NotifyPublishTimeout] == 0 || counts[mdclient.NotifyPublishFailed] == 0 {
		t.Errorf("outcomes %v: want the written ones TIMEOUT and the others FAILED", counts)
	}
}

// Observation 3: calls after Close get their result like any other: on an unbuffered
// channel read right after the call, on a channel that had a backlog during Close, and
// from 50 goroutines sharing one channel while Close runs.
func TestCallsAfterCloseGetTheirResult(t *testing.T) {
	srv := embedded(t)
	t.Run("unbuffered", func(t *testing.T) {
		c := newClient(t, allowToken, []string{srv.TCPAddr()})
		c.Close()
		ch := make(chan mdclient.PublishResult)
		select {
		case r := <-c.PublishAsync(context.Background(), mdclient.PublishRequest{Result: ch, Message: mdclient.Message{Subject: "a/b"}}):
			if r.Status != mdclient.NotifyPublishFailed || !errors.Is(r.Err, mdclient.ErrClosed) {
				t.Fatalf("%s %v", r.Status, r.Err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no result for a call after Close on an unbuffered channel")
		}
	})
	t.Run("backlog during Close", func(t *testing.T) {
		c := newClient(t, allowToken, []string{srv.TCPAddr()})
		ch := make(chan mdclient.PublishResult, 1)
		const before, after = 50, 50
		for i := range before {
			c.PublishAsync(context.Background(), mdclient.PublishRequest{Result: ch, Message: mdclient.Message{Subject: "a/b", Closure: strconv.Itoa(i)}})
		}
		c.Close()
		for i := range after {
			c.PublishAsync(context.Background(), mdclient.PublishRequest{Result: ch, Message: mdclient.Message{Subject: "a/b", Closure: strconv.Itoa(before + i)}})
		}
		for _, r := range collect(t, ch, before+after, 10*time.Second)[before:] {
			if !errors.Is(r.Err, mdclient.ErrClosed) {
				t.Fatalf("a call after Close: %s %v", r.Status, r.Err)
			}
		}
	})
	t.Run("50 callers while Close runs", func(t *testing.T) {
		srv.DropAcks("slow/#", true)
		defer srv.DropAcks("slow/#", false)
		c := openClient(t, allowToken, []string{srv.TCPAddr()}, mdclient.WithDrainTimeout(300*time.Millisecond))
		ch := make(chan mdclient.PublishResult, 8)
		led := newLedger(t.Name(), "")
		var calls atomic.Int64
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for g := range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					calls.Add(1)
					m := mdclient.Message{Subject: "slow/x", Closure: fmt.Sprintf("%d-%d", g, i)}
					e := led.add(&m, ledgerRequest{how: "PublishAsync", ch: ch})
					led.returned(e, c.PublishAsync(context.Background(), mdclient.PublishRequest{Result: ch, Message: m}))
				}
			}()
		}
		// The reader records every result in the ledger until the test has them all.
		stopReading := led.read("reader", ch, nil)
		for calls.Load() < 2000 {
			runtime.Gosched()
		}
		start := time.Now()
		c.Close()
		if took := time.Since(start); took > 300*time.Millisecond+time.Second {
			t.Errorf("Close took %v with 50 callers still calling, want at most 300ms + 1s", took)
		}
		for calls.Load() < 4000 { // many calls after Close too
			runtime.Gosched()
		}
		close(stop)
		wg.Wait()
		missing := led.waitResults(time.Now().Add(30 * time.Second))
		stopReading()
		if missing > 0 {
			t.Errorf("%d calls, %d of them without a result", calls.Load(), missing)
		}
		failViolations(t, "", led.onceViolations())
	})
}

// Observation 5: SetServers replaces a list whose server never answers (it accepts the
// connection and says nothing): the attempt still dialing is abandoned and the new list
// used at once, with no quick-phase attempts or connect timeout to sit out first.
func TestSetServersAbandonsAnAttempt(t *testing.T) {
	hole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	var held []net.Conn
	var heldMu sync.Mutex
	go func() {
		for {
			c, err := hole.Accept()
			if err != nil {
				return
			}
			heldMu.Lock()
			held = append(held, c) // accepted, never answered
			heldMu.Unlock()
		}
	}()
	defer func() {
		heldMu.Lock()
		for _, c := range held {
			c.Close()
		}
		heldMu.Unlock()
	}()
	srv := embedded(t)
	c := newClient(t, allowToken, []string{"tcp://" + hole.Addr().String()}, mdclient.WithConnectTimeout(2*time.Second))
	timer := time.NewTimer(100 * time.Millisecond) // into the first attempt
	<-timer.C
	if err := c.SetServers([]string{srv.TCPAddr()}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, at := awaitEvent(t, c, mdclient.NotifyServerUp, srv.TCPAddr(), 10*time.Second)
	if took := at.Sub(start); took > time.Second {
		t.Errorf("the new list was used after %v, want at once (the old attempt abandoned)", took)
	}
	if st, err := c.Publish(ctxTimeout(t, 5*time.Second), mdclient.Message{Subject: "a/b"}); st != mdclient.NotifyPublishNoSubscriber {
		t.Fatal(st, err)
	}
}

// Observation 6: subjects MQTT 5 §1.5.4 forbids — mosquitto drops the connection over
// them — are refused before sending, and disturb nothing else in the stream.
func TestForbiddenSubjectsDisturbNothing(t *testing.T) {
	b := startMosquitto(t)
	c := newClient(t, allowToken, []string{b.TCPAddr()}, mdclient.WithUsername("pub"))
	awaitEvent(t, c, mdclient.NotifyServerUp, "", 10*time.Second)
	bad := []string{"allowed/bad\tsubject", "allowed/\x01", "allowed/\u0085", "allowed/\uffff", "allowed/\ufdd0", "allowed/\U0001fffe", "allowed/\x7f"}
	for i, q := range bad {
		s, err := strconv.Unquote(`"` + q + `"`)
		if err != nil {
			t.Fatal(err)
		}
		bad[i] = s
	}
	const n = 5000
	results := make(chan mdclient.PublishResult, n+len(bad))
	for i := range n {
		c.PublishAsync(context.Background(), mdclient.PublishRequest{Result: results, Message: mdclient.Message{
			Subject: "allowed/good", Content: []byte(strconv.Itoa(i)), Closure: strconv.Itoa(i)}})
		if i%(n/len(bad)) == n/len(bad)/2 {
			s := bad[i/(n/len(bad))%len(bad)]
			r := <-c.PublishAsync(context.Background(), mdclient.PublishRequest{Message: mdclient.Message{Subject: s}})
			if r.Status != mdclient.NotifyPublishFailed || !errors.Is(r.Err, mdclient.ErrInvalidMessage) {
				t.Errorf("subject %q: %s %v, want FAILED wrapping ErrInvalidMessage", s, r.Status, r.Err)
			}
		}
	}
	for i, r := range collect(t, results, n, 30*time.Second) {
		if r.Status != mdclient.NotifyPublishNoSubscriber { // nobody subscribes: mosquitto answers 0x10
			t.Fatalf("%d: %s %v", i, r.Status, r.Err)
		}
	}
	if st := c.Stats(); st.Reconnects != 0 || st.Resent != 0 {
		t.Errorf("stats %+v: the stream was disturbed", st)
	}
}

// Observation 7: publishes a server never answers fill its Receive Maximum window; the
// client opens a fresh connection instead of failing every later publish.
func TestUnansweredPublishesDoNotHoldTheWindow(t *testing.T) {
	srv, err := mdtest.NewServer(mdtest.WithAllowToken(allowToken), mdtest.WithReceiveMaximum(8))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	srv.DropAcks("never/#", true)
	c := newClient(t, allowToken, []string{srv.TCPAddr()})
	awaitEvent(t, c, mdclient.NotifyServerUp, "", 10*time.Second)
	results := make(chan mdclient.PublishResult, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	for i := range 8 {
		c.PublishAsync(ctx, mdclient.PublishRequest{Result: results, Message: mdclient.Message{Subject: "never/x", Closure: strconv.Itoa(i)}})
	}
	for i, r := range collect(t, results, 8, 10*time.Second) {
		if r.Status != mdclient.NotifyPublishTimeout {
			t.Fatalf("%d: %s %v, want TIMEOUT", i, r.Status, r.Err)
		}
	}
	if st := c.Stats(); st.InFlight != 8 {
		t.Errorf("InFlight %d, want the 8 unanswered publishes that hold the window", st.InFlight)
	}
	for i := range 20 {
		st, err := c.Publish(ctxTimeout(t, 5*time.Second), mdclient.Message{Subject: "ok/x", Content: []byte(strconv.Itoa(i))})
		if st != mdclient.NotifyPublishNoSubscriber {
			t.Fatalf("publish %d after the window filled: %s %v", i, st, err)
		}
	}
	if st := c.Stats(); st.Reconnects != 1 {
		t.Errorf("Reconnects %d, want 1: a fresh connection freed the window", st.Reconnects)
	}
}

// Observation 8: results nobody reads are bounded: past WithMaxQueued results waiting for
// a channel, the callers naming it wait (by their context), and memory stays flat.
func TestUnreadResultsAreBounded(t *testing.T) {
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "tcp://" + dead.Addr().String()
	dead.Close() // connections are refused from now on
	const maxQueued = 1000
	c := newClient(t, allowToken, []string{addr}, mdclient.WithMaxQueued(maxQueued), mdclient.WithPublishTimeout(20*time.Millisecond),
		mdclient.WithReconnectMaxDelay(50*time.Millisecond), mdclient.WithReconnectTimeInterval(10*time.Millisecond))
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	unread := make(chan mdclient.PublishResult) // never read during the test
	content := make([]byte, 256)
	before := heap()
	start := time.Now()
	calls := 0
	for time.Since(start) < 2*time.Second {
		c.PublishAsync(context.Background(), mdclient.PublishRequest{Result: unread, Message: mdclient.Message{Subject: "dead/x", Content: content}})
		calls++
	}
	st := c.Stats()
	grown := int64(heap()) - int64(before)
	t.Logf("%d calls in 2s; %d results wait; heap grew %d KiB", calls, st.Undelivered, grown>>10)
	// At most WithMaxQueued wait, plus the calls that found no room within their publish
	// timeout (20 ms each: at most 100 in 2 s), plus those accepted meanwhile.
	if st.Undelivered > 2*maxQueued+100 {
		t.Errorf("%d results wait for an unread channel, want at most about %d", st.Undelivered, maxQueued)
	}
	if grown > 20<<20 {
		t.Errorf("heap grew by %d MiB", grown>>20)
	}
	// Every call gets its result, read now, also those that waited.
	c.Close()
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	for range calls {
		select {
		case <-unread:
		case <-timeout.C:
			t.Fatal("results missing")
		}
	}
}

// Observation 9: a Result channel the caller closes (against the documentation) does not
// panic a client goroutine; other requests go on.
func TestClosedResultChannelDoesNotPanic(t *testing.T) {
	if raceEnabled {
		t.Skip("closing a channel the client sends to is a data race by definition; run without -race (as .ci/run does)")
	}
	srv := embedded(t)
	srv.DropAcks("lost/#", true)
	rec := newLogRecorder()
	c := newClient(t, allowToken, []string{srv.TCPAddr()}, mdclient.WithLogger(rec.Logger()))
	ch := make(chan mdclient.PublishResult, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	c.PublishAsync(ctx, mdclient.PublishRequest{Result: ch, Message: mdclient.Message{Subject: "lost/x"}})
	c.PublishAsync(ctx, mdclient.PublishRequest{Result: ch, Message: mdclient.Message{Subject: "lost/x"}})
	close(ch)
	<-ctx.Done()
	for i := range 3 {
		if st, err := c.Publish(ctxTimeout(t, 5*time.Second), mdclient.Message{Subject: "ok/x"}); st != mdclient.NotifyPublishNoSubscriber {
			t.Fatalf("publish %d after a Result channel was closed: %s %v", i, st, err)
		}
	}
	// The client logs one Error record: the results due to the closed channel are dropped.
	if _, ok := rec.Await(5*time.Second, func(r logRecord) bool { return r.Level == slog.LevelError }); !ok {
		t.Fatalf("nothing logged of the closed channel:%s", rec.Dump())
	}
}

// Observation 13: error texts quote at most 64 bytes of a subject and never the user info
// of a server URL; a bad entry says what is wrong with it.
func TestErrorTexts(t *testing.T) {
	c := mdclient.NewClient()
	defer c.Close()
	long := strings.Repeat("a", 65000) + "\t"
	r := <-c.PublishAsync(context.Background(), mdclient.PublishRequest{Message: mdclient.Message{Subject: long}})
	if !errors.Is(r.Err, mdclient.ErrInvalidMessage) || len(r.Err.Error()) > 300 || !strings.Contains(r.Err.Error(), "U+0009 at byte 65000") {
		t.Errorf("%d-byte error for a long bad subject: %.300s", len(r.Err.Error()), r.Err)
	}
	for entry, want := range map[string]string{
		"ws://user:s3cr3t@h:1":   "user info",
		"50 tcp://u:s3cr3t@h:1":  "user info",
		"ws://h:1/a b":           "no spaces",
		"ssl://h:8883":           "unknown scheme",
		"101 h:1":                "weight",
		"x h:1":                  "weight from 0 to 100",
		"h:1 h:2":                "no spaces",
		"tcp://h:1?x=y":          "no query",
		"ws://h:1/mqtt#top":      "no query",
		strings.Repeat("h", 300): "want host:port",
	} {
		err := c.SetServers([]string{entry})
		switch {
		case !errors.Is(err, mdclient.ErrInvalidServer):
			t.Errorf("%.40q: %v, want ErrInvalidServer", entry, err)
		case strings.Contains(err.Error(), "s3cr3t"):
			t.Errorf("%q: the error shows the password: %v", entry, err)
		case !strings.Contains(err.Error(), want) || len(err.Error()) > 200:
			t.Errorf("%.40q: %v, want a short error saying %q", entry, err, want)
		}
	}
}

// Observation 13: a second Close, also concurrent, waits for the first and returns after it.
func TestConcurrentCloseWaitsForTheFirst(t *testing.T) {
	srv := embedded(t)
	srv.DropAcks("#", true)
	c := openClient(t, allowToken, []string{srv.TCPAddr()}, mdclient.WithDrainTimeout(300*time.Millisecond))
	awaitEvent(t, c, mdclient.NotifyServerUp, "", 10*time.Second)
	res := c.PublishAsync(context.Background(), mdclient.PublishRequest{Message: mdclient.Message{Subject: "a/b"}})
	first := make(chan time.Time, 1)
	go func() {
		c.Close()
		first <- time.Now()
	}()
	r := <-res // given when the first Close ends the drain
	c.Close()
	second := time.Now()
	if r.Status != mdclient.NotifyPublishTimeout || !errors.Is(r.Err, mdclient.ErrClosed) {
		t.Errorf("%s %v", r.Status, r.Err)
	}
	// The first Close closes Events last: once the second returns it must be closed
	// (after what it still buffers).
	for closed := false; !closed; {
		select {
		case _, open := <-c.Events():
			closed = !open
		default:
			t.Fatal("the second Close returned while Events was still open: the first had not finished")
		}
	}
	if f := <-first; second.Before(f.Add(-50 * time.Millisecond)) {
		t.Errorf("the second Close returned %v before the first", f.Sub(second))
	}
}

// A server's refusal of a message sent again after its connection was lost (found by the
// fifth outside tester): the refusal is of the last send only, and the first send may have
// been published — so the result is TIMEOUT, matching neither ErrFailed nor ErrDenied.
// Server a reads the first send once resumed and publishes it, proving FAILED wrong.
func TestRefusedResendIsTimeout(t *testing.T) {
	for _, code := range []byte{0x97, 0x87} {
		t.Run(fmt.Sprintf("0x%02x", code), func(t *testing.T) {
			a, b := embedded(t), embedded(t)
			b.SetReasonCode("t/#", code)
			subA := subscribe(t, a, "t/#")
			c := newClient(t, allowToken, []string{a.TCPAddr()})
			awaitEvent(t, c, mdclient.NotifyServerUp, "", 10*time.Second)
			a.Pause()
			res := c.PublishAsync(ctxTimeout(t, 10*time.Second), mdclient.PublishRequest{Message: mdclient.Message{Subject: "t/x", Content: []byte("once")}})
			if !eventually(5*time.Second, func() bool { return c.Stats().InFlight == 1 }) {
				t.Fatalf("never in flight: %+v", c.Stats())
			}
			if err := c.SetServers([]string{b.TCPAddr()}); err != nil {
				t.Fatal(err)
			}
			var r mdclient.PublishResult
			select {
			case r = <-res:
			case <-time.After(10 * time.Second):
				t.Fatal("no result")
			}
			wantStatus(t, r.Status, r.Err, mdclient.NotifyPublishTimeout, mdclient.ErrTimeout)
			if errors.Is(r.Err, mdclient.ErrFailed) || errors.Is(r.Err, mdclient.ErrDenied) {
				t.Errorf("the TIMEOUT wraps a sentinel that says not published: %v", r.Err)
			}
			if want := fmt.Sprintf("reason code 0x%02x", code); !strings.Contains(r.Err.Error(), want) {
				t.Errorf("%v: the refusal's %s is missing", r.Err, want)
			}
			if st := c.Stats(); st.Resent != 1 || st.Timeout != 1 {
				t.Errorf("Stats %+v, want Resent 1 and Timeout 1", st)
			}
			a.Resume()
			select {
			case m := <-subA.Messages():
				if string(m.Payload) != "once" {
					t.Errorf("a published %q", m.Payload)
				}
			case <-time.After(10 * time.Second):
				t.Error("server a never published the first send")
			}
		})
	}
}

// A call made while Close runs gets its ErrClosed result once Close has returned (found
// by the sixth outside tester): callers that call again as soon as they are refused took
// the processors from the goroutines Close waits for, and Close overran its bound.
func TestCallsDuringCloseWaitForIt(t *testing.T) {
	srv := embedded(t)
	srv.DropAcks("#", true) // the drain runs its whole timeout
	c := openClient(t, allowToken, []string{srv.TCPAddr()}, mdclient.WithDrainTimeout(time.Second))
	awaitEvent(t, c, mdclient.NotifyServerUp, "", 10*time.Second)
	held := c.PublishAsync(context.Background(), mdclient.PublishRequest{Message: mdclient.Message{Subject: "a/b"}})
	if !eventually(5*time.Second, func() bool { return c.Stats().InFlight == 1 }) {
		t.Fatalf("never in flight: %+v", c.Stats())
	}
	returned := make(chan struct{})
	go func() {
		c.Close()
		close(returned)
	}()
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for {
		// Refused at once (ErrTimeout) until Close has begun, then ErrClosed.
		st, err := c.Publish(done, mdclient.Message{Subject: "a/b"})
		if errors.Is(err, mdclient.ErrClosed) {
			wantStatus(t, st, err, mdclient.NotifyPublishFailed, mdclient.ErrClosed)
			break
		}
		wantStatus(t, st, err, mdclient.NotifyPublishFailed, mdclient.ErrTimeout)
	}
	select {
	case <-returned:
	case <-time.After(500 * time.Millisecond):
		t.Fatal("a call made during Close returned its ErrClosed while Close was still draining")
	}
	if r := <-held; r.Status != mdclient.NotifyPublishTimeout || !errors.Is(r.Err, mdclient.ErrClosed) {
		t.Errorf("the held message: %s %v", r.Status, r.Err)
	}
}
