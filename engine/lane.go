package engine

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/mdclient/mdclient/codec"
	"github.com/mdclient/mdclient/conn"
)

// lane is one connection slot of the engine: the connection in use on it, its queue of
// requests waiting for the wire, its in-flight table and window. Owned by Run's goroutine.
type lane struct {
	e          *Engine
	idx        int
	cur        *conn.Conn  // the connection in use; nil while none is up
	server     string      // cur's address
	lim        conn.Limits // cur's limits
	queue      ring        // requests waiting for the wire, resends first
	deadQueued int         // entries of queue whose request already has its outcome
	table      []*Request  // batched and sent requests by packet identifier; slot 0 unused
	heldBy     []heldSlot  // for slots holding abandoned: whose they were
	free       []uint16    // packet identifiers not in use on cur
	held       int         // identifiers held by abandoned requests
	sent       int         // requests handed to cur and not acknowledged
	batch      batch       // the bytes to hand to cur's writer next, and their requests
	spare      []byte      // the other batch buffer, when the writer has given it back
	writing    bool        // a batch is with cur's writer
	aliases    map[string]uint16
	needProbe  bool     // the next connection starts with one message alone (see lost)
	probe      *Request // that message, while it is out; nothing else is sent meanwhile
	windowShut bool     // cur is being closed: ErrWindowHeld, or a PINGREQ left unanswered
	heldSince  time.Time
	// awaited counts the requests of this lane's subjects still batched or sent on the
	// lane that served them while this one was down: until they have their outcome, this
	// lane sends nothing, so that no message of a subject overtakes an older one.
	awaited int
	// heldAwaited counts this lane's abandoned slots that a home lane waits for (its
	// subject's messages timed out here unanswered: they may still arrive); since when.
	heldAwaited      int
	heldAwaitedSince time.Time
	everUp           bool // it had a connection before
	// heard is Engine.losses when cur last showed it reaches its server (it came up, acks
	// or a PINGRESP came); pinged: a PINGREQ is out for a suspect waiting on that.
	heard    uint64
	pinged   bool
	pingedAt time.Time
}

// heldSlot is what the in-flight table keeps of a request that timed out unanswered: its
// home, and whether that home lane waits for the slot to be freed.
type heldSlot struct {
	home    int
	awaited bool
}

// errReplaced ends a connection that the next one of its lane replaces.
func errReplaced(next *conn.Conn) error {
	return fmt.Errorf("replaced by a connection to %s", next.Endpoint())
}

func (l *lane) up(c *conn.Conn) {
	e := l.e
	l.cur, l.server, l.lim = c, c.Endpoint().String(), c.Limits()
	window := l.lim.ReceiveMaximum
	if e.cfg.MaxInflight > 0 {
		window = min(window, e.cfg.MaxInflight)
	}
	clear(l.aliases) // aliases live as long as a connection
	e.counts.Connections++
	if l.everUp {
		e.counts.Reconnects++
	}
	l.everUp = true
	l.table = slices.Grow(l.table[:0], window+1)[:window+1]
	clear(l.table)
	l.heldBy = slices.Grow(l.heldBy[:0], window+1)[:window+1]
	clear(l.heldBy)
	l.heldAwaited, l.heldAwaitedSince = 0, time.Time{}
	l.free = slices.Grow(l.free[:0], window)[:0]
	for id := window; id >= 1; id-- {
		l.free = append(l.free, uint16(id))
	}
	l.held, l.writing, l.windowShut, l.heldSince = 0, false, false, time.Time{}
	l.heard, l.pinged = e.losses, false
	l.resetBatch()
	e.online.Store(true)
}

// lost handles the end of the lane's connection. At-least-once messages it had sent and
// not had acknowledged go back to the front of the queue, in their original order, to be
// sent again, with those batched and not yet handed over; at-most-once ones it had sent
// may have arrived, so they end (Lost). A message that was in flight on PoisonAfter lost
// connections in a row ends too (Poisoned): the server may be dropping the connection
// over it. So that only a suspect is ever charged for a loss, the lane's next connection
// then sends one message alone, the oldest, until it has its outcome. Messages of a
// subject whose home took it back while they were out here go to that home's queue
// instead. The engine's route then moves what the lane holds to a lane that is up.
func (l *lane) lost(cause error) {
	e := l.e
	e.losses++
	back := e.moveBuf[:0]
	charged := false
	for id, r := range l.table {
		if r == nil {
			continue
		}
		l.table[id] = nil
		if r == abandoned {
			l.releaseHeld(id)
			continue
		}
		switch r.state {
		case batched:
			r.state = queued
			e.unawait(r)
			back = append(back, r)
		case sent:
			if r.AtMostOnce {
				e.complete(r, Lost, cause)
				continue
			}
			if r.deaths++; r.deaths >= PoisonAfter {
				e.complete(r, Poisoned, fmt.Errorf("its connection was lost %d times in a row while it was in flight: %w", r.deaths, cause))
				continue
			}
			l.sent--
			e.sent--
			r.state = queued
			r.lostAt = e.losses
			r.Outcome.Resent = true
			e.unawait(r)
			back = append(back, r)
			charged = true
			e.counts.Resent++
		}
	}
	slices.SortFunc(back, func(a, b *Request) int { return cmp.Compare(b.seq, a.seq) })
	for _, r := range back {
		// A message of a subject this lane served while its home was down, and no longer
		// serves, goes to the lane serving the subject now: it is older than all that lane
		// holds of the subject (which waited for it), so it goes first there.
		to := l
		if s := e.lanes[e.servedBy[r.home]]; s != l {
			to = s
			r.lane = s
			to.needProbe = to.needProbe || r.deaths > 0
		}
		to.queue.pushFront(r)
	}
	if len(back) > 0 {
		e.log.Info("mdclient: resending unacknowledged messages", "count", len(back), "reason", cause)
	}
	clear(back)
	e.moveBuf = back[:0]
	l.needProbe = l.needProbe || charged
	l.probe = nil
	l.cur, l.server, l.free, l.writing, l.held = nil, "", l.free[:0], false, 0
	l.resetBatch()
	online := false
	for _, o := range e.lanes {
		online = online || o.cur != nil
	}
	e.online.Store(online)
}

