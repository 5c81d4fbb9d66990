package mdtest

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// ErrClosed is returned by [Server.Subscribe] once the server has been closed.
var ErrClosed = errors.New("mdtest: server closed")

// DefaultReceiveMaximum is the Receive Maximum the server announces in CONNACK
// unless [WithReceiveMaximum] says otherwise. It is mochi's own default: the
// number of QoS 1 and QoS 2 publishes a client may have unacknowledged towards
// the server at any time.
const DefaultReceiveMaximum uint16 = 1024

// sysTopicInterval is the period, in seconds, of mochi's $SYS statistics
// publishes. The statistics are of no use in tests and gathering them stops
// the world (runtime.ReadMemStats), so the period is an hour instead of
// mochi's one second. They are still published once at start.
const sysTopicInterval = 3600

// config holds the settings assembled from Options.
type config struct {
	allowToken     string
	logger         *slog.Logger
	receiveMaximum uint16
}

// Option configures a [Server] created by [NewServer].
type Option func(*config)

// WithAllowToken sets the entitlement token. Only clients whose MQTT password
// or MQTT username equals token may publish; the others get PUBACK 0x87 for
// QoS 1 publishes (and their QoS 0 publishes are dropped). The default, "",
// lets every client publish.
func WithAllowToken(token string) Option {
	return func(c *config) { c.allowToken = token }
}

// WithLogger sends the broker's logs (mochi's and mdtest's own) to l. By
// default, and when l is nil, logs are discarded.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { c.logger = l }
}

// WithReceiveMaximum sets the Receive Maximum announced in CONNACK and
// enforced by the broker: a client that has more than n QoS 1/QoS 2 publishes
// unacknowledged towards the server is disconnected with reason code 0x93.
// n must be at least 1; the default is [DefaultReceiveMaximum].
func WithReceiveMaximum(n uint16) Option {
	return func(c *config) { c.receiveMaximum = n }
}

// Server is an embedded MQTT 5 broker emulating a MigratoryData server in
// "Basic" entitlement mode (see the package documentation). Create it with
// [NewServer]; it is listening when NewServer returns. Release it with
// [Server.Close].
//
// Protocol details visible to clients:
//
//   - CONNACK announces Receive Maximum (see [WithReceiveMaximum]) and no
//     Topic Alias Maximum. Topic aliases are therefore not supported in
//     either direction: a PUBLISH carrying a topic alias is a protocol error
//     (DISCONNECT 0x94), and the server never sends aliases.
//   - PUBACK carries reason code 0x00, 0x10 or 0x87 (see the package
//     documentation). A 0x10 or 0x87 PUBACK carries a Reason String, which is
//     what forces the reason code onto the wire; a 0x00 PUBACK is the
//     two-byte form. PUBACKs never echo the PUBLISH's User Properties. A
//     client that set Request Problem Information to 0 cannot be sent a
//     Reason String, and without properties mochi omits the reason code, so
//     such a client receives 0x00 instead of 0x10 (which MQTT 5 allows: 0x10
//     is optional).
//   - QoS 2 is handled by mochi unchanged (PUBREC 0x00 even without
//     subscribers). MQTT 3.1.1 clients are accepted too; a denied QoS 1
//     publish from an MQTT 3.1.1 client makes mochi disconnect it.
//   - mochi routes a publish to network subscribers just after sending the
//     PUBACK, so a network client whose SUBSCRIBE is processed in that
//     window receives a message acknowledged with 0x10. A [Subscription]
//     has no such window.
//   - Retained messages are kept and delivered as MQTT specifies.
//   - mochi ignores publishes to "$SYS/..." topics without answering them
//     (not even with a PUBACK).
type Server struct {
	broker *mqtt.Server
	tcp    *tcpListener
	ws     *wsListener
	faults faults // the test kit's settings (faults.go)

	mu     sync.RWMutex // guards subs, subSeq and closed
	subs   map[*Subscription]struct{}
	subSeq uint64 // seq of the latest Subscription
	closed bool

	closeOnce sync.Once
}

