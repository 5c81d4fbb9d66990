package mdclient

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// abandonAfter is how long, once Close has been called, a Result channel may take no
// result before the client stops trying to deliver to it: its reader is gone.
const abandonAfter = time.Second

// delivery is one result and where it goes.
type delivery struct {
	ch  chan PublishResult
	res PublishResult
}

// deliverer hands results to callers' channels without ever blocking the engine: a
// non-blocking send, and only when a channel is full a backlog for that channel, with one
// goroutine that waits on it. Other channels are never held up by a full one. A backlog
// holds up to limit results before the callers naming its channel wait in PublishAsync
// (see waitRoom), so memory stays bounded however slowly a channel is read.
type deliverer struct {
	backlogs sync.Map      // chan PublishResult → *backlog; an entry exists while its goroutine runs
	count    atomic.Int32  // entries in backlogs: 0 lets send skip the lookup
	waiting  atomic.Int64  // results in all backlogs
	limit    int           // results a backlog holds before its channel's publishers wait
	closing  chan struct{} // closed by Close: backlog goroutines give up on unread channels
	log      *slog.Logger
	warnOnce sync.Once // a closed Result channel is reported once
}

// backlog is the results waiting for one full channel, in order: those its goroutine has
// taken to send (inHand), then items.
type backlog struct {
	mu     sync.Mutex
	items  []PublishResult // waiting behind the goroutine's hand; guarded by mu
	inHand int             // taken by the goroutine and not yet sent; guarded by mu
	gone   bool            // its goroutine has ended and left the map: senders look again
	room   chan struct{}   // made by a publisher that must wait; closed when the backlog shrinks
}

// pending is how many results wait for the channel; b.mu is held.
func (b *backlog) pending() int { return b.inHand + len(b.items) }

// refusedLimit is the backlog a refused request's result may join without waiting: a
// quarter more than limit, so that a call whose context ended while it waited for room
// returns at once, while a loop of refused calls past it adds one result per publish
// timeout at most.
func (d *deliverer) refusedLimit() int { return d.limit + max(d.limit/4, 1) }

func newDeliverer(limit int, log *slog.Logger) *deliverer {
	return &deliverer{limit: max(limit, 1), closing: make(chan struct{}), log: log}
}

// send delivers one result.
func (d *deliverer) send(ch chan PublishResult, res PublishResult) {
	if d.count.Load() == 0 && d.trySend(ch, res) {
		return
	}
	d.sendRun(ch, []delivery{{ch, res}})
}

// sendAll delivers results in order; consecutive results for one channel that must wait
// join its backlog under one lock.
func (d *deliverer) sendAll(out []delivery) {
	for i := 0; i < len(out); {
		ch := out[i].ch
		if d.count.Load() == 0 && d.trySend(ch, out[i].res) {
			i++
			continue
		}
		j := i + 1
		for j < len(out) && out[j].ch == ch {
			j++
		}
		d.sendRun(ch, out[i:j])
		i = j
	}
}

// sendRun delivers results bound for one channel: into its backlog if it has one, else
// straight into the channel while it has room, then into a new backlog.
func (d *deliverer) sendRun(ch chan PublishResult, run []delivery) {
	for len(run) > 0 {
		if v, ok := d.backlogs.Load(ch); ok {
			b := v.(*backlog)
			b.mu.Lock()
			if !b.gone {
				for _, x := range run {
					b.items = append(b.items, x.res)
				}
				b.mu.Unlock()
				d.waiting.Add(int64(len(run)))
				return
			}
			b.mu.Unlock()
			continue // it just ended: look again
		}
		for len(run) > 0 && d.trySend(ch, run[0].res) {
			run = run[1:]
		}
		if len(run) == 0 {
			return
		}
		b := &backlog{items: make([]PublishResult, 0, max(len(run), 16))}
		for _, x := range run {
			b.items = append(b.items, x.res)
		}
		if _, loaded := d.backlogs.LoadOrStore(ch, b); loaded {
			continue
		}
		d.count.Add(1)
		d.waiting.Add(int64(len(run)))
		go d.drain(ch, b)
		return
	}
}

