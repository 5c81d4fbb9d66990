// Package codec encodes and decodes the MQTT 5.0 control packets mdclient
// uses: CONNECT, CONNACK, PUBLISH, PUBACK, PINGREQ, PINGRESP and DISCONNECT.
//
// Everything here is a pure function without goroutines or hidden state, so
// it can run on the connection's hot path. Encoders follow the append style
// (they only allocate when dst has to grow). Decoders are strict: anything
// the MQTT 5.0 specification calls malformed, and the protocol errors that
// show within one packet (a repeated property, a property value out of
// range), are rejected with an error wrapping [ErrMalformed]. Reason codes are
// the exception: any is accepted, since brokers send some that MQTT lists for
// other packets only. No input makes a decoder panic.
//
// Errors wrap one of the sentinels [ErrMalformed], [ErrTooLarge] and
// [ErrUnsupported] with a short reason; test them with [errors.Is].
//
// Byte slices in decoded packets (Publish.Payload, Publish.CorrelationData,
// Connect.Password) alias the body that was decoded; copy them if the buffer
// is reused. Strings are always copies.
//
// It is part of mdclient's machinery, importable so that the other actors, the test
// kit and the tests can use it; its API has no compatibility promise, except
// [UserProperty], which the root package names as mdclient.UserProperty.
package codec

