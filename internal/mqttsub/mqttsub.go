// Package mqttsub is an independent MQTT 5 client for tests, FOR TESTS ONLY: a
// subscriber and a one-shot publisher built on mochi-mqtt's packets package rather than on
// mdclient's codec, so that what a test reads back from a broker is decoded by a second
// implementation. It speaks MQTT 5 over TCP.
package mqttsub

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// ioTimeout bounds every exchange of the handshakes below.
const ioTimeout = 10 * time.Second

// Msg is one PUBLISH received by a [Sub], with the properties a publisher sets.
type Msg struct {
	Topic            string
	Payload          []byte
	QoS              byte
	Dup              bool
	Retain           bool
	ResponseTopic    string
	CorrelationData  []byte
	PayloadFormat    byte   // 1: UTF-8 text
	MessageExpiry    uint32 // seconds left, as the broker forwarded it; 0 when absent
	ContentType      string
	UserProperties   []UserProperty // in order
	HasMessageExpiry bool
}

// UserProperty is a key and value, as received.
type UserProperty struct{ Key, Value string }

// Sub is a small MQTT 5 subscriber connected over TCP to one broker, created by [Dial].
// It acknowledges every QoS 1 message and keeps all it received.
type Sub struct {
	conn      net.Conn
	r         *bufio.Reader
	wmu       sync.Mutex    // serialises writes
	done      chan struct{} // closed when the reader returns
	closeOnce sync.Once

	mu      sync.Mutex
	msgs    []Msg
	changed chan struct{} // closed and replaced at every message and when the reader stops
	err     error         // why the reader stopped
}

// Dial connects to the broker at addr (host:port) as clientID and user (none when ""),
// subscribes to filter with QoS 1 and returns once the broker has acknowledged the
// subscription, so that every message published after Dial returns is delivered to it.
// The caller must Close it.
func Dial(addr, clientID, user, password, filter string) (*Sub, error) {
	conn, r, ack, err := dialMQTT(addr, clientID, user, password)
	if err != nil {
		return nil, err
	}
	if ack.ReasonCode != 0 {
		conn.Close()
		return nil, fmt.Errorf("CONNACK 0x%02x %s", ack.ReasonCode, ack.Properties.ReasonString)
	}
	s := &Sub{conn: conn, r: r, done: make(chan struct{}), changed: make(chan struct{})}
	err = s.write(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		PacketID:    1,
		Filters:     packets.Subscriptions{{Filter: filter, Qos: 1}},
	})
	for err == nil {
		var pk packets.Packet
		pk, err = readPacket(r)
		if err != nil {
			break
		}
		if pk.FixedHeader.Type == packets.Publish {
			err = s.received(pk) // a retained message may come first
			continue
		}
		if pk.FixedHeader.Type != packets.Suback {
			err = fmt.Errorf("got %s, want SUBACK", packets.PacketNames[pk.FixedHeader.Type])
			break
		}
		if len(pk.ReasonCodes) != 1 || pk.ReasonCodes[0] >= 0x80 {
			err = fmt.Errorf("SUBACK reason codes %x %s", pk.ReasonCodes, pk.Properties.ReasonString)
		}
		break
	}
	if err == nil {
		err = conn.SetDeadline(time.Time{})
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	go s.read()
	return s, nil
}

func (s *Sub) write(pk packets.Packet) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return writePacket(s.conn, pk)
}

// received records a PUBLISH and acknowledges it.
func (s *Sub) received(pk packets.Packet) error {
	m := Msg{
		Topic:            pk.TopicName,
		Payload:          slices.Clone(pk.Payload),
		QoS:              pk.FixedHeader.Qos,
		Dup:              pk.FixedHeader.Dup,
		Retain:           pk.FixedHeader.Retain,
		ResponseTopic:    pk.Properties.ResponseTopic,
		CorrelationData:  slices.Clone(pk.Properties.CorrelationData),
		PayloadFormat:    pk.Properties.PayloadFormat,
		MessageExpiry:    pk.Properties.MessageExpiryInterval,
		HasMessageExpiry: pk.Properties.MessageExpiryInterval > 0,
		ContentType:      pk.Properties.ContentType,
	}
	for _, p := range pk.Properties.User {
		m.UserProperties = append(m.UserProperties, UserProperty{Key: p.Key, Value: p.Val})
	}
	s.mu.Lock()
	s.msgs = append(s.msgs, m)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	if pk.FixedHeader.Qos == 0 {
		return nil
	}
	return s.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
}

// read is the reader goroutine.
func (s *Sub) read() {
	defer close(s.done)
	var err error
	for err == nil {
		var pk packets.Packet
		pk, err = readPacket(s.r)
		if err != nil {
			break
		}
		switch pk.FixedHeader.Type {
		case packets.Publish:
			err = s.received(pk)
		case packets.Disconnect:
			err = fmt.Errorf("DISCONNECT 0x%02x %s", pk.ReasonCode, pk.Properties.ReasonString)
		}
	}
	s.mu.Lock()
	s.err = err
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// Messages returns a copy of the list of messages received so far, in order.
func (s *Sub) Messages() []Msg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs)
}

