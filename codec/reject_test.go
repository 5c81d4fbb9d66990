package codec

import (
	"errors"
	"testing"
)

// pkt builds a raw packet from a first byte and a body, filling in the
// remaining length.
func pkt(first byte, body ...byte) []byte {
	return append(appendVarint([]byte{first}, len(body)), body...)
}

// cat joins byte slices, to assemble bodies from readable parts.
func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func b(v ...byte) []byte { return v }

// mqttStr encodes s as an MQTT string without any validation.
func mqttStr(s string) []byte { return appendString(nil, s) }

// connectHead is a valid CONNECT variable header up to, not including, the
// property length, with the given flags.
func connectHead(flags byte) []byte {
	return cat(mqttStr("MQTT"), b(5, flags, 0, 60))
}

func TestSplitRejects(t *testing.T) {
	tests := []struct {
		name    string
		buf     []byte
		maxSize int
		want    error
		notWant error
	}{
		{"varint with 5th byte", b(0x30, 0x80, 0x80, 0x80, 0x80, 0x01), 0, ErrMalformed, nil},
		{"varint 4 continuation bytes, nothing more yet", b(0x30, 0xFF, 0xFF, 0xFF, 0xFF), 0, ErrMalformed, nil},
		{"varint not minimal", b(0x40, 0x82, 0x00, 0x00, 0x01), 0, ErrMalformed, nil},
		{"varint zero in two bytes", b(0xC0, 0x80, 0x00), 0, ErrMalformed, nil},
		{"reserved type 0", b(0x00, 0x00), 0, ErrMalformed, ErrUnsupported},
		{"AUTH", b(0xF0, 0x00), 0, ErrUnsupported, ErrMalformed},
		{"PUBREC", b(0x50, 0x02, 0x00, 0x01), 0, ErrUnsupported, ErrMalformed},
		{"PUBREL", b(0x62, 0x02, 0x00, 0x01), 0, ErrUnsupported, ErrMalformed},
		{"SUBSCRIBE", b(0x82), 0, ErrUnsupported, ErrMalformed},
		{"SUBSCRIBE flags 0", b(0x80), 0, ErrMalformed, ErrUnsupported},
		{"SUBACK flags 1", b(0x91), 0, ErrMalformed, ErrUnsupported},
		{"PUBLISH QoS 3", b(0x36, 0x00), 0, ErrMalformed, nil},
		{"PUBLISH DUP at QoS 0", b(0x38, 0x00), 0, ErrMalformed, nil},
		{"CONNECT flags", b(0x11, 0x00), 0, ErrMalformed, nil},
		{"CONNACK flags", b(0x22, 0x00), 0, ErrMalformed, nil},
		{"PUBACK flags", b(0x48, 0x02, 0x00, 0x01), 0, ErrMalformed, nil},
		{"PINGREQ flags", b(0xC1, 0x00), 0, ErrMalformed, nil},
		{"PINGRESP flags", b(0xD4, 0x00), 0, ErrMalformed, nil},
		{"DISCONNECT flags", b(0xE1, 0x00), 0, ErrMalformed, nil},
		{"PINGREQ with body", b(0xC0, 0x01, 0x00), 0, ErrMalformed, nil},
		{"PINGRESP with body, body not yet here", b(0xD0, 0x05), 0, ErrMalformed, nil},
		// ErrTooLarge must come from the header alone, before the body.
		{"too large, header only", b(0x30, 0xFF, 0xFF, 0xFF, 0x7F), 1024, ErrTooLarge, ErrMalformed},
		{"too large by one", b(0x30, 0x7E), 0x7F, ErrTooLarge, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, body, n, err := Split(tc.buf, tc.maxSize)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Split(% X) err = %v, want %v", tc.buf, err, tc.want)
			}
			if tc.notWant != nil && errors.Is(err, tc.notWant) {
				t.Errorf("err %v must not match %v", err, tc.notWant)
			}
			if n != 0 || body != nil {
				t.Errorf("n = %d, body = % X on error", n, body)
			}
			if h.Type != tc.buf[0]>>4 || h.Flags != tc.buf[0]&0x0F {
				t.Errorf("header %+v does not report the first byte %02X", h, tc.buf[0])
			}
		})
	}
}

