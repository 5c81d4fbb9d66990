package fakebroker_test

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mdclient/mdclient/internal/fakebroker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// connect is a minimal MQTT 5 CONNECT with client id "fb-test".
var connect = []byte{
	0x10, 20,
	0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 0, // protocol, level 5, clean start, no keep-alive
	0,                                       // no properties
	0, 7, 'f', 'b', '-', 't', 'e', 's', 't', // client id
}

// publish is a QoS 1 PUBLISH to "a/b" with packet id 7.
var publish = []byte{0x32, 8, 0, 3, 'a', '/', 'b', 0, 7, 0}

func start(t *testing.T, s fakebroker.Script) *fakebroker.Server {
	t.Helper()
	srv, err := fakebroker.Start(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

func dial(t *testing.T, srv *fakebroker.Server) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", srv.HostPort(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

func expect(t *testing.T, c net.Conn, want []byte) {
	t.Helper()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("reading %x: %v", want, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %x, want %x", got, want)
	}
}

func session(t *testing.T, srv *fakebroker.Server) fakebroker.Session {
	t.Helper()
	select {
	case s := <-srv.Sessions():
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no session reported")
		return fakebroker.Session{}
	}
}

func TestAfterPublish(t *testing.T) {
	srv := start(t, fakebroker.Script{
		When:           fakebroker.AfterPublish,
		ReceiveMaximum: 16,
		Frame:          func(id uint16) []byte { return fakebroker.Puback(id+1, 0) },
	})
	if srv.Addr() != "tcp://"+srv.HostPort() {
		t.Errorf("Addr() = %q", srv.Addr())
	}
	c := dial(t, srv)
	c.Write(connect)
	expect(t, c, fakebroker.Connack(16))
	c.Write([]byte{0xC0, 0}) // a PINGREQ first: ignored
	c.Write(publish)
	expect(t, c, []byte{0x40, 3, 0, 8, 0})
	c.Write([]byte{0xE0, 0}) // DISCONNECT
	c.Close()
	s := session(t, srv)
	if s.ClientID != "fb-test" || s.PacketID != 7 || !s.Sent || !s.ClientClosed || !s.ClientDisconnect || s.Err != nil {
		t.Errorf("session %+v", s)
	}
}

func TestAfterConnack(t *testing.T) {
	srv := start(t, fakebroker.Script{Frame: func(uint16) []byte { return fakebroker.LongVarint() }})
	c := dial(t, srv)
	c.Write(connect)
	expect(t, c, fakebroker.Connack(0))
	expect(t, c, fakebroker.LongVarint())
	c.Close()
	if s := session(t, srv); !s.Sent || !s.ClientClosed || s.PacketID != 0 {
		t.Errorf("session %+v", s)
	}
}

// TestLinger: a client that does not hang up is hung up on after Linger, and the
// session says the client did not close.
func TestLinger(t *testing.T) {
	srv := start(t, fakebroker.Script{Frame: func(uint16) []byte { return fakebroker.ReservedType() }, Linger: 100 * time.Millisecond})
	c := dial(t, srv)
	c.Write(connect)
	expect(t, c, fakebroker.Connack(0))
	expect(t, c, fakebroker.ReservedType())
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("waiting for the fake broker to hang up: %v", err)
	}
	if s := session(t, srv); !s.Sent || s.ClientClosed {
		t.Errorf("session %+v, want sent and not closed by the client", s)
	}
}

func TestNotConnect(t *testing.T) {
	srv := start(t, fakebroker.Script{})
	c := dial(t, srv)
	c.Write(publish)
	if s := session(t, srv); s.Err == nil || s.Sent {
		t.Errorf("session %+v, want an error", s)
	}
}

// TestCloseWithOpenConnections: Close ends connections waiting for a PUBLISH or lingering.
func TestCloseWithOpenConnections(t *testing.T) {
	srv, err := fakebroker.Start(fakebroker.Script{When: fakebroker.AfterPublish, Frame: func(uint16) []byte { return fakebroker.Oversized() }})
	if err != nil {
		t.Fatal(err)
	}
	c1, c2 := dial(t, srv), dial(t, srv)
	c1.Write(connect)
	expect(t, c1, fakebroker.Connack(0))
	c2.Write(connect)
	expect(t, c2, fakebroker.Connack(0))
	c2.Write(publish)
	expect(t, c2, fakebroker.Oversized())
	if err := srv.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	for _, c := range []net.Conn{c1, c2} {
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Errorf("after Close: %v", err)
		}
	}
}

func TestFrames(t *testing.T) {
	for name, tc := range map[string]struct{ got, want []byte }{
		"publish":  {fakebroker.Publish("t", []byte("p")), []byte{0x30, 5, 0, 1, 't', 0, 'p'}},
		"truncate": {fakebroker.TruncatedPuback(), []byte{0x40, 1, 0}},
		"flags":    {fakebroker.PubackBadFlags(3), []byte{0x41, 2, 0, 3}},
		"sub":      {fakebroker.Subscribe(), []byte{0x82, 9, 0, 1, 0, 0, 3, 'a', '/', 'b', 1}},
	} {
		if !bytes.Equal(tc.got, tc.want) {
			t.Errorf("%s: %x, want %x", name, tc.got, tc.want)
		}
	}
	big := fakebroker.Publish("t", make([]byte, 200))
	if big[1] != 0x80|(204&0x7F) || big[2] != 1 {
		t.Errorf("remaining length of 204 encoded as %x", big[1:3])
	}
}
