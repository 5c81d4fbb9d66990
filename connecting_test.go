package mdclient_test

// Connecting in real deployments (contract §9): a token fetched before every attempt,
// WebSocket headers, dialers and proxies.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/mdclient/mdclient"
	"github.com/mdclient/mdclient/internal/mosquittotest"
	"github.com/mdclient/mdclient/internal/proxytest"
)

// TestTokenFuncPerConnection: the token of WithTokenFunc is fetched before every
// connection attempt, so a broker whose password changes while the client runs takes the
// new one at the next connection; a client with a fixed SetEntitlementToken is refused.
func TestTokenFuncPerConnection(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Config{Users: map[string]string{"pub": "tok-1-Kq8", "sub": subPassword}})
	var token atomic.Pointer[string]
	setToken := func(s string) { token.Store(&s) }
	setToken("tok-1-Kq8")
	var calls atomic.Int32
	log := newLogRecorder()
	refreshed := newClient(t, "", []string{b.TCPAddr()}, mdclient.WithUsername("pub"), mdclient.WithLogger(log.Logger()),
		mdclient.WithReconnectTimeInterval(20*time.Millisecond),
		mdclient.WithTokenFunc(func(ctx context.Context) (string, error) {
			calls.Add(1)
			return *token.Load(), ctx.Err()
		}))
	fixed := newClient(t, "tok-1-Kq8", []string{b.TCPAddr()}, mdclient.WithUsername("pub"), mdclient.WithLogger(log.Logger()),
		mdclient.WithReconnectTimeInterval(20*time.Millisecond))
	for _, c := range []*mdclient.Client{refreshed, fixed} {
		if st, err := c.Publish(ctxTimeout(t, 10*time.Second), mdclient.Message{Subject: "token/x"}); st != mdclient.NotifyPublishNoSubscriber {
			t.Fatalf("before the change: %s %v", st, err)
		}
	}
	b.SetPasswords(t, map[string]string{"pub": "tok-2-Zr4", "sub": subPassword})
	setToken("tok-2-Zr4")
	b.Restart(t) // every client reconnects
	if st, err := refreshed.Publish(ctxTimeout(t, 10*time.Second), mdclient.Message{Subject: "token/x"}); st != mdclient.NotifyPublishNoSubscriber {
		t.Errorf("the refreshed token after the change: %s %v", st, err)
	}
	var refused *mdclient.RefusedError
	if st, err := fixed.Publish(ctxTimeout(t, 10*time.Second), mdclient.Message{Subject: "token/x"}); st != mdclient.NotifyPublishDenied || !errors.As(err, &refused) {
		t.Errorf("the fixed, old token after the change: %s %v, want DENIED wrapping a RefusedError", st, err)
	}
	if n := calls.Load(); n < 2 {
		t.Errorf("the token function was called %d times for at least two connections", n)
	}
	for _, r := range log.Records() {
		for _, secret := range []string{"tok-1-Kq8", "tok-2-Zr4"} {
			if strings.Contains(r.String(), secret) {
				t.Errorf("a token in the log: %s", r)
			}
		}
	}
}

// TestTokenFuncFailureIsAFailedAttempt: an error from the token function fails that
// attempt — reported with NotifyServerDown naming it, paced by the reconnect policy —
// and once it succeeds the client connects.
func TestTokenFuncFailureIsAFailedAttempt(t *testing.T) {
	srv := embedded(t)
	var broken atomic.Bool
	broken.Store(true)
	var calls atomic.Int32
	c := newClient(t, allowToken, []string{srv.TCPAddr()},
		mdclient.WithQuickReconnectMaxRetries(1), mdclient.WithReconnectTimeInterval(100*time.Millisecond),
		mdclient.WithReconnectMaxDelay(200*time.Millisecond),
		mdclient.WithTokenFunc(func(context.Context) (string, error) {
			calls.Add(1)
			if broken.Load() {
				return "", errors.New("vault unreachable")
			}
			return allowToken, nil
		}))
	ev, _ := awaitEvent(t, c, mdclient.NotifyServerDown, srv.TCPAddr(), 5*time.Second)
	if ev.Err == nil || !strings.Contains(ev.Err.Error(), "vault unreachable") {
		t.Errorf("NotifyServerDown with %v, want the token function's error", ev.Err)
	}
	// The policy paces the attempts: one quick round, then 50–100 ms, 100–200 ms, ... —
	// at most about 10 in a second, not a tight loop.
	timer := time.NewTimer(time.Second)
	<-timer.C
	if n := calls.Load(); n > 12 || n < 3 {
		t.Errorf("%d calls of the token function in a second", n)
	}
	broken.Store(false)
	awaitEvent(t, c, mdclient.NotifyServerUp, srv.TCPAddr(), 5*time.Second)
	if st, err := c.Publish(ctxTimeout(t, 5*time.Second), mdclient.Message{Subject: "t/x"}); st != mdclient.NotifyPublishNoSubscriber {
		t.Fatal(st, err)
	}
}

