package mdclient_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mdclient/mdclient"
)

func TestEmbeddedOutcomes(t *testing.T) {
	srv := embedded(t)
	sub := subscribe(t, srv, "sport/#")
	transports(t, srv.WSAddr(), srv.TCPAddr(), func(t *testing.T, addr string) {
		c := newClient(t, allowToken, []string{addr})
		ctx := ctxTimeout(t, 10*time.Second)

		content := []byte("goal \x00\xff binary")
		st, err := c.Publish(ctx, mdclient.Message{Subject: "sport/football", Content: content, Closure: "k1"})
		wantStatus(t, st, err, mdclient.NotifyPublishOK, nil)
		select {
		case got := <-sub.Messages():
			if got.Topic != "sport/football" || !bytes.Equal(got.Payload, content) {
				t.Fatalf("subscriber got %q %q, want %q %q", got.Topic, got.Payload, "sport/football", content)
			}
		case <-ctx.Done():
			t.Fatal("subscriber received nothing")
		}

		st, err = c.Publish(ctx, mdclient.Message{Subject: "weather/today", Content: []byte("sun")})
		wantStatus(t, st, err, mdclient.NotifyPublishNoSubscriber, mdclient.ErrNoSubscriber)

		// The closure comes back on the result, and travels as correlation data with a reply subject.
		res := <-c.PublishAsync(ctx, mdclient.PublishRequest{Message: mdclient.Message{
			Subject: "sport/tennis", Content: []byte("ace"), Closure: "c-42", ReplySubject: "replies/me"}})
		if res.Status != mdclient.NotifyPublishOK || res.Closure != "c-42" || res.Server != addr {
			t.Fatalf("result %+v, want OK with closure c-42 from %s", res, addr)
		}
		select {
		case got := <-sub.Messages():
			if got.ResponseTopic != "replies/me" || string(got.CorrelationData) != "c-42" {
				t.Fatalf("subscriber got response topic %q correlation %q", got.ResponseTopic, got.CorrelationData)
			}
		case <-ctx.Done():
			t.Fatal("subscriber received nothing")
		}

		denied := newClient(t, "wrong-token", []string{addr})
		st, err = denied.Publish(ctx, mdclient.Message{Subject: "sport/football", Content: []byte("x")})
		wantStatus(t, st, err, mdclient.NotifyPublishDenied, mdclient.ErrDenied)

		// A QoSStandard message is acknowledged like any other.
		st, err = c.Publish(ctx, mdclient.Message{Subject: "sport/golf", Content: []byte("birdie"), QoS: mdclient.QoSStandard})
		wantStatus(t, st, err, mdclient.NotifyPublishOK, nil)
		<-sub.Messages()
	})
}

func TestTokenInUsername(t *testing.T) {
	srv := embedded(t)
	c := newClient(t, allowToken, []string{srv.TCPAddr()}, mdclient.WithTokenInUsername())
	st, err := c.Publish(ctxTimeout(t, 10*time.Second), mdclient.Message{Subject: "a/b", Content: []byte("x")})
	wantStatus(t, st, err, mdclient.NotifyPublishNoSubscriber, mdclient.ErrNoSubscriber)
}

// TestSharedChannel sends 20 000 requests through one result channel and checks that each
// closure comes back exactly once.
func TestSharedChannel(t *testing.T) {
	srv := embedded(t)
	subscribe(t, srv, "stream/#")
	c := newClient(t, allowToken, []string{srv.WSAddr()})
	const n = 20000
	results := make(chan mdclient.PublishResult, 64)
	const limit = 60 * time.Second
	ctx := ctxTimeout(t, limit)
	go func() {
		for i := range n {
			c.PublishAsync(ctx, mdclient.PublishRequest{
				Message: mdclient.Message{Subject: "stream/x", Content: []byte("payload"), Closure: fmt.Sprint(i)},
				Result:  results,
			})
		}
	}()
	collectEach(t, results, n, limit, func(i int, r mdclient.PublishResult) {
		if r.Status != mdclient.NotifyPublishOK {
			t.Fatalf("closure %d: %s %v", i, r.Status, r.Err)
		}
	})
	noMore(t, results)
}

