package mdclient_test

// Regression tests for what an outside tester broke, importing mdclient from a module of
// its own with the public API only (issue 10's adversarial pass).

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mdclient/mdclient"
	"github.com/mdclient/mdclient/mdtest"
)

// TestWindowHeldWithShortPublishTimeout: publishes the server never answers fill its
// window of 4, and every later publish has a context shorter than the client's patience
// (1 s): the client still opens a fresh connection and the later ones go through.
func TestWindowHeldWithShortPublishTimeout(t *testing.T) {
	srv, err := mdtest.NewServer(mdtest.WithReceiveMaximum(4))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	srv.DropAcks("lost", true)
	c := newClient(t, "", []string{srv.TCPAddr()}, mdclient.WithPublishTimeout(500*time.Millisecond))
	for i := range 4 {
		if st, err := c.Publish(context.Background(), mdclient.Message{Subject: "lost"}); st != mdclient.NotifyPublishTimeout {
			t.Fatalf("lost %d: %s %v", i, st, err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, _ := c.Publish(context.Background(), mdclient.Message{Subject: "fine"})
		if st == mdclient.NotifyPublishNoSubscriber {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no publish got through in 5 s after the window filled: %+v", c.Stats())
		}
	}
}

// TestRefusedCallsDoNotPileUp: calls refused at once (a context already done) naming a
// channel nobody reads wait for room past WithMaxQueued waiting results (a quarter more),
// up to the publish timeout: however fast they come, results pile up only at one per
// publish timeout.
func TestRefusedCallsDoNotPileUp(t *testing.T) {
	srv := embedded(t)
	const maxQueued = 100
	c := newClient(t, allowToken, []string{srv.TCPAddr()}, mdclient.WithMaxQueued(maxQueued), mdclient.WithPublishTimeout(50*time.Millisecond))
	done, cancel := context.WithCancel(context.Background())
	cancel()
	unread := make(chan mdclient.PublishResult)
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	before := heap()
	calls := 0
	for start := time.Now(); time.Since(start) < time.Second; calls++ {
		c.PublishAsync(done, mdclient.PublishRequest{Result: unread, Message: mdclient.Message{Subject: "a/b"}})
	}
	st := c.Stats()
	grown := int64(heap()) - int64(before)
	t.Logf("%d calls in 1 s; %d results wait; heap grew %d KiB", calls, st.Undelivered, grown>>10)
	// WithMaxQueued and a quarter, plus one per publish timeout (50 ms) that the waiting
	// call gave up.
	if st.Undelivered > maxQueued+maxQueued/4+25 || grown > 4<<20 {
		t.Errorf("%d results wait, heap grew %d KiB: not bounded", st.Undelivered, grown>>10)
	}
	for range calls {
		<-unread // every call has its result, once read
	}
}

// TestFullChannelWaitIsBoundedByTheContext: a call waiting for room in its channel's
// backlog returns when its context ends, its result delivered, not a publish timeout
// later (found by the outside tester: a 200 ms context returned after 10.2 s).
func TestFullChannelWaitIsBoundedByTheContext(t *testing.T) {
	srv := embedded(t)
	subscribe(t, srv, "bound/#")
	const maxQueued = 5
	c := newClient(t, allowToken, []string{srv.TCPAddr()}, mdclient.WithMaxQueued(maxQueued))
	unread := make(chan mdclient.PublishResult)
	for range maxQueued { // their results fill the channel's backlog
		c.PublishAsync(context.Background(), mdclient.PublishRequest{Result: unread, Message: mdclient.Message{Subject: "bound/x"}})
	}
	if !eventually(10*time.Second, func() bool { return c.Stats().Undelivered == maxQueued }) {
		t.Fatalf("%d results wait, want %d", c.Stats().Undelivered, maxQueued)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	deadline, _ := ctx.Deadline()
	c.PublishAsync(ctx, mdclient.PublishRequest{Result: unread, Message: mdclient.Message{Subject: "bound/x"}})
	if late := time.Since(deadline); late > 2*time.Second { // the publish timeout is 10 s
		t.Errorf("PublishAsync returned %v after its context's deadline", late)
	}
	for i := range maxQueued + 1 {
		r := <-unread
		if i == maxQueued && (r.Status != mdclient.NotifyPublishFailed || !errors.Is(r.Err, mdclient.ErrTimeout)) {
			t.Errorf("the call that found no room: %s %v", r.Status, r.Err)
		}
	}
}

// TestUnreadChannelBoundWithAWindowInFlight: with a live broker, requests accepted before
// an unread channel's backlog reached WithMaxQueued still add their results, but no more
// than WithMaxQueued queued and one window in flight (WithMaxQueued documents the bound;
// the outside tester found the README promising WithMaxQueued alone: 2 101 results wait
// with WithMaxQueued(100) and a window of 65535).
func TestUnreadChannelBoundWithAWindowInFlight(t *testing.T) {
	srv := embedded(t)
	const maxQueued, window, publishers = 100, 50, 4
	const publishTimeout = 200 * time.Millisecond
	c := newClient(t, allowToken, []string{srv.TCPAddr()}, mdclient.WithMaxQueued(maxQueued),
		mdclient.WithMaxInflight(window), mdclient.WithPublishTimeout(publishTimeout))
	if st, err := c.Publish(ctxTimeout(t, 10*time.Second), mdclient.Message{Subject: "warm"}); st != mdclient.NotifyPublishNoSubscriber {
		t.Fatalf("warm-up: %s %v", st, err)
	}
	unread := make(chan mdclient.PublishResult)
	var calls atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				c.PublishAsync(context.Background(), mdclient.PublishRequest{Result: unread, Message: mdclient.Message{Subject: "u/x"}})
				calls.Add(1)
			}
		}()
	}
	const run = time.Second
	most := 0
	tick := time.NewTicker(10 * time.Millisecond)
	for end := time.Now().Add(run); time.Now().Before(end); <-tick.C {
		most = max(most, c.Stats().Undelivered)
	}
	tick.Stop()
	// 2·WithMaxQueued plus the window, and per publisher one call in a race and one
	// refused result per publish timeout.
	bound := 2*maxQueued + window + publishers*(2+int(run/publishTimeout))
	t.Logf("%d calls; at most %d results waited (bound %d)", calls.Load(), most, bound)
	if most > bound {
		t.Errorf("%d results waited for an unread channel; WithMaxQueued %d and a window of %d allow %d", most, maxQueued, window, bound)
	}
	if most < maxQueued {
		t.Errorf("only %d results waited: the channel was never full", most)
	}
	// Every call has its result, once read; the blocked calls return as results are read.
	close(stop)
	returned := make(chan struct{})
	go func() {
		wg.Wait()
		close(returned)
	}()
	got := 0
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for done := false; !done || int64(got) < calls.Load(); {
		select {
		case <-unread:
			got++
		case <-returned:
			done, returned = true, nil
		case <-deadline.C:
			t.Fatalf("%d results of %d calls", got, calls.Load())
		}
	}
}
