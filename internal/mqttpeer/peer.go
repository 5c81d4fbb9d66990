// Package mqttpeer is a scripted MQTT 5 server for unit tests, FOR TESTS ONLY: it serves
// one end of a net.Pipe (or any net.Conn), answers CONNECT with the CONNACK it is given
// and every PUBLISH as its script says — acknowledge with a reason code, never, late, for
// another packet identifier, or drop the connection — and records what it read. It lets
// the engine and the cluster actor be tested alone, in virtual time (testing/synctest),
// without a broker. The client is tested against real brokers elsewhere.
package mqttpeer

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/mdclient/mdclient/codec"
)

// Answer is what the peer does with one PUBLISH.
type Answer struct {
	Code       byte            // the PUBACK reason code
	Drop       bool            // send no PUBACK
	Disconnect bool            // close the connection instead (after sending nothing)
	AckID      uint16          // acknowledge this packet identifier instead of the PUBLISH's
	Later      <-chan struct{} // acknowledge once this is closed, reading on meanwhile
}

// Peer is a scripted MQTT 5 server for one or more connections.
type Peer struct {
	Connack codec.Connack
	// Answer decides for each PUBLISH; nil acknowledges with 0x00. It runs on the peer's
	// goroutine, so it may block (a stalled server) until the test lets it go on.
	Answer func(p Received) Answer

	// Deaf, while set, makes the peer read on and answer nothing, pings included: a path
	// that died without the client knowing yet.
	Deaf atomic.Bool

	mu       sync.Mutex
	got      []Received // every PUBLISH read, in order, on every connection
	protoErr []string   // what the peer found wrong in what it read
	conns    int
}

// Received is a PUBLISH as the peer read it, its topic alias resolved.
type Received struct {
	Conn    int // 1 for the first connection, and so on
	ID      uint16
	Topic   string // resolved through the connection's aliases
	Aliased bool   // carried only an alias
	Dup     bool
	Payload string
	Retain  bool
}

// Serve runs one connection: CONNACK, then PUBLISH after PUBLISH until nc closes.
func (p *Peer) Serve(nc net.Conn) {
	defer nc.Close()
	p.mu.Lock()
	p.conns++
	n := p.conns
	p.mu.Unlock()
	// One goroutine writes: the loop and the late acknowledgements hand it their frames,
	// so that nothing waits on the pipe's own lock (a testing/synctest bubble could not
	// tell such a wait from a deadlock).
	out, stop, written := make(chan []byte, 64), make(chan struct{}), make(chan struct{})
	defer func() {
		close(stop)
		<-written // what the loop handed over goes out before the connection closes
	}()
	go func() {
		defer close(written)
		for {
			select {
			case b := <-out:
				nc.Write(b)
			case <-stop:
				for {
					select {
					case b := <-out:
						nc.Write(b)
					default:
						return
					}
				}
			}
		}
	}()
	write := func(b []byte) {
		select {
		case out <- b:
		case <-stop:
		}
	}
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
	write(codec.AppendConnack(nil, &p.Connack))
	for {
		h, body, ok := read()
		if !ok {
			return
		}
		switch h.Type {
		case codec.TypeDisconnect:
			return
		case codec.TypePingreq:
			if !p.Deaf.Load() {
				write(codec.AppendPingresp(nil))
			}
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
		r := Received{Conn: n, ID: pub.PacketID, Topic: pub.Topic, Dup: pub.Dup, Payload: string(pub.Payload), Retain: pub.Retain}
		if pub.TopicAlias != 0 {
			if pub.Topic != "" {
				aliases[pub.TopicAlias] = pub.Topic
			} else if t, ok := aliases[pub.TopicAlias]; ok {
				r.Topic, r.Aliased = t, true
			} else {
				p.fail("conn %d: alias %d never set up", n, pub.TopicAlias)
			}
		}
		p.mu.Lock()
		p.got = append(p.got, r)
		p.mu.Unlock()
		a := Answer{}
		if p.Answer != nil {
			a = p.Answer(r)
		}
		if p.Deaf.Load() {
			a = Answer{Drop: true}
		}
		id := pub.PacketID
		if a.AckID != 0 {
			id = a.AckID
		}
		ack := codec.AppendPuback(nil, &codec.Puback{PacketID: id, ReasonCode: a.Code})
		switch {
		case a.Disconnect:
			return
		case a.Drop:
		case a.Later != nil:
			go func() {
				select {
				case <-a.Later:
					write(ack)
				case <-stop:
				}
			}()
		default:
			write(ack)
		}
	}
}

func (p *Peer) fail(format string, args ...any) {
	p.mu.Lock()
	p.protoErr = append(p.protoErr, fmt.Sprintf(format, args...))
	p.mu.Unlock()
}

// Received is every PUBLISH read so far, in order.
func (p *Peer) Received() []Received {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Received(nil), p.got...)
}

// Errors is what the peer found wrong in what it read (an alias never set up, a packet
// a client never sends).
func (p *Peer) Errors() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.protoErr...)
}

// Payloads is what the peer read, in order, as payload strings.
func (p *Peer) Payloads() []string {
	var out []string
	for _, r := range p.Received() {
		out = append(out, r.Payload)
	}
	return out
}

// Connack is a CONNACK with the given Receive Maximum and MQTT's defaults otherwise.
func Connack(receiveMax uint16) codec.Connack {
	return codec.Connack{ReceiveMaximum: receiveMax, RetainAvailable: true}
}