// TestSplitLimitIsTotalSize pins down that maxSize counts the whole packet.
func TestSplitLimitIsTotalSize(t *testing.T) {
	raw := pkt(0xE0, make([]byte, 126)...) // 1 + 1 + 126 = 128 bytes
	raw[2] = 0x04                          // a valid reason code, so it also decodes
	if _, _, n, err := Split(raw, 128); n != 128 || err != nil {
		t.Errorf("at the limit: n %d, err %v", n, err)
	}
	if _, _, _, err := Split(raw, 127); !errors.Is(err, ErrTooLarge) {
		t.Errorf("one over the limit: err %v", err)
	}
}

func TestDecodeRejects(t *testing.T) {
	tests := []struct {
		name string
		raw  []byte
		want error // ErrMalformed unless set
	}{
		// Strings.
		{"truncated topic", pkt(0x30, 0x00, 0x05, 'a'), nil},
		{"topic length byte missing", pkt(0x30, 0x00), nil},
		{"empty PUBLISH body", pkt(0x30), nil},
		{"invalid UTF-8 topic", pkt(0x30, 0x00, 0x02, 0xC3, 0x28, 0x00), nil},
		{"surrogate in topic", pkt(0x30, 0x00, 0x03, 0xED, 0xA0, 0x80, 0x00), nil},
		{"NUL in topic", pkt(0x30, 0x00, 0x02, 'a', 0x00, 0x00), nil},
		{"wildcard + in topic", pkt(0x30, cat(mqttStr("a/+"), b(0))...), nil},
		{"wildcard # in topic", pkt(0x30, cat(mqttStr("#"), b(0))...), nil},
		{"empty topic without alias", pkt(0x30, 0x00, 0x00, 0x00), nil},
		{"invalid UTF-8 reason string", pkt(0x40, 0x00, 0x01, 0x80, 0x04, 0x1F, 0x00, 0x01, 0xFF), nil},
		{"invalid UTF-8 user property value", pkt(0x40, cat(b(0x00, 0x01, 0x00, 0x09, 0x26), mqttStr("k"), b(0x00, 0x02, 0xC0, 0x80))...), nil},
		{"invalid UTF-8 client id", pkt(0x10, cat(connectHead(0), b(0), b(0x00, 0x01, 0xFE))...), nil},

		// Packet identifiers.
		{"PUBACK packet id 0", pkt(0x40, 0x00, 0x00), nil},
		{"PUBACK packet id 0 with reason", pkt(0x40, 0x00, 0x00, 0x10), nil},
		{"PUBLISH QoS 1 packet id 0", pkt(0x32, cat(mqttStr("t"), b(0x00, 0x00, 0x00))...), nil},
		{"PUBLISH QoS 2 packet id missing", pkt(0x34, cat(mqttStr("t"), b(0x00))...), nil},
		{"PUBACK one byte", pkt(0x40, 0x01), nil},
		{"PUBACK empty", pkt(0x40), nil},

		// Properties.
		{"property length past body", pkt(0x30, cat(mqttStr("t"), b(0x05, 0x23, 0x00))...), nil},
		{"property value past property block", pkt(0x30, cat(mqttStr("t"), b(0x02, 0x23, 0x00, 0x01))...), nil},
		{"property length 5-byte varint", pkt(0x40, 0x00, 0x01, 0x00, 0x80, 0x80, 0x80, 0x80, 0x00), nil},
		{"property length not minimal", pkt(0x40, 0x00, 0x01, 0x00, 0x80, 0x00), nil},
		{"duplicate topic alias", pkt(0x30, cat(mqttStr("t"), b(0x06, 0x23, 0x00, 0x01, 0x23, 0x00, 0x02))...), nil},
		{"duplicate reason string", pkt(0x40, cat(b(0x00, 0x01, 0x00, 0x08), b(0x1F, 0, 1, 'a', 0x1F, 0, 1, 'b'))...), nil},
		{"duplicate receive maximum in CONNACK", pkt(0x20, 0x00, 0x00, 0x06, 0x21, 0x00, 0x01, 0x21, 0x00, 0x02), nil},
		{"duplicate session expiry in CONNECT", pkt(0x10, cat(connectHead(0), b(10, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2), mqttStr("c"))...), nil},
		{"session expiry in PUBACK", pkt(0x40, 0x00, 0x01, 0x00, 0x05, 0x11, 0x00, 0x00, 0x00, 0x01), nil},
		{"reason string in PUBLISH", pkt(0x30, cat(mqttStr("t"), b(0x04, 0x1F, 0x00, 0x01, 'x'))...), nil},
		{"topic alias in CONNACK", pkt(0x20, 0x00, 0x00, 0x03, 0x23, 0x00, 0x01), nil},
		{"assigned client id in DISCONNECT", pkt(0xE0, cat(b(0x00, 0x04, 0x12), mqttStr("a"))...), nil},
		{"will delay in CONNECT properties", pkt(0x10, cat(connectHead(0), b(5, 0x18, 0, 0, 0, 1), mqttStr("c"))...), nil},
		{"unknown property 0x00", pkt(0x40, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00), nil},
		{"unknown property 0x7F", pkt(0x40, 0x00, 0x01, 0x00, 0x02, 0x7F, 0x00), nil},
		{"two byte property id", pkt(0x40, 0x00, 0x01, 0x00, 0x05, 0x9F, 0x00, 0x00, 0x01, 'x'), nil},
		{"maximum QoS 2", pkt(0x20, 0x00, 0x00, 0x02, 0x24, 0x02), nil},
		{"retain available 2", pkt(0x20, 0x00, 0x00, 0x02, 0x25, 0x02), nil},
		{"receive maximum 0", pkt(0x20, 0x00, 0x00, 0x03, 0x21, 0x00, 0x00), nil},
		{"maximum packet size 0", pkt(0x10, cat(connectHead(0), b(5, 0x27, 0, 0, 0, 0), mqttStr("c"))...), nil},
		{"topic alias 0", pkt(0x30, cat(mqttStr("t"), b(0x03, 0x23, 0x00, 0x00))...), nil},
		{"subscription identifier 0", pkt(0x30, cat(mqttStr("t"), b(0x02, 0x0B, 0x00))...), nil},
		{"payload format 2", pkt(0x30, cat(mqttStr("t"), b(0x02, 0x01, 0x02))...), nil},
		{"response topic with wildcard", pkt(0x30, cat(mqttStr("t"), b(0x06, 0x08), mqttStr("a/#"))...), nil},
		{"empty response topic", pkt(0x30, cat(mqttStr("t"), b(0x03, 0x08, 0x00, 0x00))...), nil},
		{"auth data without method", pkt(0x20, cat(b(0x00, 0x00, 0x04, 0x16, 0x00, 0x01, 0x01))...), nil},
		{"user property missing value", pkt(0xE0, cat(b(0x00, 0x04, 0x26), mqttStr("k"))...), nil},

		// Trailing bytes.
		{"PUBACK trailing", pkt(0x40, 0x00, 0x01, 0x00, 0x00, 0xAA), nil},
		{"CONNACK trailing", pkt(0x20, 0x00, 0x00, 0x00, 0xAA), nil},
		{"DISCONNECT trailing", pkt(0xE0, 0x00, 0x00, 0xAA), nil},
		{"CONNECT trailing", pkt(0x10, cat(connectHead(0), b(0), mqttStr("c"), b(0xAA))...), nil},

		// Reason codes and reserved bits.
		{"CONNACK reserved ack flag", pkt(0x20, 0x02, 0x00, 0x00), nil},
		{"CONNACK session present on failure", pkt(0x20, 0x01, 0x80, 0x00), nil},
		{"CONNACK without property length", pkt(0x20, 0x00, 0x00), nil},
		{"CONNACK truncated", pkt(0x20, 0x00), nil},

		// CONNECT specifics.
		{"CONNECT protocol name", pkt(0x10, cat(mqttStr("MQIsdp"), b(5, 0, 0, 60, 0), mqttStr("c"))...), nil},
		{"CONNECT protocol level 4", pkt(0x10, cat(mqttStr("MQTT"), b(4, 2, 0, 60), mqttStr("c"))...), ErrUnsupported},
		{"CONNECT reserved flag", pkt(0x10, cat(connectHead(0x01), b(0), mqttStr("c"))...), nil},
		{"CONNECT will QoS 3", pkt(0x10, cat(connectHead(0x1C), b(0), mqttStr("c"), b(0), mqttStr("w"), mqttStr("p"))...), nil},
		{"CONNECT will retain without will", pkt(0x10, cat(connectHead(0x20), b(0), mqttStr("c"))...), nil},
		{"CONNECT will QoS without will", pkt(0x10, cat(connectHead(0x08), b(0), mqttStr("c"))...), nil},
		{"CONNECT will topic with wildcard", pkt(0x10, cat(connectHead(0x04), b(0), mqttStr("c"), b(0), mqttStr("w/+"), mqttStr("p"))...), nil},
		{"CONNECT will property not allowed", pkt(0x10, cat(connectHead(0x04), b(0), mqttStr("c"), b(5, 0x11, 0, 0, 0, 1), mqttStr("w"), mqttStr("p"))...), nil},
		{"CONNECT will payload missing", pkt(0x10, cat(connectHead(0x04), b(0), mqttStr("c"), b(0), mqttStr("w"))...), nil},
		{"CONNECT password missing", pkt(0x10, cat(connectHead(0x40), b(0), mqttStr("c"))...), nil},
		{"CONNECT username missing", pkt(0x10, cat(connectHead(0x80), b(0), mqttStr("c"))...), nil},
		{"CONNECT client id missing", pkt(0x10, cat(connectHead(0x00), b(0))...), nil},
		{"CONNECT auth data without method", pkt(0x10, cat(connectHead(0), b(4, 0x16, 0, 1, 9), mqttStr("c"))...), nil},
		{"CONNECT keep alive truncated", pkt(0x10, cat(mqttStr("MQTT"), b(5, 0, 0))...), nil},
		{"DISCONNECT property length past body", pkt(0xE0, 0x00, 0x05, 0x1F), nil},
		{"CONNACK invalid UTF-8 reason string", pkt(0x20, 0x00, 0x80, 0x05, 0x1F, 0x00, 0x02, 'a', 0xFF), nil},
		{"CONNECT request problem info 2", pkt(0x10, cat(connectHead(0), b(2, 0x17, 2), mqttStr("c"))...), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.want
			if want == nil {
				want = ErrMalformed
			}
			v, err := splitDecode(tc.raw, 0)
			if !errors.Is(err, want) {
				t.Fatalf("% X: got %#v, err %v; want %v", tc.raw, v, err, want)
			}
		})
	}
}

