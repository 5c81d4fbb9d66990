package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mdclient/mdclient/codec"
	"github.com/mdclient/mdclient/conn"
	"github.com/mdclient/mdclient/internal/mqttpeer"
)

// Every test runs in a synctest bubble: time is virtual, and synctest.Wait returns once
// the engine, the connection's goroutines and the peer are all blocked, so "the engine has
// done all it can" is a fact, not a sleep.

func TestOutcomesByReasonCode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		codes := map[string]byte{"ok": 0x00, "nosub": 0x10, "denied": 0x87, "quota": 0x97}
		p := &mqttpeer.Peer{Connack: mqttpeer.Connack(100), Answer: func(r mqttpeer.Received) mqttpeer.Answer { return mqttpeer.Answer{Code: codes[r.Payload]} }}
		r := newRig(t, Config{})
		r.connect(p)
		var reqs []*Request
		for _, name := range []string{"ok", "nosub", "denied", "quota"} {
			reqs = append(reqs, r.publish(context.Background(), "t/codes", name))
		}
		synctest.Wait()
		for _, q := range reqs {
			o := r.outcome(q)
			if o.Fact != Acked || o.Reason != codes[string(q.Packet.Payload)] || !o.Written || o.Server != "tcp://pipe" {
				t.Errorf("%s: outcome %+v", q.Packet.Payload, o)
			}
		}
		if st := r.e.Stats(); st.Admitted != 4 || st.InFlight != 0 || st.Queued != 0 || st.Connections != 1 || st.BytesWritten == 0 {
			t.Errorf("stats %+v", st)
		}
		r.close(time.Second)
	})
}

// TestCancelledInBatchNeverWritten: a request whose context ends while it sits in a batch
// not yet handed to the connection is taken out of it (FAILED material: never written),
// and the batch is rebuilt so that the aliases it set up still make sense to the server.
func TestCancelledInBatchNeverWritten(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		p := &mqttpeer.Peer{Connack: mqttpeer.Connack(100), Answer: func(r mqttpeer.Received) mqttpeer.Answer {
			if r.Payload == "first" {
				<-gate // the server stops reading: the writer blocks on the next batch
			}
			return mqttpeer.Answer{}
		}}
		p.Connack.TopicAliasMaximum = 10
		r := newRig(t, Config{})
		r.connect(p)
		first := r.publish(context.Background(), "t/first", "first")
		synctest.Wait()
		blocked := r.publish(context.Background(), "t/blocked", "blocked") // handed over; the write blocks
		synctest.Wait()
		ctx, cancel := context.WithCancel(context.Background())
		pulled := r.publish(ctx, "topic/aliased", "pulled") // sets up the alias in the next batch
		kept := r.publish(context.Background(), "topic/aliased", "kept")
		last := r.publish(context.Background(), "topic/aliased", "last")
		synctest.Wait()
		if st := r.e.Stats(); st.InFlight != 2 || st.Queued != 3 {
			t.Fatalf("stats %+v: want 2 written (first, blocked) and 3 batched", st)
		}
		cancel()
		synctest.Wait()
		if o := r.outcome(pulled); o.Fact != Expired || o.Written || !errors.Is(o.Cause, context.Canceled) {
			t.Fatalf("pulled: %+v, want Expired and never written", o)
		}
		close(gate)
		synctest.Wait()
		if got, want := p.Payloads(), []string{"first", "blocked", "kept", "last"}; !slices.Equal(got, want) {
			t.Errorf("the server read %q, want %q", got, want)
		}
		for _, q := range []*Request{first, blocked, kept, last} {
			if o := r.outcome(q); o.Fact != Acked || !o.Written {
				t.Errorf("%s: %+v", q.Packet.Payload, o)
			}
		}
		got := p.Received()
		if got[2].Aliased || !got[3].Aliased {
			t.Errorf("after the rebuild %+v: want the alias set up by the first packet left", got[2:])
		}
		if len(p.Errors()) > 0 {
			t.Errorf("the server saw: %v", p.Errors())
		}
		r.close(time.Second)
	})
}

