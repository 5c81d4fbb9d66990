package codec

import (
	"testing"
)

// benchPublish is a typical market data message.
var benchPublish = Publish{
	Topic:    "md/eurex/FDAX/2026-03/trades",
	Payload:  make([]byte, 120),
	PacketID: 4711,
	QoS:      1,
}

// TestHotPathAllocs pins the zero-allocation promises of the hot path.
func TestHotPathAllocs(t *testing.T) {
	if testing.CoverMode() != "" {
		t.Skip("coverage instrumentation may allocate")
	}
	withProps := benchPublish
	withProps.TopicAlias = 9
	withProps.ResponseTopic = "reply/to"
	withProps.CorrelationData = []byte{1, 2, 3, 4}
	buf := make([]byte, 0, 4096)

	pubackShort := AppendPuback(nil, &Puback{PacketID: 77})
	pubackReason := AppendPuback(nil, &Puback{PacketID: 77, ReasonCode: 0x10})
	// Reason 0x10 plus an empty property block and a user property: still no reason string.
	pubackUserProp := pkt(0x40, cat(b(0x00, 0x4D, 0x10, 0x07, 0x26), mqttStr("k"), mqttStr("v"))...)
	stream := AppendPublish(nil, &withProps)

	tests := []struct {
		name string
		f    func()
	}{
		{"AppendPublish", func() { buf = AppendPublish(buf[:0], &benchPublish) }},
		{"AppendPublish with properties", func() { buf = AppendPublish(buf[:0], &withProps) }},
		{"PublishLen", func() { sink = PublishLen(&withProps) }},
		{"AppendPuback", func() { buf = AppendPuback(buf[:0], &Puback{PacketID: 1, ReasonCode: 0x10}) }},
		{"AppendPingreq", func() { buf = AppendPingreq(buf[:0]) }},
		{"Split", func() {
			_, _, n, err := Split(stream, 0)
			if n != len(stream) || err != nil {
				t.Fatal("Split failed")
			}
		}},
		{"DecodePuback short", func() { decodePubackOK(t, pubackShort[2:]) }},
		{"DecodePuback reason", func() { decodePubackOK(t, pubackReason[2:]) }},
		{"DecodePuback user property", func() { decodePubackOK(t, pubackUserProp[2:]) }},
	}
	for _, tc := range tests {
		if got := testing.AllocsPerRun(100, tc.f); got != 0 {
			t.Errorf("%s: %v allocations per run, want 0", tc.name, got)
		}
	}
}

var sink int

func decodePubackOK(t *testing.T, body []byte) {
	p, err := DecodePuback(body)
	if err != nil || p.PacketID != 77 {
		t.Fatalf("DecodePuback(% X) = %+v, %v", body, p, err)
	}
}
