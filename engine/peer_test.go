package engine

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mdclient/mdclient/codec"
	"github.com/mdclient/mdclient/conn"
)

// This file is the engine's test rig: the engine with its Complete recorded, and a
// scripted MQTT 5 server (a peer) on the far end of a net.Pipe for each connection, all
// inside a testing/synctest bubble. The peer is a test double for the engine's unit tests
// only; the client is tested against real brokers elsewhere.

// answer is what the peer does with one PUBLISH.
type answer struct {
	code       byte            // the PUBACK reason code
	drop       bool            // send no PUBACK
	disconnect bool            // close the connection instead (after sending nothing)
	ackID      uint16          // acknowledge this packet identifier instead of the PUBLISH's
	later      <-chan struct{} // acknowledge once this is closed, reading on meanwhile
}

// peer is a scripted MQTT 5 server for one or more connections.
type peer struct {
	connack codec.Connack
	// answer decides for each PUBLISH; nil acknowledges with 0x00. It runs on the peer's
	// goroutine, so it may block (a stalled server) until the test lets it go on.
	answer func(p received) answer

	mu       sync.Mutex
	got      []received // every PUBLISH read, in order, on every connection
	protoErr []string   // what the peer found wrong in what it read
	conns    int
}

// received is a PUBLISH as the peer read it, its topic alias resolved.
type received struct {
	conn    int // 1 for the first connection, and so on
	id      uint16
	topic   string // resolved through the connection's aliases
	aliased bool   // carried only an alias
	dup     bool
	payload string
	retain  bool
}

// serve runs one connection: CONNACK, then PUBLISH after PUBLISH until the pipe closes.
func (p *peer) serve(nc net.Conn) {
	defer nc.Close()
	p.mu.Lock()
	p.conns++
	n := p.conns
	p.mu.Unlock()
	buf := make([]byte, 0, 64<<10)
	aliases := map[uint16]string{}
	read := func() (codec.Header, []byte, bool) {
		for {
			h, body, m, err := codec.Split(buf, 1<<24)
			if err != nil {
				p.fail("split: %v", err)
				return h, nil, false
			}
			if m > 0 {
				body = append([]byte(nil), body...)
				buf = buf[:copy(buf, buf[m:])]
				return h, body, true
			}
			if len(buf) == cap(buf) {
				buf = append(buf, 0)[:len(buf)]
			}
			k, err := nc.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+k]
			if err != nil {
				return h, nil, false
			}
		}
	}
	h, _, ok := read()
	if !ok || h.Type != codec.TypeConnect {
		return
	}
	if _, err := nc.Write(codec.AppendConnack(nil, &p.connack)); err != nil {
		return
	}
	for {
		h, body, ok := read()
		if !ok {
			return
		}
		switch h.Type {
		case codec.TypeDisconnect:
			return
		case codec.TypePingreq:
			nc.Write(codec.AppendPingresp(nil))
			continue
		case codec.TypePublish:
		default:
			p.fail("packet type %d", h.Type)
			return
		}
		pub, err := codec.DecodePublish(h.Flags, body)
		if err != nil {
			p.fail("decode: %v", err)
			return
		}
		r := received{conn: n, id: pub.PacketID, topic: pub.Topic, dup: pub.Dup, payload: string(pub.Payload), retain: pub.Retain}
		if pub.TopicAlias != 0 {
			if pub.Topic != "" {
				aliases[pub.TopicAlias] = pub.Topic
			} else if t, ok := aliases[pub.TopicAlias]; ok {
				r.topic, r.aliased = t, true
			} else {
				p.fail("conn %d: alias %d never set up", n, pub.TopicAlias)
			}
		}
		p.mu.Lock()
		p.got = append(p.got, r)
		p.mu.Unlock()
		a := answer{}
		if p.answer != nil {
			a = p.answer(r)
		}
		id := pub.PacketID
		if a.ackID != 0 {
			id = a.ackID
		}
		ack := codec.AppendPuback(nil, &codec.Puback{PacketID: id, ReasonCode: a.code})
		switch {
		case a.disconnect:
			return
		case a.drop:
		case a.later != nil:
			go func() {
				<-a.later
				nc.Write(ack) // net.Pipe serialises concurrent writes
			}()
		default:
			if _, err := nc.Write(ack); err != nil {
				return
			}
		}
	}
}

func (p *peer) fail(format string, args ...any) {
	p.mu.Lock()
	p.protoErr = append(p.protoErr, fmt.Sprintf(format, args...))
	p.mu.Unlock()
}

func (p *peer) received() []received {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]received(nil), p.got...)
}

// payloads is what the peer read, in order, as payload strings.
func (p *peer) payloads() []string {
	var out []string
	for _, r := range p.received() {
		out = append(out, r.payload)
	}
	return out
}

// rig is an engine under test with every Complete recorded.
type rig struct {
	t      *testing.T
	e      *Engine
	ran    chan error
	closed bool
	mu     sync.Mutex
	done   map[*Request]int // Complete calls per request
	seq    []*Request       // in completion order
}

func newRig(t *testing.T, cfg Config) *rig {
	t.Helper()
	r := &rig{t: t, ran: make(chan error, 1), done: map[*Request]int{}}
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
		}
	}
	r.e = New(cfg)
	go func() { r.ran <- r.e.Run() }()
	t.Cleanup(func() { r.close(0) }) // so that a failed test still ends its goroutines
	return r
}

// connect opens a connection to p over a pipe and hands it to the engine, as the cluster
// actor does.
func (r *rig) connect(p *peer) *conn.Conn {
	r.t.Helper()
	client, server := net.Pipe()
	go p.serve(server)
	cn, err := conn.Open(context.Background(), client, &conn.Config{ClientID: "rig"})
	if err != nil {
		r.t.Fatalf("Open: %v", err)
	}
	r.e.Events() <- conn.Event{Conn: cn, Up: true}
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

// connack is a CONNACK with the given Receive Maximum and MQTT's defaults otherwise.
func connack(receiveMax uint16) codec.Connack {
	return codec.Connack{ReceiveMaximum: receiveMax, RetainAvailable: true}
}
