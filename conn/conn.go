package conn

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/mdclient/mdclient/codec"
)

// maxIncoming bounds the packets a server may send us. We never subscribe, so only acks,
// pings and DISCONNECT (whose reason string is the largest part) arrive.
const maxIncoming = 1 << 20

// closeGrace bounds the writes of a closing connection: what was sent, then DISCONNECT.
const closeGrace = 250 * time.Millisecond

// Config is what every connection of a client shares.
type Config struct {
	ClientID       string
	Username       string
	Password       []byte // the entitlement token when it travels as the password; never logged
	HasPassword    bool
	KeepAlive      time.Duration // 0 disables keep-alive
	ConnectTimeout time.Duration // bounds dial plus CONNECT/CONNACK
	TLS            *tls.Config   // for WSS and TLS; nil means the system roots
	Logger         *slog.Logger
	// Dial opens the TCP connection under every transport; nil means a net.Dialer, and
	// for WebSocket the HTTP(S)_PROXY of the environment.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// HTTPHeader is sent with every WebSocket handshake.
	HTTPHeader http.Header
}

// Limits are what the server announced in its CONNACK, with MQTT's defaults filled in.
type Limits struct {
	ReceiveMaximum    int  // unacknowledged QoS 1 publishes allowed: 1–65535
	MaxPacketSize     int  // largest packet the server accepts, in bytes
	TopicAliasMaximum int  // 0: no topic aliases
	RetainAvailable   bool // false: the server keeps no retained messages
	MaximumQoS        byte // the highest QoS the server accepts: 0, 1 or 2
}

// Event is a message to the engine. Connections send AcksReady, Written and, last of all, Down;
// the cluster actor sends Up (before the connection starts reading) and Refused.
type Event struct {
	Conn      *Conn
	Up        bool   // Conn is connected and is now the one to use
	AcksReady bool   // acknowledgements wait in Conn: take them with TakeAcks
	Written   []byte // a buffer passed to Send, written (or failed) and handed back
	Down      error  // Conn has ended, for this reason; no event from it follows
	Alive     bool   // a PINGRESP came after Ping: the server answers
	Refused   error  // every server refused the credentials (a *RefusedError)
	Lane      int    // with Up: the engine's lane (connection slot) Conn serves
	// Taken, with Up, is closed by the engine once Conn is in use, so that the cluster
	// announces the server up only when the client's Stats count it.
	Taken chan struct{}
}

// Conn is one live MQTT connection. The engine hands it byte batches with Send; its reader
// and writer goroutines own the socket.
type Conn struct {
	ep        Endpoint
	nc        net.Conn
	limits    Limits
	log       *slog.Logger
	keepAlive time.Duration
	leftover  []byte // bytes read after the CONNACK; the reader's from Start on

	writes    chan []byte    // engine → writer: at most one batch waiting (capacity 1)
	pingNow   chan struct{}  // engine → writer: send a PINGREQ now (capacity 1)
	pongs     int            // PINGRESPs the reader's last parse found; the reader's
	pingAsked atomic.Bool    // Ping was called and its PINGRESP is not yet reported
	ackMu     sync.Mutex     // guards acks: the reader adds, the engine takes
	acks      []codec.Puback // the mailbox: acks read and not yet taken
	ackReady  atomic.Bool    // an AcksReady event was sent and the engine has not taken since
	closing   chan struct{}  // Close → writer: flush, send DISCONNECT, end
	stop      chan struct{}  // closed when the connection ends, by whichever side
	done      chan struct{}  // closed when both goroutines have exited (or, unstarted, at Close)
	startMu   sync.Mutex     // Start and the Close of an unstarted connection exclude each other
	started   bool           // Start ran
	ended     bool           // Close came first: Start must not start

	closeOnce   sync.Once
	closeReason error // why Close was called; written before closing is closed
	stopOnce    sync.Once
	err         error        // why it ended; written once before stop closes
	lastRead    atomic.Int64 // unix nanoseconds of the latest read with data; the reader writes it
	wsCancel    context.CancelFunc
	ws          *websocket.Conn            // for WS and WSS
	rd          io.Reader                  // what the reader reads: nc, or the WebSocket's messages in a row
	watchdog    atomic.Pointer[time.Timer] // the keep-alive check due next
}

// Open speaks MQTT over nc, an established byte stream to a server: it sends CONNECT and
// waits for CONNACK, within ctx and cfg.ConnectTimeout. A CONNACK with a failure code
// returns a *RefusedError. On failure nc is closed. The connection reads and writes
// nothing more until Start. Dial uses it for TCP and TLS; tests use it over net.Pipe.
func Open(ctx context.Context, nc net.Conn, cfg *Config) (*Conn, error) {
	ep := Endpoint{Transport: TCP, HostPort: nc.RemoteAddr().String()}
	if cfg.ConnectTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.ConnectTimeout)
		defer cancel()
	}
	return open(ctx, ep, nc, cfg)
}

