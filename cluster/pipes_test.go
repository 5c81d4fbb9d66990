package cluster

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mdclient/mdclient/conn"
	"github.com/mdclient/mdclient/internal/mqttpeer"
)

// world is a set of servers the cluster actor dials over net.Pipe, each served by a
// scripted MQTT peer, which a test can bring down (refusing new connections) and whose
// live connection it can cut. Everything runs in a synctest bubble.
type world struct {
	mu       sync.Mutex
	down     map[string]bool     // refuses connections
	hole     map[string]bool     // accepts and never answers (the dial waits for its context)
	flaky    map[string]bool     // drops every connection right after its CONNACK
	live     map[string]net.Conn // the server end of the latest connection
	attempts []attempt
	notes    []string // Notify calls: "up s" / "down s"
}

type attempt struct {
	server   string
	at       time.Time
	clientID string
}

func newWorld() *world {
	return &world{down: map[string]bool{}, hole: map[string]bool{}, flaky: map[string]bool{}, live: map[string]net.Conn{}}
}

func (w *world) dial(ctx context.Context, ep conn.Endpoint, cfg *conn.Config) (*conn.Conn, error) {
	name := ep.String()
	w.mu.Lock()
	w.attempts = append(w.attempts, attempt{name, time.Now(), cfg.ClientID})
	down, hole := w.down[name], w.hole[name]
	w.mu.Unlock()
	switch {
	case down:
		return nil, errors.New("connection refused")
	case hole:
		<-ctx.Done()
		return nil, ctx.Err()
	}
	client, server := net.Pipe()
	go (&mqttpeer.Peer{Connack: mqttpeer.Connack(10)}).Serve(server)
	w.mu.Lock()
	w.live[name] = server
	flaky := w.flaky[name]
	w.mu.Unlock()
	cn, err := conn.Open(ctx, client, cfg)
	if flaky {
		server.Close()
	}
	return cn, err
}

// kill cuts the live connection to name and refuses new ones.
func (w *world) kill(name string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.down[name] = true
	if c := w.live[name]; c != nil {
		c.Close()
	}
}

func (w *world) revive(name string) {
	w.mu.Lock()
	w.down[name] = false
	w.mu.Unlock()
}

func (w *world) tried() []attempt {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.attempts)
}

func (w *world) notify(up bool, server string, _ error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if up {
		w.notes = append(w.notes, "up "+server)
	} else {
		w.notes = append(w.notes, "down "+server)
	}
}

// inUse is the server of the latest "up" note.
func (w *world) inUse() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := len(w.notes) - 1; i >= 0; i-- {
		if s, ok := strings.CutPrefix(w.notes[i], "up "); ok {
			return s
		}
	}
	return ""
}

// runActor starts the actor on w with policy and servers, and a stand-in for the engine
// that reads its events; stop ends both.
func runActor(t *testing.T, w *world, policy Policy, servers ...string) (c *Cluster, stop func()) {
	t.Helper()
	return runConfig(t, w, Config{Policy: policy}, servers...)
}

// runSlots is runActor with several connection slots, client id "pub".
func runSlots(t *testing.T, w *world, slots int, servers ...string) (stop func()) {
	t.Helper()
	_, stop = runConfig(t, w, Config{Policy: quickPolicy, Slots: slots,
		Conn: func(context.Context) (*conn.Config, error) { return &conn.Config{ClientID: "pub"}, nil }}, servers...)
	return stop
}

// runConfig is runActor with cfg's Policy, Slots and Conn.
func runConfig(t *testing.T, w *world, cfg Config, servers ...string) (c *Cluster, stop func()) {
	t.Helper()
	events := make(chan conn.Event)
	quit := make(chan struct{})
	if cfg.Conn == nil {
		cfg.Conn = func(context.Context) (*conn.Config, error) { return &conn.Config{}, nil }
	}
	cfg.Events, cfg.Quit, cfg.Notify, cfg.Dial = events, quit, w.notify, w.dial
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.Rand = rand.New(rand.NewPCG(1, 2))
	c = New(cfg)
	list, err := ParseList(servers)
	if err != nil {
		t.Fatal(err)
	}
	c.SetServers(list)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		c.Run(ctx)
	}()
	go func() {
		for {
			select {
			case ev := <-events:
				if ev.Taken != nil { // the engine's part: it has the connection
					close(ev.Taken)
				}
			case <-quit:
				return
			}
		}
	}()
	return c, func() {
		cancel()
		<-ran
		close(quit)
	}
}

var quickPolicy = Policy{QuickMaxRetries: 3, Backoff: TruncatedExponential, Interval: 500 * time.Millisecond, MaxDelay: 10 * time.Second}

// TestSetServersAbandonsADial: a new list abandons the attempt still dialing (a server
// that accepts and never answers), and the next attempt goes to the new list at once.
func TestSetServersAbandonsADial(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld()
		w.hole["tcp://hole:1"] = true
		c, stop := runActor(t, w, quickPolicy, "tcp://hole:1")
		defer stop()
		time.Sleep(100 * time.Millisecond)
		good, _ := ParseList([]string{"tcp://good:1"})
		c.SetServers(good)
		synctest.Wait()
		got := w.tried()
		if len(got) != 2 || got[1].server != "tcp://good:1" || !got[1].at.Equal(got[0].at.Add(100*time.Millisecond)) {
			t.Fatalf("attempts %+v, want the hole, then the new list 100ms later", got)
		}
		if s := w.inUse(); s != "tcp://good:1" {
			t.Fatalf("in use: %q", s)
		}
	})
}

