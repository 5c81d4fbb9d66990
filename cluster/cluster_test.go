package cluster

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/mdclient/mdclient/conn"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParse(t *testing.T) {
	tests := []struct {
		entry string
		want  Server
	}{
		{"127.0.0.1:8800", Server{100, conn.Endpoint{Transport: conn.WS, HostPort: "127.0.0.1:8800", URL: "ws://127.0.0.1:8800/mqtt"}}},
		{"50 push.example.com:80", Server{50, conn.Endpoint{Transport: conn.WS, HostPort: "push.example.com:80", URL: "ws://push.example.com:80/mqtt"}}},
		{"ws://h:1/custom/path", Server{100, conn.Endpoint{Transport: conn.WS, HostPort: "h:1", URL: "ws://h:1/custom/path"}}},
		{"http://h:1", Server{100, conn.Endpoint{Transport: conn.WS, HostPort: "h:1", URL: "ws://h:1/mqtt"}}},
		{"wss://h:443", Server{100, conn.Endpoint{Transport: conn.WSS, HostPort: "h:443", URL: "wss://h:443/mqtt"}}},
		{"https://h:443/", Server{100, conn.Endpoint{Transport: conn.WSS, HostPort: "h:443", URL: "wss://h:443/mqtt"}}},
		{"0 tcp://h:1883", Server{0, conn.Endpoint{Transport: conn.TCP, HostPort: "h:1883"}}},
		{"mqtt://h:1883", Server{100, conn.Endpoint{Transport: conn.TCP, HostPort: "h:1883"}}},
		{"tls://h:8883", Server{100, conn.Endpoint{Transport: conn.TLS, HostPort: "h:8883"}}},
		{"mqtts://[::1]:8883", Server{100, conn.Endpoint{Transport: conn.TLS, HostPort: "[::1]:8883"}}},
		// URLs without a port get their scheme's.
		{"wss://host/mqtt", Server{100, conn.Endpoint{Transport: conn.WSS, HostPort: "host:443", URL: "wss://host:443/mqtt"}}},
		{"ws://host", Server{100, conn.Endpoint{Transport: conn.WS, HostPort: "host:80", URL: "ws://host:80/mqtt"}}},
		{"https://host", Server{100, conn.Endpoint{Transport: conn.WSS, HostPort: "host:443", URL: "wss://host:443/mqtt"}}},
		{"tcp://host", Server{100, conn.Endpoint{Transport: conn.TCP, HostPort: "host:1883"}}},
		{"tls://[::1]", Server{100, conn.Endpoint{Transport: conn.TLS, HostPort: "[::1]:8883"}}},
	}
	for _, tt := range tests {
		got, err := Parse(tt.entry)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.entry, err)
			continue
		}
		if d := cmp.Diff(tt.want, got); d != "" {
			t.Errorf("Parse(%q) (-want +got):\n%s", tt.entry, d)
		}
	}
}

func TestParseRejects(t *testing.T) {
	for _, entry := range []string{"", "h", "h:", ":1", "h:0", "h:65536", "101 h:1", "-1 h:1", "x h:1",
		"1 2 h:1", "ftp://h:1", "tcp://h:1/path", "ws://h:x", "tcp://", "tcp://h:", "ws://::1"} {
		_, err := Parse(entry)
		if !errors.Is(err, ErrInvalidServer) {
			t.Errorf("Parse(%q) = %v, want ErrInvalidServer", entry, err)
		}
	}
	for entry, want := range map[string]string{"1e2 h:1": "weight from 0 to 100", "0x10 h:1": "weight from 0 to 100",
		"h:1 h:2": "no spaces", "101 h:1": "from 0 to 100", "100 x h:1": "no spaces"} {
		if _, err := Parse(entry); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error saying %q", entry, err, want)
		}
	}
	if _, err := ParseList([]string{"h:1", "bad"}); err == nil || !errors.Is(err, ErrInvalidServer) {
		t.Errorf("ParseList with a bad entry = %v", err)
	}
}

