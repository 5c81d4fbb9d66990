package mdclient

import (
	"sync"
	"sync/atomic"
	"time"
)

// deliverer hands results to callers' channels without ever blocking the engine: a
// non-blocking send, and only when a channel is full a backlog for that channel with one
// goroutine that waits on it. Other channels are never held up by a full one.
type deliverer struct {
	backlogged atomic.Int32 // number of backlogs; 0 lets send skip the lock
	mu         sync.Mutex
	backlogs   map[chan PublishResult]*backlog // guarded by mu
	closed     bool                            // guarded by mu; no new backlogs once set
	wg         sync.WaitGroup
	abandon    chan struct{} // closed by close: backlog goroutines give up
}

type backlog struct {
	items []PublishResult // guarded by deliverer.mu
}

func newDeliverer() *deliverer {
	return &deliverer{backlogs: make(map[chan PublishResult]*backlog), abandon: make(chan struct{})}
}

func (d *deliverer) send(ch chan PublishResult, res PublishResult) {
	if d.backlogged.Load() == 0 {
		select {
		case ch <- res:
			return
		default:
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if b, ok := d.backlogs[ch]; ok {
		b.items = append(b.items, res)
		return
	}
	select {
	case ch <- res:
		return
	default:
	}
	if d.closed {
		// After Close only calls that race with it or follow it get here, with a full
		// channel: there is no goroutine left to wait for the caller.
		return
	}
	b := &backlog{items: []PublishResult{res}}
	d.backlogs[ch] = b
	d.backlogged.Add(1)
	d.wg.Add(1)
	go d.drain(ch, b)
}

// drain feeds one full channel from its backlog, in order, until the backlog is empty.
func (d *deliverer) drain(ch chan PublishResult, b *backlog) {
	defer d.wg.Done()
	for {
		d.mu.Lock()
		if len(b.items) == 0 {
			delete(d.backlogs, ch)
			d.backlogged.Add(-1)
			d.mu.Unlock()
			return
		}
		res := b.items[0]
		b.items[0] = PublishResult{}
		b.items = b.items[1:]
		d.mu.Unlock()
		select {
		case ch <- res:
		case <-d.abandon:
			return
		}
	}
}

// close waits until deadline for backlogs to drain into their channels, then gives up on
// callers that stopped reading, and waits for the backlog goroutines to end.
func (d *deliverer) close(deadline time.Time) {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	drained := make(chan struct{})
	go func() {
		d.wg.Wait()
		close(drained)
	}()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-drained:
	case <-t.C:
		close(d.abandon)
		<-drained
	}
}
