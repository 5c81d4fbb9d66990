package engine

import (
	"cmp"
	"hash/maphash"
	"slices"
)

// Routing across lanes. A subject belongs to a home lane, its hash modulo the lanes, and
// a message goes to the lane serving its home: the home itself while it has a
// connection; while it has none, the next lane (in lane order) that has one, which keeps
// serving it until the home is up again; while no lane has one, wherever it is. So each
// subject's messages go out on one connection at a time, in order, and when its lane
// changes, what is not yet written moves along, in order, ahead of what comes next. A
// home coming back waits until the messages of its subjects that the other lane had
// already batched or sent have their outcome (lane.awaited), so that none is overtaken.

// homeOf is the home lane of a subject.
func (e *Engine) homeOf(topic string) int {
	if len(e.lanes) == 1 {
		return 0
	}
	return int(maphash.String(e.seed, topic) % uint64(len(e.lanes)))
}

// route moves every home to the lane that should serve it now, after a lane went up or
// down.
func (e *Engine) route() {
	if len(e.lanes) == 1 {
		return
	}
	for h := range e.lanes {
		if to := e.servingLane(h); to != e.servedBy[h] {
			from := e.servedBy[h]
			e.servedBy[h] = to
			e.move(h, e.lanes[from], e.lanes[to])
		}
	}
}

// servingLane is the lane that should serve home h: h while it is up, else the lane
// serving it now if that one is up, else the next one up; with none up, the one serving
// it now.
func (e *Engine) servingLane(h int) int {
	if e.lanes[h].cur != nil {
		return h
	}
	if s := e.servedBy[h]; e.lanes[s].cur != nil {
		return s
	}
	for i := 1; i < len(e.lanes); i++ {
		if j := (h + i) % len(e.lanes); e.lanes[j].cur != nil {
			return j
		}
	}
	return e.servedBy[h]
}

// move hands home h from one lane to another: its requests waiting in from's queue go
// to the front of to's queue, in their order (to holds none of h's: it did not serve
// h). Those from has batched or sent, on a connection that is up, stay there; if to is
// h's own lane, it waits for them, and for those of h's that timed out there unanswered
// (they may still arrive), until they are answered or from's connection ends.
func (e *Engine) move(h int, from, to *lane) {
	moved := e.moveBuf[:0]
	for n := from.queue.len(); n > 0; n-- {
		r := from.queue.popFront()
		switch {
		case r.state == done:
			from.deadQueued--
			e.maybeRelease(r)
		case r.home == h:
			moved = append(moved, r)
		default:
			from.queue.pushBack(r)
		}
	}
	slices.SortFunc(moved, func(a, b *Request) int { return cmp.Compare(b.seq, a.seq) })
	suspects := false
	for _, r := range moved {
		r.lane = to
		to.queue.pushFront(r)
		suspects = suspects || r.deaths > 0
	}
	if suspects {
		// They were in flight on a connection that died: the oldest goes out alone first
		// here too, so that a message the servers drop connections over does not take
		// this lane's messages down with it (see lane.lost).
		to.needProbe = true
	}
	clear(moved)
	e.moveBuf = moved[:0]
	if to.idx != h || from.cur == nil {
		return
	}
	for id, r := range from.table {
		switch {
		case r == abandoned:
			// Timed out unanswered: its bytes may still be on their way.
			if s := &from.heldBy[id]; s.home == h && !s.awaited {
				s.awaited = true
				to.awaited++
				from.awaitHeld()
			}
		case r != nil && r.home == h && (r.state == batched || r.state == sent) && !r.awaited:
			r.awaited = true
			to.awaited++
		}
	}
}

// unawait ends r's part in its home lane's wait: it has its outcome, or it goes back to a
// queue (and from there to its home).
func (e *Engine) unawait(r *Request) {
	if r.awaited {
		r.awaited = false
		e.lanes[r.home].awaited--
	}
}