func TestPolicyDelay(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	p := Policy{QuickMaxRetries: 2, QuickDelay: 10 * time.Millisecond, Backoff: TruncatedExponential,
		Interval: 100 * time.Millisecond, MaxDelay: time.Second}
	for n, want := range []time.Duration{10 * time.Millisecond, 10 * time.Millisecond} {
		if got := p.Delay(n, rnd); got != want {
			t.Errorf("quick attempt %d: delay %v, want %v", n, got, want)
		}
	}
	// After the quick phase: d = Interval·2^(n-quick), capped, drawn from [d/2, d].
	for n, d := range map[int]time.Duration{2: 100 * time.Millisecond, 3: 200 * time.Millisecond,
		4: 400 * time.Millisecond, 5: 800 * time.Millisecond, 6: time.Second, 30: time.Second} {
		for range 100 {
			if got := p.Delay(n, rnd); got < d/2 || got > d {
				t.Fatalf("attempt %d: delay %v outside [%v, %v]", n, got, d/2, d)
			}
		}
	}
	p.Backoff = ConstantWindow
	for range 100 {
		if got := p.Delay(9, rnd); got < 50*time.Millisecond || got > 100*time.Millisecond {
			t.Fatalf("constant: delay %v outside [50ms, 100ms]", got)
		}
	}
}

func TestPickByWeight(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	members := []member{{Server: Server{Weight: 75}}, {Server: Server{Weight: 25}}, {Server: Server{Weight: 0}}}
	var counts [3]int
	for range 10000 {
		counts[pick(members, -1, rnd, nil)]++
	}
	if counts[2] != 0 {
		t.Errorf("standby chosen %d times while weighted servers were available", counts[2])
	}
	if counts[0] < 7000 || counts[0] > 8000 {
		t.Errorf("weight 75 of 100 chosen %d times of 10000", counts[0])
	}
	for range 100 {
		if got := pick(members, 0, rnd, nil); got != 1 {
			t.Fatalf("after server 0 failed, picked %d, want the other weighted server 1", got)
		}
		if got := pick(members[:1:1], 0, rnd, nil); got != 0 {
			t.Fatalf("single server: picked %d", got)
		}
	}
	standby := []member{{Server: Server{Weight: 100}}, {Server: Server{Weight: 0}}}
	if got := pick(standby, 0, rnd, nil); got != 1 {
		t.Errorf("with the only weighted server failed, picked %d, want the standby", got)
	}
}

// TestPickRounds: in a round every weighted server is tried before a standby, and the
// standby before any server is tried twice.
func TestPickRounds(t *testing.T) {
	rnd := rand.New(rand.NewPCG(5, 6))
	for range 100 {
		members := []member{{Server: Server{Weight: 100}}, {Server: Server{Weight: 100}}, {Server: Server{Weight: 0}}}
		last := -1
		var order []int
		for range 3 {
			last = pick(members, last, rnd, nil)
			members[last].tried = true
			order = append(order, last)
		}
		if order[2] != 2 || order[0] == order[1] {
			t.Fatalf("round %v: want both weighted servers, then the standby", order)
		}
		// The next round starts afresh, avoiding the standby just tried.
		newRound(members)
		if next := pick(members, last, rnd, nil); next == 2 {
			t.Fatalf("a new round began with the server just tried")
		}
	}
}

// TestParseErrorsHideUserInfo: an entry's user info, a password perhaps, is in no error,
// also when the password holds '@' (net/url takes the last '@' of the authority).
func TestParseErrorsHideUserInfo(t *testing.T) {
	for _, entry := range []string{"tcp://alice:pa@ss-SECRET@broker.example:1883", "ws://u:SECRET@h:1/p@th", "50 u:SECRET@h:1", "tls://:SECRET@h:8883"} {
		_, err := Parse(entry)
		if err == nil || strings.Contains(err.Error(), "SECRET") {
			t.Errorf("Parse(%q) = %v", entry, err)
		}
	}
}