// NewServer starts a broker listening on 127.0.0.1 (TCP and WebSocket, free
// ports). The caller must call [Server.Close].
func NewServer(opts ...Option) (*Server, error) {
	cfg := config{receiveMaximum: DefaultReceiveMaximum}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	if cfg.receiveMaximum == 0 {
		return nil, errors.New("mdtest: receive maximum must be at least 1")
	}
	if cfg.logger == nil {
		cfg.logger = slog.New(slog.DiscardHandler)
	}

	caps := mqtt.NewDefaultServerCapabilities()
	caps.ReceiveMaximum = cfg.receiveMaximum
	// Mochi never announces a Topic Alias Maximum, so clients must assume 0;
	// make the broker agree (it would otherwise accept inbound aliases and
	// send outbound aliases beyond the client's own maximum).
	caps.TopicAliasMaximum = 0
	// Do not copy the PUBLISH's properties onto PUBACK/PUBREC.
	caps.Compatibilities.NoInheritedPropertiesOnAck = true

	s := &Server{subs: make(map[*Subscription]struct{})}
	s.broker = mqtt.New(&mqtt.Options{
		Capabilities:           caps,
		Logger:                 cfg.logger,
		SysTopicResendInterval: sysTopicInterval,
	})
	if err := s.broker.AddHook(&basicHook{srv: s, token: cfg.allowToken}, nil); err != nil {
		return nil, fmt.Errorf("mdtest: add hook: %w", err)
	}

	s.tcp = newTCPListener("mdtest-tcp", s.disconnectClients, &s.faults)
	s.ws = newWSListener("mdtest-ws", s.disconnectClients, &s.faults)
	for _, l := range []listeners.Listener{s.tcp, s.ws} {
		// AddListener binds the socket (Init), so the address is known and
		// connections queue from here on.
		if err := s.broker.AddListener(l); err != nil {
			_ = s.broker.Close() // closes the listeners added so far
			return nil, fmt.Errorf("mdtest: listen: %w", err)
		}
	}
	// Serve starts one goroutine per listener that calls its Serve method;
	// tell the listeners so that Close waits for those goroutines.
	s.tcp.expectServe()
	s.ws.expectServe()
	if err := s.broker.Serve(); err != nil {
		// mochi only fails before it starts the listeners.
		s.tcp.unexpectServe()
		s.ws.unexpectServe()
		_ = s.broker.Close()
		return nil, fmt.Errorf("mdtest: serve: %w", err)
	}
	return s, nil
}

// TCPAddr returns the address of the plain TCP listener, in the form
// "tcp://127.0.0.1:PORT".
func (s *Server) TCPAddr() string {
	return "tcp://" + s.tcp.Address()
}

// WSAddr returns the URL of the WebSocket listener, in the form
// "ws://127.0.0.1:PORT/mqtt". Clients must request the WebSocket subprotocol
// "mqtt"; other paths are answered with 404 Not Found.
func (s *Server) WSAddr() string {
	return "ws://" + s.ws.Address() + wsPath
}

// Close stops the listeners, sends DISCONNECT (0x8B, Server shutting down) to
// every connected client and closes its connection, and closes every
// [Subscription]. A WebSocket connection is closed with a close frame
// (status 1000); a peer that does not answer it within 100ms is cut off.
//
// Close returns once the accept loops and the connection goroutines have
// finished their work. A few goroutines that are not observable from
// outside mochi (its housekeeping loop, each client's writer, the frames
// that called into the listeners) have been told to stop by then and exit a
// moment later; leak checkers that retry, such as go.uber.org/goleak with
// its defaults, see none of them.
//
// It is safe to call Close more than once; later calls do nothing and return
// nil.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.faults.resume() // a paused connection would hold mochi's shutdown up

		// mochi closes every listener (ours wait for their accept loops and
		// connection goroutines) and then waits for all clients to detach.
		_ = s.broker.Close()

		s.mu.Lock()
		subs := make([]*Subscription, 0, len(s.subs))
		for sub := range s.subs {
			subs = append(subs, sub)
		}
		s.mu.Unlock()
		for _, sub := range subs {
			_ = sub.Close()
		}
	})
	return nil
}

// disconnectClients sends DISCONNECT (0x8B) to every connected client of the
// listener and closes it, as mochi's Server.Close would, but without
// Clients.GetByListener, which can deadlock (see connSet.disconnectClients).
func (s *Server) disconnectClients(listenerID string) {
	for _, cl := range s.broker.Clients.GetAll() {
		if cl.Net.Listener == listenerID && !cl.Closed() {
			_ = s.broker.DisconnectClient(cl, packets.ErrServerShuttingDown)
		}
	}
}

// routing is the decision taken for one client publish before its PUBACK:
// which Subscriptions will receive it and whether it has any subscriber.
type routing struct {
	gen       uint64 // Subscriptions with seq <= gen existed at decision time
	hasSubscr bool   // a network or in-process subscriber matched the topic
}

// route decides how a client publish to topic is routed. Network
// subscriptions known to mochi count (including shared subscriptions and
// offline persistent sessions), and so do the Subscriptions that exist now.
func (s *Server) route(topic string) routing {
	found := s.broker.Topics.Subscribers(topic)
	brokerHas := len(found.Subscriptions) > 0 || len(found.Shared) > 0 || len(found.InlineSubscriptions) > 0

	s.mu.RLock()
	defer s.mu.RUnlock()
	r := routing{gen: s.subSeq, hasSubscr: brokerHas}
	if !r.hasSubscr {
		for sub := range s.subs {
			if matchTopic(sub.filter, topic) {
				r.hasSubscr = true
				break
			}
		}
	}
	return r
}
