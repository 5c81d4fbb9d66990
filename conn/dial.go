package conn

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/coder/websocket"
)

// Dial connects to ep over its transport and opens an MQTT connection on it, as Open
// does; ctx and cfg.ConnectTimeout bound the whole attempt.
func Dial(ctx context.Context, ep Endpoint, cfg *Config) (*Conn, error) {
	if cfg.ConnectTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.ConnectTimeout)
		defer cancel()
	}
	switch ep.Transport {
	case TCP, TLS:
		nc, err := dialStream(ctx, ep, cfg)
		if err != nil {
			return nil, err
		}
		return open(ctx, ep, nc, cfg)
	case WS, WSS:
		return dialWebSocket(ctx, ep, cfg)
	}
	return nil, fmt.Errorf("unknown transport %v", ep.Transport)
}

func dialStream(ctx context.Context, ep Endpoint, cfg *Config) (net.Conn, error) {
	if ep.Transport == TLS {
		d := tls.Dialer{Config: cfg.TLS}
		return d.DialContext(ctx, "tcp", ep.HostPort)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", ep.HostPort)
}

func dialWebSocket(ctx context.Context, ep Endpoint, cfg *Config) (*Conn, error) {
	opts := &websocket.DialOptions{Subprotocols: []string{"mqtt"}}
	if ep.Transport == WSS && cfg.TLS != nil {
		tr := &http.Transport{TLSClientConfig: cfg.TLS}
		defer tr.CloseIdleConnections()
		opts.HTTPClient = &http.Client{Transport: tr}
	}
	ws, resp, err := websocket.Dial(ctx, ep.URL, opts)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return nil, err
	}
	ws.SetReadLimit(maxIncoming)
	// The connection's own lifetime, never a caller's: coder/websocket closes the whole
	// connection when the context of a read or write ends.
	life, cancel := context.WithCancel(context.Background())
	nc := websocket.NetConn(life, ws, websocket.MessageBinary)
	return openWS(ctx, ep, nc, ws, cancel, cfg)
}

func openWS(ctx context.Context, ep Endpoint, nc net.Conn, ws *websocket.Conn, cancel context.CancelFunc, cfg *Config) (*Conn, error) {
	c := newConn(ep, cfg)
	c.nc, c.rd, c.ws, c.wsCancel = nc, &wsReader{ws: ws}, ws, cancel
	if err := c.handshake(ctx, cfg); err != nil {
		c.closeSocket()
		return nil, err
	}
	return c, nil
}

// wsReader reads the binary messages of a WebSocket as one stream of bytes (MQTT packets
// may span messages, and one message may hold several). It asks coder/websocket for each
// message with a context that cannot end: with one that can (as its NetConn uses), every
// message would cost a context.AfterFunc, which for one 4-byte PUBACK per message was most
// of the reader's time. Deadlines are not needed: the keep-alive watchdog and shutdown
// close the connection, which ends a blocked read.
type wsReader struct {
	ws  *websocket.Conn
	cur io.Reader // the message being read; nil between messages
}

func (r *wsReader) Read(p []byte) (int, error) {
	for {
		if r.cur == nil {
			typ, m, err := r.ws.Reader(context.Background())
			if err != nil {
				switch websocket.CloseStatus(err) {
				case websocket.StatusNormalClosure, websocket.StatusGoingAway:
					return 0, io.EOF
				}
				return 0, err
			}
			if typ != websocket.MessageBinary {
				return 0, fmt.Errorf("%w: a text WebSocket message", ErrProtocol)
			}
			r.cur = m
		}
		n, err := r.cur.Read(p)
		if err == io.EOF {
			r.cur = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}