func (l *lane) acks(acks []codec.Puback) {
	e := l.e
	for _, a := range acks {
		id := int(a.PacketID)
		if id >= len(l.table) || l.table[id] == nil || l.table[id] != abandoned && l.table[id].state != sent {
			l.cur.Abort(fmt.Errorf("%w: PUBACK for packet id %d, which is not in flight", conn.ErrProtocol, id))
			return
		}
		r := l.table[id]
		l.table[id] = nil
		l.free = append(l.free, uint16(id))
		if r == abandoned {
			l.held--
			l.releaseHeld(id)
			continue
		}
		r.Outcome.Reason, r.Outcome.ReasonString = a.ReasonCode, a.ReasonString
		e.complete(r, Acked, nil)
	}
}

// waiting reports whether requests wait in the lane's queue.
func (l *lane) waiting() bool { return l.queue.len() > l.deadQueued }

// popQueued takes the first entry off the queue: its request, or nil if it already has
// its outcome.
func (l *lane) popQueued() *Request {
	r := l.queue.popFront()
	if r.state == done {
		l.deadQueued--
		l.e.maybeRelease(r)
		return nil
	}
	return r
}

// resetBatch empties the batch, which no connection will take: what was batched has
// gone back to the queue, or ended.
func (l *lane) resetBatch() {
	b := &l.batch
	for _, r := range b.reqs {
		r.inBatch = false
		l.e.maybeRelease(r)
	}
	clear(b.reqs)
	b.buf, b.reqs, b.newAliases, b.dirty = b.buf[:0], b.reqs[:0], b.newAliases[:0], false
}

// hold keeps slot id, whose request r just timed out unanswered, out of use, and
// remembers r's home; if that home waited for r, it now waits for the slot.
func (l *lane) hold(id int, r *Request) {
	l.table[id] = abandoned
	l.held++
	l.heldBy[id] = heldSlot{home: r.home, awaited: r.awaited}
	if r.awaited {
		r.awaited = false // the slot carries the wait from here
		l.awaitHeld()
	}
}

// awaitHeld counts one more held slot a home waits for.
func (l *lane) awaitHeld() {
	if l.heldAwaited++; l.heldAwaited == 1 {
		l.heldAwaitedSince = l.e.now
	}
}

// releaseHeld frees held slot id's part in its home's wait: it was acknowledged, or the
// connection ended.
func (l *lane) releaseHeld(id int) {
	s := &l.heldBy[id]
	if s.awaited {
		s.awaited = false
		l.e.lanes[s.home].awaited--
		if l.heldAwaited--; l.heldAwaited == 0 {
			l.heldAwaitedSince = time.Time{}
		}
	}
}

// windowPatience is how long the window may stay held by unanswered publishes (see
// windowHeld) before the engine opens a fresh connection. A slow server acknowledges
// something meanwhile, which frees identifiers and ends the wait.
const windowPatience = time.Second

// windowHeld reports whether publishes that timed out unanswered hold at least half of
// the window and none is free.
func (l *lane) windowHeld() bool {
	window := len(l.table) - 1
	return l.cur != nil && !l.windowShut && len(l.free) == 0 && l.held > 0 && 2*l.held >= window
}

// checkWindow opens a fresh connection once the window has been held for windowPatience
// and a request waits for it: the server frees those identifiers only by acknowledging
// them, and may never do so. The patience counts from when the window was first seen
// held, also while no request waited (callers whose contexts are shorter than the
// patience would otherwise never see it run out).
func (l *lane) checkWindow() {
	if l.pinged && !l.windowShut && l.e.now.Sub(l.pingedAt) >= windowPatience {
		// Messages lost on another connection wait for this one to show it still reaches
		// its server, and it has not answered for a second: it may have failed with the
		// other, and a live connection may be waiting to take them.
		l.windowShut = true
		err := fmt.Errorf("%w: no PINGRESP within %v while resent messages waited", conn.ErrKeepAlive, windowPatience)
		l.e.log.Warn("mdclient: reconnecting", "server", l.server, "reason", err)
		l.cur.Close(err)
		return
	}
	if l.heldAwaited > 0 && !l.windowShut && l.e.now.Sub(l.heldAwaitedSince) >= windowPatience {
		// A home lane waits for these to be answered before it sends their subjects
		// again, and a server that leaves them unanswered may never answer.
		l.windowShut = true
		err := fmt.Errorf("%w: %d unanswered publishes of subjects whose own connection waits for them", ErrWindowHeld, l.heldAwaited)
		l.e.log.Warn("mdclient: reconnecting", "server", l.server, "reason", err)
		l.cur.Close(err)
		return
	}
	if !l.windowHeld() {
		l.heldSince = time.Time{}
		return
	}
	if l.heldSince.IsZero() {
		l.heldSince = l.e.now
	}
	if l.e.now.Sub(l.heldSince) < windowPatience || !l.waiting() {
		return
	}
	l.windowShut = true
	err := fmt.Errorf("%w: %d of %d packet identifiers", ErrWindowHeld, l.held, len(l.table)-1)
	l.e.log.Warn("mdclient: reconnecting", "server", l.server, "reason", err)
	l.cur.Close(err)
}
