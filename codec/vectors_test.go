package codec

import (
	"bytes"
	"strings"
	"testing"
)

// Byte vectors written out by hand from the MQTT 5.0 specification.
func TestVectors(t *testing.T) {
	tests := []struct {
		name string
		pkt  any
		raw  []byte
	}{
		{"PINGREQ", pingreq{}, []byte{0xC0, 0x00}},
		{"PINGRESP", pingresp{}, []byte{0xD0, 0x00}},
		// PUBACK, Success: no reason code and no properties (3.4.2.1).
		{"PUBACK short", Puback{PacketID: 7}, []byte{0x40, 0x02, 0x00, 0x07}},
		// PUBACK, No matching subscribers: reason byte, property length omitted.
		{"PUBACK reason only", Puback{PacketID: 0x0102, ReasonCode: 0x10}, []byte{0x40, 0x03, 0x01, 0x02, 0x10}},
		{"PUBACK reason string", Puback{PacketID: 1, ReasonCode: 0x80, ReasonString: "no"}, []byte{
			0x40, 0x09, 0x00, 0x01, 0x80,
			0x05,                       // property length
			0x1F, 0x00, 0x02, 'n', 'o', // Reason String
		}},
		{"PUBLISH QoS1 a/b", Publish{Topic: "a/b", QoS: 1, PacketID: 10, Payload: []byte("hi")}, []byte{
			0x32, 0x0A, // PUBLISH, QoS 1; remaining length 10
			0x00, 0x03, 'a', '/', 'b', // topic name
			0x00, 0x0A, // packet identifier
			0x00,     // property length
			'h', 'i', // payload
		}},
		{"PUBLISH QoS0 retain alias", Publish{Topic: "t", Retain: true, TopicAlias: 2}, []byte{
			0x31, 0x07,
			0x00, 0x01, 't',
			0x03, 0x23, 0x00, 0x02, // Topic Alias 2
		}},
		// Written from MQTT 5.0 §2.2.2.2 and §3.3.2.3 by hand: the property identifiers,
		// a Four Byte Integer, a UTF-8 String and a UTF-8 String Pair.
		{"PUBLISH QoS1 metadata", Publish{Topic: "t", QoS: 1, PacketID: 1, PayloadFormat: 1, MessageExpiry: 60, HasMessageExpiry: true,
			ContentType: "a/b", UserProperties: []UserProperty{{"k", "v"}}, Payload: []byte("x")}, []byte{
			0x32, 0x1B,
			0x00, 0x01, 't',
			0x00, 0x01, // packet identifier
			0x14,       // property length 20
			0x01, 0x01, // Payload Format Indicator 1
			0x02, 0x00, 0x00, 0x00, 0x3C, // Message Expiry Interval 60
			0x03, 0x00, 0x03, 'a', '/', 'b', // Content Type
			0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v', // User Property k=v
			'x',
		}},
		{"DISCONNECT normal", Disconnect{}, []byte{0xE0, 0x00}},
		{"DISCONNECT reason only", Disconnect{ReasonCode: 0x8E}, []byte{0xE0, 0x01, 0x8E}},
		{"CONNECT minimal", Connect{ClientID: "c", CleanStart: true, KeepAlive: 60}, []byte{
			0x10, 0x0E,
			0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, // protocol name, level
			0x02,       // flags: Clean Start
			0x00, 0x3C, // keep alive 60
			0x00,            // property length
			0x00, 0x01, 'c', // client identifier
		}},
		{"CONNECT user pass session", Connect{ClientID: "", Username: "u", HasUsername: true, Password: []byte{1}, HasPassword: true, SessionExpiry: 300}, []byte{
			0x10, 0x18,
			0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05,
			0xC0, // User Name and Password flags
			0x00, 0x00,
			0x05, 0x11, 0x00, 0x00, 0x01, 0x2C, // Session Expiry Interval 300
			0x00, 0x00, // empty client identifier
			0x00, 0x01, 'u',
			0x00, 0x01, 0x01,
		}},
		{"CONNACK success", Connack{RetainAvailable: true}, []byte{0x20, 0x03, 0x00, 0x00, 0x00}},
		{"CONNACK session present, receive max", Connack{SessionPresent: true, ReceiveMaximum: 10, RetainAvailable: true}, []byte{
			0x20, 0x06, 0x01, 0x00, 0x03, 0x21, 0x00, 0x0A,
		}},
		{"CONNACK retain unavailable", Connack{ReasonCode: 0x00}, []byte{0x20, 0x05, 0x00, 0x00, 0x02, 0x25, 0x00}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := encodePacket(nil, tc.pkt)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.raw) {
				t.Errorf("encoded\n % X\nwant\n % X", got, tc.raw)
			}
			dec, err := splitDecode(tc.raw, 0)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if diff := cmpDiff(tc.pkt, dec); diff != "" {
				t.Errorf("decode mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestVarint checks the boundary values of MQTT 5.0 table 1.5.5.
func TestVarint(t *testing.T) {
	tests := []struct {
		v   int
		raw []byte
	}{
		{0, []byte{0x00}},
		{127, []byte{0x7F}},
		{128, []byte{0x80, 0x01}},
		{321, []byte{0xC1, 0x02}},
		{16383, []byte{0xFF, 0x7F}},
		{16384, []byte{0x80, 0x80, 0x01}},
		{2097151, []byte{0xFF, 0xFF, 0x7F}},
		{2097152, []byte{0x80, 0x80, 0x80, 0x01}},
		{268435455, []byte{0xFF, 0xFF, 0xFF, 0x7F}},
	}
	for _, tc := range tests {
		if got := appendVarint(nil, tc.v); !bytes.Equal(got, tc.raw) {
			t.Errorf("appendVarint(%d) = % X, want % X", tc.v, got, tc.raw)
		}
		if got := varintLen(tc.v); got != len(tc.raw) {
			t.Errorf("varintLen(%d) = %d, want %d", tc.v, got, len(tc.raw))
		}
		v, n, err := readVarint(append(tc.raw, 0x55))
		if err != nil || v != tc.v || n != len(tc.raw) {
			t.Errorf("readVarint(% X) = %d, %d, %v", tc.raw, v, n, err)
		}
		// Every proper prefix is incomplete, not an error.
		for i := range tc.raw {
			if _, n, err := readVarint(tc.raw[:i]); n != 0 || err != nil {
				t.Errorf("readVarint(% X) = n %d, err %v; want incomplete", tc.raw[:i], n, err)
			}
		}
	}
}

func TestMaxPacketSize(t *testing.T) {
	if MaxPacketSize != 268435455+5 {
		t.Fatalf("MaxPacketSize = %d", MaxPacketSize)
	}
	// The largest possible packet header is accepted by default.
	h, _, n, err := Split([]byte{0x30, 0xFF, 0xFF, 0xFF, 0x7F}, 0)
	if err != nil || n != 0 || h.Length != MaxRemainingLength {
		t.Fatalf("Split(max header) = %+v, n %d, err %v", h, n, err)
	}
}

func TestCheckString(t *testing.T) {
	for s, ok := range map[string]bool{
		"": true, "application/json; charset=utf-8": true, "a+b#c": true, "ü€𝄞": true, strings.Repeat("x", 65535): true,
		strings.Repeat("x", 65536): false, "a\x00": false, "a\tb": false, "\x7f": false, "\u0085": false, "\uffff": false, "\xff": false,
	} {
		if err := CheckString(s); (err == nil) != ok || ValidString(s) != ok {
			t.Errorf("CheckString(%.20q) = %v, ValidString %v; want ok %v", s, err, ValidString(s), ok)
		}
	}
}

func TestValidTopicName(t *testing.T) {
	long := bytes.Repeat([]byte{'a'}, 65535)
	tests := []struct {
		s    string
		want bool
	}{
		{"a", true},
		{"a/b/c", true},
		{"/", true},
		{"sport/tennis/ü/€/𝄞", true},
		{string(long), true},
		{string(long) + "a", false},
		{"", false},
		{"a/+/b", false},
		{"a/#", false},
		{"#", false},
		{"a\x00b", false},
		{"a\xffb", false},         // not UTF-8
		{"a\xed\xa0\x80b", false}, // U+D800 encoded as UTF-8
		{"\xc0\xaf", false},       // overlong '/'
		{"a\tb", false},           // control characters (MQTT 5 §1.5.4); Mosquitto drops the connection
		{"a\x01b", false},
		{"a\x1fb", false},
		{"a\x7fb", false},
		{"a\u0080b", false},
		{"a\u0085b", false},
		{"a\u009fb", false},
		{"a\u00a0b", true},
		{"a\ufdd0b", false}, // noncharacters
		{"a\ufdefb", false},
		{"a\ufffeb", false},
		{"a\uffffb", false},
		{"a\U0001fffeb", false},
		{"a\U0010ffff", false},
		{"a\ufdcfb", true},
		{"a\ufffdb", true}, // U+FFFD itself is a character
		{"\x7e ~/ /x", true},
	}
	for _, tc := range tests {
		if got := ValidTopicName(tc.s); got != tc.want {
			t.Errorf("ValidTopicName(%.20q) = %v, want %v", tc.s, got, tc.want)
		}
		if err := CheckTopicName(tc.s); (err == nil) != tc.want {
			t.Errorf("CheckTopicName(%.20q) = %v, want ok %v", tc.s, err, tc.want)
		} else if err != nil && len(err.Error()) > 80 {
			t.Errorf("CheckTopicName(%.20q) gives a %d-byte reason: %s", tc.s, len(err.Error()), err)
		}
	}
}
