package conn_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mdclient/mdclient/cluster"
	"github.com/mdclient/mdclient/codec"
	"github.com/mdclient/mdclient/conn"
	"github.com/mdclient/mdclient/internal/mosquittotest"
	"github.com/mdclient/mdclient/mdtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func endpoint(t *testing.T, addr string) conn.Endpoint {
	t.Helper()
	s, err := cluster.Parse(addr)
	if err != nil {
		t.Fatal(err)
	}
	return s.Endpoint
}

// started dials addr and starts the connection; its events arrive on the channel
// returned, until the test ends.
func started(t *testing.T, addr string, cfg *conn.Config) (*conn.Conn, <-chan conn.Event) {
	t.Helper()
	c, err := conn.Dial(context.Background(), endpoint(t, addr), cfg)
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan conn.Event, 16)
	quit := make(chan struct{})
	t.Cleanup(func() { close(quit) })
	c.Start(events, quit)
	return c, events
}

// next waits for the next event, failing the test after a deadline.
func next(t *testing.T, events <-chan conn.Event) conn.Event {
	t.Helper()
	select {
	case ev := <-events:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event from the connection")
		return conn.Event{}
	}
}

// TestBatch writes three PUBLISH packets in one batch (one WebSocket message, one TCP
// write) and reads their three acknowledgements.
func TestBatch(t *testing.T) {
	srv, err := mdtest.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, addr := range []string{srv.WSAddr(), srv.TCPAddr()} {
		t.Run(addr[:strings.Index(addr, ":")], func(t *testing.T) {
			c, err := conn.Dial(context.Background(), endpoint(t, addr), &conn.Config{ClientID: "batch", ConnectTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if lim := c.Limits(); lim.ReceiveMaximum < 3 || lim.MaxPacketSize < 100 {
				t.Fatalf("limits %+v", lim)
			}
			events := make(chan conn.Event, 16)
			quit := make(chan struct{})
			defer close(quit)
			c.Start(events, quit)
			var batch []byte
			for id := uint16(1); id <= 3; id++ {
				batch = codec.AppendPublish(batch, &codec.Publish{Topic: "t/x", Payload: []byte("p"), QoS: 1, PacketID: id})
			}
			if !c.Send(batch) {
				t.Fatal("Send refused")
			}
			var acked []uint16
			written := false
			for len(acked) < 3 || !written {
				ev := next(t, events)
				switch {
				case ev.Written != nil:
					if &ev.Written[0] != &batch[0] {
						t.Fatal("Written is not the buffer that was sent")
					}
					written = true
				case ev.AcksReady:
					for _, a := range c.TakeAcks(nil) {
						if a.ReasonCode != 0x10 {
							t.Errorf("ack %d reason 0x%02x, want 0x10 (no subscriber)", a.PacketID, a.ReasonCode)
						}
						acked = append(acked, a.PacketID)
					}
				default:
					t.Fatalf("unexpected event %+v", ev)
				}
			}
			if acked[0] != 1 || acked[1] != 2 || acked[2] != 3 {
				t.Errorf("acks for %v, want [1 2 3]", acked)
			}
			c.Close(nil)
			// An AcksReady may still come, for acks the last TakeAcks took already: the
			// announcement and the taking race by design.
			ev := next(t, events)
			for ev.AcksReady {
				if acks := c.TakeAcks(nil); len(acks) > 0 {
					t.Errorf("acks %v after all three were taken", acks)
				}
				ev = next(t, events)
			}
			if !errors.Is(ev.Down, conn.ErrClosed) {
				t.Errorf("after Close: %+v, want Down with ErrClosed", ev)
			}
		})
	}
}

// TestStartAfterClose: the engine may close a connection the cluster has just handed it
// before the cluster starts it; Start then does nothing (it used to close Done again: a
// panic).
func TestStartAfterClose(t *testing.T) {
	srv, err := mdtest.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c, err := conn.Dial(context.Background(), endpoint(t, srv.TCPAddr()), &conn.Config{ClientID: "late-start", ConnectTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c.Close(nil)
	events := make(chan conn.Event, 4)
	quit := make(chan struct{})
	defer close(quit)
	c.Start(events, quit)
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed")
	}
	if c.Send([]byte{0xc0, 0}) {
		t.Error("Send accepted on a closed connection")
	}
	select {
	case ev := <-events:
		t.Errorf("event %+v from a connection never started", ev)
	default:
	}
}

func TestRefused(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Config{Users: map[string]string{"u": "right"}})
	_, err := conn.Dial(context.Background(), endpoint(t, b.TCPAddr()),
		&conn.Config{ClientID: "r", Username: "u", Password: []byte("wrong"), HasPassword: true, ConnectTimeout: 5 * time.Second})
	var refused *conn.RefusedError
	if !errors.As(err, &refused) || !refused.NotAuthorized() {
		t.Fatalf("Dial with a wrong password: %v, want a RefusedError for credentials", err)
	}
}

// TestKeepAliveDetectsStall: a server that stops answering (SIGSTOP) is dropped once
// nothing has arrived for 1.5 keep-alive intervals.
func TestKeepAliveDetectsStall(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Config{})
	for _, addr := range []string{b.TCPAddr(), b.WSAddr()} {
		t.Run(addr[:strings.Index(addr, ":")], func(t *testing.T) { testStall(t, b, addr) })
	}
}

func testStall(t *testing.T, b *mosquittotest.Broker, addr string) {
	const ka = time.Second
	_, events := started(t, addr, &conn.Config{ClientID: "ka", KeepAlive: ka, ConnectTimeout: 5 * time.Second})
	// Idle for two intervals: the pings keep the connection up.
	select {
	case ev := <-events:
		t.Fatalf("idle connection gave %+v", ev)
	case <-time.After(2 * ka):
	}
	b.Stop()
	defer b.Continue()
	stopped := time.Now()
	ev := next(t, events)
	if !errors.Is(ev.Down, conn.ErrKeepAlive) {
		t.Fatalf("got %+v, want Down with ErrKeepAlive", ev)
	}
	// Silence began at most ka/2 (the ping interval) before the stop, and closing the
	// socket must not wait for the silent server (no WebSocket close handshake).
	if took := time.Since(stopped); took > 3*ka/2+200*time.Millisecond {
		t.Errorf("stall detected and connection ended after %v, want within 1.5 × %v", took, ka)
	}
}

// TestErrorsHideUserInfo: a server's redirect may name a URL with credentials; the error
// texts quote it without them.
func TestErrorsHideUserInfo(t *testing.T) {
	for _, err := range []error{
		&conn.RefusedError{Code: 0x9C, ServerReference: "tcp://user:s3cr3t@host:1883"},
		&conn.ServerDisconnectError{Code: 0x9D, ServerReference: "ws://u:p@ss@host:80/mqtt other:1"},
	} {
		if msg := err.Error(); strings.Contains(msg, "s3cr3t") || strings.Contains(msg, "p@ss") || !strings.Contains(msg, "host") {
			t.Errorf("%q", msg)
		}
	}
}

// TestPing: a PINGREQ asked for with Ping is answered, and the answer reported as an
// Alive event — how the engine learns that a connection still reaches its server.
func TestPing(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Config{})
	for _, addr := range []string{b.TCPAddr(), b.WSAddr()} {
		t.Run(addr[:strings.Index(addr, ":")], func(t *testing.T) {
			c, events := started(t, addr, &conn.Config{ClientID: "ping", ConnectTimeout: 5 * time.Second})
			for range 2 {
				c.Ping()
				if ev := next(t, events); !ev.Alive {
					t.Fatalf("got %+v, want Alive", ev)
				}
			}
			c.Close(nil)
			if ev := next(t, events); ev.Down == nil {
				t.Fatalf("got %+v, want Down", ev)
			}
		})
	}
}
