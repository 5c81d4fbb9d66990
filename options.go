package mdclient

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Defaults of the options.
const (
	DefaultPublishTimeout             = 10 * time.Second
	DefaultKeepAlive                  = 30 * time.Second
	DefaultConnectTimeout             = 5 * time.Second
	DefaultDrainTimeout               = 5 * time.Second
	DefaultMaxQueued                  = 16384
	DefaultQuickReconnectMaxRetries   = 3
	DefaultQuickReconnectInitialDelay = 0
	DefaultReconnectTimeInterval      = 500 * time.Millisecond
	DefaultReconnectMaxDelay          = 10 * time.Second
	DefaultEventBuffer                = 64
)

// ReconnectPolicy is the shape of the delays between reconnect attempts once the quick
// phase is over.
type ReconnectPolicy uint8

const (
	// TruncatedExponentialBackoff doubles the delay after each failed attempt, from
	// ReconnectTimeInterval up to ReconnectMaxDelay. The default.
	TruncatedExponentialBackoff ReconnectPolicy = iota
	// ConstantWindowBackoff waits ReconnectTimeInterval after each failed attempt.
	ConstantWindowBackoff
)

// Option configures a Client in NewClient.
type Option func(*options)

type options struct {
	username         string
	clientID         string
	tokenInUsername  bool
	publishTimeout   time.Duration
	keepAlive        time.Duration
	connectTimeout   time.Duration
	drainTimeout     time.Duration
	maxQueued        int
	maxInflight      int
	tls              *tls.Config
	logger           *slog.Logger
	quickRetries     int
	quickDelay       time.Duration
	policy           ReconnectPolicy
	interval         time.Duration
	maxDelay         time.Duration
	notifyAfter      int
	eventBuffer      int
	deniedReasonCode [256]bool
	tokenFunc        func(ctx context.Context) (string, error)
	httpHeader       http.Header
	dial             func(ctx context.Context, network, addr string) (net.Conn, error)
	followRedirects  bool
	rate             float64
	burst            int
	connections      int
	hooks            []Hook
}

func defaults() options {
	return options{
		publishTimeout: DefaultPublishTimeout,
		keepAlive:      DefaultKeepAlive,
		connectTimeout: DefaultConnectTimeout,
		drainTimeout:   DefaultDrainTimeout,
		maxQueued:      DefaultMaxQueued,
		quickRetries:   DefaultQuickReconnectMaxRetries,
		quickDelay:     DefaultQuickReconnectInitialDelay,
		interval:       DefaultReconnectTimeInterval,
		maxDelay:       DefaultReconnectMaxDelay,
		notifyAfter:    1,
		eventBuffer:    DefaultEventBuffer,
		connections:    1,
		logger:         slog.New(slog.DiscardHandler),
	}
}

// WithUsername sets the MQTT user name sent in CONNECT. Default: none.
func WithUsername(name string) Option { return func(o *options) { o.username = name } }

// WithClientID sets the MQTT client identifier. Default: "mdclient-" and 16 random hex
// digits, new for each Client.
func WithClientID(id string) Option { return func(o *options) { o.clientID = id } }

// WithTokenInUsername sends the entitlement token as the MQTT user name instead of the
// password (for brokers that authorise by user name). WithUsername is then ignored.
func WithTokenInUsername() Option { return func(o *options) { o.tokenInUsername = true } }

// WithPublishTimeout bounds a publish whose context has no deadline. Default 10 s;
// values ≤ 0 are ignored.
func WithPublishTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.publishTimeout = d
		}
	}
}

// WithKeepAlive sets the MQTT keep-alive interval. The client pings a quiet server and
// drops a connection on which nothing arrived for 1.5 intervals. Default 30 s; 0 turns
// keep-alive off; a server's Server Keep Alive overrides it.
func WithKeepAlive(d time.Duration) Option {
	return func(o *options) {
		if d >= 0 {
			o.keepAlive = d
		}
	}
}

// WithConnectTimeout bounds one connection attempt (dial, TLS, WebSocket upgrade,
// CONNECT/CONNACK). Default 5 s; values ≤ 0 are ignored.
func WithConnectTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.connectTimeout = d
		}
	}
}

