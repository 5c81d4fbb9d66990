package main

import (
	"math/bits"
	"time"
)

// The histogram's shape, in the manner of an HDR histogram: values below subCount
// nanoseconds each have a bucket of their own; above, every power of two is split into
// halfCount buckets of equal width. A bucket is thus never wider than 1/halfCount of the
// values in it (0.8%), whatever their magnitude, and the whole range of uint64 fits in
// bucketCount counters (58 KiB).
const (
	subBits     = 8
	subCount    = 1 << subBits
	halfCount   = subCount / 2
	bucketCount = subCount + (64-subBits)*halfCount
)

// histogram records latencies in nanoseconds. The zero value is empty and ready; it is
// not safe for concurrent use (mdpub's result loop owns it).
type histogram struct {
	counts [bucketCount]uint64
	n      uint64
	sum    float64 // of all values, for the mean; a float so that it cannot overflow
	min    uint64
	max    uint64
}

// bucketOf returns the index of the bucket holding v.
func bucketOf(v uint64) int {
	if v < subCount {
		return int(v)
	}
	e := bits.Len64(v) - subBits // ≥ 1: v>>e is in [halfCount, subCount)
	return subCount + (e-1)*halfCount + int(v>>e) - halfCount
}

// upperOf returns the largest value that falls in bucket i.
func upperOf(i int) uint64 {
	if i < subCount {
		return uint64(i)
	}
	j := i - subCount
	e := uint(j/halfCount + 1)
	m := uint64(j%halfCount + halfCount)
	return (m+1)<<e - 1 // wraps to MaxUint64 for the very last bucket, which is right
}

// record adds one latency; negative durations count as zero.
func (h *histogram) record(d time.Duration) {
	v := uint64(max(d, 0))
	h.counts[bucketOf(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	h.max = max(h.max, v)
	h.n++
	h.sum += float64(v)
}

// quantile returns the nearest-rank num/den quantile (the value at rank ⌈n·num/den⌉ of
// the sorted values), as the top of the bucket that holds it, never above the largest
// value recorded. It is at least the exact answer and less than 1/halfCount above it.
// An empty histogram gives 0.
func (h *histogram) quantile(num, den uint64) uint64 {
	if h.n == 0 {
		return 0
	}
	rank := (h.n*num + den - 1) / den
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i]
		if seen >= rank {
			return min(upperOf(i), h.max)
		}
	}
	return h.max
}

// mean returns the arithmetic mean, 0 when empty.
func (h *histogram) mean() float64 {
	if h.n == 0 {
		return 0
	}
	return h.sum / float64(h.n)
}