// TestTimedOutKeepsPacketID: a publish that timed out unanswered keeps its identifier
// until the server acknowledges it, late, so the late PUBACK cannot be taken for another
// message's.
func TestTimedOutKeepsPacketID(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		late := make(chan struct{})
		p := &mqttpeer.Peer{Connack: mqttpeer.Connack(2), Answer: func(r mqttpeer.Received) mqttpeer.Answer {
			if r.Payload == "slow" {
				return mqttpeer.Answer{Later: late}
			}
			return mqttpeer.Answer{}
		}}
		r := newRig(t, Config{})
		r.connect(p)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		slow := r.publish(ctx, "t/x", "slow")
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if o := r.outcome(slow); o.Fact != Expired || !o.Written || !errors.Is(o.Cause, context.DeadlineExceeded) {
			t.Fatalf("slow: %+v, want Expired after writing", o)
		}
		b := r.publish(context.Background(), "t/x", "b")
		c := r.publish(context.Background(), "t/x", "c")
		synctest.Wait()
		close(late)
		synctest.Wait()
		got := p.Received()
		if len(got) != 3 || got[1].ID == got[0].ID || got[2].ID == got[0].ID {
			t.Errorf("identifiers %+v: none may reuse the timed-out one's while it is unanswered", got)
		}
		for _, q := range []*Request{b, c} {
			if o := r.outcome(q); o.Fact != Acked {
				t.Errorf("%s: %+v", q.Packet.Payload, o)
			}
		}
		if st := r.e.Stats(); st.InFlight != 0 {
			t.Errorf("the late PUBACK did not free the identifier: %+v", st)
		}
		r.close(time.Second)
	})
}

// TestUnknownPacketID: a PUBACK for an identifier not in flight is a protocol violation:
// the connection is dropped, and what it had in flight is resent on the next one.
func TestUnknownPacketID(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &mqttpeer.Peer{Connack: mqttpeer.Connack(10), Answer: func(r mqttpeer.Received) mqttpeer.Answer {
			if r.Conn == 1 {
				return mqttpeer.Answer{AckID: 9}
			}
			return mqttpeer.Answer{}
		}}
		r := newRig(t, Config{})
		cn := r.connect(p)
		q := r.publish(context.Background(), "t/x", "x")
		synctest.Wait()
		<-cn.Done()
		if err := cn.Err(); !errors.Is(err, conn.ErrProtocol) || !strings.Contains(err.Error(), "packet id 9") {
			t.Fatalf("connection ended with %v, want ErrProtocol naming id 9", err)
		}
		r.connect(p)
		synctest.Wait()
		if o := r.outcome(q); o.Fact != Acked {
			t.Fatalf("%+v", o)
		}
		if got := p.Received(); len(got) != 2 || got[0].Dup || !got[1].Dup {
			t.Errorf("received %+v, want the message, then again with DUP", got)
		}
		if st := r.e.Stats(); st.Resent != 1 || st.Connections != 2 {
			t.Errorf("stats %+v", st)
		}
		r.close(time.Second)
	})
}

// TestResendInOrderAfterAProbe: after a lost connection the unacknowledged messages go out
// first, in their order, with DUP, marked Resent; the oldest goes alone until it has its
// outcome, so that only it would be charged if the server dropped the connection over it.
func TestResendInOrderAfterAProbe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		p := &mqttpeer.Peer{Connack: mqttpeer.Connack(10), Answer: func(r mqttpeer.Received) mqttpeer.Answer {
			switch {
			case r.Conn == 1:
				return mqttpeer.Answer{Drop: true}
			case r.Payload == "m0":
				<-gate
			}
			return mqttpeer.Answer{}
		}}
		r := newRig(t, Config{})
		cn := r.connect(p)
		var reqs []*Request
		for i := range 5 {
			reqs = append(reqs, r.publish(context.Background(), "t/x", fmt.Sprintf("m%d", i)))
		}
		synctest.Wait()
		cn.Abort(errors.New("cut"))
		synctest.Wait()
		r.connect(p)
		reqs = append(reqs, r.publish(context.Background(), "t/x", "m5"))
		synctest.Wait()
		if st := r.e.Stats(); st.InFlight != 1 || st.Resent != 5 {
			t.Errorf("while the probe is out: %+v, want it alone in flight", st)
		}
		close(gate)
		synctest.Wait()
		r.exactlyOnce(reqs)
		// Resent tells the root that an earlier send may have been published.
		for i, q := range reqs {
			if o := r.outcome(q); o.Resent != (i < 5) {
				t.Errorf("m%d: Resent %v", i, o.Resent)
			}
		}
		var second []string
		for _, got := range p.Received() {
			if got.Conn == 2 {
				second = append(second, got.Payload)
				if got.Dup != (got.Payload != "m5") {
					t.Errorf("%s: DUP %v", got.Payload, got.Dup)
				}
			}
		}
		if want := []string{"m0", "m1", "m2", "m3", "m4", "m5"}; !slices.Equal(second, want) {
			t.Errorf("second connection read %q, want %q", second, want)
		}
		r.close(time.Second)
	})
}

