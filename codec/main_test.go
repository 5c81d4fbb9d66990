package codec

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// pingreq and pingresp stand for the two packets without a body in the
// generic helpers below.
type (
	pingreq  struct{}
	pingresp struct{}
)

// decodePacket dispatches a body from Split to the matching decoder.
func decodePacket(h Header, body []byte) (any, error) {
	switch h.Type {
	case TypeConnect:
		return DecodeConnect(body)
	case TypeConnack:
		return DecodeConnack(body)
	case TypePublish:
		return DecodePublish(h.Flags, body)
	case TypePuback:
		return DecodePuback(body)
	case TypePingreq:
		return pingreq{}, nil
	case TypePingresp:
		return pingresp{}, nil
	case TypeDisconnect:
		return DecodeDisconnect(body)
	}
	return nil, fmt.Errorf("test helper: no decoder for type %d", h.Type)
}

// encodePacket appends v, one of the packet structs (or pingreq/pingresp).
func encodePacket(dst []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case Connect:
		return AppendConnect(dst, &v)
	case Connack:
		return AppendConnack(dst, &v), nil
	case Publish:
		return AppendPublish(dst, &v), nil
	case Puback:
		return AppendPuback(dst, &v), nil
	case pingreq:
		return AppendPingreq(dst), nil
	case pingresp:
		return AppendPingresp(dst), nil
	case Disconnect:
		return AppendDisconnect(dst, &v), nil
	}
	return nil, fmt.Errorf("test helper: cannot encode %T", v)
}

// splitDecode frames exactly one packet from raw and decodes it.
func splitDecode(raw []byte, maxSize int) (any, error) {
	h, body, n, err := Split(raw, maxSize)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, fmt.Errorf("test helper: incomplete packet")
	}
	if n != len(raw) {
		return nil, fmt.Errorf("test helper: packet is %d bytes, input %d", n, len(raw))
	}
	return decodePacket(h, body)
}

// bytesOpt compares byte slices with bytes.Equal, which is much faster than
// cmp's element walk on multi-megabyte payloads, while still telling a nil
// slice (an absent field) from an empty one.
var bytesOpt = cmp.Comparer(func(a, b []byte) bool {
	return (a == nil) == (b == nil) && bytes.Equal(a, b)
})

// cmpDiff is cmp.Diff with bytesOpt; every test compares packets with it.
func cmpDiff(want, got any) string { return cmp.Diff(want, got, bytesOpt) }