// TestFailoverGoesToTheServerThatDidNotFail: after the server in use dies, and the next
// one dies soon after (while the first is still down), the third is tried at once, not
// the first again; with the dead ones back, a later failover reaches one of them at once.
func TestFailoverGoesToTheServerThatDidNotFail(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld()
		servers := []string{"tcp://a:1", "tcp://b:1", "tcp://c:1"}
		_, stop := runActor(t, w, quickPolicy, servers...)
		defer stop()
		synctest.Wait()
		first := w.inUse()
		time.Sleep(5 * time.Second)
		w.kill(first)
		synctest.Wait()
		second := w.inUse()
		time.Sleep(100 * time.Millisecond) // a young connection
		killed := time.Now()
		w.kill(second)
		synctest.Wait()
		third := w.inUse()
		if third == first || third == second {
			t.Fatalf("after killing %s then %s, in use: %s", first, second, third)
		}
		for _, a := range w.tried() {
			if a.at.After(killed) && a.server != third {
				t.Errorf("tried %s (dead) at +%v before the live one", a.server, a.at.Sub(killed))
			}
			if a.at.After(killed) && !a.at.Equal(killed) {
				t.Errorf("an attempt waited %v after the kill", a.at.Sub(killed))
			}
		}
		w.revive(first)
		w.revive(second)
		time.Sleep(5 * time.Second)
		killed = time.Now()
		w.kill(third)
		synctest.Wait()
		if s := w.inUse(); s == third || time.Since(killed) != 0 {
			t.Errorf("in use after the third kill: %s, %v later", s, time.Since(killed))
		}
	})
}

// TestConnectionsThatDieYoungBackOff: a server that accepts and drops the connection at
// once is not reconnected to in a tight loop: each death is a failed round.
func TestConnectionsThatDieYoungBackOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld()
		w.flaky["tcp://a:1"] = true
		_, stop := runActor(t, w, quickPolicy, "tcp://a:1")
		defer stop()
		time.Sleep(10 * time.Second)
		got := w.tried()
		start := got[0].at
		var offsets []time.Duration
		for _, a := range got {
			offsets = append(offsets, a.at.Sub(start).Round(time.Millisecond))
		}
		// Rounds 0–2 quick (no delay), then 250–500 ms, 500 ms–1 s, 1–2 s, 2–4 s, ...: in
		// 10 s at most 3 + 5 attempts.
		if len(got) > 9 || len(got) < 5 || got[3].at.Sub(got[2].at) < 250*time.Millisecond {
			t.Errorf("attempts at %v: want the backoff after the quick rounds", offsets)
		}
	})
}

// up is the servers connected now, from the notes.
func (w *world) up() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := map[string]int{}
	for _, note := range w.notes {
		if s, ok := strings.CutPrefix(note, "up "); ok {
			n[s]++
		} else if s, ok := strings.CutPrefix(note, "down "); ok && n[s] > 0 {
			if n[s]--; n[s] == 0 {
				delete(n, s)
			}
		}
	}
	return n
}

// TestSlotsSpreadOverServers: connection slots go to different servers while the list has
// enough, else share; a slot whose server dies moves to one the others do not hold.
func TestSlotsSpreadOverServers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld()
		stop := runSlots(t, w, 3, "tcp://a:1", "tcp://b:1", "tcp://c:1", "tcp://d:1")
		defer stop()
		synctest.Wait()
		up := w.up()
		if len(up) != 3 {
			t.Fatalf("3 slots over 4 servers: %v", up)
		}
		for s, n := range up {
			if n != 1 {
				t.Errorf("%s holds %d slots", s, n)
			}
			w.kill(s) // then another server: the one no slot holds
			synctest.Wait()
			break
		}
		if up := w.up(); len(up) != 3 {
			t.Errorf("after a kill: %v, want 3 servers", up)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		w := newWorld()
		stop := runSlots(t, w, 3, "tcp://a:1", "tcp://b:1")
		defer stop()
		synctest.Wait()
		up := w.up()
		if len(up) != 2 || up["tcp://a:1"]+up["tcp://b:1"] != 3 {
			t.Errorf("3 slots over 2 servers: %v", up)
		}
		// A standby is no spare room: both slots share the weighted server.
		w2 := newWorld()
		stop2 := runSlots(t, w2, 2, "100 tcp://a:1", "0 tcp://b:1")
		defer stop2()
		synctest.Wait()
		if up := w2.up(); up["tcp://a:1"] != 2 || len(up) != 1 {
			t.Errorf("2 slots over a weighted server and a standby: %v, want both on the weighted one", up)
		}
		// Two connections to one broker with one client id would take each other over.
		ids := map[string]bool{}
		w.mu.Lock()
		for _, a := range w.attempts {
			ids[a.clientID] = true
		}
		w.mu.Unlock()
		if len(ids) != 3 || !ids["pub-0"] || !ids["pub-1"] || !ids["pub-2"] {
			t.Errorf("client ids %v, want pub-0, pub-1, pub-2", ids)
		}
	})
}
