package mdclient_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mdclient/mdclient"
	"github.com/mdclient/mdclient/internal/fakebroker"
	"github.com/mdclient/mdclient/internal/mosquittotest"
	"github.com/mdclient/mdclient/mdtest"
)

// secretSink gathers everything a client lets out: slog records at every level, events
// and results, and the client's own formatting.
type secretSink struct {
	rec *logRecorder
	mu  sync.Mutex
	out []string
}

func (s *secretSink) add(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.out = append(s.out, fmt.Sprintf(format, args...))
}

// watch records every event of c until Events is closed (by Close), and the client's
// %v, %+v and %#v formatting; wait returns once the events are all in.
func (s *secretSink) watch(c *mdclient.Client) (wait func()) {
	s.add("%v %+v %#v", c, c, c)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range c.Events() {
			s.add("event %v %+v %#v", ev, ev, ev)
			if ev.Err != nil {
				s.add("event error %s %+v %#v", ev.Err.Error(), ev.Err, ev.Err)
			}
		}
	}()
	return func() { <-done }
}

func (s *secretSink) result(st mdclient.Status, err error) {
	s.add("result %v %v", st, err)
	if err != nil {
		s.add("result error %s %+v %#v", err.Error(), err, err)
	}
}

// leaks returns every captured text containing a form of secret: as is, as the decimal
// bytes %v prints for a []byte, in hex and in base64.
func (s *secretSink) leaks(secret string) []string {
	forms := []string{secret, fmt.Sprint([]byte(secret)), hex.EncodeToString([]byte(secret)), base64.StdEncoding.EncodeToString([]byte(secret))}
	var texts []string
	for _, r := range s.rec.Records() {
		texts = append(texts, r.Text())
	}
	s.mu.Lock()
	texts = append(texts, s.out...)
	s.mu.Unlock()
	var found []string
	for _, text := range texts {
		for _, f := range forms {
			if strings.Contains(text, f) {
				found = append(found, text)
				break
			}
		}
	}
	return found
}