// handshakeRecorder is a TCP proxy in front of a WebSocket server that keeps the HTTP
// request head of every connection it forwards, so that a test sees the handshake the
// client sent, then forwards the rest untouched.
type handshakeRecorder struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	heads  []http.Header
	wg     sync.WaitGroup
}

func newHandshakeRecorder(t *testing.T, target string) *handshakeRecorder {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &handshakeRecorder{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); h.wg.Wait() })
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				defer c.Close()
				// The request head as it came, up to the blank line.
				r := bufio.NewReader(c)
				var head []byte
				for !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
					line, err := r.ReadSlice('\n')
					if err != nil {
						return
					}
					head = append(head, line...)
				}
				req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
				if err != nil {
					return
				}
				h.mu.Lock()
				h.heads = append(h.heads, req.Header.Clone())
				h.mu.Unlock()
				s, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer s.Close()
				if _, err := s.Write(head); err != nil {
					return
				}
				go func() { io.Copy(c, s); c.Close() }()
				io.Copy(s, r)
			}()
		}
	}()
	return h
}

func (h *handshakeRecorder) handshakes() []http.Header {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.heads)
}

// TestHTTPHeaderOnEveryHandshake: WithHTTPHeader's headers go with every WebSocket
// handshake, the first and the one after a lost connection.
func TestHTTPHeaderOnEveryHandshake(t *testing.T) {
	srv := embedded(t)
	u, err := url.Parse(srv.WSAddr())
	if err != nil {
		t.Fatal(err)
	}
	rec := newHandshakeRecorder(t, u.Host)
	h := http.Header{}
	h.Set("Authorization", "Bearer eyJ-test")
	h.Add("X-Amz-Customauthorizer-Name", "mdclient-authoriser")
	c := newClient(t, allowToken, []string{"ws://" + rec.ln.Addr().String() + "/mqtt"}, mdclient.WithHTTPHeader(h))
	h.Set("Authorization", "changed after the option: must not matter")
	if st, err := c.Publish(ctxTimeout(t, 10*time.Second), mdclient.Message{Subject: "hdr/x"}); st != mdclient.NotifyPublishNoSubscriber {
		t.Fatal(st, err)
	}
	srv.CutConnections()
	awaitEvent(t, c, mdclient.NotifyServerUp, "", 10*time.Second) // the first
	awaitEvent(t, c, mdclient.NotifyServerUp, "", 10*time.Second) // after the cut
	if st, err := c.Publish(ctxTimeout(t, 10*time.Second), mdclient.Message{Subject: "hdr/x"}); st != mdclient.NotifyPublishNoSubscriber {
		t.Fatal(st, err)
	}
	heads := rec.handshakes()
	if len(heads) < 2 {
		t.Fatalf("%d handshakes recorded", len(heads))
	}
	for i, got := range heads {
		if got.Get("Authorization") != "Bearer eyJ-test" || got.Get("X-Amz-Customauthorizer-Name") != "mdclient-authoriser" ||
			got.Get("Sec-Websocket-Protocol") != "mqtt" {
			t.Errorf("handshake %d: %v", i, got)
		}
	}
}

// connectDialer is a WithDialer function through the HTTP CONNECT proxy at addr, as a
// user would write one.
func connectDialer(addr string) func(ctx context.Context, network, target string) (net.Conn, error) {
	return func(ctx context.Context, network, target string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err == nil && resp.StatusCode != http.StatusOK {
			err = errors.New(resp.Status)
		}
		if err != nil {
			c.Close()
			return nil, err
		}
		return c, nil // the proxy sends nothing before the client speaks: br holds nothing
	}
}