// WithDrainTimeout bounds how long Close waits for results of accepted requests.
// Default 5 s; values < 0 are ignored.
func WithDrainTimeout(d time.Duration) Option {
	return func(o *options) {
		if d >= 0 {
			o.drainTimeout = d
		}
	}
}

// WithMaxQueued bounds the requests waiting inside the client beyond those in flight
// (at most max(n, 2) wait); past it, PublishAsync and Publish block until there is room or
// their context ends (then FAILED with ErrTimeout). It bounds the results waiting for one
// full Result channel likewise: once n wait, calls naming that channel block. Requests
// accepted before that (up to n queued and a window in flight per connection) still add
// their results, so a channel nobody reads holds at most about 2n plus one window per
// connection, plus what PublishAsync says of refused calls. Default 16384; values < 1 are
// ignored.
func WithMaxQueued(n int) Option {
	return func(o *options) {
		if n >= 1 {
			o.maxQueued = n
		}
	}
}

// WithMaxInflight caps unacknowledged publishes per connection below the server's
// Receive Maximum. Default: the server's Receive Maximum alone; values < 1 are ignored.
func WithMaxInflight(n int) Option {
	return func(o *options) {
		if n >= 1 {
			o.maxInflight = n
		}
	}
}

// WithTLSConfig sets the TLS configuration of wss:// and tls:// servers, for a private
// CA or client certificates. Default: the system's roots, with the server verified.
func WithTLSConfig(cfg *tls.Config) Option { return func(o *options) { o.tls = cfg } }

// WithLogger sets where the client logs connections, failovers and dropped connections.
// Default: nothing is logged. The entitlement token is never logged.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}

// WithQuickReconnectMaxRetries sets how many attempts form the quick phase after a
// connection is lost. Default 3; values < 0 are ignored.
func WithQuickReconnectMaxRetries(n int) Option {
	return func(o *options) {
		if n >= 0 {
			o.quickRetries = n
		}
	}
}

// WithQuickReconnectInitialDelay sets the delay before each quick-phase attempt.
// Default 0: a producer fails over to another server at once. Values < 0 are ignored.
func WithQuickReconnectInitialDelay(d time.Duration) Option {
	return func(o *options) {
		if d >= 0 {
			o.quickDelay = d
		}
	}
}

// WithReconnectPolicy sets the backoff after the quick phase. Default
// TruncatedExponentialBackoff.
func WithReconnectPolicy(p ReconnectPolicy) Option {
	return func(o *options) {
		if p == TruncatedExponentialBackoff || p == ConstantWindowBackoff {
			o.policy = p
		}
	}
}

// WithReconnectTimeInterval sets the first (exponential) or every (constant) backoff
// delay. Each delay is drawn at random from its upper half. Default 500 ms; values ≤ 0
// are ignored.
func WithReconnectTimeInterval(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.interval = d
		}
	}
}

// WithReconnectMaxDelay caps the exponential backoff. Default 10 s; values ≤ 0 are
// ignored.
func WithReconnectMaxDelay(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.maxDelay = d
		}
	}
}

// WithNotifyAfterFailedConnectionAttempts sets after how many failed attempts in a row
// a server is reported with NotifyServerDown. Default 1; values < 1 are ignored.
func WithNotifyAfterFailedConnectionAttempts(n int) Option {
	return func(o *options) {
		if n >= 1 {
			o.notifyAfter = n
		}
	}
}

// WithEventBuffer sets how many events Events holds for a caller that does not read
// them; past that the oldest is dropped. Default 64; values < 1 are ignored.
func WithEventBuffer(n int) Option {
	return func(o *options) {
		if n >= 1 {
			o.eventBuffer = n
		}
	}
}

// WithDeniedReasonCodes names PUBACK reason codes, besides 0x87, that mean the publish
// was denied, for brokers that answer a forbidden topic otherwise (ejabberd sends 0x90).
// Codes below 0x80 are ignored. Default: none.
func WithDeniedReasonCodes(codes ...byte) Option {
	return func(o *options) {
		for _, c := range codes {
			if c >= 0x80 {
				o.deniedReasonCode[c] = true
			}
		}
	}
}