// Len returns how many messages were received so far.
func (s *Sub) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

// Err returns why the connection ended (nil while it is up or after Close).
func (s *Sub) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Wait calls cond with the messages received so far (which it must not keep or modify)
// whenever more arrive, until cond returns true (then Wait returns true) or timeout
// passes or the connection ends (then it returns cond's last answer).
func (s *Sub) Wait(timeout time.Duration, cond func(msgs []Msg) bool) bool {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		s.mu.Lock()
		ok, ch, ended := cond(s.msgs), s.changed, s.err != nil
		s.mu.Unlock()
		if ok || ended {
			return ok
		}
		select {
		case <-ch:
		case <-s.done:
		case <-timer.C:
			return false
		}
	}
}

// Close sends DISCONNECT, closes the connection and waits for the reader to return.
func (s *Sub) Close() {
	s.closeOnce.Do(func() {
		_ = s.conn.SetWriteDeadline(time.Now().Add(time.Second))
		_ = s.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
		s.conn.Close()
		<-s.done
		s.mu.Lock()
		s.err = nil
		s.mu.Unlock()
	})
}

// Ack is a broker's answer to [Publish].
type Ack struct {
	Connack byte   // CONNACK reason code
	Puback  byte   // PUBACK reason code; meaningful when Connack is 0
	Reason  string // reason string of a refusing CONNACK or of the PUBACK
}

// Publish connects to the broker at addr (host:port) as clientID and user, publishes
// payload to topic with QoS 1, and returns the reason codes of the CONNACK and the PUBACK.
// It disconnects before returning.
func Publish(addr, clientID, user, password, topic string, payload []byte) (Ack, error) {
	conn, r, ack, err := dialMQTT(addr, clientID, user, password)
	if err != nil {
		return Ack{}, err
	}
	defer conn.Close()
	res := Ack{Connack: ack.ReasonCode}
	if ack.ReasonCode != 0 {
		res.Reason = ack.Properties.ReasonString
		return res, nil
	}
	err = writePacket(conn, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		PacketID:    1,
		TopicName:   topic,
		Payload:     payload,
	})
	for err == nil {
		var pk packets.Packet
		pk, err = readPacket(r)
		if err != nil {
			break
		}
		if pk.FixedHeader.Type == packets.Puback && pk.PacketID == 1 {
			res.Puback, res.Reason = pk.ReasonCode, pk.Properties.ReasonString
			_ = writePacket(conn, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
			return res, nil
		}
		if pk.FixedHeader.Type == packets.Disconnect {
			err = fmt.Errorf("DISCONNECT 0x%02x %s", pk.ReasonCode, pk.Properties.ReasonString)
		}
	}
	return res, err
}

// dialMQTT connects over TCP and exchanges CONNECT/CONNACK. The connection's deadline is
// left set to ioTimeout from now.
func dialMQTT(addr, clientID, user, password string) (net.Conn, *bufio.Reader, packets.Packet, error) {
	conn, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		return nil, nil, packets.Packet{}, err
	}
	if err := conn.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
		conn.Close()
		return nil, nil, packets.Packet{}, err
	}
	connect := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{
			ProtocolName:     []byte("MQTT"),
			Clean:            true,
			ClientIdentifier: clientID,
		},
	}
	if user != "" {
		connect.Connect.UsernameFlag, connect.Connect.Username = true, []byte(user)
	}
	if password != "" {
		connect.Connect.PasswordFlag, connect.Connect.Password = true, []byte(password)
	}
	r := bufio.NewReader(conn)
	if err := writePacket(conn, connect); err != nil {
		conn.Close()
		return nil, nil, packets.Packet{}, err
	}
	ack, err := readPacket(r)
	if err == nil && ack.FixedHeader.Type != packets.Connack {
		err = fmt.Errorf("got %s, want CONNACK", packets.PacketNames[ack.FixedHeader.Type])
	}
	if err != nil {
		conn.Close()
		return nil, nil, packets.Packet{}, err
	}
	return conn, r, ack, nil
}

// writePacket encodes pk as MQTT 5 and writes it.
func writePacket(w io.Writer, pk packets.Packet) error {
	pk.ProtocolVersion = 5
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	default:
		err = fmt.Errorf("cannot encode packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		return err
	}
	_, err = w.Write(buf.Bytes())
	return err
}

// readPacket reads and decodes one MQTT 5 packet.
func readPacket(r *bufio.Reader) (packets.Packet, error) {
	pk := packets.Packet{ProtocolVersion: 5}
	hb, err := r.ReadByte()
	if err != nil {
		return pk, err
	}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		return pk, err
	}
	size, _, err := packets.DecodeLength(r)
	if err != nil {
		return pk, err
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(r, body); err != nil {
		return pk, err
	}
	pk.FixedHeader.Remaining = size
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	case packets.Pingresp:
	default:
		err = fmt.Errorf("unexpected packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		return pk, fmt.Errorf("decoding %s: %w", packets.PacketNames[pk.FixedHeader.Type], err)
	}
	return pk, nil
}