// open runs the handshake on a byte stream; Dial's timeout is already in ctx.
func open(ctx context.Context, ep Endpoint, nc net.Conn, cfg *Config) (*Conn, error) {
	c := newConn(ep, cfg)
	c.nc, c.rd = nc, nc
	if err := c.handshake(ctx, cfg); err != nil {
		c.closeSocket()
		return nil, err
	}
	return c, nil
}

func newConn(ep Endpoint, cfg *Config) *Conn {
	c := &Conn{
		ep:        ep,
		log:       cfg.Logger,
		keepAlive: cfg.KeepAlive,
		writes:    make(chan []byte, 1),
		pingNow:   make(chan struct{}, 1),
		closing:   make(chan struct{}),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c *Conn) handshake(ctx context.Context, cfg *Config) error {
	// Past the connect timeout the socket is closed, which ends a blocked read or write
	// on every transport.
	stopWatch := context.AfterFunc(ctx, c.closeSocket)
	defer stopWatch()

	connect := codec.Connect{
		ClientID:    cfg.ClientID,
		Username:    cfg.Username,
		HasUsername: cfg.Username != "",
		Password:    cfg.Password,
		HasPassword: cfg.HasPassword,
		CleanStart:  true,
		KeepAlive:   uint16(min(cfg.KeepAlive/time.Second, 65535)),
	}
	pkt, err := codec.AppendConnect(nil, &connect)
	if err != nil {
		return err
	}
	if _, err := c.nc.Write(pkt); err != nil {
		return c.handshakeErr(ctx, "writing CONNECT", err)
	}
	buf := make([]byte, 0, 512)
	for {
		h, body, n, err := codec.Split(buf, maxIncoming)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		if n > 0 {
			if h.Type != codec.TypeConnack {
				return fmt.Errorf("%w: packet type %d before CONNACK", ErrProtocol, h.Type)
			}
			ack, err := codec.DecodeConnack(body)
			if err != nil {
				return fmt.Errorf("%w: %w", ErrProtocol, err)
			}
			if ack.ReasonCode >= 0x80 {
				return &RefusedError{Code: ack.ReasonCode, Reason: ack.ReasonString, ServerReference: ack.ServerReference}
			}
			c.limits = limitsOf(&ack)
			if ack.HasServerKeepAlive {
				c.keepAlive = time.Duration(ack.ServerKeepAlive) * time.Second
			}
			c.leftover = append([]byte(nil), buf[n:]...)
			return nil
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		m, err := c.rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err != nil {
			return c.handshakeErr(ctx, "waiting for CONNACK", err)
		}
	}
}

// handshakeErr names what failed; past the connect timeout, the timeout is the cause.
func (c *Conn) handshakeErr(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", what, context.Cause(ctx))
	}
	return fmt.Errorf("%s: %w", what, err)
}

func limitsOf(ack *codec.Connack) Limits {
	l := Limits{
		ReceiveMaximum:    65535,
		MaxPacketSize:     codec.MaxPacketSize,
		TopicAliasMaximum: int(ack.TopicAliasMaximum),
		RetainAvailable:   ack.RetainAvailable,
		MaximumQoS:        2,
	}
	if ack.ReceiveMaximum > 0 {
		l.ReceiveMaximum = int(ack.ReceiveMaximum)
	}
	if ack.MaximumPacketSize > 0 && int64(ack.MaximumPacketSize) < int64(codec.MaxPacketSize) {
		l.MaxPacketSize = int(ack.MaximumPacketSize)
	}
	if ack.HasMaximumQoS {
		l.MaximumQoS = ack.MaximumQoS
	}
	return l
}

// Endpoint is the server this connection goes to.
func (c *Conn) Endpoint() Endpoint { return c.ep }

// Limits are the server's announced limits.
func (c *Conn) Limits() Limits { return c.limits }

// Done is closed once the connection has ended and its goroutines have exited.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err is why the connection ended; it waits for Done.
func (c *Conn) Err() error {
	<-c.done
	return c.err
}

// Start runs the reader and writer. They send events to events until the connection ends,
// and give up sending when quit is closed.
// Start after Close does nothing: the engine may close a connection the cluster has just
// handed it before the cluster starts it.
func (c *Conn) Start(events chan<- Event, quit <-chan struct{}) {
	c.startMu.Lock()
	if c.ended {
		c.startMu.Unlock()
		return
	}
	c.started = true
	c.startMu.Unlock()
	c.lastRead.Store(time.Now().UnixNano())
	if c.keepAlive > 0 {
		c.watch(c.keepAlive * 3 / 2)
	}
	writerDone := make(chan struct{})
	emit := func(ev Event) {
		select {
		case events <- ev:
		case <-quit:
		}
	}
	go func() {
		defer close(writerDone)
		c.writeLoop(emit)
	}()
	go func() {
		defer close(c.done)
		c.shutdown(c.readLoop(emit))
		<-writerDone
		c.log.Debug("mdclient: connection ended", "server", c.ep.String(), "reason", c.err)
		emit(Event{Conn: c, Down: c.err})
	}()
}

// Send hands buf to the writer, which gives it back in an Event's Written once written.
// The engine keeps at most one buffer outstanding, so Send does not block; it reports false
// if the connection has ended, and then buf will not come back.
func (c *Conn) Send(buf []byte) bool {
	select {
	case <-c.stop:
		return false
	default:
	}
	select {
	case c.writes <- buf:
		return true
	case <-c.stop:
		return false
	}
}

// Ping asks the writer to send a PINGREQ now, without blocking; the PINGRESP comes as an
// Event with Alive. It is how the engine learns that a connection older than another's
// loss still reaches its server (a pool's connections may fail together).
func (c *Conn) Ping() {
	c.pingAsked.Store(true)
	select {
	case c.pingNow <- struct{}{}:
	default: // one is already asked for
	}
}

// Close ends the connection gracefully, for reason (ErrClosed when nil): the writer writes
// what was sent, then DISCONNECT, with closeGrace more for its writes, so that a writer
// stuck on a silent server cannot hold Close up. A connection never started just closes
// its socket. Only the first call counts.
func (c *Conn) Close(reason error) {
	c.closeOnce.Do(func() {
		if reason == nil {
			reason = ErrClosed
		}
		c.closeReason = reason
		c.startMu.Lock()
		started := c.started
		c.ended = !started
		c.startMu.Unlock()
		if !started {
			c.shutdown(reason)
			close(c.done)
			return
		}
		c.nc.SetWriteDeadline(time.Now().Add(closeGrace))
		close(c.closing)
	})
}

// Abort ends the connection at once with err, sending nothing more.
func (c *Conn) Abort(err error) { c.shutdown(err) }

// shutdown ends the connection and keeps the first reason given. After Close the reason
// is Close's whichever goroutine gets here first (the writer, the reader seeing the
// server close after our DISCONNECT, the watchdog): that is the end the client asked for.
func (c *Conn) shutdown(err error) {
	c.stopOnce.Do(func() {
		select {
		case <-c.closing:
			err = c.closeReason
		default:
		}
		c.err = err
		close(c.stop)
		if t := c.watchdog.Load(); t != nil {
			t.Stop()
		}
		c.closeSocket()
	})
}

// watch checks, after d, that something arrived from the server in the last 1.5
// keep-alive intervals, and drops the connection if not. It is the connection's one
// keep-alive clock: reads only store a time stamp, and a writer stuck on a dead server
// cannot hold it up. (The writer pings a quiet server, so a live one always answers.)
func (c *Conn) watch(d time.Duration) {
	t := time.AfterFunc(d, func() {
		select {
		case <-c.stop:
			return
		default:
		}
		limit := c.keepAlive * 3 / 2
		silent := time.Since(time.Unix(0, c.lastRead.Load()))
		if silent < limit {
			c.watch(limit - silent)
			return
		}
		c.log.Warn("mdclient: server silent, dropping connection", "server", c.ep.String(),
			"silent_for", silent.Round(time.Millisecond))
		c.shutdown(ErrKeepAlive)
	})
	c.watchdog.Store(t)
}

func (c *Conn) closeSocket() {
	if c.ws != nil {
		// No WebSocket close handshake: it would wait for a server that may be gone. The
		// MQTT DISCONNECT, when there is one, has been written already.
		c.wsCancel()
		c.ws.CloseNow()
		return
	}
	c.nc.Close()
}

func (c *Conn) writeLoop(emit func(Event)) {
	ka := c.keepAlive
	var tick <-chan time.Time
	if ka > 0 {
		t := time.NewTicker(max(ka/8, time.Millisecond))
		defer t.Stop()
		tick = t.C
	}
	lastWrite := time.Now()
	var lastPing time.Time
	var ping [2]byte
	for {
		select {
		case buf := <-c.writes:
			_, err := c.nc.Write(buf)
			lastWrite = time.Now()
			emit(Event{Conn: c, Written: buf})
			if err != nil {
				c.shutdown(err)
				return
			}
		case <-c.pingNow:
			if _, err := c.nc.Write(codec.AppendPingreq(ping[:0])); err != nil {
				c.shutdown(err)
				return
			}
			lastPing, lastWrite = time.Now(), time.Now()
		case now := <-tick:
			// Ping a quiet server, so that its silence means it is gone; the watchdog
			// notices that silence even while a write is stuck.
			sinceRead := now.Sub(time.Unix(0, c.lastRead.Load()))
			if (sinceRead >= ka/2 || now.Sub(lastWrite) >= ka/2) && now.Sub(lastPing) >= ka/2 {
				lastPing = now
				if _, err := c.nc.Write(codec.AppendPingreq(ping[:0])); err != nil {
					c.shutdown(err)
					return
				}
				lastWrite = now
			}
		case <-c.closing:
			select {
			case buf := <-c.writes:
				c.nc.Write(buf)
				emit(Event{Conn: c, Written: buf})
			default:
			}
			c.nc.Write(codec.AppendDisconnect(nil, &codec.Disconnect{}))
			c.shutdown(c.closeReason)
			return
		case <-c.stop:
			return
		}
	}
}

func (c *Conn) readLoop(emit func(Event)) error {
	buf := make([]byte, 0, 32<<10)
	buf = append(buf, c.leftover...)
	c.leftover = nil
	acks := make([]codec.Puback, 0, 128) // what one read brought; reused
	for {
		var err error
		acks, err = c.parse(&buf, acks[:0])
		c.deliverAcks(acks, emit)
		if c.pongs > 0 {
			c.pongs = 0
			if c.pingAsked.Swap(false) { // keep-alive's own pings are nobody's news
				emit(Event{Conn: c, Alive: true})
			}
		}
		if err != nil {
			c.log.Warn("mdclient: dropping connection", "server", c.ep.String(), "reason", err)
			return err
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := c.rd.Read(buf[len(buf):cap(buf)])
		if n > 0 {
			c.lastRead.Store(time.Now().UnixNano())
			buf = buf[:len(buf)+n]
		}
		if err != nil {
			select {
			case <-c.stop:
				return c.err // ended on our side; keep that reason
			default:
			}
			acks, perr := c.parse(&buf, acks[:0])
			c.deliverAcks(acks, emit)
			if perr != nil {
				return perr
			}
			return err
		}
	}
}

// parse takes every whole packet off the front of *buf and appends the acks among them.
func (c *Conn) parse(buf *[]byte, acks []codec.Puback) ([]codec.Puback, error) {
	b := *buf
	off := 0
	defer func() {
		*buf = b[:copy(b, b[off:])]
	}()
	for {
		h, body, n, err := codec.Split(b[off:], maxIncoming)
		if err != nil {
			return acks, fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		if n == 0 {
			return acks, nil
		}
		off += n
		switch h.Type {
		case codec.TypePuback:
			ack, err := codec.DecodePuback(body)
			if err != nil {
				return acks, fmt.Errorf("%w: %w", ErrProtocol, err)
			}
			acks = append(acks, ack)
		case codec.TypePingresp:
			c.pongs++
		case codec.TypeDisconnect:
			d, err := codec.DecodeDisconnect(body)
			if err != nil {
				return acks, fmt.Errorf("%w: %w", ErrProtocol, err)
			}
			return acks, &ServerDisconnectError{Code: d.ReasonCode, Reason: d.ReasonString, ServerReference: d.ServerReference}
		default:
			return acks, fmt.Errorf("%w: unexpected packet type %d", ErrProtocol, h.Type)
		}
	}
}

// TakeAcks returns the acknowledgements read since the last call, in arrival order, and
// keeps spare (emptied) to collect the next ones: the two slices change hands, so nothing
// is allocated. Only the engine calls it, after an AcksReady event. An AcksReady event
// may find the mailbox empty: a previous TakeAcks took what it announced.
func (c *Conn) TakeAcks(spare []codec.Puback) []codec.Puback {
	c.ackReady.Store(false) // before taking: an ack added from now on announces itself again
	c.ackMu.Lock()
	acks := c.acks
	c.acks = spare[:0]
	c.ackMu.Unlock()
	return acks
}

// deliverAcks adds what one read brought to the mailbox and, unless an AcksReady event
// is already on its way, sends one. While the engine is busy, the acks of many reads
// gather behind a single event.
func (c *Conn) deliverAcks(acks []codec.Puback, emit func(Event)) {
	if len(acks) == 0 {
		return
	}
	c.ackMu.Lock()
	c.acks = append(c.acks, acks...)
	c.ackMu.Unlock()
	if !c.ackReady.Swap(true) {
		emit(Event{Conn: c, AcksReady: true})
	}
}
