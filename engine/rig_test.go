package engine

import (
	"context"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mdclient/mdclient/codec"
	"github.com/mdclient/mdclient/conn"
	"github.com/mdclient/mdclient/internal/mqttpeer"
)

// This file is the engine's test rig: the engine with its Complete recorded, and a
// scripted MQTT 5 server (internal/mqttpeer) on the far end of a net.Pipe for each
// connection, all inside a testing/synctest bubble.

// rig is an engine under test with every Complete recorded.
type rig struct {
	t      *testing.T
	e      *Engine
	ran    chan error
	closed bool
	mu     sync.Mutex
	done   map[*Request]int // Complete calls per request
	seq    []*Request       // in completion order
	freed  map[*Request]int // Release calls per request
}

func newRig(t *testing.T, cfg Config) *rig {
	t.Helper()
	r := &rig{t: t, ran: make(chan error, 1), done: map[*Request]int{}, freed: map[*Request]int{}}
	if cfg.MaxQueued == 0 {
		cfg.MaxQueued = 1000
	}
	if cfg.PublishTimeout == 0 {
		cfg.PublishTimeout = 10 * time.Second
	}
	cfg.Complete = func(reqs []*Request) {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, q := range reqs {
			r.done[q]++
			r.seq = append(r.seq, q)
			if r.freed[q] > 0 {
				t.Errorf("request %q completed after its release", q.Packet.Payload)
			}
		}
	}
	cfg.Release = func(q *Request) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.freed[q]++
		if r.done[q] == 0 {
			t.Errorf("request %q released before its outcome", q.Packet.Payload)
		}
	}
	r.e = New(cfg)
	go func() { r.ran <- r.e.Run() }()
	t.Cleanup(func() { r.close(0) }) // so that a failed test still ends its goroutines
	return r
}

// connect opens a connection to p over a pipe and hands it to the engine, as the cluster
// actor does.
func (r *rig) connect(p *mqttpeer.Peer) *conn.Conn { return r.connectLane(p, 0) }

// connectLane is connect for one of the engine's lanes.
func (r *rig) connectLane(p *mqttpeer.Peer, lane int) *conn.Conn {
	r.t.Helper()
	client, server := net.Pipe()
	go p.Serve(server)
	cn, err := conn.Open(context.Background(), client, &conn.Config{ClientID: "rig"})
	if err != nil {
		r.t.Fatalf("Open: %v", err)
	}
	r.e.Events() <- conn.Event{Conn: cn, Up: true, Lane: lane}
	cn.Start(r.e.Events(), r.e.Quit())
	return cn
}

// publish submits a request for topic with payload, bounded by ctx.
func (r *rig) publish(ctx context.Context, topic, payload string) *Request {
	r.t.Helper()
	q := &Request{Packet: codec.Publish{Topic: topic, Payload: []byte(payload)}, Ctx: ctx}
	if err := r.e.Submit(q); err != nil {
		r.t.Fatalf("Submit: %v", err)
	}
	return q
}

// close closes the engine with a drain deadline d from now and checks Run's end.
func (r *rig) close(d time.Duration) {
	r.t.Helper()
	if r.closed {
		return
	}
	r.closed = true
	r.e.Close(time.Now().Add(d))
	if err := <-r.ran; err != nil {
		r.t.Errorf("Run: %v", err)
	}
	// Every request the engine took is handed back once, now that it holds none. (A
	// context callback may still be on its way for a cancelled one: wait for those.)
	synctest.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	for q := range r.done {
		if n := r.freed[q]; n != 1 && !q.cancelPending {
			r.t.Errorf("request %q released %d times, want once", q.Packet.Payload, n)
		}
	}
}

// outcome is q's outcome; the request must have exactly one.
func (r *rig) outcome(q *Request) Outcome {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := r.done[q]; n != 1 {
		r.t.Fatalf("request %q completed %d times, want once", q.Packet.Payload, n)
	}
	return q.Outcome
}

// pending reports whether q has no outcome yet.
func (r *rig) pending(q *Request) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.done[q] == 0
}

// exactlyOnce checks that every request in qs has exactly one outcome.
func (r *rig) exactlyOnce(qs []*Request) {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, q := range qs {
		if n := r.done[q]; n != 1 {
			r.t.Errorf("request %q completed %d times, want once", q.Packet.Payload, n)
		}
	}
}
