package mdclient_test

// WithHook (contract §11): called for every accepted request on the caller's goroutine,
// its done function exactly once with the result, before the result is delivered; a
// panicking hook costs only its own request.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mdclient/mdclient"
)

type ctxKey struct{}

// hookLog records what a hook saw, per closure.
type hookLog struct {
	mu    sync.Mutex
	calls map[string]int                      // hook calls
	ctx   map[string]any                      // the value under ctxKey in the hook's context
	done  map[string][]mdclient.PublishResult // done calls
}

func newHookLog() *hookLog {
	return &hookLog{calls: map[string]int{}, ctx: map[string]any{}, done: map[string][]mdclient.PublishResult{}}
}

func (l *hookLog) hook(ctx context.Context, m *mdclient.Message) func(mdclient.PublishResult) {
	l.mu.Lock()
	l.calls[m.Closure]++
	l.ctx[m.Closure] = ctx.Value(ctxKey{})
	l.mu.Unlock()
	closure := m.Closure
	return func(r mdclient.PublishResult) {
		l.mu.Lock()
		l.done[closure] = append(l.done[closure], r)
		l.mu.Unlock()
	}
}

func (l *hookLog) doneFor(closure string) []mdclient.PublishResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.done[closure])
}

// TestHookSeesEveryOutcome: each of the outcomes a server gives reaches the done function
// once, the same result as the channel's, before the channel has it.
func TestHookSeesEveryOutcome(t *testing.T) {
	s := embedded(t)
	subscribe(t, s, "hook/#") // else the embedded broker answers "no subscriber"
	s.SetReasonCode("hook/denied", 0x87)
	s.SetReasonCode("hook/none", 0x10)
	s.SetReasonCode("hook/quota", 0x97)
	log := newHookLog()
	c := newClient(t, allowToken, []string{s.TCPAddr()}, mdclient.WithHook(log.hook))
	ctx := context.WithValue(ctxTimeout(t, 10*time.Second), ctxKey{}, "caller")
	subjects := []string{"hook/ok", "hook/denied", "hook/none", "hook/quota"}
	want := []mdclient.Status{mdclient.NotifyPublishOK, mdclient.NotifyPublishDenied, mdclient.NotifyPublishNoSubscriber, mdclient.NotifyPublishFailed}
	const n = 40
	results := make(chan mdclient.PublishResult, n)
	for i := range n {
		c.PublishAsync(ctx, mdclient.PublishRequest{Result: results, Message: mdclient.Message{Subject: subjects[i%4], Content: []byte("x"), Closure: fmt.Sprint(i)}})
	}
	collectEach(t, results, n, 10*time.Second, func(i int, r mdclient.PublishResult) {
		done := log.doneFor(r.Closure)
		if len(done) != 1 {
			t.Fatalf("%s: done called %d times by the time its result came", r.Closure, len(done))
		}
		if done[0] != r {
			t.Errorf("%s: done got %+v, the channel %+v", r.Closure, done[0], r)
		}
		if r.Status != want[i%4] {
			t.Errorf("%s on %s: %s, want %s", r.Closure, subjects[i%4], r.Status, want[i%4])
		}
	})
	log.mu.Lock()
	defer log.mu.Unlock()
	if len(log.calls) != n {
		t.Errorf("hook called for %d requests, want %d", len(log.calls), n)
	}
	for closure, calls := range log.calls {
		if calls != 1 || log.ctx[closure] != "caller" {
			t.Errorf("%s: hook called %d times, context value %v", closure, calls, log.ctx[closure])
		}
	}
}

