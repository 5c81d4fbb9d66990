package mdtest

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// wsPath is the only HTTP path on which the WebSocket listener upgrades.
const wsPath = "/mqtt"

// wsSubprotocol is the WebSocket subprotocol MQTT requires (MQTT 5 §6).
const wsSubprotocol = "mqtt"

// wsCloseTimeout bounds the WebSocket closing handshake. A peer on loopback
// that is reading answers in well under a millisecond.
const wsCloseTimeout = 100 * time.Millisecond

// rawConnKey is the request context key under which the WebSocket
// listener's HTTP server stores the accepted net.Conn.
type rawConnKey struct{}

// loopback is the address both listeners bind; port 0 lets the kernel choose.
const loopback = "127.0.0.1:0"

// serverConn wraps every connection the listeners hand to mochi. mochi keeps
// it as Client.Net.Conn, so the hook finds its per-connection state there:
// no map keyed by client has to be maintained or cleaned up.
type serverConn struct {
	net.Conn

	raw       net.Conn     // the TCP connection under a WebSocket one; nil for TCP
	faults    *faults      // the server's test kit: Read waits while it is paused
	closeFn   func() error // replaces Conn.Close when non-nil
	closeOnce sync.Once
	closeErr  error
	done      chan struct{} // closed by Close

	// mayPublish is decided once, at CONNECT.
	mayPublish atomic.Bool

	// mochi processes a connection's packets one at a time, so one slot of
	// each kind is enough for the PUBLISH in progress.

	// noSubscribers is 1 + the packet identifier of the QoS 1 PUBLISH being
	// processed when that publish matched no subscriber, and 0 otherwise.
	noSubscribers atomic.Uint32
	// routeGen is 1 + routing.gen of the PUBLISH being processed, 0 if none.
	routeGen atomic.Uint64
}

func newServerConn(nc, raw net.Conn, f *faults, closeFn func() error) *serverConn {
	return &serverConn{Conn: nc, raw: raw, faults: f, closeFn: closeFn, done: make(chan struct{})}
}

// Read reads from the client, except while the server is paused: then it waits, and
// what a read already under way brings waits too, so that nothing is processed until
// Resume.
func (c *serverConn) Read(p []byte) (int, error) {
	if err := c.faults.wait(c.done); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		if werr := c.faults.wait(c.done); werr != nil {
			return 0, werr
		}
	}
	return n, err
}

// Close closes the connection once; later calls return the first result.
func (c *serverConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.done)
		if c.closeFn != nil {
			c.closeErr = c.closeFn()
		} else {
			c.closeErr = c.Conn.Close()
		}
	})
	return c.closeErr
}

// cut ends the connection at once: no DISCONNECT, no WebSocket close frame.
func (c *serverConn) cut() {
	if c.raw != nil {
		_ = c.raw.Close()
	}
	_ = c.Close()
}

// connSet tracks the connections and connection goroutines of one listener
// so that Close can end them and wait for them. mochi's own accounting
// (Listeners.ClientsWg) only starts once a connection goroutine is running,
// which leaves a window in which a connection accepted during shutdown
// would outlive the server.
type connSet struct {
	mu        sync.Mutex
	closed    bool
	serving   bool // Serve will be (or has been) called
	conns     map[*serverConn]struct{}
	wg        sync.WaitGroup // one count per connection goroutine
	serveDone chan struct{}  // closed when Serve returns

	// disconnectClients makes mochi send DISCONNECT to, and close, the
	// clients of a listener. It replaces the callback mochi passes to
	// Close, whose Clients.GetByListener takes a read lock recursively and
	// deadlocks (mochi v2.7.9) when a client connects or disconnects at the
	// same moment.
	disconnectClients func(listenerID string)
	faults            *faults // handed to every connection
}

func newConnSet(disconnectClients func(listenerID string), f *faults) connSet {
	return connSet{
		conns:             make(map[*serverConn]struct{}),
		serveDone:         make(chan struct{}),
		disconnectClients: disconnectClients,
		faults:            f,
	}
}

// cutAll cuts every connection of the set.
func (s *connSet) cutAll() {
	s.mu.Lock()
	conns := make([]*serverConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.cut()
	}
}