// trySend is a non-blocking send. A channel the caller closed (which the contract forbids)
// would panic a client goroutine: its result is dropped, and reported once.
func (d *deliverer) trySend(ch chan PublishResult, res PublishResult) (ok bool) {
	defer func() {
		if recover() != nil {
			d.closedChannel()
			ok = true // nothing more can be done for it
		}
	}()
	select {
	case ch <- res:
		return true
	default:
		return false
	}
}

func (d *deliverer) closedChannel() {
	d.warnOnce.Do(func() {
		d.log.Error("mdclient: a Result channel was closed while results were due to it; they are dropped")
	})
}

// drain feeds one full channel from its backlog, in order, until the backlog is empty. It
// takes everything waiting in one go (the slices change hands under the lock), so that a
// burst costs one lock, not one per result. After Close it gives up once the channel has
// taken nothing for abandonAfter.
func (d *deliverer) drain(ch chan PublishResult, b *backlog) {
	closing := d.closing
	var idle *time.Timer
	var idleC <-chan time.Time
	defer func() {
		if idle != nil {
			idle.Stop()
		}
	}()
	var hand []PublishResult
	for {
		b.mu.Lock()
		if b.room != nil && len(b.items) <= d.limit-d.limit/4 {
			close(b.room) // the hand just sent made room
			b.room = nil
		}
		if len(b.items) == 0 {
			b.inHand = 0
			b.end(d, ch)
			b.mu.Unlock()
			return
		}
		hand, b.items = b.items, hand[:0]
		b.inHand = len(hand)
		b.mu.Unlock()
		for i := range hand {
			for sent := false; !sent; {
				var gaveUp bool
				sent, gaveUp = d.blockingSend(ch, hand[i], closing, idleC)
				switch {
				case gaveUp:
					b.mu.Lock()
					dropped := len(hand) - i + len(b.items)
					b.inHand = 0
					b.end(d, ch)
					b.mu.Unlock()
					d.waiting.Add(-int64(dropped))
					d.log.Warn("mdclient: results dropped: their channel was not read after Close", "count", dropped)
					return
				case !sent && closing != nil:
					closing = nil
					idle = time.NewTimer(abandonAfter)
					idleC = idle.C
				}
			}
			hand[i] = PublishResult{}
			d.waiting.Add(-1)
			if idle != nil {
				idle.Reset(abandonAfter)
			}
		}
	}
}

// blockingSend waits until ch takes res (sent), Close is called (neither), or idle fires
// (gaveUp). A closed channel counts as given up.
func (d *deliverer) blockingSend(ch chan PublishResult, res PublishResult, closing <-chan struct{}, idle <-chan time.Time) (sent, gaveUp bool) {
	defer func() {
		if recover() != nil {
			d.closedChannel()
			sent, gaveUp = false, true
		}
	}()
	select {
	case ch <- res:
		return true, false
	case <-closing:
		return false, false
	case <-idle:
		return false, true
	}
}

// end removes b; b.mu is held.
func (b *backlog) end(d *deliverer, ch chan PublishResult) {
	b.gone = true
	clear(b.items)
	b.items = nil
	d.backlogs.CompareAndDelete(ch, b)
	d.count.Add(-1)
	if b.room != nil {
		close(b.room)
		b.room = nil
	}
}

// waitRoom returns once ch's backlog, if it has one, holds fewer than limit results, or
// when ctx ends or timeout passes (when ctx has no deadline), reporting false then.
func (d *deliverer) waitRoom(ctx context.Context, ch chan PublishResult, timeout time.Duration, limit int) bool {
	if d.count.Load() == 0 {
		return true
	}
	v, ok := d.backlogs.Load(ch)
	if !ok {
		return true
	}
	b := v.(*backlog)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		b.mu.Lock()
		if b.gone || b.pending() < limit {
			b.mu.Unlock()
			return true
		}
		if b.room == nil {
			b.room = make(chan struct{})
		}
		room := b.room
		b.mu.Unlock()
		var expired <-chan time.Time
		if _, ok := ctx.Deadline(); !ok {
			if timer == nil {
				timer = time.NewTimer(timeout)
			}
			expired = timer.C
		}
		select {
		case <-room:
		case <-ctx.Done():
			return false
		case <-expired:
			return false
		}
	}
}

// close starts the end: from now on a backlog whose channel takes nothing for
// abandonAfter is dropped.
func (d *deliverer) close() { close(d.closing) }
