package mdclient_test

// Server redirection and server DISCONNECTs (contract §9), against FAKE servers (named as
// such: internal/fakebroker, a deliberately scripted server) that redirect to, or stand
// in front of, a real mosquitto. A rate limit, measured against mosquitto.

import (
	"context"
	"crypto/tls"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mdclient/mdclient"
	"github.com/mdclient/mdclient/internal/fakebroker"
	"github.com/mdclient/mdclient/internal/mosquittotest"
)

func startFake(t *testing.T, script fakebroker.Script) *fakebroker.Server {
	t.Helper()
	fake, err := fakebroker.Start(script)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fake.Close() })
	return fake
}

// TestRedirects: with WithFollowRedirects a CONNACK 0x9C (use another server) sends the
// next attempt to the Server Reference, at once; the redirecting server is reported down
// with an error naming the reference. Without it such a server merely failed.
func TestRedirects(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Config{})
	fake := startFake(t, fakebroker.Script{Connack: fakebroker.RedirectConnack(0x9C, b.TCPHostPort())})

	t.Run("followed", func(t *testing.T) {
		c := newClient(t, "", []string{fake.Addr()}, mdclient.WithFollowRedirects(true))
		res := <-c.PublishAsync(ctxTimeout(t, 10*time.Second), mdclient.PublishRequest{Message: mdclient.Message{Subject: "redirect/x"}})
		if res.Status != mdclient.NotifyPublishNoSubscriber || res.Server != b.TCPAddr() {
			t.Fatalf("%s from %q (%v), want NO_SUBSCRIBER from mosquitto %s", res.Status, res.Server, res.Err, b.TCPAddr())
		}
		down, _ := awaitEvent(t, c, mdclient.NotifyServerDown, fake.Addr(), 5*time.Second)
		var refused *mdclient.RefusedError
		if !errors.As(down.Err, &refused) || refused.Code != 0x9C || refused.ServerReference != b.TCPHostPort() ||
			!strings.Contains(down.Err.Error(), b.TCPHostPort()) {
			t.Errorf("NotifyServerDown for the redirecting server: %v", down.Err)
		}
		awaitEvent(t, c, mdclient.NotifyServerUp, b.TCPAddr(), 5*time.Second)
	})
	t.Run("not followed", func(t *testing.T) {
		c := newClient(t, "", []string{fake.Addr()})
		st, err := c.Publish(ctxTimeout(t, 500*time.Millisecond), mdclient.Message{Subject: "redirect/x"})
		if st != mdclient.NotifyPublishFailed || !errors.Is(err, mdclient.ErrNoServers) {
			t.Errorf("%s %v, want FAILED: no server", st, err)
		}
	})
}

// TestRedirectMovedOverTLS: a DISCONNECT 0x9D (server moved) with a tls:// reference moves
// the client, verifying TLS against the new host — not against the server name the
// configuration gives for the old one — and replaces that entry of the list: a later
// reconnect goes to the new server, never back to the old one.
func TestRedirectMovedOverTLS(t *testing.T) {
	b, pool := startTLSMosquitto(t)
	fake := startFake(t, fakebroker.Script{When: fakebroker.AfterConnack,
		Frame: func(uint16) []byte { return fakebroker.Disconnect(0x9D, b.TLSAddr()) }})
	c := newClient(t, allowToken, []string{fake.Addr()}, mdclient.WithUsername("pub"), mdclient.WithFollowRedirects(true),
		mdclient.WithTLSConfig(&tls.Config{RootCAs: pool, ServerName: "the-old-server.example"}))
	awaitEvent(t, c, mdclient.NotifyServerUp, fake.Addr(), 5*time.Second)
	down, _ := awaitEvent(t, c, mdclient.NotifyServerDown, fake.Addr(), 5*time.Second)
	var sd *mdclient.ServerDisconnectError
	if !errors.As(down.Err, &sd) || sd.Code != 0x9D || sd.ServerReference != b.TLSAddr() {
		t.Errorf("NotifyServerDown: %v, want the DISCONNECT 0x9D with its reference", down.Err)
	}
	awaitEvent(t, c, mdclient.NotifyServerUp, b.TLSAddr(), 5*time.Second)
	if st, err := c.Publish(ctxTimeout(t, 10*time.Second), mdclient.Message{Subject: "tls/moved"}); st != mdclient.NotifyPublishNoSubscriber {
		t.Fatal(st, err)
	}
	// The entry now names mosquitto: after it restarts, the client comes back to it.
	sessions := len(fake.Sessions())
	b.Restart(t)
	awaitEvent(t, c, mdclient.NotifyServerUp, b.TLSAddr(), 10*time.Second)
	if n := len(fake.Sessions()); n != sessions {
		t.Errorf("the moved server was dialled again (%d sessions, %d before)", n, sessions)
	}
}

