package main

import (
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// The latency histogram's range and precision: HdrHistogram with three significant
// digits keeps every value from 1 ns to a day in a bucket no wider than 1/1024 of the
// values in it (0.1%), exact below 2048 ns, in 38,912 counters (304 KiB).
const (
	latencyLowest  = 1                     // ns
	latencyHighest = int64(24 * time.Hour) // ns; longer latencies count as a day
	latencyDigits  = 3                     // significant decimal digits
	latencyBucket  = 1024                  // a bucket is at most 1/latencyBucket of its values wide
	latencyExact   = 2048                  // values below are recorded exactly
)

// latencies records latencies in nanoseconds in an HdrHistogram, beside the exact count,
// sum, minimum and maximum. The zero value is not ready: use newLatencies. It is not safe
// for concurrent use (mdpub's result loop owns it).
type latencies struct {
	h   *hdrhistogram.Histogram
	n   uint64
	sum float64 // of all values, for the mean; a float so that it cannot overflow
	min uint64
	max uint64
}

func newLatencies() *latencies {
	return &latencies{h: hdrhistogram.New(latencyLowest, latencyHighest, latencyDigits)}
}

// record adds one latency; negative durations count as zero, those above a day as a day.
func (l *latencies) record(d time.Duration) {
	v := min(max(int64(d), 0), latencyHighest)
	_ = l.h.RecordValue(v) // never fails: v is in range
	u := uint64(v)
	if l.n == 0 || u < l.min {
		l.min = u
	}
	l.max = max(l.max, u)
	l.n++
	l.sum += float64(u)
}

// quantile returns the nearest-rank num/den quantile (the value at rank ⌈n·num/den⌉ of
// the sorted values), never below the exact answer, less than 1/latencyBucket of it above, and
// never above the largest value recorded. An empty histogram gives 0.
func (l *latencies) quantile(num, den uint64) uint64 {
	if l.n == 0 {
		return 0
	}
	rank := min(max((l.n*num+den-1)/den, 1), l.n)
	// HdrHistogram ranks a percentile p at ⌊p/100·n + ½⌋: p = 100·rank/n gives rank itself.
	p := 100 * float64(rank) / float64(l.n)
	return min(uint64(l.h.ValueAtPercentile(p)), l.max)
}

// mean returns the arithmetic mean, 0 when empty.
func (l *latencies) mean() float64 {
	if l.n == 0 {
		return 0
	}
	return l.sum / float64(l.n)
}