// TestProxies: the TCP connection under every transport — tcp, tls, ws, wss — goes
// through a SOCKS5 proxy (golang.org/x/net/proxy's dialer) or an HTTP CONNECT proxy given
// with WithDialer; WebSocket servers also through the HTTP(S)_PROXY of the environment
// when no dialer is given. The broker is named by a host name only the proxies know, and
// TLS is verified against it.
func TestProxies(t *testing.T) {
	b, pool := startTLSMosquitto(t)
	hosts := map[string]string{mosquittotest.TestHost: "127.0.0.1"}
	socks, err := proxytest.SOCKS5(hosts)
	if err != nil {
		t.Fatal(err)
	}
	defer socks.Close()
	httpProxy, err := proxytest.HTTPConnect(hosts, "")
	if err != nil {
		t.Fatal(err)
	}
	defer httpProxy.Close()
	authProxy, err := proxytest.HTTPConnect(hosts, "proxyuser:proxy-pass")
	if err != nil {
		t.Fatal(err)
	}
	defer authProxy.Close()

	named := func(addr string) string { // 127.0.0.1 → the test host
		return strings.Replace(addr, "127.0.0.1", mosquittotest.TestHost, 1)
	}
	servers := map[string]string{"tcp": named(b.TCPAddr()), "tls": named(b.TLSAddr()), "ws": named(b.WSAddr()), "wss": named(b.WSSAddr())}
	socksDialer, err := proxy.SOCKS5("tcp", socks.Addr(), nil, proxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	publishVia := func(t *testing.T, p *proxytest.Proxy, server string, opts ...mdclient.Option) {
		t.Helper()
		opts = append(opts, mdclient.WithUsername("pub"), mdclient.WithTLSConfig(&tls.Config{RootCAs: pool}))
		c := newClient(t, allowToken, []string{server}, opts...)
		if st, err := c.Publish(ctxTimeout(t, 10*time.Second), mdclient.Message{Subject: "tls/proxied"}); st != mdclient.NotifyPublishNoSubscriber {
			t.Fatalf("%s: %s %v", server, st, err)
		}
		u, _ := url.Parse(server)
		if !slices.Contains(p.Tunnels(), u.Host) {
			t.Errorf("%s: the proxy tunnelled %v, not %s", server, p.Tunnels(), u.Host)
		}
	}
	for _, transport := range []string{"tcp", "tls", "ws", "wss"} {
		server := servers[transport]
		t.Run("socks5/"+transport, func(t *testing.T) {
			publishVia(t, socks, server, mdclient.WithDialer(socksDialer.(proxy.ContextDialer).DialContext))
		})
		t.Run("connect/"+transport, func(t *testing.T) {
			publishVia(t, httpProxy, server, mdclient.WithDialer(connectDialer(httpProxy.Addr())))
		})
	}
	for _, transport := range []string{"ws", "wss"} {
		server := servers[transport]
		t.Run("environment/"+transport, func(t *testing.T) {
			t.Setenv("HTTP_PROXY", "http://"+httpProxy.Addr())
			t.Setenv("HTTPS_PROXY", "http://"+httpProxy.Addr())
			t.Setenv("NO_PROXY", "")
			publishVia(t, httpProxy, server)
		})
		t.Run("environment with credentials/"+transport, func(t *testing.T) {
			t.Setenv("HTTP_PROXY", "http://proxyuser:proxy-pass@"+authProxy.Addr())
			t.Setenv("HTTPS_PROXY", "http://proxyuser:proxy-pass@"+authProxy.Addr())
			t.Setenv("NO_PROXY", "")
			publishVia(t, authProxy, server)
		})
	}
	t.Run("environment, wrong credentials", func(t *testing.T) {
		t.Setenv("HTTP_PROXY", "http://proxyuser:wrong@"+authProxy.Addr())
		t.Setenv("NO_PROXY", "")
		c := newClient(t, allowToken, []string{servers["ws"]}, mdclient.WithUsername("pub"))
		ev, _ := awaitEvent(t, c, mdclient.NotifyServerDown, "", 10*time.Second)
		if ev.Err == nil || !strings.Contains(ev.Err.Error(), "407") || strings.Contains(ev.Err.Error(), "wrong") {
			t.Errorf("NotifyServerDown with %v, want the proxy's 407 without the password", ev.Err)
		}
	})
}

// TestCallbacksThatIgnoreTheirContext: a token function or dialer that does not return
// when its context ends holds up nothing: the attempt is given up a little after the
// connect timeout and reported, a new server list is tried at once, Close returns in
// time (found by the outside tester: each stalled the client for as long as it hung).
func TestCallbacksThatIgnoreTheirContext(t *testing.T) {
	srv := embedded(t)
	hang := make(chan struct{})
	release := sync.OnceFunc(func() { close(hang) })
	defer release() // the hung callbacks return when the test ends
	t.Run("token function", func(t *testing.T) {
		var calls atomic.Int32
		c := newClient(t, allowToken, []string{srv.TCPAddr()}, mdclient.WithConnectTimeout(200*time.Millisecond),
			mdclient.WithReconnectTimeInterval(10*time.Millisecond),
			mdclient.WithTokenFunc(func(context.Context) (string, error) {
				if calls.Add(1) == 1 {
					<-hang // ignores its context
				}
				return allowToken, nil
			}))
		ev, _ := awaitEvent(t, c, mdclient.NotifyServerDown, srv.TCPAddr(), 5*time.Second)
		if ev.Err == nil || !strings.Contains(ev.Err.Error(), "did not end within") {
			t.Errorf("down event %v, want the attempt given up", ev.Err)
		}
		awaitEvent(t, c, mdclient.NotifyServerUp, srv.TCPAddr(), 5*time.Second)
	})
	t.Run("dialer, then a new server list", func(t *testing.T) {
		hole := "tcp://192.0.2.1:1883" // TEST-NET-1: the dialer below hangs for it
		dialing := make(chan struct{}, 1)
		c := newClient(t, allowToken, []string{hole}, mdclient.WithConnectTimeout(time.Hour),
			mdclient.WithDialer(func(ctx context.Context, network, addr string) (net.Conn, error) {
				if addr == "192.0.2.1:1883" {
					select {
					case dialing <- struct{}{}:
					default:
					}
					<-hang
					return nil, errors.New("released")
				}
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			}))
		<-dialing // the attempt on the hole hangs now
		if err := c.SetServers([]string{srv.TCPAddr()}); err != nil {
			t.Fatal(err)
		}
		awaitEvent(t, c, mdclient.NotifyServerUp, srv.TCPAddr(), 5*time.Second)
	})
	t.Run("Close", func(t *testing.T) {
		c := openClient(t, allowToken, []string{"tcp://192.0.2.1:1883"}, mdclient.WithConnectTimeout(time.Hour), mdclient.WithDrainTimeout(100*time.Millisecond),
			mdclient.WithDialer(func(context.Context, string, string) (net.Conn, error) {
				<-hang
				return nil, errors.New("released")
			}))
		res := c.PublishAsync(context.Background(), mdclient.PublishRequest{Message: mdclient.Message{Subject: "hang/x"}})
		if took, ok := closeWithin(t, c, 100*time.Millisecond+time.Second, release); !ok {
			t.Errorf("Close took %v with a dialer hung, want at most the drain timeout + 1 s", took)
		}
		if r := <-res; r.Status != mdclient.NotifyPublishFailed || !errors.Is(r.Err, mdclient.ErrClosed) {
			t.Errorf("%s %v, want FAILED wrapping ErrClosed", r.Status, r.Err)
		}
	})
}

// TestCallbacksThatPanic: a token function or dialer that panics, or a dialer that
// returns neither a connection nor an error, fails its attempt, reported; the process
// goes on (found by the outside tester: each crashed it).
func TestCallbacksThatPanic(t *testing.T) {
	srv := embedded(t)
	for _, c := range []struct {
		name string
		opt  mdclient.Option
		want string
	}{
		{"token function", mdclient.WithTokenFunc(func(context.Context) (string, error) { panic("token bug") }), "panicked: token bug"},
		{"dialer", mdclient.WithDialer(func(context.Context, string, string) (net.Conn, error) { panic("dial bug") }), "panicked: dial bug"},
		{"dialer returning nothing", mdclient.WithDialer(func(context.Context, string, string) (net.Conn, error) { return nil, nil }), "no connection and no error"},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, addr := range []string{srv.TCPAddr(), srv.WSAddr()} {
				cl := newClient(t, allowToken, []string{addr}, c.opt)
				ev, _ := awaitEvent(t, cl, mdclient.NotifyServerDown, addr, 5*time.Second)
				if ev.Err == nil || !strings.Contains(ev.Err.Error(), c.want) {
					t.Errorf("%s: down event %v, want %q", addr, ev.Err, c.want)
				}
			}
		})
	}
}