// TestTokenNeverLogged: the entitlement token appears in no log record (Debug included),
// event, result error or formatting of the client, whether the connection succeeds, is
// refused or fails over, and whether the token travels as password or user name.
func TestTokenNeverLogged(t *testing.T) {
	const (
		token = "tok-Q7f3sEcReT-9xZ2" // distinctive: no log line contains it by chance
		wrong = "tok-WrOnG-k4Lm8pVv"  // a wrong token is a secret too
	)
	// The check itself sees a token however it is logged.
	probe := &secretSink{rec: newLogRecorder()}
	probe.rec.Logger().Debug("probe", "password", []byte(token))
	probe.rec.Logger().With("user", wrong).Info("probe")
	if len(probe.leaks(token)) != 1 || len(probe.leaks(wrong)) != 1 {
		t.Fatal("the leak check does not see tokens in log records")
	}

	sink := &secretSink{rec: newLogRecorder()}
	logger := sink.rec.Logger()
	srv, err := mdtest.NewServer(mdtest.WithAllowToken(token))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	// run publishes one message with a client configured by opts, then closes it.
	run := func(t *testing.T, tok string, servers []string, want mdclient.Status, opts ...mdclient.Option) {
		t.Helper()
		opts = append(opts, mdclient.WithLogger(logger), mdclient.WithReconnectTimeInterval(20*time.Millisecond))
		c := mdclient.NewClient(opts...)
		c.SetEntitlementToken(tok)
		wait := sink.watch(c)
		if err := c.SetServers(servers); err != nil {
			sink.result("", err)
			t.Fatal(err)
		}
		res := <-c.PublishAsync(ctxTimeout(t, 10*time.Second), mdclient.PublishRequest{
			Message: mdclient.Message{Subject: "sec/x", Content: []byte("payload"), Closure: "closure"}})
		sink.result(res.Status, res.Err)
		sink.add("%v %+v %#v", c, c, c)
		if err := c.Close(); err != nil {
			sink.result("close", err)
		}
		wait()
		if res.Status != want {
			t.Errorf("%s, want %s (%v)", res.Status, want, res.Err)
		}
	}

	t.Run("connect succeeds", func(t *testing.T) {
		run(t, token, []string{srv.TCPAddr()}, mdclient.NotifyPublishNoSubscriber)
		run(t, token, []string{srv.WSAddr()}, mdclient.NotifyPublishNoSubscriber, mdclient.WithTokenInUsername())
	})
	t.Run("publish denied", func(t *testing.T) {
		run(t, wrong, []string{srv.TCPAddr()}, mdclient.NotifyPublishDenied)
	})
	refusals := false // mosquitto refused a CONNECT: it is there, or the subtest skipped
	t.Run("connect refused", func(t *testing.T) {
		b := mosquittotest.Start(t, mosquittotest.Config{Users: map[string]string{"pub": token}})
		refusals = true
		// The password refused at CONNECT, over TCP and WebSocket, then the user name.
		run(t, wrong, []string{b.TCPAddr(), b.WSAddr()}, mdclient.NotifyPublishDenied, mdclient.WithUsername("pub"))
		run(t, wrong, []string{b.TCPAddr()}, mdclient.NotifyPublishDenied, mdclient.WithTokenInUsername())
		// And the password accepted.
		run(t, token, []string{b.TCPAddr()}, mdclient.NotifyPublishNoSubscriber, mdclient.WithUsername("pub"))
	})
	t.Run("failover", func(t *testing.T) {
		fake, err := fakebroker.Start(fakebroker.Script{When: fakebroker.AfterPublish,
			Frame: func(uint16) []byte { return fakebroker.LongVarint() }})
		if err != nil {
			t.Fatal(err)
		}
		defer fake.Close()
		// From an unreachable server, and from one that breaks the protocol with the
		// message in flight, to the real one (a standby, so it comes second).
		run(t, token, []string{"100 tcp://127.0.0.1:1", "0 " + srv.TCPAddr()}, mdclient.NotifyPublishNoSubscriber)
		run(t, token, []string{"100 " + fake.Addr(), "0 " + srv.TCPAddr()}, mdclient.NotifyPublishNoSubscriber)
		run(t, token, []string{"100 " + fake.Addr(), "0 " + srv.WSAddr()}, mdclient.NotifyPublishNoSubscriber, mdclient.WithTokenInUsername())
	})

	records := sink.rec.Records()
	if len(records) == 0 {
		t.Fatal("nothing was logged: the test sees nothing")
	}
	debug := 0
	for _, r := range records {
		if r.Level == slog.LevelDebug {
			debug++
		}
	}
	for _, secret := range []string{token, wrong} {
		for _, leak := range sink.leaks(secret) {
			t.Errorf("the token %q appears in: %s", secret, leak)
		}
	}
	// The sink did see what the test meant it to see.
	var texts []string
	for _, r := range records {
		texts = append(texts, r.Text())
	}
	all := strings.Join(texts, "\n") + strings.Join(sink.out, "\n")
	for _, want := range []string{"connection lost", "connect failed", "connection refused: reason code", "NOTIFY_SERVER_DOWN", "resending", "DENIED"} {
		if want == "connection refused: reason code" && !refusals {
			continue // without mosquitto (not installed, CI unset) no server refuses a CONNECT
		}
		if !strings.Contains(all, want) {
			t.Errorf("nothing captured mentions %q: the scenario did not happen as planned", want)
		}
	}
	t.Logf("checked %d log records (%d at Debug) and %d other texts", len(records), debug, len(sink.out))
}