// expectServe records that mochi has been asked to call Serve, so that
// Close must wait for Serve to return.
func (s *connSet) expectServe() {
	s.mu.Lock()
	s.serving = true
	s.mu.Unlock()
}

// unexpectServe undoes expectServe when mochi failed before calling Serve.
func (s *connSet) unexpectServe() {
	s.mu.Lock()
	s.serving = false
	s.mu.Unlock()
}

// begin registers a connection goroutine (and c, when not nil). It reports
// false, registering nothing, once the listener is closed.
func (s *connSet) begin(c *serverConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	if c != nil {
		s.conns[c] = struct{}{}
	}
	return true
}

// add registers c for a goroutine already registered by begin(nil). It
// reports false once the listener is closed.
func (s *connSet) add(c *serverConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

// end unregisters a connection goroutine and c (when not nil).
func (s *connSet) end(c *serverConn) {
	if c != nil {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}
	s.wg.Done()
}

// markClosed switches the set to closed. It reports false if it already was.
func (s *connSet) markClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.closed = true
	return true
}

func (s *connSet) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// closeAndWait closes every tracked connection, then waits for Serve (if it
// was expected) and for every connection goroutine.
func (s *connSet) closeAndWait() {
	s.mu.Lock()
	conns := make([]*serverConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	serving := s.serving
	s.mu.Unlock()

	for _, c := range conns {
		_ = c.Close()
	}
	if serving {
		<-s.serveDone
	}
	s.wg.Wait()
}

// tcpListener is a mochi listener for plain MQTT over TCP on loopback.
type tcpListener struct {
	id  string
	log *slog.Logger
	ln  net.Listener
	connSet
}

var _ listeners.Listener = (*tcpListener)(nil)

func newTCPListener(id string, disconnectClients func(listenerID string), f *faults) *tcpListener {
	return &tcpListener{id: id, connSet: newConnSet(disconnectClients, f)}
}

// Init binds the socket.
func (l *tcpListener) Init(log *slog.Logger) error {
	l.log = log
	ln, err := net.Listen("tcp", loopback)
	if err != nil {
		return err
	}
	l.ln = ln
	return nil
}

// ID returns the listener id.
func (l *tcpListener) ID() string { return l.id }

// Address returns the bound host:port.
func (l *tcpListener) Address() string { return l.ln.Addr().String() }

// Protocol returns "tcp".
func (l *tcpListener) Protocol() string { return "tcp" }

// Serve accepts connections until the listener is closed, running establish
// for each in its own goroutine.
func (l *tcpListener) Serve(establish listeners.EstablishFn) {
	defer close(l.serveDone)
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if !l.isClosed() {
				l.log.Error("accept failed; listener stopped", "error", err)
			}
			return
		}
		sc := newServerConn(c, nil, l.faults, nil)
		if !l.begin(sc) {
			_ = c.Close()
			return
		}
		go func() {
			defer l.end(sc)
			if err := establish(l.id, sc); err != nil {
				l.log.Debug("connection ended", "remote", c.RemoteAddr().String(), "error", err)
			}
			_ = sc.Close()
		}()
	}
}

// Close stops accepting, lets mochi disconnect its clients, closes whatever
// connection is left and waits for all goroutines of the listener. mochi's
// callback is not used (see connSet.disconnectClients).
func (l *tcpListener) Close(listeners.CloseFn) {
	if !l.markClosed() {
		return
	}
	_ = l.ln.Close()
	l.disconnectClients(l.id)
	l.closeAndWait()
}

// wsListener is a mochi listener for MQTT over WebSocket on loopback. It
// replaces mochi's own WebSocket listener, which cannot report the port it
// bound when asked for port 0 (it binds only in Serve), upgrades on every
// path and accepts clients that do not offer the "mqtt" subprotocol.
type wsListener struct {
	id        string
	log       *slog.Logger
	ln        net.Listener
	http      *http.Server
	establish listeners.EstablishFn // set by Serve before any request is served
	connSet
}

var _ listeners.Listener = (*wsListener)(nil)

func newWSListener(id string, disconnectClients func(listenerID string), f *faults) *wsListener {
	return &wsListener{id: id, connSet: newConnSet(disconnectClients, f)}
}

