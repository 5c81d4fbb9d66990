// Package proxytest runs a SOCKS5 proxy and an HTTP CONNECT proxy on loopback, FOR TESTS
// ONLY: each tunnels TCP connections to the address the client asks for, after mapping
// host names through its own table (as a real proxy resolves names itself), and records
// every tunnel it opened. They implement only what a client needs to open a tunnel:
// SOCKS5 without authentication and the CONNECT command (RFC 1928); HTTP CONNECT with
// optional Basic proxy authentication (RFC 9110 §9.3.6).
package proxytest

import (
	"bufio"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
)

// Proxy is a running proxy. Its methods are safe for concurrent use.
type Proxy struct {
	ln      net.Listener
	hosts   map[string]string // host name → the address it stands for
	auth    string            // "user:password" the HTTP proxy requires; "" for none
	serve   func(*Proxy, net.Conn) (target string, err error)
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	tunnels []string // targets as the client named them
	closed  bool
}

// SOCKS5 starts a SOCKS5 proxy. hosts maps host names to addresses (e.g.
// "mosquitto.test" to "127.0.0.1"); other names are resolved by the system.
func SOCKS5(hosts map[string]string) (*Proxy, error) { return start(hosts, "", (*Proxy).socks5) }

// HTTPConnect starts an HTTP proxy that serves CONNECT; with auth ("user:password") it
// demands Basic Proxy-Authorization and answers 407 without it.
func HTTPConnect(hosts map[string]string, auth string) (*Proxy, error) {
	return start(hosts, auth, (*Proxy).connect)
}

func start(hosts map[string]string, auth string, serve func(*Proxy, net.Conn) (string, error)) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, hosts: hosts, auth: auth, serve: serve, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Tunnels returns the targets of the tunnels opened so far, as the clients named them.
func (p *Proxy) Tunnels() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.tunnels)
}

// Close stops the proxy, closes every tunnel and waits for its goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(c)
			p.serve(p, c)
		}()
	}
}

// dial opens the tunnel's far end, mapping the host through the table.
func (p *Proxy) dial(target string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		return nil, err
	}
	if a, ok := p.hosts[host]; ok {
		host = a
	}
	return net.Dial("tcp", net.JoinHostPort(host, port))
}

// relay records the tunnel and copies both ways until either side ends. client is what
// reads from clientConn, with what a buffered reader already holds.
func (p *Proxy) relay(client io.Reader, clientConn net.Conn, target string, server net.Conn) {
	p.mu.Lock()
	p.tunnels = append(p.tunnels, target)
	p.mu.Unlock()
	if !p.track(server) {
		return
	}
	defer p.untrack(server)
	done := make(chan struct{}, 2)
	go func() { io.Copy(server, client); server.Close(); done <- struct{}{} }()
	go func() { io.Copy(clientConn, server); clientConn.Close(); done <- struct{}{} }()
	<-done
	<-done
}

var errSOCKS = errors.New("proxytest: bad SOCKS5 request")

// socks5 serves one SOCKS5 client: no authentication, CONNECT.
func (p *Proxy) socks5(c net.Conn) (string, error) {
	r := bufio.NewReader(c)
	var head [2]byte
	if _, err := io.ReadFull(r, head[:]); err != nil || head[0] != 5 {
		return "", errSOCKS
	}
	methods := make([]byte, head[1])
	if _, err := io.ReadFull(r, methods); err != nil || !slices.Contains(methods, 0) {
		c.Write([]byte{5, 0xFF})
		return "", errSOCKS
	}
	c.Write([]byte{5, 0}) // no authentication
	var req [4]byte
	if _, err := io.ReadFull(r, req[:]); err != nil || req[0] != 5 || req[1] != 1 {
		return "", errSOCKS
	}
	var host string
	switch req[3] {
	case 1: // IPv4
		var ip [4]byte
		if _, err := io.ReadFull(r, ip[:]); err != nil {
			return "", errSOCKS
		}
		host = net.IP(ip[:]).String()
	case 3: // domain name
		n, err := r.ReadByte()
		if err != nil {
			return "", errSOCKS
		}
		name := make([]byte, n)
		if _, err := io.ReadFull(r, name); err != nil {
			return "", errSOCKS
		}
		host = string(name)
	default:
		c.Write([]byte{5, 8, 0, 1, 0, 0, 0, 0, 0, 0}) // address type not supported
		return "", errSOCKS
	}
	var port [2]byte
	if _, err := io.ReadFull(r, port[:]); err != nil {
		return "", errSOCKS
	}
	target := net.JoinHostPort(host, strconv.Itoa(int(binary.BigEndian.Uint16(port[:]))))
	server, err := p.dial(target)
	if err != nil {
		c.Write([]byte{5, 5, 0, 1, 0, 0, 0, 0, 0, 0}) // connection refused
		return target, err
	}
	c.Write([]byte{5, 0, 0, 1, 0, 0, 0, 0, 0, 0})
	p.relay(r, c, target, server)
	return target, nil
}

// connect serves one HTTP CONNECT request.
func (p *Proxy) connect(c net.Conn) (string, error) {
	r := bufio.NewReader(c)
	req, err := http.ReadRequest(r)
	if err != nil {
		return "", err
	}
	if req.Method != http.MethodConnect {
		fmt.Fprint(c, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
		return "", fmt.Errorf("proxytest: %s, not CONNECT", req.Method)
	}
	if p.auth != "" && req.Header.Get("Proxy-Authorization") != "Basic "+base64.StdEncoding.EncodeToString([]byte(p.auth)) {
		fmt.Fprint(c, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"proxytest\"\r\nContent-Length: 0\r\n\r\n")
		return req.Host, errors.New("proxytest: no or wrong Proxy-Authorization")
	}
	server, err := p.dial(req.Host)
	if err != nil {
		fmt.Fprint(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return req.Host, err
	}
	fmt.Fprint(c, "HTTP/1.1 200 Connection Established\r\n\r\n")
	p.relay(r, c, req.Host, server)
	return req.Host, nil
}
