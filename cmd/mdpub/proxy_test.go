package main

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/mdclient/mdclient/codec"
	"github.com/mdclient/mdclient/mdtest"
)

// proxy stands between mdpub and an mdtest broker's TCP listener, to give the broker
// what mdtest has no option for. It forwards everything from the client unchanged; from
// the broker it forwards the CONNACK, announcing maxPacket as Maximum Packet Size when
// that is not 0, and then, when hold is not nil, nothing more until hold is closed.
type proxy struct {
	ln        net.Listener
	target    string // the broker's host:port
	maxPacket uint32
	hold      <-chan struct{}

	done chan struct{} // closed by close
	wg   sync.WaitGroup

	mu     sync.Mutex
	closed bool
	conns  []net.Conn
}

// newProxy starts a proxy in front of srv and returns its address as a server entry. The
// proxy is closed, and its goroutines waited for, when the test ends.
func newProxy(t *testing.T, srv *mdtest.Server, maxPacket uint32, hold <-chan struct{}) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{
		ln:        ln,
		target:    strings.TrimPrefix(srv.TCPAddr(), "tcp://"),
		maxPacket: maxPacket,
		hold:      hold,
		done:      make(chan struct{}),
	}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return "tcp://" + ln.Addr().String()
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		broker, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		if !p.track(client, broker) {
			return
		}
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			io.Copy(broker, client)
			broker.Close()
		}()
		go func() {
			defer p.wg.Done()
			p.down(broker, client)
			client.Close()
		}()
	}
}

// track remembers the connections for close, or closes them if the proxy is closed.
func (p *proxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		for _, c := range conns {
			c.Close()
		}
		return false
	}
	p.conns = append(p.conns, conns...)
	return true
}

// down forwards from the broker to the client.
func (p *proxy) down(broker, client net.Conn) {
	var buf []byte
	chunk := make([]byte, 4096)
	for {
		h, body, n, err := codec.Split(buf, 0)
		if err != nil {
			return
		}
		if n > 0 {
			first := buf[:n]
			if h.Type == codec.TypeConnack && p.maxPacket != 0 {
				ack, err := codec.DecodeConnack(body)
				if err != nil {
					return
				}
				ack.MaximumPacketSize = p.maxPacket
				first = codec.AppendConnack(nil, &ack)
			}
			if _, err := client.Write(first); err != nil {
				return
			}
			buf = buf[n:]
			break
		}
		k, err := broker.Read(chunk)
		if err != nil {
			return
		}
		buf = append(buf, chunk[:k]...)
	}
	if p.hold != nil {
		select {
		case <-p.hold:
		case <-p.done:
			return
		}
	}
	if len(buf) > 0 {
		if _, err := client.Write(buf); err != nil {
			return
		}
	}
	io.Copy(client, broker)
}

func (p *proxy) close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.mu.Unlock()
	close(p.done)
	p.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	p.wg.Wait()
}
