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

func TestHistogramQuantilesMatchSortedSlice(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	dists := map[string]func() uint64{
		"constant zero": func() uint64 { return 0 },
		"exact region":  func() uint64 { return rng.Uint64N(2 * subCount) },
		"uniform µs–s":  func() uint64 { return 1e3 + rng.Uint64N(1e9) },
		"exponential":   func() uint64 { return uint64(rng.ExpFloat64() * 2e6) },
		"lognormal": func() uint64 {
			return uint64(math.Exp(rng.NormFloat64()*4 + 12))
		},
		"powers of two and neighbours": func() uint64 {
			p := uint64(1) << rng.UintN(62)
			return p - 1 + rng.Uint64N(3)
		},
		"bimodal": func() uint64 {
			if rng.IntN(100) == 0 {
				return 5e8 + rng.Uint64N(1e6)
			}
			return 2e5 + rng.Uint64N(1e4)
		},
		"largest durations": func() uint64 { return math.MaxInt64 - rng.Uint64N(1e12) },
	}
	qs := [][2]uint64{{1, 1}, {1, 2}, {9, 10}, {99, 100}, {999, 1000}, {9999, 10000}, {1, 1000}, {1, 100000}, {0, 1}}
	for name, next := range dists {
		for _, n := range []int{1, 2, 7, 1000, 100003} {
			var h histogram
			values := make([]uint64, n)
			var sum float64
			for i := range values {
				values[i] = next()
				sum += float64(values[i])
				h.record(time.Duration(values[i]))
			}
			slices.Sort(values)
			if h.n != uint64(n) || h.min != values[0] || h.max != values[n-1] {
				t.Fatalf("%s n=%d: count/min/max = %d/%d/%d, want %d/%d/%d", name, n, h.n, h.min, h.max, n, values[0], values[n-1])
			}
			if mean := sum / float64(n); math.Abs(h.mean()-mean) > mean*1e-9 {
				t.Errorf("%s n=%d: mean %v, want %v", name, n, h.mean(), mean)
			}
			for _, q := range qs {
				want := referenceQuantile(values, q[0], q[1])
				got := h.quantile(q[0], q[1])
				// Never below the exact answer; above it by less than one bucket's width,
				// which is at most 1/halfCount of the value; exact below subCount.
				if got < want || (got-want)*halfCount > want {
					t.Errorf("%s n=%d: quantile %d/%d = %d, sorted slice says %d", name, n, q[0], q[1], got, want)
				}
			}
		}
	}
}

func TestHistogramEmptyAndNegative(t *testing.T) {
	var h histogram
	if h.quantile(1, 2) != 0 || h.mean() != 0 {
		t.Fatal("an empty histogram should report 0")
	}
	h.record(-time.Second)
	if h.quantile(1, 1) != 0 || h.min != 0 || h.max != 0 {
		t.Fatalf("a negative duration should count as 0: %+v", h.quantile(1, 1))
	}
}

func TestHistogramBuckets(t *testing.T) {
	// Bucket bounds are contiguous and cover every value.
	for i := range bucketCount - 1 {
		u := upperOf(i)
		if bucketOf(u) != i || bucketOf(u+1) != i+1 {
			t.Fatalf("bucket %d: top %d is in %d, top+1 in %d", i, u, bucketOf(u), bucketOf(u+1))
		}
	}
	if upperOf(bucketCount-1) != math.MaxUint64 || bucketOf(math.MaxUint64) != bucketCount-1 {
		t.Fatal("the last bucket must end at MaxUint64")
	}
	// No bucket is wider than 1/halfCount of its lowest value.
	for i := subCount; i < bucketCount-1; i++ {
		lo, hi := upperOf(i-1)+1, upperOf(i)
		if (hi-lo+1)*halfCount > lo {
			t.Fatalf("bucket %d [%d, %d] is too wide", i, lo, hi)
		}
	}
}