import (
	"bytes"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Packet types, as found in the high nibble of the first fixed header byte.
const (
	TypeConnect    byte = 1
	TypeConnack    byte = 2
	TypePublish    byte = 3
	TypePuback     byte = 4
	TypePingreq    byte = 12
	TypePingresp   byte = 13
	TypeDisconnect byte = 14
)

// Packet types this codec frames but does not decode; [Split] reports them
// with [ErrUnsupported].
const (
	typePubrec      byte = 5
	typePubrel      byte = 6
	typePubcomp     byte = 7
	typeSubscribe   byte = 8
	typeSuback      byte = 9
	typeUnsubscribe byte = 10
	typeUnsuback    byte = 11
	typeAuth        byte = 15
)

// MaxRemainingLength is the largest remaining length a four byte Variable
// Byte Integer can express.
const MaxRemainingLength = 268435455

// MaxPacketSize is the largest total packet size MQTT allows: the
// [MaxRemainingLength] bytes of body plus a five byte fixed header (one type
// byte and a four byte remaining length). Like the Maximum Packet Size
// property, it counts the whole packet, so it is the right default limit when
// the peer announces none and it compares directly with [PublishLen].
const MaxPacketSize = 1 + 4 + MaxRemainingLength

var (
	// ErrMalformed is wrapped by every decoding failure (and by AppendConnect
	// when a field cannot be encoded). The wrapping error names the reason.
	ErrMalformed = errors.New("codec: malformed packet")

	// ErrTooLarge is returned by [Split] when a packet is larger than the
	// caller's limit. It does not wrap ErrMalformed: the packet may be valid,
	// just not acceptable (MQTT reason code 0x95 rather than 0x81).
	ErrTooLarge = errors.New("codec: packet too large")

	// ErrUnsupported is wrapped when the input is well formed as far as this
	// codec can tell but uses something it does not implement: a packet type
	// other than the seven it decodes (PUBREC, SUBSCRIBE, AUTH, ...), or a
	// CONNECT for a protocol version other than 5. It does not wrap
	// ErrMalformed, so a caller can answer with a protocol error or an
	// "unsupported protocol version" instead of "malformed packet".
	// The reserved packet type 0 is ErrMalformed, not ErrUnsupported.
	ErrUnsupported = errors.New("codec: unsupported")
)

// Errors shared by several decoders. Built once so error paths stay cheap.
var (
	errTruncated      = fmt.Errorf("%w: truncated", ErrMalformed)
	errTrailing       = fmt.Errorf("%w: unexpected bytes after packet", ErrMalformed)
	errVarintTooLong  = fmt.Errorf("%w: variable byte integer longer than 4 bytes", ErrMalformed)
	errVarintNotMin   = fmt.Errorf("%w: variable byte integer not minimally encoded", ErrMalformed)
	errBadUTF8        = fmt.Errorf("%w: string is not valid UTF-8", ErrMalformed)
	errNulInString    = fmt.Errorf("%w: string contains U+0000", ErrMalformed)
	errPacketIDZero   = fmt.Errorf("%w: packet identifier is 0", ErrMalformed)
	errBadTopicName   = fmt.Errorf("%w: invalid topic name", ErrMalformed)
	errReservedType   = fmt.Errorf("%w: reserved packet type 0", ErrMalformed)
	errBadFixedFlags  = fmt.Errorf("%w: invalid fixed header flags", ErrMalformed)
	errPublishQoS3    = fmt.Errorf("%w: PUBLISH with QoS 3", ErrMalformed)
	errPublishDupQoS0 = fmt.Errorf("%w: PUBLISH with DUP set at QoS 0", ErrMalformed)
	errPingLength     = fmt.Errorf("%w: PINGREQ or PINGRESP with a body", ErrMalformed)
)

// Header is a decoded fixed header.
type Header struct {
	Type   byte // packet type, the high nibble of the first byte
	Flags  byte // the low nibble of the first byte
	Length int  // remaining length: the size of the body that follows
}

// Split looks at the start of buf for one whole packet. It returns the fixed
// header, the body (the Length bytes after the fixed header, aliasing buf, with
// its capacity clipped so appending to it cannot overwrite the next packet)
// and n, the total size of the packet, so buf[n:] is the rest of the stream.
//
// n == 0 with a nil error means buf does not yet hold a whole packet and the
// caller should read more. Everything Split can check from the fixed header
// alone it checks as soon as those bytes are present, without waiting for the
// body:
//   - a reserved type 0, a remaining length longer than four bytes or not
//     minimally encoded, invalid flags for the type (PUBLISH with QoS 3 or
//     DUP at QoS 0; any non-zero flags where MQTT requires 0, or anything but
//     0b0010 for PUBREL, SUBSCRIBE and UNSUBSCRIBE), and PINGREQ or PINGRESP
//     with a body: an error wrapping [ErrMalformed];
//   - a type this codec does not decode: an error wrapping [ErrUnsupported],
//     as soon as the first byte is there; such a packet is not framed for
//     skipping, since none of them may reach a client that never subscribes,
//     publishes at QoS 2 or authenticates with AUTH;
//   - a total packet size (fixed header included, as the MQTT Maximum Packet
//     Size property counts it) above maxSize: an error wrapping
//     [ErrTooLarge], so a caller never buffers an oversized body.
//     maxSize <= 0 means [MaxPacketSize].
//
// On error n is 0 and h holds what was decoded so far (at least Type and
// Flags), which helps logging. Split does not allocate unless it fails.
func Split(buf []byte, maxSize int) (h Header, body []byte, n int, err error) {
	if len(buf) == 0 {
		return Header{}, nil, 0, nil
	}
	h.Type = buf[0] >> 4
	h.Flags = buf[0] & 0x0F
	if err := checkFixedFlags(h.Type, h.Flags); err != nil {
		return h, nil, 0, err
	}
	length, vn, err := readVarint(buf[1:])
	if err != nil {
		return h, nil, 0, err
	}
	if vn == 0 {
		return h, nil, 0, nil // remaining length not complete yet
	}
	h.Length = length
	if (h.Type == TypePingreq || h.Type == TypePingresp) && length != 0 {
		return h, nil, 0, errPingLength
	}
	if maxSize <= 0 {
		maxSize = MaxPacketSize
	}
	total := 1 + vn + length
	if total > maxSize {
		return h, nil, 0, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, total, maxSize)
	}
	if len(buf) < total {
		return h, nil, 0, nil
	}
	start := 1 + vn
	return h, buf[start:total:total], total, nil
}

// checkFixedFlags validates the type nibble and the flag nibble of the first
// fixed header byte (MQTT 5.0 section 2.1.3).
func checkFixedFlags(typ, flags byte) error {
	switch typ {
	case 0:
		return errReservedType
	case TypePublish:
		return checkPublishFlags(flags)
	case TypeConnect, TypeConnack, TypePuback, TypePingreq, TypePingresp, TypeDisconnect:
		if flags != 0 {
			return errBadFixedFlags
		}
		return nil
	case typePubrel, typeSubscribe, typeUnsubscribe:
		if flags != 0b0010 {
			return errBadFixedFlags
		}
	default: // PUBREC, PUBCOMP, SUBACK, UNSUBACK, AUTH
		if flags != 0 {
			return errBadFixedFlags
		}
	}
	return fmt.Errorf("%w: packet type %d", ErrUnsupported, typ)
}