func TestBadInput(t *testing.T) {
	srv := embedded(t)
	c := newClient(t, allowToken, []string{srv.TCPAddr()})
	ctx := ctxTimeout(t, 10*time.Second)
	for _, subject := range []string{"", "a/+", "a/#", "#", "a\x00b", "bad\xffutf8"} {
		st, err := c.Publish(ctx, mdclient.Message{Subject: subject, Content: []byte("x")})
		wantStatus(t, st, err, mdclient.NotifyPublishFailed, mdclient.ErrInvalidMessage)
		if !errors.Is(err, mdclient.ErrFailed) {
			t.Errorf("subject %q: %v does not wrap ErrFailed", subject, err)
		}
	}
	st, err := c.Publish(ctx, mdclient.Message{Subject: "a/b", QoS: 7})
	wantStatus(t, st, err, mdclient.NotifyPublishFailed, mdclient.ErrInvalidMessage)
	st, err = c.Publish(ctx, mdclient.Message{Subject: "a/b", ReplySubject: "r/#"})
	wantStatus(t, st, err, mdclient.NotifyPublishFailed, mdclient.ErrInvalidMessage)

	// The client keeps working after bad input.
	st, err = c.Publish(ctx, mdclient.Message{Subject: "a/b", Content: []byte("x")})
	wantStatus(t, st, err, mdclient.NotifyPublishNoSubscriber, mdclient.ErrNoSubscriber)

	if err := c.SetServers([]string{"tcp://nowhere:x"}); !errors.Is(err, mdclient.ErrInvalidServer) || !strings.Contains(err.Error(), "tcp://nowhere:x") {
		t.Errorf("SetServers with a bad entry: %v, want ErrInvalidServer naming it", err)
	}
	// Nothing changed: still connected to the embedded broker.
	st, err = c.Publish(ctx, mdclient.Message{Subject: "a/b", Content: []byte("x")})
	wantStatus(t, st, err, mdclient.NotifyPublishNoSubscriber, mdclient.ErrNoSubscriber)
}

func TestNoServers(t *testing.T) {
	c := mdclient.NewClient()
	defer c.Close()
	st, err := c.Publish(context.Background(), mdclient.Message{Subject: "a/b"})
	wantStatus(t, st, err, mdclient.NotifyPublishFailed, mdclient.ErrNoServers)
	if err := c.SetServers(nil); !errors.Is(err, mdclient.ErrNoServers) {
		t.Errorf("SetServers(nil) = %v, want ErrNoServers", err)
	}
}

// TestUnreachable: with no server answering, a publish fails once its context ends, and
// says both why (timeout) and that no server was there.
func TestUnreachable(t *testing.T) {
	c := newClient(t, allowToken, []string{"tcp://127.0.0.1:1"}, mdclient.WithReconnectTimeInterval(10*time.Millisecond))
	st, err := c.Publish(ctxTimeout(t, 200*time.Millisecond), mdclient.Message{Subject: "a/b"})
	wantStatus(t, st, err, mdclient.NotifyPublishFailed, mdclient.ErrTimeout)
	if !errors.Is(err, mdclient.ErrNoServers) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("%v: want ErrNoServers and context.DeadlineExceeded wrapped too", err)
	}
	// Without a deadline the publish timeout applies.
	c2 := newClient(t, allowToken, []string{"tcp://127.0.0.1:1"}, mdclient.WithPublishTimeout(100*time.Millisecond))
	st, err = c2.Publish(context.Background(), mdclient.Message{Subject: "a/b"})
	wantStatus(t, st, err, mdclient.NotifyPublishFailed, mdclient.ErrTimeout)
}