// startTLSMosquitto starts mosquitto with TLS and secure WebSocket listeners whose
// certificate is signed by a fresh test CA, and returns it with a pool trusting that CA.
func startTLSMosquitto(t *testing.T) (*mosquittotest.Broker, *x509.CertPool) {
	t.Helper()
	files, pool := mosquittotest.NewTestCA(t)
	b := mosquittotest.Start(t, mosquittotest.Config{
		Users: map[string]string{"pub": allowToken, "sub": subPassword},
		ACL:   "user pub\ntopic write tls/#\n\nuser sub\ntopic read tls/#\n",
		TLS:   files,
	})
	return b, pool
}

// TestTLSVerifiesByDefault: without WithTLSConfig the server's certificate is verified
// against the system's roots, which do not know the test CA: the connection fails
// verification and publishes end FAILED. So it does with a pool of another CA.
func TestTLSVerifiesByDefault(t *testing.T) {
	b, _ := startTLSMosquitto(t)
	_, otherPool := mosquittotest.NewTestCA(t)
	for _, tc := range []struct {
		name string
		opts []mdclient.Option
	}{
		{"system roots", nil},
		{"another CA", []mdclient.Option{mdclient.WithTLSConfig(&tls.Config{RootCAs: otherPool})}},
	} {
		for _, addr := range []string{b.TLSAddr(), b.WSSAddr()} {
			t.Run(tc.name+" "+addr[:strings.Index(addr, ":")], func(t *testing.T) {
				opts := append([]mdclient.Option{mdclient.WithUsername("pub"), mdclient.WithReconnectTimeInterval(50 * time.Millisecond)}, tc.opts...)
				c := newClient(t, allowToken, []string{addr}, opts...)
				down, _ := awaitEvent(t, c, mdclient.NotifyServerDown, addr, 10*time.Second)
				var verr *tls.CertificateVerificationError
				var unknown x509.UnknownAuthorityError
				if !errors.As(down.Err, &verr) || !errors.As(down.Err, &unknown) {
					t.Errorf("NOTIFY_SERVER_DOWN error %v (%T), want a certificate verification error (unknown authority)", down.Err, down.Err)
				}
				st, err := c.Publish(ctxTimeout(t, 500*time.Millisecond), mdclient.Message{Subject: "tls/x", Content: []byte("x")})
				wantStatus(t, st, err, mdclient.NotifyPublishFailed, mdclient.ErrNoServers)
				if !errors.Is(err, mdclient.ErrFailed) || !errors.Is(err, mdclient.ErrTimeout) {
					t.Errorf("%v: want ErrFailed and ErrTimeout wrapped too", err)
				}
			})
		}
	}
	if strings.Contains(b.Log(), "New client connected") {
		t.Errorf("mosquitto accepted an MQTT connection:\n%s", b.Log())
	}
}

// TestTLSSelfSignedCA: with WithTLSConfig trusting the test CA, publishes over tls:// and
// wss:// are OK and reach a subscriber.
func TestTLSSelfSignedCA(t *testing.T) {
	b, pool := startTLSMosquitto(t)
	sub := b.Subscribe(t, "sub", subPassword, "tls/#")
	for _, addr := range []string{b.TLSAddr(), b.WSSAddr()} {
		t.Run(addr[:strings.Index(addr, ":")], func(t *testing.T) {
			c := newClient(t, allowToken, []string{addr}, mdclient.WithUsername("pub"),
				mdclient.WithTLSConfig(&tls.Config{RootCAs: pool}))
			ctx := ctxTimeout(t, 10*time.Second)
			res := <-c.PublishAsync(ctx, mdclient.PublishRequest{Message: mdclient.Message{Subject: "tls/x", Content: []byte(addr)}})
			wantStatus(t, res.Status, res.Err, mdclient.NotifyPublishOK, nil)
			if res.Server != addr {
				t.Errorf("answered by %q, want %q", res.Server, addr)
			}
			if got := sub.Next(t); got.Topic != "tls/x" || string(got.Payload) != addr {
				t.Errorf("subscriber got %q %q", got.Topic, got.Payload)
			}
		})
	}
}
