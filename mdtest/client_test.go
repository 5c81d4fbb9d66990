package mdtest_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/mochi-mqtt/server/v2/packets"
)

// ioTimeout bounds every single network operation of the test client. It is
// a deadline, not a synchronisation device: healthy runs never come close.
const ioTimeout = 10 * time.Second

// transport names one of the two listeners of a Server.
type transport string

const (
	overTCP transport = "tcp"
	overWS  transport = "ws"
)

// transports is the list every behavioural test is run against.
var transports = []transport{overTCP, overWS}

// address returns the listener address of srv for tr.
func (tr transport) address(srv interface {
	TCPAddr() string
	WSAddr() string
}) string {
	if tr == overWS {
		return srv.WSAddr()
	}
	return srv.TCPAddr()
}

// dialRaw opens a transport connection (no MQTT yet) to addr, which is either
// "tcp://host:port" or "ws://host:port/path".
func dialRaw(t testing.TB, addr string) net.Conn {
	t.Helper()
	switch {
	case strings.HasPrefix(addr, "tcp://"):
		d := net.Dialer{Timeout: ioTimeout}
		c, err := d.Dial("tcp", strings.TrimPrefix(addr, "tcp://"))
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		return c
	case strings.HasPrefix(addr, "ws://"):
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		ws, resp, err := websocket.Dial(ctx, addr, &websocket.DialOptions{Subprotocols: []string{"mqtt"}})
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		if resp != nil && resp.Body != nil {
			_ = resp.Body.Close()
		}
		if got := ws.Subprotocol(); got != "mqtt" {
			_ = ws.CloseNow()
			t.Fatalf("dial %s: negotiated subprotocol %q, want %q", addr, got, "mqtt")
		}
		return websocket.NetConn(context.Background(), ws, websocket.MessageBinary)
	default:
		t.Fatalf("unsupported address %q", addr)
		return nil
	}
}

// testClient is a deliberately tiny MQTT 5 client built on mochi's packets
// package. It is strictly sequential: the test drives every packet exchange
// itself, which makes the assertions about individual packets exact.
type testClient struct {
	t      testing.TB
	conn   net.Conn
	r      *bufio.Reader
	nextID uint16
}

// connectOptions are the CONNECT fields the tests vary.
type connectOptions struct {
	ClientID string
	Username string // sent (with the username flag) when non-empty
	Password string // sent (with the password flag) when non-empty
	Props    packets.Properties
}

// newTestClient dials addr and performs the MQTT 5 CONNECT/CONNACK exchange.
// It fails the test unless the broker accepts the connection. The connection
// is closed with t.Cleanup.
func newTestClient(t testing.TB, addr string, opts connectOptions) (*testClient, packets.Packet) {
	t.Helper()
	c := &testClient{t: t, conn: dialRaw(t, addr)}
	c.r = bufio.NewReader(c.conn)
	t.Cleanup(func() { _ = c.conn.Close() })

	if opts.ClientID == "" {
		opts.ClientID = strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	}
	connect := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 5,
		Properties:      opts.Props,
		Connect: packets.ConnectParams{
			ProtocolName:     []byte("MQTT"),
			Clean:            true,
			Keepalive:        60,
			ClientIdentifier: opts.ClientID,
		},
	}
	if opts.Username != "" {
		connect.Connect.UsernameFlag = true
		connect.Connect.Username = []byte(opts.Username)
	}
	if opts.Password != "" {
		connect.Connect.PasswordFlag = true
		connect.Connect.Password = []byte(opts.Password)
	}
	c.write(connect)
	ack := c.expect(packets.Connack)
	if ack.ReasonCode != packets.CodeSuccess.Code {
		t.Fatalf("CONNACK reason 0x%02x (%s), want 0x00", ack.ReasonCode, ack.Properties.ReasonString)
	}
	return c, ack
}

// write encodes pk as an MQTT 5 packet and writes it.
func (c *testClient) write(pk packets.Packet) {
	c.t.Helper()
	if err := c.tryWrite(pk); err != nil {
		c.t.Fatalf("write %s: %v", packets.PacketNames[pk.FixedHeader.Type], err)
	}
}