func TestPublishAfterClose(t *testing.T) {
	srv := embedded(t)
	c := openClient(t, allowToken, []string{srv.TCPAddr()})
	ctx := ctxTimeout(t, 10*time.Second)
	st, err := c.Publish(ctx, mdclient.Message{Subject: "a/b"})
	wantStatus(t, st, err, mdclient.NotifyPublishNoSubscriber, mdclient.ErrNoSubscriber)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	st, err = c.Publish(ctx, mdclient.Message{Subject: "a/b"})
	wantStatus(t, st, err, mdclient.NotifyPublishFailed, mdclient.ErrClosed)
	if err := c.SetServers([]string{srv.TCPAddr()}); !errors.Is(err, mdclient.ErrClosed) {
		t.Errorf("SetServers after Close = %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestCloseUnderLoad: Close while requests stream in gives every request one result.
func TestCloseUnderLoad(t *testing.T) {
	srv := embedded(t)
	c := openClient(t, allowToken, []string{srv.WSAddr()})
	const n = 5000
	results := make(chan mdclient.PublishResult, n)
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := range n {
			c.PublishAsync(context.Background(), mdclient.PublishRequest{
				Message: mdclient.Message{Subject: "load/x", Content: []byte("x"), Closure: fmt.Sprint(i)}, Result: results})
		}
	}()
	// Close once some results are in, while the rest are still being sent.
	first := <-results
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	<-sent
	counts := map[mdclient.Status]int{}
	collectEach(t, results, n, 10*time.Second, func(_ int, r mdclient.PublishResult) {
		counts[r.Status]++
		if r.Status == mdclient.NotifyPublishFailed && !errors.Is(r.Err, mdclient.ErrClosed) {
			t.Fatalf("failed without ErrClosed: %v", r.Err)
		}
	}, first)
	noMore(t, results)
	t.Logf("outcomes: %v", counts)
}

func TestEventsUpDown(t *testing.T) {
	srv := embedded(t)
	c := newClient(t, allowToken, []string{"tcp://127.0.0.1:1", srv.TCPAddr()})
	ctx := ctxTimeout(t, 10*time.Second)
	for {
		select {
		case ev := <-c.Events():
			if ev.Type == mdclient.NotifyServerUp {
				if ev.Server != srv.TCPAddr() {
					t.Fatalf("up event for %s", ev.Server)
				}
				// An Up event is news the Stats already tell.
				if st := c.Stats(); st.Server != ev.Server || len(st.Servers) != 1 {
					t.Errorf("after the Up event, Stats say server %q, servers %v", st.Server, st.Servers)
				}
				return
			}
			if ev.Type != mdclient.NotifyServerDown || ev.Server != "tcp://127.0.0.1:1" || ev.Err == nil {
				t.Fatalf("unexpected event %+v", ev)
			}
		case <-ctx.Done():
			t.Fatal("no NOTIFY_SERVER_UP")
		}
	}
}

func TestStats(t *testing.T) {
	srv := embedded(t)
	c := newClient(t, allowToken, []string{srv.TCPAddr()})
	if st := mdclient.NewClient().Stats(); !reflect.DeepEqual(st, mdclient.Stats{}) {
		t.Errorf("a new client's stats: %+v", st)
	}
	ctx := ctxTimeout(t, 10*time.Second)
	for range 3 {
		c.Publish(ctx, mdclient.Message{Subject: "stats/x", Content: []byte("12345")})
	}
	c.Publish(ctx, mdclient.Message{Subject: "bad/#"})
	st := c.Stats()
	want := mdclient.Stats{Accepted: 3, NoSubscriber: 3, Failed: 1, Server: srv.TCPAddr(), Servers: []string{srv.TCPAddr()}, BytesWritten: st.BytesWritten}
	if !reflect.DeepEqual(st, want) {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	// 3 PUBLISH packets of 2+1+2+7 (topic) +2 (id) +1 (no properties) +5 (content).
	if st.BytesWritten < 3*19 {
		t.Errorf("%d bytes written for three publishes", st.BytesWritten)
	}
}

// TestSetServersMoves: a server dropped from the list is left at once, gracefully, and
// publishing continues on the new list.
func TestSetServersMoves(t *testing.T) {
	a, b := embedded(t), embedded(t)
	c := newClient(t, allowToken, []string{a.TCPAddr()})
	ctx := ctxTimeout(t, 10*time.Second)
	res := <-c.PublishAsync(ctx, mdclient.PublishRequest{Message: mdclient.Message{Subject: "move/x"}})
	if res.Server != a.TCPAddr() {
		t.Fatalf("answered by %q, want %s", res.Server, a.TCPAddr())
	}
	if err := c.SetServers([]string{b.WSAddr()}); err != nil {
		t.Fatal(err)
	}
	for {
		res := <-c.PublishAsync(ctx, mdclient.PublishRequest{Message: mdclient.Message{Subject: "move/x"}})
		if res.Status != mdclient.NotifyPublishNoSubscriber {
			t.Fatalf("%s %v", res.Status, res.Err)
		}
		if res.Server == b.WSAddr() {
			break // moved
		}
		if ctx.Err() != nil {
			t.Fatal("still publishing to the server removed from the list")
		}
	}
	if st := c.Stats(); st.Server != b.WSAddr() || st.Reconnects != 1 {
		t.Errorf("stats after the move: %+v", st)
	}
}

// TestCloseDrains: requests handed over before Close get their real outcome, not
// ErrClosed, when the server answers within the drain timeout.
func TestCloseDrains(t *testing.T) {
	srv := embedded(t)
	for range 10 {
		c := openClient(t, allowToken, []string{srv.TCPAddr()})
		const n = 300
		results := make(chan mdclient.PublishResult, n)
		for range n {
			c.PublishAsync(context.Background(), mdclient.PublishRequest{Message: mdclient.Message{Subject: "drain/x"}, Result: results})
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		for range n {
			if r := <-results; r.Status != mdclient.NotifyPublishNoSubscriber {
				t.Fatalf("a request handed over before Close: %s %v", r.Status, r.Err)
			}
		}
	}
}

// TestStatsAfterClose: once closed, the client has no server and nothing in flight, also
// when a timed-out publish held a packet identifier (found by the outside tester: Stats
// kept InFlight 1 and the server after Close).
func TestStatsAfterClose(t *testing.T) {
	srv := embedded(t)
	srv.DropAcks("held/#", true)
	c := openClient(t, allowToken, []string{srv.TCPAddr()})
	if st, err := c.Publish(ctxTimeout(t, 100*time.Millisecond), mdclient.Message{Subject: "held/x"}); st != mdclient.NotifyPublishTimeout {
		t.Fatalf("%s %v, want TIMEOUT", st, err)
	}
	if st := c.Stats(); st.InFlight != 1 || st.Server == "" {
		t.Fatalf("before Close: %+v, want the held identifier in flight and a server", st)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.InFlight != 0 || st.Queued != 0 || st.Server != "" || len(st.Servers) != 0 || st.Timeout != 1 {
		t.Errorf("after Close: %+v, want nothing in flight, no server, the one TIMEOUT counted", st)
	}
}
