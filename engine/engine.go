package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/mdclient/mdclient/codec"
	"github.com/mdclient/mdclient/conn"
)

// ErrWindowHeld ends a connection whose Receive Maximum window is held by publishes that
// timed out and that the server never acknowledged: only a fresh connection frees it.
var ErrWindowHeld = errors.New("mdclient: the server left the window full of unanswered publishes")

// abandoned marks a slot of the in-flight table whose request already has its outcome
// (it timed out) but whose packet identifier the server still holds until it acknowledges.
var abandoned = &Request{}

// Config sets an Engine's bounds.
type Config struct {
	// MaxQueued bounds the requests accepted and not yet written (resends included):
	// past it Submit waits. At least 1.
	MaxQueued int
	// MaxInflight caps unacknowledged publishes below the server's Receive Maximum; 0: none.
	MaxInflight int
	// PublishTimeout is the deadline, from admission, of a request whose context has none.
	PublishTimeout time.Duration
	// Complete receives requests that have their Outcome, in batches, on the engine's
	// goroutine. It must not block, and must not keep the slice.
	Complete func([]*Request)
	// Release, when set, gets back each request once the engine holds it nowhere (after
	// Complete had it), so that the submitter may reuse it. Called on the engine's goroutine.
	Release func(*Request)
	Logger  *slog.Logger
	// Rate, when above 0, caps the publishes written per second (a token bucket of Burst,
	// at least 1), resends included.
	Rate  float64
	Burst int
}

// Engine is the actor. Everything below the channels is owned by Run's goroutine.
type Engine struct {
	cfg Config
	log *slog.Logger

	in      inbox           // callers → engine: submissions and ended contexts
	wake    chan struct{}   // callers → engine: the inbox has something (capacity 1)
	events  chan conn.Event // connections and the cluster actor → engine
	closing chan time.Time  // Close → engine: the inbox is sealed; drain until this deadline
	stats   chan chan Stats // Stats → engine: a channel for the snapshot
	quit    chan struct{}   // engine → everyone: closed when Run has returned
	online  atomic.Bool     // engine → callers: a connection is in use
	timers  timerPool       // for callers waiting for room

	// Owned by Run.
	now        time.Time   // read once per turn of the loop
	cur        *conn.Conn  // the connection in use; nil while none is up
	server     string      // cur's address
	lim        conn.Limits // cur's limits
	queue      ring        // requests waiting for the wire, resends first
	deadQueued int         // entries of queue whose request already has its outcome
	table      []*Request  // batched and sent requests by packet identifier; slot 0 unused
	free       []uint16    // packet identifiers not in use on cur
	held       int         // identifiers held by abandoned requests
	live       int         // requests admitted and without an outcome
	sent       int         // of those, the ones handed to cur and not acknowledged
	told       int         // live-sent as last told to the inbox
	batch      batch       // the bytes to hand to cur's writer next, and their requests
	spare      []byte      // the other batch buffer, when the writer has given it back
	writing    bool        // a batch is with cur's writer
	aliases    map[string]uint16
	needProbe  bool     // the next connection starts with one message alone (see lost)
	probe      *Request // that message, while it is out; nothing else is sent meanwhile
	dls        deadlines
	timer      *time.Timer
	armed      time.Time // when timer fires; zero when stopped
	draining   bool
	drainBy    time.Time
	completed  []*Request // given their outcome this turn, for Config.Complete
	seq        uint64
	counts     Stats
	final      Stats // the last snapshot, written before quit is closed
	ackBuf     []codec.Puback
	takenReqs  []*Request // spare slices for the inbox swap
	takenCanc  []*Request
	resendBuf  []*Request
	windowShut bool      // cur is being closed for ErrWindowHeld
	heldSince  time.Time // when the window was first seen held (see windowHeld); zero when not
	tokens     float64   // the rate limit's bucket, as of tokensAt
	tokensAt   time.Time
}