// TestPoisonedMessage: a message the server drops the connection over is given up after
// PoisonAfter lost connections (written, so TIMEOUT material), and the others go on.
func TestPoisonedMessage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &mqttpeer.Peer{Connack: mqttpeer.Connack(10), Answer: func(r mqttpeer.Received) mqttpeer.Answer {
			return mqttpeer.Answer{Disconnect: r.Payload == "poison"}
		}}
		r := newRig(t, Config{})
		a := r.publish(context.Background(), "t/x", "a")
		poison := r.publish(context.Background(), "t/x", "poison")
		b := r.publish(context.Background(), "t/x", "b")
		conns := 0
		for r.pending(b) && conns < 10 {
			cn := r.connect(p)
			conns++
			synctest.Wait()
			if r.pending(b) {
				<-cn.Done()
			}
		}
		if o := r.outcome(poison); o.Fact != Poisoned || !o.Written || !strings.Contains(o.Cause.Error(), "3 times") {
			t.Errorf("poison: %+v", o)
		}
		for _, q := range []*Request{a, b} {
			if o := r.outcome(q); o.Fact != Acked {
				t.Errorf("%s: %+v", q.Packet.Payload, o)
			}
		}
		if conns != PoisonAfter+1 {
			t.Errorf("%d connections, want %d", conns, PoisonAfter+1)
		}
		var seen []string
		for _, got := range p.Received() {
			seen = append(seen, fmt.Sprintf("%d:%s", got.Conn, got.Payload))
		}
		// The probe after each loss carries the poison alone; b waits behind it.
		if want := []string{"1:a", "1:poison", "2:poison", "3:poison", "4:b"}; !slices.Equal(seen, want) &&
			!slices.Equal(seen, []string{"1:a", "1:poison", "1:b", "2:poison", "3:poison", "4:b"}) {
			t.Errorf("the server read %q", seen)
		}
		r.close(time.Second)
	})
}

// TestAtMostOnceLost: an at-most-once message in flight on a lost connection may have
// arrived: it ends Lost (written), and is not sent again.
func TestAtMostOnceLost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &mqttpeer.Peer{Connack: mqttpeer.Connack(10), Answer: func(mqttpeer.Received) mqttpeer.Answer { return mqttpeer.Answer{Drop: true} }}
		r := newRig(t, Config{})
		cn := r.connect(p)
		q := &Request{Packet: codec.Publish{Topic: "t/x", Payload: []byte("once")}, Ctx: context.Background(), AtMostOnce: true}
		if err := r.e.Submit(q); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		cut := errors.New("cut")
		cn.Abort(cut)
		synctest.Wait()
		if o := r.outcome(q); o.Fact != Lost || !o.Written || !errors.Is(o.Cause, cut) {
			t.Fatalf("%+v", o)
		}
		r.close(time.Second)
	})
}

// TestRefusedCredentials: every server refused the token: what waits ends Refused.
func TestRefusedCredentials(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{})
		q := r.publish(context.Background(), "t/x", "x")
		synctest.Wait()
		refused := &conn.RefusedError{Code: 0x87}
		r.e.Events() <- conn.Event{Refused: refused}
		synctest.Wait()
		if o := r.outcome(q); o.Fact != Refused || o.Written || o.Cause != refused {
			t.Fatalf("%+v", o)
		}
		r.close(time.Second)
	})
}