// TestRedirectLoopsAreBounded: two servers that send the client to each other are
// followed at most 3 times in a row, then paced by the reconnect policy.
func TestRedirectLoopsAreBounded(t *testing.T) {
	var a, b *fakebroker.Server
	refA := make(chan string, 1)
	a = startFake(t, fakebroker.Script{When: fakebroker.AfterConnack, Frame: func(uint16) []byte {
		ref := <-refA
		refA <- ref
		return fakebroker.Disconnect(0x9C, ref)
	}})
	b = startFake(t, fakebroker.Script{When: fakebroker.AfterConnack, Frame: func(uint16) []byte { return fakebroker.Disconnect(0x9C, a.HostPort()) }})
	refA <- b.HostPort()
	c := newClient(t, "", []string{a.Addr()}, mdclient.WithFollowRedirects(true),
		mdclient.WithReconnectTimeInterval(200*time.Millisecond), mdclient.WithReconnectMaxDelay(400*time.Millisecond))
	timer := time.NewTimer(2 * time.Second)
	<-timer.C // counting what happened in a bounded window
	ups := 0
	for more := true; more; {
		select {
		case ev := <-c.Events():
			if ev.Type == mdclient.NotifyServerUp {
				ups++
			}
		default:
			more = false
		}
	}
	// In 2 s: quick rounds, then 100–200 ms, 200–400 ms, … between rounds; each round's
	// connection followed by at most 3 redirects: far below a loop's thousands.
	if ups > 40 || ups < 4 {
		t.Errorf("%d connections in 2 s between two servers redirecting to each other", ups)
	}
}

// TestServerDisconnectFailsOverAtOnce: a server that sends DISCONNECT 0x8B (server
// shutting down) while the client publishes is left at once, even with a long quick
// reconnect delay; the Event carries the reason code; the message in flight is resent.
func TestServerDisconnectFailsOverAtOnce(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Config{})
	fake := startFake(t, fakebroker.Script{When: fakebroker.AfterPublish,
		Frame: func(uint16) []byte { return fakebroker.Disconnect(0x8B, "") }})
	c := newClient(t, "", []string{"100 " + fake.Addr(), "0 " + b.TCPAddr()}, mdclient.WithQuickReconnectInitialDelay(5*time.Second))
	awaitEvent(t, c, mdclient.NotifyServerUp, fake.Addr(), 5*time.Second)
	res := c.PublishAsync(ctxTimeout(t, 10*time.Second), mdclient.PublishRequest{Message: mdclient.Message{Subject: "shutdown/x"}})
	down, downAt := awaitEvent(t, c, mdclient.NotifyServerDown, fake.Addr(), 5*time.Second)
	var sd *mdclient.ServerDisconnectError
	if !errors.As(down.Err, &sd) || sd.Code != 0x8B {
		t.Errorf("NotifyServerDown: %v, want DISCONNECT 0x8B", down.Err)
	}
	_, upAt := awaitEvent(t, c, mdclient.NotifyServerUp, b.TCPAddr(), 5*time.Second)
	if d := upAt.Sub(downAt); d > 500*time.Millisecond {
		t.Errorf("failed over after %v, want at once", d)
	}
	if r := <-res; r.Status != mdclient.NotifyPublishNoSubscriber || r.Server != b.TCPAddr() {
		t.Errorf("the message in flight: %s from %q (%v)", r.Status, r.Server, r.Err)
	}
}

