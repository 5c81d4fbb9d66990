package codec

import (
	"bytes"
	"strings"
	"testing"
)

// roundTripCases are packets that must survive encode → Split → decode
// unchanged. Between them they set every field with and without its
// optional parts.
func roundTripCases() []struct {
	name string
	pkt  any
} {
	big := bytes.Repeat([]byte{0xAB}, 3_000_000) // four byte remaining length
	return []struct {
		name string
		pkt  any
	}{
		{"connect/minimal", Connect{ClientID: "c1"}},
		{"connect/empty client id", Connect{CleanStart: true, KeepAlive: 60}},
		{"connect/full", Connect{
			ClientID: "client-ü", Username: "user", HasUsername: true,
			Password: []byte{0, 1, 2, 0xFF}, HasPassword: true, CleanStart: true,
			KeepAlive: 65535, SessionExpiry: 0xFFFFFFFF, ReceiveMaximum: 100,
			MaximumPacketSize: 1 << 20, TopicAliasMaximum: 10,
		}},
		{"connect/empty username and password", Connect{ClientID: "x", HasUsername: true, HasPassword: true}},
		{"connect/password without username", Connect{ClientID: "x", Password: []byte("pw"), HasPassword: true}},
		{"connect/long strings", Connect{ClientID: strings.Repeat("i", 65535), Username: strings.Repeat("u", 65535), HasUsername: true}},

		{"connack/minimal", Connack{RetainAvailable: true}},
		{"connack/retain not available", Connack{}},
		{"connack/failure", Connack{ReasonCode: 0x87, ReasonString: "not authorized", RetainAvailable: true}},
		{"connack/full", Connack{
			SessionPresent: true, SessionExpiry: 3600, HasSessionExpiry: true,
			ReceiveMaximum: 20, MaximumQoS: 1, HasMaximumQoS: true,
			MaximumPacketSize: 4096, AssignedClientID: "auto-123", TopicAliasMaximum: 5,
			ReasonString: "welcome", ServerKeepAlive: 0, HasServerKeepAlive: true,
		}},
		{"connack/explicit zero session expiry", Connack{HasSessionExpiry: true, RetainAvailable: true}},
		{"connack/max qos 0", Connack{HasMaximumQoS: true, RetainAvailable: true}},
		{"connack/redirect", Connack{ReasonCode: 0x9C, ServerReference: "tcp://other:1883", RetainAvailable: true}},

		{"publish/qos0", Publish{Topic: "a/b", Payload: []byte("hello")}},
		{"publish/qos0 empty payload", Publish{Topic: "t"}},
		{"publish/qos1", Publish{Topic: "a/b", Payload: []byte{1, 2, 3}, PacketID: 1, QoS: 1}},
		{"publish/qos2 dup retain", Publish{Topic: "x", Payload: []byte("p"), PacketID: 65535, QoS: 2, Dup: true, Retain: true}},
		{"publish/retain qos0", Publish{Topic: "x", Retain: true}},
		{"publish/all properties", Publish{
			Topic: "sensors/ü/temp", Payload: []byte("21.5"), PacketID: 9, QoS: 1,
			TopicAlias: 3, ResponseTopic: "reply/here", CorrelationData: []byte{9, 8, 7},
		}},
		{"publish/metadata", Publish{
			Topic: "orders/eu", Payload: []byte(`{"id":1}`), PacketID: 4, QoS: 1,
			PayloadFormat: 1, MessageExpiry: 3600, HasMessageExpiry: true, ContentType: "application/json",
			UserProperties: []UserProperty{{"trace", "00-ab-cd-01"}, {"k", ""}, {"trace", "again"}, {"", "ü"}},
		}},
		{"publish/explicit zero expiry", Publish{Topic: "t", HasMessageExpiry: true}},
		{"publish/alias only", Publish{TopicAlias: 7, Payload: []byte("x")}},
		{"publish/empty correlation data", Publish{Topic: "t", CorrelationData: []byte{}}},
		{"publish/two byte length", Publish{Topic: "t", Payload: bytes.Repeat([]byte{1}, 200)}},
		{"publish/three byte length", Publish{Topic: "t", Payload: bytes.Repeat([]byte{2}, 20000)}},
		{"publish/four byte length", Publish{Topic: "t", Payload: big, QoS: 1, PacketID: 2}},

		{"puback/success", Puback{PacketID: 1}},
		{"puback/reason", Puback{PacketID: 0x1234, ReasonCode: 0x10}},
		{"puback/reason string", Puback{PacketID: 7, ReasonCode: 0x97, ReasonString: "quota"}},
		{"puback/success with reason string", Puback{PacketID: 7, ReasonString: "ok"}},

		{"pingreq", pingreq{}},
		{"pingresp", pingresp{}},

		{"disconnect/normal", Disconnect{}},
		{"disconnect/reason", Disconnect{ReasonCode: 0x04}},
		{"disconnect/full", Disconnect{ReasonCode: 0x9C, ReasonString: "moving", SessionExpiry: 10, HasSessionExpiry: true, ServerReference: "other:1883"}},
		{"disconnect/explicit zero session expiry", Disconnect{HasSessionExpiry: true}},
		{"disconnect/server reference only", Disconnect{ServerReference: "s"}},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range roundTripCases() {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := encodePacket(nil, tc.pkt)
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			if p, ok := tc.pkt.(Publish); ok {
				if got := PublishLen(&p); got != len(raw) {
					t.Errorf("PublishLen = %d, encoded %d bytes", got, len(raw))
				}
			}
			got, err := splitDecode(raw, 0)
			if err != nil {
				t.Fatalf("decode % X: %v", head(raw), err)
			}
			if diff := cmpDiff(tc.pkt, got); diff != "" {
				t.Errorf("round trip mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// head keeps failure messages short for big packets.
func head(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// TestSplitByteByByte feeds every round trip case one byte at a time: Split
// must ask for more until the last byte and then return the whole packet.
func TestSplitByteByByte(t *testing.T) {
	for _, tc := range roundTripCases() {
		raw, err := encodePacket(nil, tc.pkt)
		if err != nil {
			t.Fatal(err)
		}
		if len(raw) > 100_000 {
			continue // quadratic; the small cases cover every header size but four
		}
		for i := 0; i < len(raw); i++ {
			if _, _, n, err := Split(raw[:i], 0); n != 0 || err != nil {
				t.Fatalf("%s: Split of %d/%d bytes = n %d, err %v; want 0, nil", tc.name, i, len(raw), n, err)
			}
		}
		h, body, n, err := Split(raw, 0)
		if err != nil || n != len(raw) {
			t.Fatalf("%s: Split of whole packet = n %d, err %v", tc.name, n, err)
		}
		if h.Length != len(body) || n != len(raw) {
			t.Fatalf("%s: header length %d, body %d", tc.name, h.Length, len(body))
		}
	}
}

// TestSplitConcatenated puts every case into one buffer and splits it back.
func TestSplitConcatenated(t *testing.T) {
	cases := roundTripCases()
	var stream []byte
	for _, tc := range cases {
		var err error
		if stream, err = encodePacket(stream, tc.pkt); err != nil {
			t.Fatal(err)
		}
	}
	for i, tc := range cases {
		h, body, n, err := Split(stream, 0)
		if err != nil || n == 0 {
			t.Fatalf("packet %d (%s): n %d, err %v", i, tc.name, n, err)
		}
		if cap(body) != len(body) {
			t.Errorf("packet %d (%s): body capacity %d reaches into the next packet", i, tc.name, cap(body))
		}
		got, err := decodePacket(h, body)
		if err != nil {
			t.Fatalf("packet %d (%s): %v", i, tc.name, err)
		}
		if diff := cmpDiff(tc.pkt, got); diff != "" {
			t.Errorf("packet %d (%s) mismatch (-want +got):\n%s", i, tc.name, diff)
		}
		stream = stream[n:]
	}
	if len(stream) != 0 {
		t.Errorf("%d bytes left over", len(stream))
	}
	if _, _, n, err := Split(stream, 0); n != 0 || err != nil {
		t.Errorf("Split(empty) = %d, %v", n, err)
	}
}

// TestAppendKeepsPrefix checks the encoders append rather than overwrite.
func TestAppendKeepsPrefix(t *testing.T) {
	for _, tc := range roundTripCases() {
		prefix := []byte{0xEE, 0xEE}
		alone, err := encodePacket(nil, tc.pkt)
		if err != nil {
			t.Fatal(err)
		}
		got, err := encodePacket(prefix, tc.pkt)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[:2], []byte{0xEE, 0xEE}) || !bytes.Equal(got[2:], alone) {
			t.Errorf("%s: appending to a prefix changed the output", tc.name)
		}
	}
}