func (c *testClient) tryWrite(pk packets.Packet) error {
	pk.ProtocolVersion = 5
	pk.Mods.AllowResponseInfo = true // let the encoder emit response topic / correlation data
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	case packets.Unsubscribe:
		err = pk.UnsubscribeEncode(&buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	default:
		err = fmt.Errorf("test client cannot encode packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		return err
	}
	if err := c.conn.SetWriteDeadline(time.Now().Add(ioTimeout)); err != nil {
		return err
	}
	_, err = c.conn.Write(buf.Bytes())
	return err
}

// rawPacket is one packet as read off the wire.
type rawPacket struct {
	header byte   // first byte of the fixed header
	body   []byte // the remaining bytes (variable header and payload)
}

// readRaw reads exactly one packet.
func (c *testClient) readRaw() (rawPacket, error) {
	if err := c.conn.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
		return rawPacket{}, err
	}
	hb, err := c.r.ReadByte()
	if err != nil {
		return rawPacket{}, err
	}
	n, _, err := packets.DecodeLength(c.r)
	if err != nil {
		return rawPacket{}, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return rawPacket{}, err
	}
	return rawPacket{header: hb, body: body}, nil
}

// decode turns a raw packet into a mochi packet, as an MQTT 5 client would.
func decode(raw rawPacket) (packets.Packet, error) {
	pk := packets.Packet{ProtocolVersion: 5}
	if err := pk.FixedHeader.Decode(raw.header); err != nil {
		return pk, err
	}
	pk.FixedHeader.Remaining = len(raw.body)
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(raw.body)
	case packets.Publish:
		err = pk.PublishDecode(raw.body)
	case packets.Puback:
		err = pk.PubackDecode(raw.body)
	case packets.Suback:
		err = pk.SubackDecode(raw.body)
	case packets.Unsuback:
		err = pk.UnsubackDecode(raw.body)
	case packets.Pingresp:
		err = pk.PingrespDecode(raw.body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(raw.body)
	default:
		err = fmt.Errorf("test client cannot decode packet type %d", pk.FixedHeader.Type)
	}
	return pk, err
}

// read reads and decodes one packet.
func (c *testClient) read() (packets.Packet, rawPacket, error) {
	raw, err := c.readRaw()
	if err != nil {
		return packets.Packet{}, raw, err
	}
	pk, err := decode(raw)
	return pk, raw, err
}

// expect reads one packet and fails the test unless it has type typ.
func (c *testClient) expect(typ byte) packets.Packet {
	c.t.Helper()
	pk, _ := c.expectRaw(typ)
	return pk
}

// expectRaw is expect that also returns the bytes on the wire.
func (c *testClient) expectRaw(typ byte) (packets.Packet, rawPacket) {
	c.t.Helper()
	pk, raw, err := c.read()
	if err != nil {
		c.t.Fatalf("reading %s: %v", packets.PacketNames[typ], err)
	}
	if pk.FixedHeader.Type != typ {
		c.t.Fatalf("got %s (reason 0x%02x), want %s",
			packets.PacketNames[pk.FixedHeader.Type], pk.ReasonCode, packets.PacketNames[typ])
	}
	return pk, raw
}

func (c *testClient) packetID() uint16 {
	c.nextID++
	if c.nextID == 0 {
		c.nextID = 1
	}
	return c.nextID
}

// publishQoS1 publishes and returns the PUBACK (decoded and raw).
func (c *testClient) publishQoS1(topic string, payload []byte, props packets.Properties) (packets.Packet, rawPacket) {
	c.t.Helper()
	id := c.packetID()
	c.write(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		PacketID:    id,
		TopicName:   topic,
		Payload:     payload,
		Properties:  props,
	})
	ack, raw := c.expectRaw(packets.Puback)
	if ack.PacketID != id {
		c.t.Fatalf("PUBACK for packet id %d, want %d", ack.PacketID, id)
	}
	return ack, raw
}

// publishQoS0 publishes without acknowledgement.
func (c *testClient) publishQoS0(topic string, payload []byte, retain bool) {
	c.t.Helper()
	c.write(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: retain},
		TopicName:   topic,
		Payload:     payload,
	})
}

// subscribe subscribes to filter with QoS qos and returns the SUBACK reason code.
func (c *testClient) subscribe(filter string, qos byte) byte {
	c.t.Helper()
	id := c.packetID()
	c.write(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		PacketID:    id,
		Filters:     packets.Subscriptions{{Filter: filter, Qos: qos}},
	})
	ack := c.expect(packets.Suback)
	if ack.PacketID != id || len(ack.ReasonCodes) != 1 {
		c.t.Fatalf("SUBACK id %d codes %v, want id %d and one code", ack.PacketID, ack.ReasonCodes, id)
	}
	return ack.ReasonCodes[0]
}

// ping performs a PINGREQ/PINGRESP round trip. Because the broker handles a
// connection's packets in order, a completed ping proves every earlier packet
// of this client has been processed.
func (c *testClient) ping() {
	c.t.Helper()
	c.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
	c.expect(packets.Pingresp)
}
