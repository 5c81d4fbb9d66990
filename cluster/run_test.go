package cluster

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mdclient/mdclient/conn"
)

// TestReconnectSchedule runs the actor against servers that never answer, in virtual
// time, and checks that the attempts follow the policy's formula exactly, in rounds of one
// attempt per server, and that a server is reported down after NotifyAfter failures.
func TestReconnectSchedule(t *testing.T) {
	for _, backoff := range []Backoff{TruncatedExponential, ConstantWindow} {
		synctest.Test(t, func(t *testing.T) {
			policy := Policy{QuickMaxRetries: 3, QuickDelay: 50 * time.Millisecond, Backoff: backoff,
				Interval: 200 * time.Millisecond, MaxDelay: 2 * time.Second}
			const attempts = 12
			var at []time.Time
			allTried := make(chan struct{})
			refused := errors.New("connection refused")
			type note struct {
				up     bool
				server string
			}
			var notes []note
			events := make(chan conn.Event)
			quit := make(chan struct{})
			c := New(Config{
				Policy:      policy,
				NotifyAfter: 2,
				Conn:        func(context.Context) (*conn.Config, error) { return &conn.Config{}, nil },
				Events:      events,
				Quit:        quit,
				Notify:      func(up bool, s string, err error) { notes = append(notes, note{up, s}) },
				Logger:      slog.New(slog.DiscardHandler),
				Rand:        rand.New(rand.NewPCG(7, 7)),
				Dial: func(ctx context.Context, ep conn.Endpoint, _ *conn.Config) (*conn.Conn, error) {
					at = append(at, time.Now())
					if len(at) == attempts {
						close(allTried)
					}
					return nil, refused
				},
			})
			servers, err := ParseList([]string{"tcp://a:1", "tcp://b:1"})
			if err != nil {
				t.Fatal(err)
			}
			c.SetServers(servers)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error)
			start := time.Now()
			go func() { done <- c.Run(ctx) }()
			<-allTried
			cancel()
			<-done

			// The same draws the actor made: one per delay, from a source seeded alike.
			rnd := rand.New(rand.NewPCG(7, 7))
			want := start
			for n := range attempts {
				if n%2 == 0 && n > 0 { // a round: one attempt per server, the second at once; a new list goes at once
					want = want.Add(policy.Delay(n/2, rnd))
				}
				if n == 0 {
					rnd.IntN(200) // pick's draw: both servers' weights
				} else {
					rnd.IntN(100) // pick's draw: the server not tried last
				}
				if !at[n].Equal(want) {
					t.Fatalf("backoff %d: attempt %d at +%v, want +%v", backoff, n, at[n].Sub(start), want.Sub(start))
				}
			}
			// Alternating between two servers, each is reported down once, on its second failure.
			if len(notes) != 2 || notes[0].up || notes[1].up || notes[0].server == notes[1].server {
				t.Errorf("notifications %+v, want one down for each server", notes)
			}
		})
	}
}

// TestAllRefused: the engine hears that the credentials were refused only once every
// server has refused them.
func TestAllRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex // the actor dials while the test changes the answers
		refusals := map[string]bool{"tcp://a:1": true, "tcp://b:1": false}
		tried := 0
		events := make(chan conn.Event)
		quit := make(chan struct{})
		c := New(Config{
			Policy: Policy{QuickMaxRetries: 10, QuickDelay: 10 * time.Millisecond, Interval: 10 * time.Millisecond, MaxDelay: 10 * time.Millisecond},
			Conn:   func(context.Context) (*conn.Config, error) { return &conn.Config{}, nil },
			Events: events,
			Quit:   quit,
			Notify: func(bool, string, error) {},
			Logger: slog.New(slog.DiscardHandler),
			Dial: func(ctx context.Context, ep conn.Endpoint, _ *conn.Config) (*conn.Conn, error) {
				mu.Lock()
				defer mu.Unlock()
				tried++
				if refusals[ep.String()] {
					return nil, &conn.RefusedError{Code: 0x87}
				}
				return nil, errors.New("unreachable")
			},
		})
		servers, _ := ParseList([]string{"tcp://a:1", "tcp://b:1"})
		c.SetServers(servers)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error)
		go func() { done <- c.Run(ctx) }()
		// One server refuses, the other is unreachable: no verdict, however long we wait.
		synctest.Wait()
		time.Sleep(time.Second) // virtual time: ~100 attempts
		synctest.Wait()
		select {
		case ev := <-events:
			t.Fatalf("event %+v while a server had not refused", ev)
		default:
		}
		// Now both refuse: the engine is told.
		mu.Lock()
		refusals["tcp://b:1"] = true
		mu.Unlock()
		ev := <-events
		var refused *conn.RefusedError
		if !errors.As(ev.Refused, &refused) {
			t.Fatalf("event %+v, want Refused", ev)
		}
		mu.Lock()
		if tried < 10 {
			t.Errorf("only %d attempts before the verdict", tried)
		}
		mu.Unlock()
		cancel()
		<-done
	})
}
