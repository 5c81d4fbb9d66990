package conn

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/coder/websocket"
	"golang.org/x/net/http/httpproxy"
	"golang.org/x/net/proxy"
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

// dialTCP opens a TCP connection with the configured dialer.
func (cfg *Config) dialTCP(ctx context.Context, addr string) (net.Conn, error) {
	if cfg.Dial != nil {
		return userDial(cfg.Dial, ctx, addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// userDial calls the user's dialer, which may panic (it may run on a goroutine of
// net/http's, where a panic would end the process) or return neither a connection nor an
// error: both fail the attempt instead.
func userDial(dial func(context.Context, string, string) (net.Conn, error), ctx context.Context, addr string) (nc net.Conn, err error) {
	defer func() {
		if p := recover(); p != nil {
			nc, err = nil, fmt.Errorf("the dialer (WithDialer) panicked: %v", p)
		}
	}()
	nc, err = dial(ctx, "tcp", addr)
	if nc == nil && err == nil {
		err = errors.New("the dialer (WithDialer) returned no connection and no error")
	}
	return nc, err
}

// tlsConfig is cfg.TLS for a connection to host: its server name, unless the
// configuration names one, is the host's, so that the certificate is verified against it.
func (cfg *Config) tlsConfig(host string) *tls.Config {
	var c *tls.Config
	if cfg.TLS != nil {
		c = cfg.TLS.Clone()
	} else {
		c = &tls.Config{}
	}
	if c.ServerName == "" {
		c.ServerName = host
	}
	return c
}

func dialStream(ctx context.Context, ep Endpoint, cfg *Config) (net.Conn, error) {
	raw, err := cfg.dialTCP(ctx, ep.HostPort)
	if err != nil || ep.Transport != TLS {
		return raw, err
	}
	host, _, _ := net.SplitHostPort(ep.HostPort)
	tc := tls.Client(raw, cfg.tlsConfig(host))
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return tc, nil
}

func dialWebSocket(ctx context.Context, ep Endpoint, cfg *Config) (*Conn, error) {
	host, _, _ := net.SplitHostPort(ep.HostPort)
	tr := &http.Transport{
		TLSClientConfig: cfg.tlsConfig(host),
		DialContext:     func(ctx context.Context, _, addr string) (net.Conn, error) { return cfg.dialTCP(ctx, addr) },
	}
	defer tr.CloseIdleConnections()
	if cfg.Dial == nil {
		// A proxy from the environment is reached with CONNECT, also for ws:// (a forward
		// HTTP proxy would have to understand the WebSocket upgrade).
		dial, err := proxyDialer(ep)
		if err != nil {
			return nil, err
		}
		if dial != nil {
			tr.DialContext = dial
		}
	}
	opts := &websocket.DialOptions{
		Subprotocols: []string{"mqtt"},
		HTTPClient:   &http.Client{Transport: tr},
		HTTPHeader:   cfg.HTTPHeader,
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

// proxyDialer returns a dialer through the proxy that HTTP_PROXY, HTTPS_PROXY and
// NO_PROXY name for the WebSocket URL of ep (read at every attempt), or nil for none.
func proxyDialer(ep Endpoint) (func(context.Context, string, string) (net.Conn, error), error) {
	u, err := url.Parse(ep.URL)
	if err != nil {
		return nil, err
	}
	u.Scheme = strings.Replace(u.Scheme, "ws", "http", 1) // ws → http, wss → https
	px, err := httpproxy.FromEnvironment().ProxyFunc()(u)
	if err != nil || px == nil {
		return nil, err
	}
	switch px.Scheme {
	case "http", "https":
		return func(ctx context.Context, _, addr string) (net.Conn, error) { return dialConnect(ctx, px, addr) }, nil
	case "socks5", "socks5h":
		d, err := proxy.FromURL(px, proxy.Direct)
		if err != nil {
			return nil, err
		}
		cd, ok := d.(proxy.ContextDialer)
		if !ok {
			return nil, fmt.Errorf("proxy %s: no context dialer", px.Redacted())
		}
		return cd.DialContext, nil
	}
	return nil, fmt.Errorf("proxy %s: unsupported scheme", px.Redacted())
}

// dialConnect opens a tunnel to addr through the HTTP proxy px with CONNECT.
func dialConnect(ctx context.Context, px *url.URL, addr string) (net.Conn, error) {
	var d net.Dialer
	pc, err := d.DialContext(ctx, "tcp", px.Host)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", px.Redacted(), err)
	}
	if px.Scheme == "https" {
		host, _, _ := net.SplitHostPort(px.Host)
		tc := tls.Client(pc, &tls.Config{ServerName: host})
		if err := tc.HandshakeContext(ctx); err != nil {
			pc.Close()
			return nil, fmt.Errorf("proxy %s: %w", px.Redacted(), err)
		}
		pc = tc
	}
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()
	req := "CONNECT " + addr + " HTTP/1.1\r\nHost: " + addr + "\r\n"
	if px.User != nil {
		pass, _ := px.User.Password()
		req += "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(px.User.Username()+":"+pass)) + "\r\n"
	}
	if _, err := io.WriteString(pc, req+"\r\n"); err != nil {
		pc.Close()
		return nil, fmt.Errorf("proxy %s: %w", px.Redacted(), err)
	}
	br := bufio.NewReader(pc)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("proxy %s: %w", px.Redacted(), err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		pc.Close()
		return nil, fmt.Errorf("proxy %s: CONNECT %s: %s", px.Redacted(), addr, resp.Status)
	}
	if !stop() {
		pc.Close()
		return nil, context.Cause(ctx)
	}
	if br.Buffered() > 0 { // the server spoke first: keep what the reader holds
		return &bufferedConn{Conn: pc, r: br}, nil
	}
	return pc, nil
}

// bufferedConn is a connection whose first bytes were read into r.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

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
