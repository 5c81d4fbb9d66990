// Package faultproxy is an in-process TCP proxy for tests that injects network faults
// between a client and a server.
//
// A [Proxy] listens on a free port of 127.0.0.1 and forwards every connection it accepts
// to a fixed target, byte for byte, in both directions. While the test runs it can
//
//   - [Proxy.Stall] the path: nothing more is forwarded in either direction (not even the
//     end of a connection), but every socket stays open, as with a peer whose host froze or
//     a network that silently drops packets;
//   - [Proxy.Throttle] it to a byte rate, as over a slow link;
//   - [Proxy.Cut] it: every connection open now is closed at once;
//   - [Proxy.Resume] normal forwarding.
//
// Faults apply to connections that are open and to those accepted later. The proxy never
// buffers more than one read (32 KiB) per direction and connection, so a stalled or slow
// proxy pushes back on the sender through TCP flow control, as a real network does.
//
// Every goroutine of a Proxy ends in [Proxy.Close].
package faultproxy

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// chunk is the most a pump reads at once, and so the most it holds while stalled.
const chunk = 32 << 10

// dialTimeout bounds the connection to the target made for each accepted connection.
const dialTimeout = 5 * time.Second

// Proxy forwards connections from its listener to a target. Its methods are safe for
// concurrent use.
type Proxy struct {
	target string
	ln     net.Listener
	done   chan struct{} // closed by Close
	wg     sync.WaitGroup

	mu      sync.Mutex // guards the fields below
	stalled bool
	rate    int           // bytes per second per direction and connection; 0: unlimited
	changed chan struct{} // closed and replaced whenever stalled or rate changes
	pairs   map[*pair]struct{}
	closed  bool

	accepted atomic.Int64
	up, down atomic.Int64 // bytes forwarded towards the target, and back
}

// pair is one proxied connection: the accepted socket and the one to the target.
type pair struct {
	client net.Conn
	dead   chan struct{} // closed when the pair is closed

	mu     sync.Mutex // guards server and closed
	server net.Conn   // nil until the target answered
	closed bool
}

// close closes both sockets; it may be called any number of times, from any goroutine.
func (c *pair) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	close(c.dead)
	c.client.Close()
	if c.server != nil {
		c.server.Close()
	}
}

// attach records the socket to the target; it reports false, having closed it, if the
// pair was closed meanwhile.
func (c *pair) attach(server net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		server.Close()
		return false
	}
	c.server = server
	return true
}

// New starts a proxy listening on 127.0.0.1 (a free port) that forwards to target
// ("host:port"). The caller must call Close.
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		target:  target,
		ln:      ln,
		done:    make(chan struct{}),
		changed: make(chan struct{}),
		pairs:   make(map[*pair]struct{}),
	}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's listening address, "127.0.0.1:PORT".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target is the address the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// Stall stops forwarding in both directions, on open connections and on those accepted
// later, until Resume. Sockets stay open; data and the end of a connection wait in the
// proxy and in the kernel's buffers.
func (p *Proxy) Stall() {
	p.set(func() { p.stalled = true })
}

// Throttle limits forwarding to bytesPerSecond in each direction of each connection.
// 0 or less lifts the limit. It does not end a stall.
func (p *Proxy) Throttle(bytesPerSecond int) {
	p.set(func() { p.rate = max(bytesPerSecond, 0) })
}

// Resume ends a stall and lifts a throttle: what waited is forwarded at once.
func (p *Proxy) Resume() {
	p.set(func() { p.stalled, p.rate = false, 0 })
}

// Cut closes every connection open now, both the accepted socket and the one to the
// target, and returns once they are closed. The proxy keeps accepting new connections;
// a stall or throttle in force applies to them.
func (p *Proxy) Cut() {
	p.mu.Lock()
	pairs := make([]*pair, 0, len(p.pairs))
	for c := range p.pairs {
		pairs = append(pairs, c)
		delete(p.pairs, c)
	}
	p.mu.Unlock()
	for _, c := range pairs {
		c.close()
	}
}

// Conns is the number of connections open through the proxy now.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pairs)
}

