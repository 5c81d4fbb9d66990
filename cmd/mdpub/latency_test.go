package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// referenceQuantile is the nearest-rank quantile of sorted values, the definition the
// histogram approximates.
func referenceQuantile(sorted []uint64, num, den uint64) uint64 {
	n := uint64(len(sorted))
	rank := min(max((n*num+den-1)/den, 1), n)
	return sorted[rank-1]
}

// TestLatencyQuantilesMatchSortedSlice: every quantile is at least the exact one and
// less than 0.1% above it (exact below 2048 ns), over distributions from 1 µs to 60 s and
// beyond; count, minimum, maximum and mean are exact.
func TestLatencyQuantilesMatchSortedSlice(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	dists := map[string]func() uint64{
		"constant zero": func() uint64 { return 0 },
		"exact region":  func() uint64 { return rng.Uint64N(2 * latencyExact) },
		"uniform 1µs–60s": func() uint64 {
			return 1e3 + rng.Uint64N(60e9)
		},
		"log-uniform 1µs–60s": func() uint64 {
			return uint64(math.Exp(math.Log(1e3) + rng.Float64()*(math.Log(60e9)-math.Log(1e3))))
		},
		"exponential": func() uint64 { return uint64(rng.ExpFloat64() * 2e6) },
		"lognormal":   func() uint64 { return uint64(math.Exp(rng.NormFloat64()*4 + 12)) },
		"powers of two and neighbours": func() uint64 {
			p := uint64(1) << rng.UintN(46)
			return p - 1 + rng.Uint64N(3)
		},
		"bimodal": func() uint64 {
			if rng.IntN(100) == 0 {
				return 5e8 + rng.Uint64N(1e6)
			}
			return 2e5 + rng.Uint64N(1e4)
		},
	}
	qs := [][2]uint64{{1, 1}, {1, 2}, {9, 10}, {99, 100}, {999, 1000}, {9999, 10000}, {1, 1000}, {1, 100000}, {0, 1}, {91, 100}}
	for name, next := range dists {
		for _, n := range []int{1, 2, 7, 10, 1000, 100003} {
			l := newLatencies()
			values := make([]uint64, n)
			var sum float64
			for i := range values {
				values[i] = next()
				sum += float64(values[i])
				l.record(time.Duration(values[i]))
			}
			slices.Sort(values)
			if l.n != uint64(n) || l.min != values[0] || l.max != values[n-1] {
				t.Fatalf("%s n=%d: count/min/max = %d/%d/%d, want %d/%d/%d", name, n, l.n, l.min, l.max, n, values[0], values[n-1])
			}
			if mean := sum / float64(n); math.Abs(l.mean()-mean) > mean*1e-9 {
				t.Errorf("%s n=%d: mean %v, want %v", name, n, l.mean(), mean)
			}
			for _, q := range qs {
				want := referenceQuantile(values, q[0], q[1])
				got := l.quantile(q[0], q[1])
				if got < want || (got-want)*latencyBucket > want || (want < latencyExact && got != want) {
					t.Errorf("%s n=%d: quantile %d/%d = %d, sorted slice says %d", name, n, q[0], q[1], got, want)
				}
			}
		}
	}
}

func TestLatencyEmptyNegativeAndHuge(t *testing.T) {
	l := newLatencies()
	if l.quantile(1, 2) != 0 || l.mean() != 0 {
		t.Fatal("an empty histogram should report 0")
	}
	l.record(-time.Second)
	if l.quantile(1, 1) != 0 || l.min != 0 || l.max != 0 {
		t.Fatalf("a negative duration should count as 0: %d", l.quantile(1, 1))
	}
	l.record(1000 * time.Hour)
	if got := l.quantile(1, 1); got != uint64(latencyHighest) || l.max != uint64(latencyHighest) {
		t.Fatalf("a latency over a day should count as a day: %d", got)
	}
}

// TestLatencyRecordCostsNoAllocation: recording is on the result loop's path, once per
// message.
func TestLatencyRecordCostsNoAllocation(t *testing.T) {
	l := newLatencies()
	i := 0
	if n := testing.AllocsPerRun(10000, func() { i++; l.record(time.Duration(i * 7919)) }); n != 0 {
		t.Fatalf("record allocates %v times", n)
	}
}

func BenchmarkLatencyRecord(b *testing.B) {
	l := newLatencies()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		l.record(time.Duration(1000 + i%1000000))
	}
}

func BenchmarkLatencyQuantile(b *testing.B) {
	l := newLatencies()
	for i := range 100000 {
		l.record(time.Duration(1000 + i*97%10000000))
	}
	b.ReportAllocs()
	for b.Loop() {
		l.quantile(999, 1000)
	}
}