// TestExpiresUnwritten: a request that never found a connection expires at its context's
// deadline, or at the publish timeout without one; never written, no connection up.
func TestExpiresUnwritten(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{PublishTimeout: 3 * time.Second})
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start := time.Now()
		short := r.publish(ctx, "t/x", "short")
		long := r.publish(context.Background(), "t/x", "default")
		time.Sleep(time.Second)
		synctest.Wait()
		if o := r.outcome(short); o.Fact != Expired || o.Written || !o.NoConnection || !errors.Is(o.Cause, context.DeadlineExceeded) {
			t.Fatalf("short: %+v", o)
		}
		if !r.pending(long) {
			t.Fatal("the default-deadline request ended early")
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if o := r.outcome(long); o.Fact != Expired || o.Written || o.Cause != nil || time.Since(start) != 3*time.Second {
			t.Fatalf("default: %+v after %v", o, time.Since(start))
		}
		r.close(time.Second)
	})
}

// TestDrainDeadline: Close waits for acknowledgements until the drain deadline, then ends
// the rest Closed — written or not, as they were.
func TestDrainDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &mqttpeer.Peer{Connack: mqttpeer.Connack(10), Answer: func(mqttpeer.Received) mqttpeer.Answer { return mqttpeer.Answer{Drop: true} }}
		r := newRig(t, Config{MaxInflight: 1})
		r.connect(p)
		sent := r.publish(context.Background(), "t/x", "sent")
		waiting := r.publish(context.Background(), "t/x", "waiting")
		synctest.Wait()
		start := time.Now()
		r.close(2 * time.Second)
		if took := time.Since(start); took != 2*time.Second {
			t.Errorf("Close took %v, want the drain deadline, 2s", took)
		}
		if o := r.outcome(sent); o.Fact != Closed || !o.Written {
			t.Errorf("sent: %+v", o)
		}
		if o := r.outcome(waiting); o.Fact != Closed || o.Written {
			t.Errorf("waiting: %+v", o)
		}
		if err := r.e.Submit(&Request{Ctx: context.Background()}); !errors.Is(err, ErrClosed) {
			t.Errorf("Submit after Close: %v", err)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		p := &mqttpeer.Peer{Connack: mqttpeer.Connack(10)}
		r := newRig(t, Config{})
		r.connect(p)
		q := r.publish(context.Background(), "t/x", "x")
		start := time.Now()
		r.close(5 * time.Second)
		if took := time.Since(start); took != 0 {
			t.Errorf("Close took %v with nothing left to wait for", took)
		}
		if o := r.outcome(q); o.Fact != Acked {
			t.Errorf("%+v", o)
		}
	})
}

// TestWindowHeldReconnects: publishes that timed out unanswered fill the window; with
// nothing acknowledged for a second and requests waiting, the engine opens a fresh
// connection rather than fail everything after them.
func TestWindowHeldReconnects(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &mqttpeer.Peer{Connack: mqttpeer.Connack(2), Answer: func(r mqttpeer.Received) mqttpeer.Answer { return mqttpeer.Answer{Drop: r.Conn == 1} }}
		r := newRig(t, Config{})
		cn := r.connect(p)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		a, b := r.publish(ctx, "t/x", "a"), r.publish(ctx, "t/x", "b")
		c := r.publish(context.Background(), "t/x", "c")
		synctest.Wait()
		time.Sleep(2 * time.Second)
		synctest.Wait()
		for _, q := range []*Request{a, b} {
			if o := r.outcome(q); o.Fact != Expired || !o.Written {
				t.Errorf("%s: %+v", q.Packet.Payload, o)
			}
		}
		<-cn.Done()
		if err := cn.Err(); !errors.Is(err, ErrWindowHeld) {
			t.Fatalf("connection ended with %v, want ErrWindowHeld", err)
		}
		r.connect(p)
		synctest.Wait()
		if o := r.outcome(c); o.Fact != Acked {
			t.Errorf("c: %+v", o)
		}
		r.close(time.Second)
	})
}