// Init binds the socket.
func (l *wsListener) Init(log *slog.Logger) error {
	l.log = log
	ln, err := net.Listen("tcp", loopback)
	if err != nil {
		return err
	}
	l.ln = ln
	l.http = &http.Server{
		Handler:           http.HandlerFunc(l.handle),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		// Give the handler the accepted connection, to force-close it.
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, rawConnKey{}, c)
		},
	}
	return nil
}

// ID returns the listener id.
func (l *wsListener) ID() string { return l.id }

// Address returns the bound host:port.
func (l *wsListener) Address() string { return l.ln.Addr().String() }

// Protocol returns "ws".
func (l *wsListener) Protocol() string { return "ws" }

// Serve serves HTTP until the listener is closed.
func (l *wsListener) Serve(establish listeners.EstablishFn) {
	defer close(l.serveDone)
	l.establish = establish
	err := l.http.Serve(l.ln)
	if err != nil && !errors.Is(err, http.ErrServerClosed) && !l.isClosed() {
		l.log.Error("serve failed; listener stopped", "error", err)
	}
}

// Close stops the HTTP server, lets mochi disconnect its clients, closes
// whatever connection is left (upgraded connections are hijacked, so the
// HTTP server does not track them) and waits for all goroutines. mochi's
// callback is not used (see connSet.disconnectClients).
func (l *wsListener) Close(listeners.CloseFn) {
	if !l.markClosed() {
		return
	}
	_ = l.http.Close() // also closes l.ln, now or when Serve starts
	_ = l.ln.Close()
	l.disconnectClients(l.id)
	l.closeAndWait()
}

// handle upgrades requests for wsPath that offer the "mqtt" subprotocol and
// runs the MQTT connection on the request's goroutine.
func (l *wsListener) handle(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != wsPath {
		http.NotFound(w, r)
		return
	}
	if !offersSubprotocol(r.Header, wsSubprotocol) {
		http.Error(w, `mdtest: the WebSocket subprotocol "mqtt" is required`, http.StatusBadRequest)
		return
	}
	if !l.begin(nil) {
		http.Error(w, "mdtest: server closed", http.StatusServiceUnavailable)
		return
	}
	var sc *serverConn
	defer func() { l.end(sc) }()

	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols: []string{wsSubprotocol},
		// Loopback test server: accept any Origin, as mochi does.
		InsecureSkipVerify: true,
	})
	if err != nil { // Accept has answered the request
		l.log.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "error", err)
		return
	}
	raw, ok := r.Context().Value(rawConnKey{}).(net.Conn)
	if !ok { // cannot happen: ConnContext always stores it
		_ = ws.CloseNow()
		return
	}
	nc := websocket.NetConn(context.Background(), ws, websocket.MessageBinary)
	c := newServerConn(nc, raw, l.faults, func() error { return closeWS(ws, nc, raw) })
	if !l.add(c) {
		_ = c.Close()
		return
	}
	sc = c
	if err := l.establish(l.id, c); err != nil {
		l.log.Debug("connection ended", "remote", r.RemoteAddr, "error", err)
	}
	_ = c.Close()
}

// closeWS closes a WebSocket connection with the closing handshake: it
// writes a close frame (status 1000, so the peer's reads end with a clean end
// of stream) and waits at most wsCloseTimeout for the peer's answer before
// closing the TCP connection raw. The websocket package alone would wait up
// to 5s for a peer that is not reading, stalling Server.Close, and its
// CloseNow cannot cut short a handshake already in progress.
func closeWS(ws *websocket.Conn, nc, raw net.Conn) error {
	done := make(chan error, 1)
	go func() { done <- ws.Close(websocket.StatusNormalClosure, "") }()
	timer := time.NewTimer(wsCloseTimeout)
	defer timer.Stop()
	var err error
	select {
	case err = <-done:
	case <-timer.C:
		_ = raw.Close() // ends the handshake wait
		err = <-done
	}
	// The connection is closed now; this only releases the adapter's
	// timers and contexts. (Calling it first would cancel a pending read,
	// which can drop the connection before the close frame is written.)
	_ = nc.Close()
	return err
}

// offersSubprotocol reports whether the WebSocket handshake request lists
// proto in Sec-WebSocket-Protocol (compared as the websocket package does).
func offersSubprotocol(h http.Header, proto string) bool {
	for _, v := range h.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(p), proto) {
				return true
			}
		}
	}
	return false
}