// TestDecodeAccepts covers valid inputs the encoders never produce.
func TestDecodeAccepts(t *testing.T) {
	userProp := cat(b(0x26), mqttStr("k"), mqttStr("v"))
	tests := []struct {
		name string
		raw  []byte
		want any
	}{
		{"PUBACK empty property block", pkt(0x40, 0x00, 0x05, 0x00, 0x00), Puback{PacketID: 5}},
		{"PUBACK user properties", pkt(0x40, cat(b(0x00, 0x05, 0x10, byte(2*len(userProp))), userProp, userProp)...), Puback{PacketID: 5, ReasonCode: 0x10}},
		{"DISCONNECT empty property block", pkt(0xE0, 0x00, 0x00), Disconnect{}},
		{"PUBLISH metadata and skipped subscription identifiers", pkt(0x31, cat(mqttStr("t"), b(0x10,
			0x01, 0x01, // payload format
			0x02, 0, 0, 0, 9, // message expiry
			0x0B, 0x05, 0x0B, 0xFF, 0x7F, // two subscription identifiers: skipped
			0x03, 0x00, 0x01, 'x', // content type
		), b('p'))...), Publish{Topic: "t", Retain: true, Payload: []byte("p"), PayloadFormat: 1, MessageExpiry: 9, HasMessageExpiry: true, ContentType: "x"}},
		{"CONNACK skipped properties", pkt(0x20, cat(b(0x00, 0x00, 0x0D,
			0x28, 0x00, 0x29, 0x01, 0x2A, 0x00, // subscription capabilities
			0x1A, 0x00, 0x01, 'r', // response information
			0x15, 0x00, 0x00, // authentication method
		))...), Connack{RetainAvailable: true}},
		{"CONNACK retain available 1", pkt(0x20, 0x00, 0x00, 0x02, 0x25, 0x01), Connack{RetainAvailable: true}},
		{"CONNECT with will and extras", pkt(0x10, cat(connectHead(0x04|0x08|0x20|0x80),
			b(byte(7+len(userProp))), b(0x17, 0x01, 0x19, 0x00, 0x22, 0x00, 0x00), userProp,
			mqttStr("c"),
			b(byte(5+len(userProp))), b(0x18, 0, 0, 0, 5), userProp,
			mqttStr("will/topic"), mqttStr("bye"),
			mqttStr("user"),
		)...), Connect{ClientID: "c", Username: "user", HasUsername: true, KeepAlive: 60}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := splitDecode(tc.raw, 0)
			if err != nil {
				t.Fatalf("% X: %v", tc.raw, err)
			}
			if diff := cmpDiff(tc.want, got); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDecodePublishFlags checks DecodePublish guards its flags argument even
// when called without Split.
func TestDecodePublishFlags(t *testing.T) {
	body := cat(mqttStr("t"), b(0x00, 0x01, 0x00))
	for _, flags := range []byte{0x06, 0x07, 0x08, 0x09, 0x10, 0xF2, 0xFF} {
		if _, err := DecodePublish(flags, body); !errors.Is(err, ErrMalformed) {
			t.Errorf("flags %02X: err %v", flags, err)
		}
	}
	if _, err := DecodePublish(0x02, body); err != nil {
		t.Errorf("flags 02: %v", err)
	}
}

func TestAppendConnectRejects(t *testing.T) {
	long := string(make([]byte, 65536))
	tests := []struct {
		name string
		c    Connect
	}{
		{"long client id", Connect{ClientID: long}},
		{"NUL in client id", Connect{ClientID: "a\x00"}},
		{"bad UTF-8 client id", Connect{ClientID: "\xff"}},
		{"long username", Connect{Username: "a" + long[1:] + "a", HasUsername: true}},
		{"bad username", Connect{Username: "\xed\xa0\x80", HasUsername: true}},
		{"long password", Connect{Password: make([]byte, 65536), HasPassword: true}},
	}
	for _, tc := range tests {
		dst := []byte{1, 2, 3}
		got, err := AppendConnect(dst, &tc.c)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err %v", tc.name, err)
		}
		if len(got) != 3 {
			t.Errorf("%s: dst grew to %d bytes on error", tc.name, len(got))
		}
	}
	// Ignored fields are not validated.
	if _, err := AppendConnect(nil, &Connect{Username: "\xff", Password: make([]byte, 70000)}); err != nil {
		t.Errorf("unused username/password validated: %v", err)
	}
}