// TestAliasesPerConnection: aliases are set up first come, first served up to the
// server's maximum, only for topics long enough to gain from one, and afresh on every
// connection.
func TestAliasesPerConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &mqttpeer.Peer{Connack: mqttpeer.Connack(100)}
		p.Connack.TopicAliasMaximum = 2
		r := newRig(t, Config{})
		cn := r.connect(p)
		for _, topic := range []string{"sport/a", "sport/a", "sport/b", "sport/c", "sport/b", "abc", "abc"} {
			r.publish(context.Background(), topic, topic)
		}
		synctest.Wait()
		cn.Abort(errors.New("cut"))
		synctest.Wait()
		r.connect(p)
		r.publish(context.Background(), "sport/a", "again")
		synctest.Wait()
		var got []string
		for _, x := range p.Received() {
			got = append(got, fmt.Sprintf("%d:%s:%v", x.Conn, x.Topic, x.Aliased))
		}
		want := []string{"1:sport/a:false", "1:sport/a:true", "1:sport/b:false", "1:sport/c:false", "1:sport/b:true",
			"1:abc:false", "1:abc:false", "2:sport/a:false"}
		if !slices.Equal(got, want) {
			t.Errorf("the server read\n%q, want\n%q", got, want)
		}
		if len(p.Errors()) > 0 {
			t.Errorf("the server saw: %v", p.Errors())
		}
		r.close(time.Second)
	})
}

// TestServerLimits: what the CONNACK says the server cannot take is refused before
// anything is written, and the rest goes on.
func TestServerLimits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &mqttpeer.Peer{Connack: codec.Connack{ReceiveMaximum: 10, MaximumPacketSize: 64}}
		r := newRig(t, Config{})
		r.connect(p)
		retained := &Request{Packet: codec.Publish{Topic: "t/x", Payload: []byte("r"), Retain: true}, Ctx: context.Background()}
		if err := r.e.Submit(retained); err != nil {
			t.Fatal(err)
		}
		big := r.publish(context.Background(), "t/x", strings.Repeat("x", 64))
		fits := r.publish(context.Background(), "t/x", "fits")
		synctest.Wait()
		if o := r.outcome(retained); o.Fact != Invalid || o.Written || !errors.Is(o.Cause, errNoRetains) {
			t.Errorf("retained: %+v", o)
		}
		if o := r.outcome(big); o.Fact != TooLarge || o.Written {
			t.Errorf("big: %+v", o)
		}
		if o := r.outcome(fits); o.Fact != Acked {
			t.Errorf("fits: %+v", o)
		}
		if got := p.Payloads(); !slices.Equal(got, []string{"fits"}) {
			t.Errorf("the server read %q", got)
		}
		r.close(time.Second)
	})
	synctest.Test(t, func(t *testing.T) {
		p := &mqttpeer.Peer{Connack: codec.Connack{MaximumQoS: 0, HasMaximumQoS: true, RetainAvailable: true}}
		r := newRig(t, Config{})
		r.connect(p)
		q := r.publish(context.Background(), "t/x", "x")
		synctest.Wait()
		if o := r.outcome(q); o.Fact != Invalid || !errors.Is(o.Cause, errQoS0Only) {
			t.Errorf("%+v", o)
		}
		r.close(time.Second)
	})
}

// TestBackpressure: past MaxQueued accepted and unwritten requests, Submit waits for room
// until the request's context ends, or without a deadline the publish timeout.
func TestBackpressure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{MaxQueued: 2, PublishTimeout: 3 * time.Second})
		patient, stop := context.WithTimeout(context.Background(), time.Hour)
		defer stop()
		r.publish(patient, "t/x", "a") // these two wait for a connection throughout
		r.publish(patient, "t/x", "b")
		synctest.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start := time.Now()
		if err := r.e.Submit(&Request{Packet: codec.Publish{Topic: "t/x"}, Ctx: ctx}); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != time.Second {
			t.Errorf("Submit on a full queue: %v after %v", err, time.Since(start))
		}
		start = time.Now()
		if err := r.e.Submit(&Request{Packet: codec.Publish{Topic: "t/x"}, Ctx: context.Background()}); !errors.Is(err, ErrQueueFull) || time.Since(start) != 3*time.Second {
			t.Errorf("Submit on a full queue without a deadline: %v after %v", err, time.Since(start))
		}
		// Room comes when the queued requests are written.
		got := make(chan error)
		go func() {
			got <- r.e.Submit(&Request{Packet: codec.Publish{Topic: "t/x", Payload: []byte("c")}, Ctx: context.Background()})
		}()
		synctest.Wait()
		r.connect(&mqttpeer.Peer{Connack: mqttpeer.Connack(10)})
		if err := <-got; err != nil {
			t.Errorf("Submit once room came: %v", err)
		}
		r.close(time.Second)
	})
}