// New returns an engine; Run starts it.
func New(cfg Config) *Engine {
	if cfg.MaxQueued < 1 {
		cfg.MaxQueued = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Complete == nil {
		cfg.Complete = func([]*Request) {}
	}
	if cfg.Rate > 0 {
		cfg.Burst = max(cfg.Burst, 1)
	}
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &Engine{
		tokens:  float64(cfg.Burst),
		cfg:     cfg,
		log:     cfg.Logger,
		wake:    make(chan struct{}, 1),
		events:  make(chan conn.Event, 64),
		closing: make(chan time.Time, 1),
		stats:   make(chan chan Stats),
		quit:    make(chan struct{}),
		timer:   t,
	}
}

// Events is where connections and the cluster actor send their events.
func (e *Engine) Events() chan<- conn.Event { return e.events }

// Quit is closed when Run has returned.
func (e *Engine) Quit() <-chan struct{} { return e.quit }

// Connected reports whether a connection is in use, as of the engine's latest turn.
func (e *Engine) Connected() bool { return e.online.Load() }

// Close stops accepting (Submit returns ErrClosed from now on), lets Run drain what it
// holds until deadline, then end what is left with Closed and close the connection in
// use; it returns once Run has. Call it once, and only after Run was started.
func (e *Engine) Close(deadline time.Time) {
	e.in.seal()
	e.closing <- deadline
	<-e.quit
}

// Run is the actor's loop. It returns after Close, once every accepted request has its
// outcome.
func (e *Engine) Run() error {
	defer close(e.quit)
	for {
		e.deliver()
		e.now = time.Now()
		e.take()
		e.expireDue()
		e.pump()
		e.deliver()
		e.tell()
		if e.draining && (e.live == 0 || !e.now.Before(e.drainBy)) {
			e.finish()
			return nil
		}
		e.arm()
		select {
		case <-e.wake:
		case ev := <-e.events:
			e.handle(ev)
		case <-e.timer.C:
			e.armed = time.Time{}
		case reply := <-e.stats:
			reply <- e.snapshot()
		case e.drainBy = <-e.closing:
			e.draining = true
		}
	}
}

// take admits what callers submitted and expires what their contexts ended.
func (e *Engine) take() {
	in := &e.in
	if !in.nonEmpty.Load() {
		return
	}
	in.mu.Lock()
	reqs, cancelled := in.reqs, in.cancelled
	in.reqs, in.cancelled = e.takenReqs[:0], e.takenCanc[:0]
	in.waiting += len(reqs)
	in.nonEmpty.Store(false)
	in.mu.Unlock()
	e.told += len(reqs)
	for _, r := range reqs {
		e.admit(r)
	}
	for _, r := range cancelled {
		e.expire(r, context.Cause(r.Ctx))
		r.cancelPending = false // this was the callback's one call
		e.maybeRelease(r)
	}
	clear(reqs)
	clear(cancelled)
	e.takenReqs, e.takenCanc = reqs[:0], cancelled[:0]
}

// tell gives the inbox the number of requests accepted and not yet written, and wakes
// the callers waiting for room when there is some.
func (e *Engine) tell() {
	n := e.live - e.sent
	if n == e.told {
		return
	}
	in := &e.in
	in.mu.Lock()
	in.waiting = n
	if in.room != nil && len(in.reqs)+n < e.cfg.MaxQueued {
		close(in.room)
		in.room = nil
	}
	in.mu.Unlock()
	e.told = n
}

// admit takes r in. While draining it still does: a request in the inbox was handed
// over before Close sealed it, so it is drained like the rest.
func (e *Engine) admit(r *Request) {
	r.state, r.id, r.deaths, r.dlPos = queued, 0, 0, noDeadline
	r.inRing, r.inBatch, r.cancelPending, r.delivered = false, false, false, false
	r.Outcome = Outcome{}
	r.Packet.QoS = 1
	r.seq = e.seq
	e.seq++
	e.live++
	e.counts.Admitted++
	if dl, ok := r.Ctx.Deadline(); ok {
		r.deadline = dl
	} else {
		if r.deadline.IsZero() {
			r.deadline = e.now.Add(e.cfg.PublishTimeout)
		}
		e.dls.push(r)
	}
	if r.Ctx.Done() != nil {
		r.stopCtx = context.AfterFunc(r.Ctx, func() { e.cancel(r) })
	}
	e.queue.pushBack(r)
}

// complete gives r its outcome, once: fact, and cause for facts other than Acked. What
// the request already says of itself (written, server, reason code) stays.
func (e *Engine) complete(r *Request, fact Fact, cause error) {
	switch r.state {
	case done, released:
		panic("engine: a request completed twice")
	case queued:
		e.deadQueued++ // its entry stays in the queue until popped or compacted
	case batched:
		e.batch.dirty = true // its bytes come out of the batch before the hand-over
	case sent:
		e.sent--
	}
	r.state = done
	r.Outcome.Fact, r.Outcome.Cause = fact, cause
	e.live--
	if r == e.probe {
		e.probe = nil
	}
	if r.dlPos != noDeadline {
		e.dls.remove(r)
	}
	if r.stopCtx != nil {
		// false: the callback has started, and its one call is on its way to the inbox.
		r.cancelPending = !r.stopCtx()
		r.stopCtx = nil
	}
	e.completed = append(e.completed, r)
}

// maybeRelease hands r back with Config.Release once its outcome is delivered and the
// engine holds it nowhere.
func (e *Engine) maybeRelease(r *Request) {
	if r.state != done || !r.delivered || r.inRing || r.inBatch || r.cancelPending {
		return
	}
	r.state = released
	if e.cfg.Release != nil {
		e.cfg.Release(r)
	}
}

// deliver hands this turn's outcomes to Config.Complete.
func (e *Engine) deliver() {
	if len(e.completed) == 0 {
		return
	}
	e.cfg.Complete(e.completed)
	for _, r := range e.completed {
		r.delivered = true
		e.maybeRelease(r)
	}
	clear(e.completed)
	e.completed = e.completed[:0]
}

// arm sets the one timer to the earliest deadline.
func (e *Engine) arm() {
	var at time.Time
	first := e.dls.first()
	ok := first != nil
	if ok {
		at = first.deadline
	}
	if e.draining && (!ok || e.drainBy.Before(at)) {
		at, ok = e.drainBy, true
	}
	if !e.heldSince.IsZero() && e.live > e.sent {
		if check := e.heldSince.Add(windowPatience); !ok || check.Before(at) {
			at, ok = check, true
		}
	}
	if next, limited := e.nextToken(); limited && (!ok || next.Before(at)) {
		at, ok = next, true
	}
	if !ok || (!e.armed.IsZero() && !at.Before(e.armed)) {
		return
	}
	e.armed = at
	e.timer.Reset(at.Sub(e.now))
}

func (e *Engine) expireDue() {
	for r := e.dls.first(); r != nil && !r.deadline.After(e.now); r = e.dls.first() {
		e.expire(r, nil)
	}
}

// expire ends r because its context or deadline ended.
func (e *Engine) expire(r *Request, cause error) {
	switch r.state {
	case done, released:
		return // it ended otherwise before the callback's news arrived
	case sent:
		// The server holds the identifier until it acknowledges; keep it out of use.
		e.table[r.id] = abandoned
		e.held++
	}
	r.Outcome.NoConnection = e.cur == nil
	e.complete(r, Expired, cause)
}

func (e *Engine) handle(ev conn.Event) {
	switch {
	case ev.Up:
		if e.cur != nil {
			e.lost(fmt.Errorf("replaced by a connection to %s", ev.Conn.Endpoint()))
		}
		e.up(ev.Conn)
	case ev.Refused != nil:
		for e.queue.len() > 0 {
			if r := e.popQueued(); r != nil {
				e.completeUnqueued(r, Refused, ev.Refused)
			}
		}
	case ev.Conn != e.cur:
		// An event of a connection already replaced: nothing of it is ours any more.
		// (Its acks were all taken before its Down event.)
	case ev.AcksReady:
		e.ackBuf = ev.Conn.TakeAcks(e.ackBuf)
		e.acks(e.ackBuf)
		clear(e.ackBuf) // drop reason strings
	case ev.Written != nil:
		e.writing = false
		e.spare = ev.Written
	case ev.Down != nil:
		e.lost(ev.Down)
	}
}

// completeUnqueued completes a request just popped off the queue.
func (e *Engine) completeUnqueued(r *Request, fact Fact, cause error) {
	e.complete(r, fact, cause)
	e.deadQueued-- // complete counted it as still in the queue
}

func (e *Engine) up(c *conn.Conn) {
	e.cur, e.server, e.lim = c, c.Endpoint().String(), c.Limits()
	window := e.lim.ReceiveMaximum
	if e.cfg.MaxInflight > 0 {
		window = min(window, e.cfg.MaxInflight)
	}
	clear(e.aliases) // aliases live as long as a connection
	e.counts.Connections++
	e.table = slices.Grow(e.table[:0], window+1)[:window+1]
	clear(e.table)
	e.free = slices.Grow(e.free[:0], window)[:0]
	for id := window; id >= 1; id-- {
		e.free = append(e.free, uint16(id))
	}
	e.held, e.writing, e.windowShut, e.heldSince = 0, false, false, time.Time{}
	e.resetBatch()
	e.online.Store(true)
}

// lost handles the end of the connection in use. At-least-once messages it had sent and
// not had acknowledged go back to the front of the queue, in their original order, to
// be sent again, with those batched and not yet handed over; at-most-once ones it had
// sent may have arrived, so they end (Lost). A message that was in flight on
// PoisonAfter lost connections in a row ends too (Poisoned): the server may be dropping
// the connection over it. So that only a suspect is ever charged for a loss, the next
// connection then sends one message alone, the oldest, until it has its outcome.
func (e *Engine) lost(cause error) {
	back := e.resendBuf[:0]
	charged := false
	for id, r := range e.table {
		if r == nil {
			continue
		}
		e.table[id] = nil
		if r == abandoned {
			continue
		}
		switch r.state {
		case batched:
			r.state = queued
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
			e.sent--
			r.state = queued
			back = append(back, r)
			charged = true
			e.counts.Resent++
		}
	}
	slices.SortFunc(back, func(a, b *Request) int { return cmp.Compare(b.seq, a.seq) })
	for _, r := range back {
		e.queue.pushFront(r)
	}
	if len(back) > 0 {
		e.log.Info("mdclient: resending unacknowledged messages", "count", len(back), "reason", cause)
	}
	clear(back)
	e.resendBuf = back[:0]
	e.needProbe = e.needProbe || charged
	e.probe = nil
	e.cur, e.server, e.free, e.writing, e.held = nil, "", e.free[:0], false, 0
	e.resetBatch()
	e.online.Store(false)
}

func (e *Engine) acks(acks []codec.Puback) {
	for _, a := range acks {
		id := int(a.PacketID)
		if id >= len(e.table) || e.table[id] == nil || e.table[id] != abandoned && e.table[id].state != sent {
			e.cur.Abort(fmt.Errorf("%w: PUBACK for packet id %d, which is not in flight", conn.ErrProtocol, id))
			return
		}
		r := e.table[id]
		e.table[id] = nil
		e.free = append(e.free, uint16(id))
		if r == abandoned {
			e.held--
			continue
		}
		r.Outcome.Reason, r.Outcome.ReasonString = a.ReasonCode, a.ReasonString
		e.complete(r, Acked, nil)
	}
}

// finish ends what is left with Closed and closes the connection in use.
func (e *Engine) finish() {
	e.timer.Stop()
	e.take() // the sealed inbox's last requests
	for id, r := range e.table {
		if r != nil && r != abandoned && r.state != done {
			e.table[id] = nil
			e.complete(r, Closed, nil)
		}
	}
	for e.queue.len() > 0 {
		if r := e.popQueued(); r != nil {
			e.completeUnqueued(r, Closed, nil)
		}
	}
	e.deliver()
	if e.cur != nil {
		e.cur.Close(nil)
	}
	e.final = e.snapshot()
}

// Stats is a snapshot of the engine's state and counters.
type Stats struct {
	Admitted     uint64 // requests accepted since the start
	InFlight     int    // written and not yet acknowledged, timed-out ones included
	Queued       int    // accepted and not yet written (resends included)
	Resent       uint64 // messages queued again after their connection was lost
	Connections  uint64 // connections made since the start
	Server       string // the server in use; "" while none is connected
	BytesWritten uint64 // bytes handed to connections
}

func (e *Engine) snapshot() Stats {
	st := e.counts
	st.InFlight, st.Queued, st.Server = e.sent+e.held, e.live-e.sent, e.server
	return st
}

// Stats returns a snapshot. It asks the engine's goroutine, so it costs a round trip;
// once Run has returned it gives the final state.
func (e *Engine) Stats() Stats {
	reply := make(chan Stats, 1)
	select {
	case e.stats <- reply:
		return <-reply
	case <-e.quit:
		return e.final
	}
}
