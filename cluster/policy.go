package cluster

import (
	"math/rand/v2"
	"time"
)

// Backoff names the shape of the delays after the quick phase.
type Backoff uint8

const (
	// TruncatedExponential doubles the delay after each failure, up to MaxDelay.
	TruncatedExponential Backoff = iota
	// ConstantWindow waits Interval after each failure.
	ConstantWindow
)

// Policy is the reconnect policy: a quick phase of QuickMaxRetries attempts QuickDelay
// apart, then Backoff. Every delay after the quick phase is drawn uniformly from
// [d/2, d] (jitter), so that many clients losing one server do not return in step.
type Policy struct {
	QuickMaxRetries int           // attempts in the quick phase
	QuickDelay      time.Duration // delay before each quick attempt
	Backoff         Backoff       // shape after the quick phase
	Interval        time.Duration // first (exponential) or every (constant) delay
	MaxDelay        time.Duration // cap of the exponential delay
}

// Delay returns how long to wait before round n of attempts, where n counts the
// consecutive rounds in which every server failed (0 for the first round after a working
// connection was lost, or after a new server list). With one server a round is one
// attempt. The random source is the caller's so that tests can fix it.
func (p Policy) Delay(n int, rnd *rand.Rand) time.Duration {
	if n < p.QuickMaxRetries || n == 0 {
		return p.QuickDelay
	}
	d := p.Interval
	if p.Backoff == TruncatedExponential {
		for i := p.QuickMaxRetries; i < n && d < p.MaxDelay; i++ {
			d *= 2
		}
		if p.MaxDelay > 0 && d > p.MaxDelay {
			d = p.MaxDelay
		}
	}
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + time.Duration(rnd.Int64N(int64(d-half)+1))
}
