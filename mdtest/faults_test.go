package mdtest_test

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/mdclient/mdclient/mdtest"
)

// nothingDelivered checks that sub received nothing: the ping before proves the server
// processed the publish, and delivery to a Subscription happens before the ping's answer.
func nothingDelivered(t *testing.T, sub *mdtest.Subscription) {
	t.Helper()
	select {
	case m := <-sub.Messages():
		t.Fatalf("delivered %q to %q", m.Payload, m.Topic)
	default:
	}
}

// publishExpectingNoAck publishes at QoS 1 and proves, with a ping after it, that the
// server processed it without answering.
func publishExpectingNoAck(t *testing.T, c *testClient, topic string) {
	t.Helper()
	c.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: c.packetID(), TopicName: topic, Payload: []byte("x")})
	c.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
	if pk := c.expect(packets.Pingresp); pk.FixedHeader.Type != packets.Pingresp {
		t.Fatal("no PINGRESP")
	}
}

func TestSetReasonCode(t *testing.T) {
	for _, tr := range transports {
		t.Run(string(tr), func(t *testing.T) {
			srv := newServer(t)
			sub := subscribe(t, srv, "#")
			c, _ := newTestClient(t, tr.address(srv), connectOptions{})
			for _, code := range []byte{0x97, 0x87, 0x10, 0x80} {
				srv.SetReasonCode("quota/#", code)
				ack, raw := c.publishQoS1("quota/x", []byte("x"), packets.Properties{})
				checkPuback(t, ack, raw, code)
				c.ping()
				nothingDelivered(t, sub)
			}
			// The latest matching rule decides; code 0 removes a rule.
			srv.SetReasonCode("quota/x", 0x87)
			ack, raw := c.publishQoS1("quota/x", nil, packets.Properties{})
			checkPuback(t, ack, raw, 0x87)
			srv.SetReasonCode("quota/x", 0)
			ack, raw = c.publishQoS1("quota/x", nil, packets.Properties{})
			checkPuback(t, ack, raw, 0x80)
			srv.SetReasonCode("quota/#", 0)
			ack, raw = c.publishQoS1("quota/x", []byte("delivered"), packets.Properties{})
			checkPuback(t, ack, raw, 0x00)
			if m := next(t, sub); string(m.Payload) != "delivered" {
				t.Fatalf("delivered %q", m.Payload)
			}
			// Other topics were never affected; an invalid filter matches nothing.
			srv.SetReasonCode("bad/#/filter", 0x97)
			ack, raw = c.publishQoS1("bad/x/filter", nil, packets.Properties{})
			checkPuback(t, ack, raw, 0x00)
		})
	}
}

func TestDropAcks(t *testing.T) {
	for _, tr := range transports {
		t.Run(string(tr), func(t *testing.T) {
			srv := newServer(t)
			sub := subscribe(t, srv, "#")
			c, _ := newTestClient(t, tr.address(srv), connectOptions{})
			srv.DropAcks("lost/+", true)
			publishExpectingNoAck(t, c, "lost/x")
			nothingDelivered(t, sub)
			ack, raw := c.publishQoS1("kept/x", []byte("kept"), packets.Properties{})
			checkPuback(t, ack, raw, 0x00)
			next(t, sub)
			srv.DropAcks("lost/+", false)
			ack, raw = c.publishQoS1("lost/x", []byte("again"), packets.Properties{})
			checkPuback(t, ack, raw, 0x00)
			if m := next(t, sub); string(m.Payload) != "again" {
				t.Fatalf("delivered %q", m.Payload)
			}
		})
	}
}

func TestCutConnections(t *testing.T) {
	for _, tr := range transports {
		t.Run(string(tr), func(t *testing.T) {
			srv := newServer(t)
			c, _ := newTestClient(t, tr.address(srv), connectOptions{})
			c.ping()
			srv.CutConnections()
			// The connection ends without a DISCONNECT packet.
			pk, _, err := c.read()
			if err == nil {
				t.Fatalf("read %s after the cut, want the connection ended", packets.PacketNames[pk.FixedHeader.Type])
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the connection is still open: %v", err)
			}
			// Clients may connect again at once.
			c2, _ := newTestClient(t, tr.address(srv), connectOptions{ClientID: "again"})
			c2.ping()
		})
	}
}

func TestPauseResume(t *testing.T) {
	for _, tr := range transports {
		t.Run(string(tr), func(t *testing.T) {
			srv := newServer(t)
			sub := subscribe(t, srv, "#")
			c, _ := newTestClient(t, tr.address(srv), connectOptions{})
			c.ping()
			srv.Pause()
			c.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: c.packetID(), TopicName: "p/x", Payload: []byte("waited")})
			// Nothing comes back while paused; the wait is bounded, as a check of absence must
			// be. (A read deadline would end a WebSocket connection: read in a goroutine.)
			got := make(chan packets.Packet, 1)
			go func() {
				pk, _, err := c.read()
				if err != nil {
					t.Errorf("read: %v", err)
				}
				got <- pk
			}()
			select {
			case pk := <-got:
				t.Fatalf("read %s while paused", packets.PacketNames[pk.FixedHeader.Type])
			case <-time.After(300 * time.Millisecond):
			}
			nothingDelivered(t, sub)
			srv.Resume()
			if ack := <-got; ack.FixedHeader.Type != packets.Puback || ack.ReasonCode != 0 {
				t.Fatalf("%s 0x%02x after Resume, want PUBACK 0x00", packets.PacketNames[ack.FixedHeader.Type], ack.ReasonCode)
			}
			if m := next(t, sub); string(m.Payload) != "waited" {
				t.Fatalf("delivered %q", m.Payload)
			}
		})
	}
	// Close ends a paused server at once.
	srv := newServer(t)
	c, _ := newTestClient(t, srv.TCPAddr(), connectOptions{})
	srv.Pause()
	done := make(chan error, 1)
	go func() { done <- srv.Close() }()
	select {
	case <-done:
	case <-time.After(ioTimeout):
		t.Fatal("Close of a paused server hangs")
	}
	if _, err := io.ReadAll(c.r); err != nil && !errors.Is(err, net.ErrClosed) {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection open after Close: %v", err)
		}
	}
}

func TestSink(t *testing.T) {
	sink, err := mdtest.NewSink()
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	c, ack := newTestClient(t, sink.TCPAddr(), connectOptions{})
	if ack.Properties.ReceiveMaximum != 65535 {
		t.Errorf("CONNACK Receive Maximum %d", ack.Properties.ReceiveMaximum)
	}
	for range 3 {
		ack, raw := c.publishQoS1("any/topic", []byte("x"), packets.Properties{})
		checkPuback(t, ack, raw, 0x00)
	}
	c.ping()
}
