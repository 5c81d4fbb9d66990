package codec

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// FuzzDecode splits and decodes arbitrary bytes. Nothing may panic; every
// error must be one of the codec's; and whatever decodes must re-encode to
// bytes that decode to the same value and re-encode identically (the
// encoding of a decoded packet is canonical).
func FuzzDecode(f *testing.F) {
	for _, tc := range roundTripCases() {
		raw, err := encodePacket(nil, tc.pkt)
		if err != nil {
			f.Fatal(err)
		}
		if len(raw) < 4096 {
			f.Add(raw)
		}
	}
	// Valid packets the encoders never produce, and a two packet stream.
	userProp := cat(b(0x26), mqttStr("k"), mqttStr("v"))
	f.Add(pkt(0x40, cat(b(0x00, 0x05, 0x10, byte(len(userProp))), userProp)...))
	f.Add(pkt(0x31, cat(mqttStr("t"), b(0x0A, 0x01, 0x01, 0x02, 0, 0, 0, 9, 0x0B, 0x05, 0x0B, 0x01), b('p'))...))
	f.Add(pkt(0x10, cat(connectHead(0x04|0x08|0x80), b(0), mqttStr("c"), b(5, 0x18, 0, 0, 0, 5), mqttStr("w"), mqttStr("bye"), mqttStr("u"))...))
	f.Add(cat(AppendPingreq(nil), AppendPuback(nil, &Puback{PacketID: 3})))

	f.Fuzz(fuzzDecodeOne)
}

// fuzzDecodeOne is the body of FuzzDecode.
func fuzzDecodeOne(t *testing.T, data []byte) {
	// Frame and decode every packet in the stream.
	for rest := data; len(rest) > 0; {
		h, body, n, err := Split(rest, 0)
		if err != nil {
			checkErr(t, err)
			break
		}
		if n == 0 {
			break
		}
		if n > len(rest) || len(body) != h.Length || n != 1+varintLen(h.Length)+h.Length {
			t.Fatalf("Split returned n %d, body %d, header %+v for %d bytes", n, len(body), h, len(rest))
		}
		rest = rest[n:]
		v, err := decodePacket(h, body)
		if err != nil {
			checkErr(t, err)
			continue
		}
		checkReencode(t, v)
	}
	// Feed the raw bytes to every decoder as a body, too.
	if len(data) > 0 {
		if v, err := DecodePublish(data[0], data[1:]); err == nil {
			checkReencode(t, v)
		} else {
			checkErr(t, err)
		}
	}
	for _, dec := range []func([]byte) (any, error){
		func(b []byte) (any, error) { return DecodeConnect(b) },
		func(b []byte) (any, error) { return DecodeConnack(b) },
		func(b []byte) (any, error) { return DecodePuback(b) },
		func(b []byte) (any, error) { return DecodeDisconnect(b) },
	} {
		if v, err := dec(data); err == nil {
			checkReencode(t, v)
		} else {
			checkErr(t, err)
		}
	}
}

func checkErr(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupported) && !errors.Is(err, ErrTooLarge) {
		t.Fatalf("error outside the codec's set: %v", err)
	}
}

// checkReencode encodes a decoded packet v, decodes it again and encodes
// that once more: values and bytes must match.
func checkReencode(t *testing.T, v any) {
	t.Helper()
	raw, err := encodePacket(nil, v)
	if err != nil {
		t.Fatalf("re-encoding %#v: %v", v, err)
	}
	if p, ok := v.(Publish); ok && PublishLen(&p) != len(raw) {
		t.Fatalf("PublishLen %d, encoded %d", PublishLen(&p), len(raw))
	}
	v2, err := splitDecode(raw, 0)
	if err != nil {
		t.Fatalf("re-encoded %#v as % X, which does not decode: %v", v, head(raw), err)
	}
	// reflect.DeepEqual is the fast path (it also tells nil from empty
	// slices); cmp only runs to explain a mismatch.
	if !reflect.DeepEqual(v, v2) {
		t.Fatalf("re-decoded value differs (-first +second):\n%s", cmpDiff(v, v2))
	}
	raw2, err := encodePacket(nil, v2)
	if err != nil || !bytes.Equal(raw, raw2) {
		t.Fatalf("second encoding differs:\n % X\n % X (%v)", head(raw), head(raw2), err)
	}
}