// checkPublishFlags validates the DUP, QoS and RETAIN bits of a PUBLISH.
func checkPublishFlags(flags byte) error {
	if flags > 0x0F {
		return errBadFixedFlags
	}
	qos := (flags >> 1) & 3
	if qos == 3 {
		return errPublishQoS3
	}
	if qos == 0 && flags&0b1000 != 0 {
		return errPublishDupQoS0
	}
	return nil
}

// readVarint decodes a Variable Byte Integer at the start of b and returns
// its value and size. n == 0 with a nil error means b ends inside the
// integer. MQTT allows at most four bytes and requires the shortest encoding.
func readVarint(b []byte) (v, n int, err error) {
	for i := 0; i < 4; i++ {
		if i >= len(b) {
			return 0, 0, nil
		}
		c := b[i]
		v |= int(c&0x7F) << (7 * i)
		if c&0x80 == 0 {
			if c == 0 && i > 0 {
				return 0, 0, errVarintNotMin
			}
			return v, i + 1, nil
		}
	}
	return 0, 0, errVarintTooLong
}

// varintLen is the encoded size of v as a Variable Byte Integer.
func varintLen(v int) int {
	switch {
	case v < 1<<7:
		return 1
	case v < 1<<14:
		return 2
	case v < 1<<21:
		return 3
	default:
		return 4
	}
}

// appendVarint appends v as a Variable Byte Integer. v must be in
// [0, MaxRemainingLength].
func appendVarint(dst []byte, v int) []byte {
	for v >= 0x80 {
		dst = append(dst, byte(v)|0x80)
		v >>= 7
	}
	return append(dst, byte(v))
}

func appendU16(dst []byte, v uint16) []byte {
	return append(dst, byte(v>>8), byte(v))
}

