package conn

// Transport is how an Endpoint is reached.
type Transport uint8

// The transports.
const (
	WS  Transport = iota // MQTT over WebSocket
	WSS                  // MQTT over WebSocket over TLS
	TCP                  // MQTT over TCP
	TLS                  // MQTT over TLS
)

func (t Transport) String() string {
	switch t {
	case WS:
		return "ws"
	case WSS:
		return "wss"
	case TCP:
		return "tcp"
	case TLS:
		return "tls"
	}
	return "unknown"
}

// Endpoint is a dialable server address.
type Endpoint struct {
	Transport Transport
	HostPort  string // host:port
	URL       string // the WebSocket URL, for WS and WSS
}

// String is the address as results and events name it: the WebSocket URL, or
// scheme://host:port for TCP and TLS.
func (e Endpoint) String() string {
	if e.Transport == WS || e.Transport == WSS {
		return e.URL
	}
	return e.Transport.String() + "://" + e.HostPort
}