// WithTokenFunc sets a function that returns the entitlement token, called before every
// connection attempt within a context bounded by the connect timeout; its token (placed
// as SetEntitlementToken's would be) wins over SetEntitlementToken. Use it for
// short-lived tokens: a token that expires while connected is fetched anew for the next
// connection. An error, or a context that ends, fails that attempt like an unreachable
// server: reported with NotifyServerDown and counted by the reconnect policy. The token is
// never logged. f should return when ctx ends; if it does not, the client gives the
// attempt up 250 ms after the connect timeout and goes on without it (what f leaves
// running, it leaves running). A panic in f fails the attempt. Default: none.
func WithTokenFunc(f func(ctx context.Context) (string, error)) Option {
	return func(o *options) { o.tokenFunc = f }
}

// WithHTTPHeader sets HTTP headers sent with every WebSocket handshake (ws://, wss://,
// host:port), such as an Authorization header a cloud authoriser wants. The client adds
// the WebSocket ones itself; h is cloned, so changing it later changes nothing. Default:
// none.
func WithHTTPHeader(h http.Header) Option {
	h = h.Clone()
	return func(o *options) { o.httpHeader = h }
}

// WithDialer sets how the client opens the TCP connection under every transport (tcp,
// tls, ws, wss): the TLS and WebSocket handshakes run over what dial returns. A SOCKS5 or
// HTTP CONNECT proxy plugs in here (golang.org/x/net/proxy's dialers have this
// signature). Default: a net.Dialer, and for WebSocket servers the proxy that
// HTTP_PROXY, HTTPS_PROXY and NO_PROXY name (reached with CONNECT), read at every
// attempt; a dialer given here replaces both. dial should return when ctx ends; if it does
// not, the client gives the attempt up 250 ms after the connect timeout, or at once for a
// new server list or Close, and closes what it returns later. A panic in dial, or neither
// a connection nor an error, fails the attempt.
func WithDialer(dial func(ctx context.Context, network, addr string) (net.Conn, error)) Option {
	return func(o *options) { o.dial = dial }
}

// WithFollowRedirects makes the client follow server redirection (MQTT 5 §4.11): a CONNACK
// or DISCONNECT with reason 0x9C (use another server) or 0x9D (server moved) and a Server
// Reference sends the next attempt, at once, to the referenced server; with 0x9D the
// reference also replaces that entry of the server list. At most 3 redirects are
// followed in a row. A reference is a space-separated list, of which the first that
// parses is taken: a server entry with a scheme ("tls://host:8883"), or a bare host:port
// reached over the redirecting server's transport. TLS is verified against the new host.
// The redirecting server is reported with NotifyServerDown, its Err naming the reference.
// Default false: such a server counts as failed.
func WithFollowRedirects(on bool) Option { return func(o *options) { o.followRedirects = on } }

// WithRateLimit caps how fast publishes are written: at most perSecond per second on
// average, with bursts of up to burst (a token bucket, kept on the client's own clock:
// no timer per message). Requests waiting for their turn count as queued (WithMaxQueued)
// and end by their context like any other. Default: no limit; values ≤ 0 (or a burst
// below 1) are ignored.
func WithRateLimit(perSecond float64, burst int) Option {
	return func(o *options) {
		if perSecond > 0 && burst >= 1 {
			o.rate, o.burst = perSecond, burst
		}
	}
}

// WithConnections makes the client keep up to n connections at once: each to a different
// server of the list while the list has enough servers (chosen by weight, without
// repetition), else several to the same server. A message goes to the connection its
// subject hashes to, so the messages of one subject keep their order on the wire, also
// across failover: while a connection is down its subjects move, unacknowledged messages
// first, to another, and come back once what that one had of them is acknowledged. Each
// connection has its own Receive Maximum window (and WithMaxInflight); WithMaxQueued and
// WithRateLimit count over all of them. Events reports each connection's server up and
// down; Stats.Servers lists them. Connection i (from 0) uses the client id with "-i"
// appended, since a broker keeps one connection per client id. Default 1; values < 1 are
// ignored.
func WithConnections(n int) Option {
	return func(o *options) {
		if n >= 1 {
			o.connections = n
		}
	}
}
