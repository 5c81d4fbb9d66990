package engine

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Why Submit did not take a request.
var (
	ErrClosed    = errors.New("engine closed")                                          // Close came first
	ErrQueueFull = errors.New("the queue stayed full until the publish timeout passed") // no context deadline, and no room in time
)

// inbox is where callers hand the engine requests, and context callbacks the requests
// whose context ended: slices under one mutex, which the engine swaps for empty ones
// once per turn. A caller that finds it empty wakes the engine; callers that come while
// it is busy add to the next turn's batch without a wake-up of their own.
type inbox struct {
	mu        sync.Mutex
	reqs      []*Request    // submitted, not yet taken
	cancelled []*Request    // whose context ended, not yet taken
	waiting   int           // accepted and not yet written, as the engine last said
	sealed    bool          // Close: no more submissions
	room      chan struct{} // made by a caller that must wait; closed when room appears
	nonEmpty  atomic.Bool   // reqs or cancelled holds something: the engine takes the lock
}

// timerPool holds stopped timers for callers waiting for room: a full engine is the steady
// state of a producer faster than the server, so waiting must not allocate. (One pool per
// engine, not per process: a timer belongs to the synctest bubble that made it.)
type timerPool struct{ sync.Pool }

func (p *timerPool) get(d time.Duration) *time.Timer {
	if t, ok := p.Get().(*time.Timer); ok {
		t.Reset(d)
		return t
	}
	return time.NewTimer(d)
}

// put takes back a timer from get. Since Go 1.23 a stopped timer's channel holds no stale
// value, so reuse is safe.
func (p *timerPool) put(t *time.Timer) {
	t.Stop()
	p.Put(t)
}

// Submit hands r to the engine. While Config.MaxQueued requests are accepted and not yet
// written it waits for room, until r's context ends (or, without a deadline, the publish
// timeout passes): then it returns the context's cause or ErrQueueFull, and r belongs to
// the caller again, without an outcome. After Close it returns ErrClosed.
func (e *Engine) Submit(r *Request) error {
	in := &e.in
	var timer *time.Timer
	defer func() {
		if timer != nil {
			e.timers.put(timer)
		}
	}()
	in.mu.Lock()
	for {
		if in.sealed {
			in.mu.Unlock()
			return ErrClosed
		}
		if len(in.reqs)+in.waiting < e.cfg.MaxQueued {
			in.reqs = append(in.reqs, r)
			first := len(in.reqs) == 1
			in.nonEmpty.Store(true)
			in.mu.Unlock()
			if first {
				e.wakeUp()
			}
			return nil
		}
		if in.room == nil {
			in.room = make(chan struct{})
		}
		room := in.room
		in.mu.Unlock()
		var expired <-chan time.Time
		if _, ok := r.Ctx.Deadline(); !ok {
			if timer == nil {
				timer = e.timers.get(e.cfg.PublishTimeout)
				r.deadline = time.Now().Add(e.cfg.PublishTimeout)
			}
			expired = timer.C
		}
		select {
		case <-room:
		case <-r.Ctx.Done():
			return context.Cause(r.Ctx)
		case <-expired:
			return ErrQueueFull
		}
		in.mu.Lock()
	}
}

// cancel is the context callback of r: its context ended.
func (e *Engine) cancel(r *Request) {
	in := &e.in
	in.mu.Lock()
	in.cancelled = append(in.cancelled, r)
	in.nonEmpty.Store(true)
	in.mu.Unlock()
	e.wakeUp()
}

func (e *Engine) wakeUp() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// seal refuses every later submission and wakes the callers waiting for room, who will
// find it sealed.
func (in *inbox) seal() {
	in.mu.Lock()
	in.sealed = true
	if in.room != nil {
		close(in.room)
		in.room = nil
	}
	in.mu.Unlock()
}