// TestHookAddsUserProperties: the properties a hook sets travel with the message; the
// caller's slice is left as it was.
func TestHookAddsUserProperties(t *testing.T) {
	s := embedded(t)
	sub := subscribe(t, s, "hook/props")
	c := newClient(t, allowToken, []string{s.TCPAddr()}, mdclient.WithHook(func(_ context.Context, m *mdclient.Message) func(mdclient.PublishResult) {
		m.UserProperties = append(slices.Clip(m.UserProperties), mdclient.UserProperty{Key: "traceparent", Value: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
		return nil
	}))
	mine := make([]mdclient.UserProperty, 1, 4) // room to append into: the hook must not
	mine[0] = mdclient.UserProperty{Key: "k", Value: "v"}
	st, err := c.Publish(ctxTimeout(t, 10*time.Second), mdclient.Message{Subject: "hook/props", Content: []byte("x"), UserProperties: mine})
	if st != mdclient.NotifyPublishOK {
		t.Fatalf("%s %v", st, err)
	}
	if mine[:2][1] != (mdclient.UserProperty{}) {
		t.Errorf("the caller's backing array was written: %v", mine[:2])
	}
	select {
	case m := <-sub.Messages():
		want := []mdclient.UserProperty{{Key: "k", Value: "v"}, {Key: "traceparent", Value: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}
		if !slices.Equal(m.UserProperties, want) {
			t.Errorf("received %v, want %v", m.UserProperties, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing received")
	}
}

// TestHookInvalidProperties: properties a hook makes invalid fail their request, done
// called once with that result.
func TestHookInvalidProperties(t *testing.T) {
	s := embedded(t)
	var done []mdclient.PublishResult
	c := newClient(t, allowToken, []string{s.TCPAddr()}, mdclient.WithHook(func(_ context.Context, m *mdclient.Message) func(mdclient.PublishResult) {
		m.UserProperties = []mdclient.UserProperty{{Key: "bad\x00key", Value: "v"}}
		return func(r mdclient.PublishResult) { done = append(done, r) }
	}))
	st, err := c.Publish(ctxTimeout(t, 10*time.Second), mdclient.Message{Subject: "hook/bad", Content: []byte("x")})
	if st != mdclient.NotifyPublishFailed || !errors.Is(err, mdclient.ErrInvalidMessage) {
		t.Errorf("%s %v, want FAILED wrapping ErrInvalidMessage", st, err)
	}
	if len(done) != 1 || done[0].Status != st {
		t.Errorf("done calls %v", done)
	}
}

// TestHookPanics: a hook that panics fails only its own request; a done function that
// panics loses no result; both are logged.
func TestHookPanics(t *testing.T) {
	s := embedded(t)
	subscribe(t, s, "hook/#") // else the embedded broker answers "no subscriber"
	rec := newLogRecorder()
	c := newClient(t, allowToken, []string{s.TCPAddr()}, mdclient.WithLogger(rec.Logger()),
		mdclient.WithHook(func(_ context.Context, m *mdclient.Message) func(mdclient.PublishResult) {
			switch m.Subject {
			case "hook/panic":
				panic("hook bug")
			case "hook/done-panic":
				return func(mdclient.PublishResult) { panic("done bug") }
			}
			return nil
		}))
	ctx := ctxTimeout(t, 10*time.Second)
	results := make(chan mdclient.PublishResult, 30)
	subjects := []string{"hook/panic", "hook/done-panic", "hook/fine"}
	for i := range 30 {
		c.PublishAsync(ctx, mdclient.PublishRequest{Result: results, Message: mdclient.Message{Subject: subjects[i%3], Content: []byte("x"), Closure: fmt.Sprint(i)}})
	}
	counts := map[mdclient.Status]int{}
	collectEach(t, results, 30, 10*time.Second, func(i int, r mdclient.PublishResult) {
		counts[r.Status]++
		if (i%3 == 0) != (r.Status == mdclient.NotifyPublishFailed && errors.Is(r.Err, mdclient.ErrHookPanicked)) {
			t.Errorf("%s on %s: %s %v", r.Closure, subjects[i%3], r.Status, r.Err)
		}
	})
	if counts[mdclient.NotifyPublishFailed] != 10 || counts[mdclient.NotifyPublishOK] != 20 {
		t.Errorf("results %v, want 10 FAILED (the panicking hook's) and 20 OK", counts)
	}
	errorsLogged := 0
	for _, r := range rec.Records() {
		if r.Level == slog.LevelError && r.Attrs["panic"] != "" {
			errorsLogged++
		}
	}
	if errorsLogged != 20 {
		t.Errorf("%d panics logged at level Error, want 20", errorsLogged)
	}
}

// TestHookRefusedAfterIt: a request the client refuses after its hook ran (its context
// ended while the queue was full) still gets done once; those refused before (their
// context had ended already) never reached the hook.
func TestHookRefusedAfterIt(t *testing.T) {
	s := embedded(t)
	subscribe(t, s, "hook/#") // else the embedded broker answers "no subscriber"
	log := newHookLog()
	c := newClient(t, allowToken, []string{s.TCPAddr()}, mdclient.WithHook(log.hook), mdclient.WithMaxQueued(1), mdclient.WithMaxInflight(1))
	if st, err := c.Publish(ctxTimeout(t, 10*time.Second), mdclient.Message{Subject: "hook/first", Content: []byte("x")}); st != mdclient.NotifyPublishOK {
		t.Fatalf("%s %v", st, err)
	}
	s.Pause()
	defer s.Resume()
	results := make(chan mdclient.PublishResult, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	for i := range 8 { // one in flight, one queued, one waiting for room until ctx ends
		c.PublishAsync(ctx, mdclient.PublishRequest{Result: results, Message: mdclient.Message{Subject: "hook/held", Content: []byte("x"), Closure: fmt.Sprint(i)}})
	}
	s.Resume()
	refusedAfter := 0
	collectEach(t, results, 8, 10*time.Second, func(_ int, r mdclient.PublishResult) {
		done := log.doneFor(r.Closure)
		log.mu.Lock()
		calls := log.calls[r.Closure]
		log.mu.Unlock()
		if calls != len(done) || calls > 1 || calls == 1 && done[0] != r {
			t.Errorf("%s: result %s %v; hook calls %d, done calls %v", r.Closure, r.Status, r.Err, calls, done)
		}
		if calls == 1 && r.Status == mdclient.NotifyPublishFailed {
			refusedAfter++
		}
	})
	if refusedAfter == 0 {
		t.Error("no request was refused after its hook ran")
	}
}

// TestChainedHooks: hooks run in order, their done functions in reverse, each once —
// also the earlier ones' when a later hook panics; a hook's change to anything but the
// user properties is not taken.
func TestChainedHooks(t *testing.T) {
	s := embedded(t)
	sub := subscribe(t, s, "chain/#")
	var mu sync.Mutex
	var trail []string
	note := func(s string) {
		mu.Lock()
		trail = append(trail, s)
		mu.Unlock()
	}
	named := func(name string) mdclient.Hook {
		return func(_ context.Context, m *mdclient.Message) func(mdclient.PublishResult) {
			note(name)
			if name == "b" {
				m.Subject = "chain/elsewhere" // not taken
				m.UserProperties = append(slices.Clip(m.UserProperties), mdclient.UserProperty{Key: "by", Value: name})
			}
			if name == "c" && m.Closure == "panic" {
				panic("c fails")
			}
			return func(r mdclient.PublishResult) { note(name + " done " + shortStatus(r.Status)) }
		}
	}
	c := newClient(t, allowToken, []string{s.TCPAddr()}, mdclient.WithLogger(newLogRecorder().Logger()),
		mdclient.WithHook(named("a")), mdclient.WithHook(nil), mdclient.WithHook(named("b")), mdclient.WithHook(named("c")))
	ctx := ctxTimeout(t, 10*time.Second)
	if st, err := c.Publish(ctx, mdclient.Message{Subject: "chain/here", Closure: "fine"}); st != mdclient.NotifyPublishOK {
		t.Fatalf("%s %v", st, err)
	}
	select {
	case m := <-sub.Messages():
		if m.Topic != "chain/here" || len(m.UserProperties) != 1 || m.UserProperties[0].Value != "b" {
			t.Errorf("received %s %v, want chain/here with by=b", m.Topic, m.UserProperties)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing received")
	}
	mu.Lock()
	got := slices.Clone(trail)
	trail = nil
	mu.Unlock()
	if want := []string{"a", "b", "c", "c done OK", "b done OK", "a done OK"}; !slices.Equal(got, want) {
		t.Errorf("trail %q, want %q", got, want)
	}
	st, err := c.Publish(ctx, mdclient.Message{Subject: "chain/here", Closure: "panic"})
	if st != mdclient.NotifyPublishFailed || !errors.Is(err, mdclient.ErrHookPanicked) {
		t.Errorf("%s %v, want FAILED wrapping ErrHookPanicked", st, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"a", "b", "c", "b done FAILED", "a done FAILED"}; !slices.Equal(trail, want) {
		t.Errorf("trail %q, want %q", trail, want)
	}
}

// TestDonePublishesDuringClose: a done function that publishes again (a retry) while
// Close drains is not held up — it runs on the engine's goroutine, which Close waits for
// (found by the seventh outside tester: each such call stalled the engine until Close's
// own bound, and Close overran it).
func TestDonePublishesDuringClose(t *testing.T) {
	srv := embedded(t)
	srv.DropAcks("#", true) // the drain runs its whole timeout, then ends the message
	retried := make(chan time.Duration, 1)
	var c *mdclient.Client
	hook := func(ctx context.Context, m *mdclient.Message) func(mdclient.PublishResult) {
		if m.Subject != "first" {
			return nil
		}
		return func(r mdclient.PublishResult) {
			t0 := time.Now()
			res := c.PublishAsync(context.Background(), mdclient.PublishRequest{Message: mdclient.Message{Subject: "retry"}})
			retried <- time.Since(t0)
			go func() { <-res }()
		}
	}
	c = openClient(t, allowToken, []string{srv.TCPAddr()}, mdclient.WithHook(hook), mdclient.WithDrainTimeout(time.Second))
	awaitEvent(t, c, mdclient.NotifyServerUp, "", 10*time.Second)
	first := c.PublishAsync(context.Background(), mdclient.PublishRequest{Message: mdclient.Message{Subject: "first"}})
	if !eventually(5*time.Second, func() bool { return c.Stats().InFlight == 1 }) {
		t.Fatalf("never in flight: %+v", c.Stats())
	}
	took, ok := closeWithin(t, c, 2*time.Second, func() {})
	if !ok {
		t.Errorf("Close took longer than the drain timeout plus 1 s")
	}
	if d := <-retried; d > 300*time.Millisecond {
		t.Errorf("the done function's PublishAsync took %v during Close", d)
	}
	if r := <-first; r.Status != mdclient.NotifyPublishTimeout {
		t.Errorf("the held message: %s %v", r.Status, r.Err)
	}
	t.Logf("Close took %v", took)
}
