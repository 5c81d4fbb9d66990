package codec

import "testing"

func BenchmarkAppendPublish(b *testing.B) {
	buf := make([]byte, 0, 1024)
	b.SetBytes(int64(PublishLen(&benchPublish)))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendPublish(buf[:0], &benchPublish)
	}
}

func BenchmarkDecodePuback(b *testing.B) {
	body := AppendPuback(nil, &Puback{PacketID: 4711})[2:]
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodePuback(body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSplitDecodePuback(b *testing.B) {
	var stream []byte
	for i := 1; i <= 100; i++ {
		stream = AppendPuback(stream, &Puback{PacketID: uint16(i)})
	}
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		for rest := stream; len(rest) > 0; {
			h, body, n, err := Split(rest, 0)
			if err != nil || n == 0 || h.Type != TypePuback {
				b.Fatal("split failed")
			}
			if _, err := DecodePuback(body); err != nil {
				b.Fatal(err)
			}
			rest = rest[n:]
		}
	}
}

func BenchmarkDecodePublish(b *testing.B) {
	raw := AppendPublish(nil, &benchPublish)
	h, body, _, err := Split(raw, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodePublish(h.Flags, body); err != nil {
			b.Fatal(err)
		}
	}
}