// TestMosquittoSIGTERM: mosquitto 2.0.11 stopping on SIGTERM sends MQTT 5 clients no
// DISCONNECT, it closes the connection (found out here: the Event's error is the end of
// the stream); the client fails over at once all the same.
func TestMosquittoSIGTERM(t *testing.T) {
	first, second := mosquittotest.Start(t, mosquittotest.Config{}), mosquittotest.Start(t, mosquittotest.Config{})
	c := newClient(t, "", []string{"100 " + first.TCPAddr(), "0 " + second.TCPAddr()})
	awaitEvent(t, c, mdclient.NotifyServerUp, first.TCPAddr(), 5*time.Second)
	first.Terminate()
	down, downAt := awaitEvent(t, c, mdclient.NotifyServerDown, first.TCPAddr(), 5*time.Second)
	var sd *mdclient.ServerDisconnectError
	if errors.As(down.Err, &sd) {
		t.Logf("mosquitto sent DISCONNECT 0x%02x on SIGTERM", sd.Code)
	} else {
		t.Logf("mosquitto sent no DISCONNECT on SIGTERM: %v", down.Err)
	}
	_, upAt := awaitEvent(t, c, mdclient.NotifyServerUp, second.TCPAddr(), 5*time.Second)
	if d := upAt.Sub(downAt); d > 500*time.Millisecond {
		t.Errorf("failed over after %v, want at once", d)
	}
}

// TestRateLimitHolds: with WithRateLimit the written rate stays within 5 % of the limit,
// measured over 10 s against mosquitto by the acknowledgements.
func TestRateLimitHolds(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Config{MaxInflight: 1000})
	const rate, burst = 1000.0, 50
	// A queue of 2 s at the rate: with the default 16 384 (16 s) the last requests of the
	// window would be written just before their publish timeout, and their PUBACK come after.
	c := openClient(t, "", []string{b.TCPAddr()}, mdclient.WithRateLimit(rate, burst), mdclient.WithMaxQueued(2000))
	awaitEvent(t, c, mdclient.NotifyServerUp, "", 5*time.Second)
	results := make(chan mdclient.PublishResult, 1024)
	ctx, cancel := context.WithCancel(context.Background())
	produced := make(chan struct{})
	defer func() {
		// Stop the producer, close the client and take every result it still has for
		// us, so that no goroutine of it waits on this channel when the test ends.
		cancel()
		<-produced
		closed := make(chan error)
		go func() { closed <- c.Close() }()
		for done := false; !done; {
			select {
			case <-results:
			case err := <-closed:
				if err != nil {
					t.Errorf("Close: %v", err)
				}
				done = true
			}
		}
		eventually(10*time.Second, func() bool {
			for {
				select {
				case <-results:
				default:
					return c.Stats().Undelivered == 0
				}
			}
		})
	}()
	go func() {
		defer close(produced)
		for i := 0; ctx.Err() == nil; i++ {
			c.PublishAsync(ctx, mdclient.PublishRequest{Result: results, Message: mdclient.Message{Subject: "rate/x", Closure: strconv.Itoa(i)}})
		}
	}()
	<-results // the first: the clock starts
	start := time.Now()
	n := 0
	window := time.NewTimer(10 * time.Second)
	defer window.Stop()
	for counting := true; counting; {
		select {
		case r := <-results:
			if r.Status != mdclient.NotifyPublishNoSubscriber {
				t.Fatalf("%s %v", r.Status, r.Err)
			}
			n++
		case <-window.C:
			counting = false
		}
	}
	got := float64(n) / time.Since(start).Seconds()
	t.Logf("%d acknowledged in %v: %.1f/s for a limit of %.0f/s", n, time.Since(start).Round(time.Millisecond), got, rate)
	if got > rate*1.05 || got < rate*0.95 {
		t.Errorf("%.1f publishes a second, want within 5%% of %.0f", got, rate)
	}
}

// TestMovedServerFailuresReported: after a 0x9D (server moved) the entry is the new
// server, and its failures are reported like any server's (found by the outside tester:
// the new address failed 21 times without an event, its count carried over).
func TestMovedServerFailuresReported(t *testing.T) {
	dead := "127.0.0.1:1" // nothing listens
	fake := startFake(t, fakebroker.Script{Connack: fakebroker.RedirectConnack(0x9D, dead)})
	c := newClient(t, "", []string{fake.Addr()}, mdclient.WithFollowRedirects(true), mdclient.WithReconnectTimeInterval(10*time.Millisecond))
	awaitEvent(t, c, mdclient.NotifyServerDown, fake.Addr(), 5*time.Second)
	if ev, _ := awaitEvent(t, c, mdclient.NotifyServerDown, "tcp://"+dead, 5*time.Second); ev.Err == nil {
		t.Error("the moved server's down event has no error")
	}
}
