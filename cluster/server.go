package cluster

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/mdclient/mdclient/conn"
)

// ErrInvalidServer is wrapped by every error Parse returns.
var ErrInvalidServer = errors.New("mdclient: invalid server")

// DefaultWeight is the weight of an entry that names none.
const DefaultWeight = 100

// Server is one parsed entry of the server list.
type Server struct {
	Weight   int           // 0–100; 0 means standby: chosen only when every weighted server failed
	Endpoint conn.Endpoint // where and how to dial
}

// Parse reads one entry of the form "[weight ]address". Address forms: host:port (WebSocket),
// ws://, wss://, http:// (= ws), https:// (= wss), tcp://, mqtt://, tls://, mqtts://. A
// URL without a port gets its scheme's (80, 443, 1883, 8883); a bare host:port needs its
// port. A WebSocket URL without a path gets /mqtt. An error names the entry, shortened and
// without any user info it holds.
func Parse(entry string) (Server, error) {
	bad := func(why string) (Server, error) {
		return Server{}, fmt.Errorf("%w %s: %s", ErrInvalidServer, conn.QuoteServer(entry), why)
	}
	fields := strings.Fields(entry)
	s := Server{Weight: DefaultWeight}
	weighted := false
	if len(fields) == 0 {
		return bad("empty")
	}
	if isDigits(fields[0]) || strings.HasPrefix(fields[0], "-") && isDigits(fields[0][1:]) {
		w, err := strconv.Atoi(fields[0])
		if err != nil || w < 0 || w > 100 {
			return bad("weight must be an integer from 0 to 100")
		}
		s.Weight, weighted = w, true
		fields = fields[1:]
	}
	switch len(fields) {
	case 0:
		return bad("a weight without an address")
	case 1:
	default:
		if len(fields) == 2 && !weighted && !strings.ContainsAny(fields[0], ":/") {
			// "1e2 h:1", "x h:1": the first field is meant as a weight
			return bad(`want "[weight ]address" with a weight from 0 to 100 in decimal digits`)
		}
		return bad(`want "[weight ]address"; an address holds no spaces`)
	}
	addr := fields[0]
	scheme, rest, found := strings.Cut(addr, "://")
	if !found {
		scheme, rest = "ws", addr
	}
	switch strings.ToLower(scheme) {
	case "ws", "http":
		s.Endpoint.Transport = conn.WS
	case "wss", "https":
		s.Endpoint.Transport = conn.WSS
	case "tcp", "mqtt":
		s.Endpoint.Transport = conn.TCP
	case "tls", "mqtts":
		s.Endpoint.Transport = conn.TLS
	default:
		return bad("unknown scheme " + strconv.Quote(scheme) + " (want ws, wss, http, https, tcp, mqtt, tls or mqtts)")
	}
	if strings.ContainsAny(rest, "?#") {
		return bad("an address takes no query or fragment (? or #)")
	}
	hostport, path, _ := strings.Cut(rest, "/")
	if strings.Contains(hostport, "@") {
		return bad("user info in an address is not supported: give the token with SetEntitlementToken")
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil && found { // a URL without a port: the scheme's own
		h := hostport
		bracketed := strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]")
		if bracketed {
			h = h[1 : len(h)-1]
		}
		if h != "" && (bracketed || !strings.Contains(h, ":")) {
			host, port = h, defaultPorts[s.Endpoint.Transport]
			hostport, err = net.JoinHostPort(host, port), nil
		}
	}
	if err != nil || host == "" {
		return bad("want host:port")
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return bad("port must be 1–65535")
	}
	s.Endpoint.HostPort = hostport
	switch s.Endpoint.Transport {
	case conn.WS, conn.WSS:
		u, err := url.Parse("ws://" + hostport + "/" + path)
		if err != nil || u.RawQuery != "" || u.Fragment != "" {
			return bad("bad path")
		}
		if s.Endpoint.Transport == conn.WSS {
			u.Scheme = "wss"
		}
		if path == "" {
			u.Path = "/mqtt"
		}
		s.Endpoint.URL = u.String()
	default:
		if path != "" {
			return bad("a TCP address takes no path")
		}
	}
	return s, nil
}

// defaultPorts are the ports of URLs that name none.
var defaultPorts = map[conn.Transport]string{conn.WS: "80", conn.WSS: "443", conn.TCP: "1883", conn.TLS: "8883"}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// ParseList parses every entry; the first that fails is named in the error.
func ParseList(entries []string) ([]Server, error) {
	servers := make([]Server, 0, len(entries))
	for _, e := range entries {
		s, err := Parse(e)
		if err != nil {
			return nil, err
		}
		servers = append(servers, s)
	}
	return servers, nil
}