// TestReplacedConnection: an Up while a connection is in use replaces it; what the old one
// had in flight goes out on the new one.
func TestReplacedConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &mqttpeer.Peer{Connack: mqttpeer.Connack(10), Answer: func(r mqttpeer.Received) mqttpeer.Answer { return mqttpeer.Answer{Drop: r.Conn == 1} }}
		r := newRig(t, Config{})
		old := r.connect(p)
		q := r.publish(context.Background(), "t/x", "x")
		synctest.Wait()
		r.connect(p)
		synctest.Wait()
		if o := r.outcome(q); o.Fact != Acked || o.Server != "tcp://pipe" {
			t.Errorf("%+v", o)
		}
		old.Close(nil)
		synctest.Wait()
		r.close(time.Second)
	})
}

// TestRateLimit: with a rate limit the engine writes a burst, then one message per
// 1/rate, waking once per millisecond at most; what waits meanwhile is queued.
func TestRateLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var at []time.Duration
		start := time.Now()
		p := &mqttpeer.Peer{Connack: mqttpeer.Connack(1000), Answer: func(mqttpeer.Received) mqttpeer.Answer {
			mu.Lock()
			at = append(at, time.Since(start))
			mu.Unlock()
			return mqttpeer.Answer{}
		}}
		r := newRig(t, Config{Rate: 100, Burst: 10})
		r.connect(p)
		var reqs []*Request
		for i := range 300 {
			reqs = append(reqs, r.publish(context.Background(), "t/x", strconv.Itoa(i)))
		}
		synctest.Wait()
		if st := r.e.Stats(); st.Queued != 290 {
			t.Errorf("after the burst: %+v, want 290 queued", st)
		}
		time.Sleep(3 * time.Second)
		synctest.Wait()
		r.exactlyOnce(reqs)
		mu.Lock()
		defer mu.Unlock()
		// 10 at once, then 100 a second: message k (k ≥ 10) at (k-9)/100 s.
		for k, d := range at {
			want := time.Duration(max(0, k-9)) * 10 * time.Millisecond
			if d < want || d > want+time.Millisecond {
				t.Fatalf("message %d written at %v, want %v", k, d, want)
			}
		}
	})
}

// TestWindowHeldWithShortContexts: the patience before a fresh connection counts from
// when the window filled, not from when a request began to wait: requests whose contexts
// are shorter than the patience still get one.
func TestWindowHeldWithShortContexts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &mqttpeer.Peer{Connack: mqttpeer.Connack(2), Answer: func(r mqttpeer.Received) mqttpeer.Answer { return mqttpeer.Answer{Drop: r.Conn == 1} }}
		r := newRig(t, Config{PublishTimeout: 300 * time.Millisecond})
		cn := r.connect(p)
		r.publish(context.Background(), "t/x", "a")
		r.publish(context.Background(), "t/x", "b")
		time.Sleep(time.Second) // both time out unanswered: the window is held
		for range 4 {           // one at a time, each shorter than the patience
			r.publish(context.Background(), "t/x", "later")
			time.Sleep(400 * time.Millisecond)
			synctest.Wait()
		}
		<-cn.Done()
		if err := cn.Err(); !errors.Is(err, ErrWindowHeld) {
			t.Fatalf("connection ended with %v, want ErrWindowHeld", err)
		}
		r.connect(p)
		q := r.publish(context.Background(), "t/x", "after")
		synctest.Wait()
		if o := r.outcome(q); o.Fact != Acked {
			t.Errorf("on the fresh connection: %+v", o)
		}
	})
}