// Accepted is the number of connections the proxy has accepted so far.
func (p *Proxy) Accepted() int { return int(p.accepted.Load()) }

// Forwarded returns the bytes forwarded so far towards the target (up) and back (down).
// A write is counted once it has returned, so a peer may have read a few bytes that are
// not counted yet.
func (p *Proxy) Forwarded() (up, down int64) { return p.up.Load(), p.down.Load() }

// Close stops accepting, closes every connection and returns once every goroutine of the
// proxy has ended. Calling it again does nothing.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.done)
	p.mu.Unlock()
	err := p.ln.Close()
	p.Cut()
	p.wg.Wait()
	return err
}

// set changes the fault state and wakes every pump to look at it again.
func (p *Proxy) set(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f()
	close(p.changed)
	p.changed = make(chan struct{})
}

// state returns the fault state and the channel that is closed when it next changes.
func (p *Proxy) state() (stalled bool, rate int, changed <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stalled, p.rate, p.changed
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		nc, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			select {
			case <-p.done:
				return
			default:
				continue // a transient accept error
			}
		}
		p.accepted.Add(1)
		c := &pair{client: nc, dead: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			nc.Close()
			return
		}
		p.pairs[c] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(c)
	}
}

// serve dials the target for c and forwards until either side ends or c is closed.
func (p *Proxy) serve(c *pair) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		delete(p.pairs, c)
		p.mu.Unlock()
		c.close()
	}()
	// Dial the target, giving up when the pair is cut or the proxy closed meanwhile.
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	dialled := make(chan struct{})
	watcher := make(chan struct{})
	go func() {
		defer close(watcher)
		select {
		case <-c.dead:
			cancel()
		case <-dialled:
		}
	}()
	var d net.Dialer
	server, err := d.DialContext(ctx, "tcp", p.target)
	close(dialled)
	<-watcher
	cancel()
	if err != nil || !c.attach(server) {
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		p.pump(c, server, c.client, &p.up)
	}()
	go func() {
		defer wg.Done()
		p.pump(c, c.client, server, &p.down)
	}()
	wg.Wait()
}

// pump copies src to dst under the fault state until either fails or c is closed; then
// it closes c, so that the other direction ends too.
func (p *Proxy) pump(c *pair, dst, src net.Conn, counter *atomic.Int64) {
	defer c.close()
	buf := make([]byte, chunk)
	var next time.Time // when the throttle lets the next byte go
	for {
		if !p.wait(c) {
			return
		}
		n, err := src.Read(buf)
		if n > 0 && !p.forward(c, dst, buf[:n], &next, counter) {
			return
		}
		if err != nil {
			// Hold the end of the connection back too while stalled.
			p.wait(c)
			return
		}
	}
}

// wait returns once the proxy is not stalled (true) or c is closed (false).
func (p *Proxy) wait(c *pair) bool {
	for {
		stalled, _, changed := p.state()
		if !stalled {
			select {
			case <-c.dead:
				return false
			default:
				return true
			}
		}
		select {
		case <-changed:
		case <-c.dead:
			return false
		case <-p.done:
			return false
		}
	}
}

// forward writes b to dst, in slices paced by the throttle and only while not stalled.
func (p *Proxy) forward(c *pair, dst net.Conn, b []byte, next *time.Time, counter *atomic.Int64) bool {
	for len(b) > 0 {
		if !p.wait(c) {
			return false
		}
		_, rate, changed := p.state()
		n := len(b)
		if rate > 0 {
			// Slices of at most 1/50 s of traffic keep the pace smooth.
			n = min(n, max(rate/50, 1))
			now := time.Now()
			if next.Before(now) {
				*next = now
			}
			if d := next.Sub(now); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-changed: // resumed, stalled or re-throttled: look again
					t.Stop()
					continue
				case <-c.dead:
					t.Stop()
					return false
				}
			}
			*next = next.Add(time.Duration(n) * time.Second / time.Duration(rate))
		} else {
			*next = time.Time{}
		}
		m, err := dst.Write(b[:n])
		counter.Add(int64(m))
		if err != nil {
			return false
		}
		b = b[n:]
	}
	return true
}