func appendU32(dst []byte, v uint32) []byte {
	return append(dst, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// appendString appends a two byte length and s. Callers ensure len(s) <= 65535.
func appendString(dst []byte, s string) []byte {
	dst = appendU16(dst, uint16(len(s)))
	return append(dst, s...)
}

// appendBinary appends a two byte length and b. Callers ensure len(b) <= 65535.
func appendBinary(dst []byte, b []byte) []byte {
	dst = appendU16(dst, uint16(len(b)))
	return append(dst, b...)
}

// reader is a cursor over a packet body. Every method fails with an
// ErrMalformed-wrapped error rather than reading past the end.
type reader struct {
	b []byte
}

func (r *reader) empty() bool { return len(r.b) == 0 }

func (r *reader) u8() (byte, error) {
	if len(r.b) < 1 {
		return 0, errTruncated
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v, nil
}

func (r *reader) u16() (uint16, error) {
	if len(r.b) < 2 {
		return 0, errTruncated
	}
	v := uint16(r.b[0])<<8 | uint16(r.b[1])
	r.b = r.b[2:]
	return v, nil
}

func (r *reader) u32() (uint32, error) {
	if len(r.b) < 4 {
		return 0, errTruncated
	}
	v := uint32(r.b[0])<<24 | uint32(r.b[1])<<16 | uint32(r.b[2])<<8 | uint32(r.b[3])
	r.b = r.b[4:]
	return v, nil
}

func (r *reader) varint() (int, error) {
	v, n, err := readVarint(r.b)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, errTruncated
	}
	r.b = r.b[n:]
	return v, nil
}

// take returns the next n bytes, capacity clipped.
func (r *reader) take(n int) ([]byte, error) {
	if len(r.b) < n {
		return nil, errTruncated
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v, nil
}

// binary reads Binary Data: a two byte length and that many bytes.
func (r *reader) binary() ([]byte, error) {
	n, err := r.u16()
	if err != nil {
		return nil, err
	}
	return r.take(int(n))
}

// str reads a UTF-8 Encoded String and returns its bytes, so a caller that
// only validates it does not pay for a conversion.
func (r *reader) str() ([]byte, error) {
	b, err := r.binary()
	if err != nil {
		return nil, err
	}
	if err := checkString(b); err != nil {
		return nil, err
	}
	return b, nil
}

// checkString applies the rules of MQTT 5.0 section 1.5.4: well-formed UTF-8
// (which also excludes the surrogates U+D800..U+DFFF) and no U+0000.
func checkString(b []byte) error {
	if !utf8.Valid(b) {
		return errBadUTF8
	}
	if bytes.IndexByte(b, 0) >= 0 {
		return errNulInString
	}
	return nil
}

// validString reports whether s may be sent as a UTF-8 Encoded String.
func validString(s string) bool {
	if len(s) > 65535 || !utf8.ValidString(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return false
		}
	}
	return true
}

// ValidTopicName reports whether s may be sent as a PUBLISH topic name; see
// [CheckTopicName] for the rules and for why a name is refused. It does not
// allocate, so it can guard every publish.
func ValidTopicName(s string) bool {
	return len(s) > 0 && len(s) <= 65535 && checkText(s, true) == nil
}

// CheckTopicName returns nil when s may be sent as a PUBLISH topic name, and
// otherwise says why not: a name is 1 to 65535 bytes of text (see
// [CheckString]) without the wildcards '+' and '#', which only topic filters
// hold. The reason names the offending character and its byte offset, never
// the whole name.
func CheckTopicName(s string) error {
	if len(s) == 0 {
		return errors.New("empty")
	}
	return checkOutgoing(s, true)
}

// CheckString returns nil when s may be sent as an MQTT UTF-8 Encoded String
// (a user property's key or value, a content type), and otherwise says why
// not: at most 65535 bytes of well-formed UTF-8 (so no surrogate halves or
// overlong forms) without U+0000 and — because MQTT 5 §1.5.4 lets a receiver
// treat them as a malformed packet, and brokers such as Mosquitto do and drop
// the connection — without control characters (U+0001–U+001F, U+007F–U+009F)
// or Unicode noncharacters (U+FDD0–U+FDEF and the last two code points of
// every plane, such as U+FFFF).
func CheckString(s string) error { return checkOutgoing(s, false) }

// ValidString is CheckString as a yes or no; it does not allocate.
func ValidString(s string) bool { return len(s) <= 65535 && checkText(s, false) == nil }

func checkOutgoing(s string, topic bool) error {
	if len(s) > 65535 {
		return fmt.Errorf("%d bytes, more than the 65535 an MQTT string may have", len(s))
	}
	return checkText(s, topic)
}

// checkText applies the character rules; topic adds the wildcards. Its fast
// path scans plain ASCII and allocates nothing.
func checkText(s string, topic bool) error {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= utf8.RuneSelf || !plainTextByte[c] || topic && (c == '+' || c == '#') {
			return checkTextTail(s, i, topic)
		}
	}
	return nil
}

// checkTextTail checks s from byte i on, where the fast ASCII scan stopped.
func checkTextTail(s string, i int, topic bool) error {
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case topic && (c == '+' || c == '#'):
				return fmt.Errorf("the wildcard %q at byte %d", c, i)
			case c == 0:
				return fmt.Errorf("U+0000 at byte %d", i)
			case c < 0x20 || c == 0x7f:
				return fmt.Errorf("the control character %U at byte %d", c, i)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			return fmt.Errorf("invalid UTF-8 at byte %d", i)
		case r >= 0x80 && r <= 0x9f:
			return fmt.Errorf("the control character %U at byte %d", r, i)
		case r >= 0xfdd0 && r <= 0xfdef, r&0xfffe == 0xfffe:
			return fmt.Errorf("the Unicode noncharacter %U at byte %d", r, i)
		}
		i += n
	}
	return nil
}

// plainTextByte marks the ASCII bytes a string may hold as they are.
var plainTextByte = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < 0x7f; c++ {
		t[c] = true
	}
	return t
}()

// validTopicBytes is ValidTopicName for a decoded, already UTF-8 checked name.
func validTopicBytes(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c == '+' || c == '#' {
			return false
		}
	}
	return true
}
