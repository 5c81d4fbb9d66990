package engine

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/mdclient/mdclient/codec"
	"github.com/mdclient/mdclient/conn"
)

// ErrWindowHeld ends a connection whose Receive Maximum window is held by publishes that
// timed out and that the server never acknowledged: only a fresh connection frees it.
var ErrWindowHeld = errors.New("mdclient: the server left the window full of unanswered publishes")

// abandoned marks a slot of an in-flight table whose request already has its outcome
// (it timed out) but whose packet identifier the server still holds until it acknowledges.
var abandoned = &Request{}

// Config sets an Engine's bounds.
type Config struct {
	// Lanes is how many connections the engine uses at once (each its own lane: queue,
	// in-flight table, Receive Maximum window); a message goes to the lane its subject
	// hashes to. At least 1.
	Lanes int
	// MaxQueued bounds the requests accepted and not yet written (resends included):
	// past it Submit waits. At least 1.
	MaxQueued int
	// MaxInflight caps unacknowledged publishes per connection below the server's
	// Receive Maximum; 0: none.
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
	// Rate, when above 0, caps the publishes written per second over all lanes (a token
	// bucket of Burst, at least 1), resends included.
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
	now       time.Time // read once per turn of the loop
	lanes     []*lane
	servedBy  []int // by home lane: the lane serving its subjects now (see route.go)
	seed      maphash.Seed
	live      int // requests admitted and without an outcome
	sent      int // of those, the ones handed to a connection and not acknowledged
	told      int // live-sent as last told to the inbox
	dls       deadlines
	timer     *time.Timer
	armed     time.Time // when timer fires; zero when stopped
	draining  bool
	drainBy   time.Time
	completed []*Request // given their outcome this turn, for Config.Complete
	seq       uint64
	counts    Stats
	final     Stats // the last snapshot, written before quit is closed
	ackBuf    []codec.Puback
	takenReqs []*Request // spare slices for the inbox swap
	takenCanc []*Request
	moveBuf   []*Request
	tokens    float64 // the rate limit's bucket, as of tokensAt
	tokensAt  time.Time
	losses    uint64 // connections lost so far: the clock of lane.heard and Request.lostAt
}

// New returns an engine; Run starts it.
func New(cfg Config) *Engine {
	cfg.MaxQueued = max(cfg.MaxQueued, 1)
	cfg.Lanes = max(cfg.Lanes, 1)
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
	e := &Engine{
		cfg:     cfg,
		log:     cfg.Logger,
		wake:    make(chan struct{}, 1),
		events:  make(chan conn.Event, 64),
		closing: make(chan time.Time, 1),
		stats:   make(chan chan Stats),
		quit:    make(chan struct{}),
		timer:   t,
		tokens:  float64(cfg.Burst),
		seed:    maphash.MakeSeed(),
	}
	for i := range cfg.Lanes {
		e.lanes = append(e.lanes, &lane{e: e, idx: i})
		e.servedBy = append(e.servedBy, i)
	}
	return e
}

// Events is where connections and the cluster actor send their events.
func (e *Engine) Events() chan<- conn.Event { return e.events }

// Quit is closed when Run has returned.
func (e *Engine) Quit() <-chan struct{} { return e.quit }

// Connected reports whether a connection is in use, as of the engine's latest turn.
func (e *Engine) Connected() bool { return e.online.Load() }

// Close stops accepting (Submit returns ErrClosed from now on), lets Run drain what it
// holds until deadline, then end what is left with Closed and close the connections in
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
		for _, l := range e.lanes {
			l.pump()
		}
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
			e.now = time.Now() // the select may have waited long
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
	r.state, r.id, r.deaths, r.lostAt, r.dlPos = queued, 0, 0, 0, noDeadline
	r.inRing, r.inBatch, r.cancelPending, r.delivered, r.awaited = false, false, false, false, false
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
	r.home = e.homeOf(r.Packet.Topic)
	r.lane = e.lanes[e.servedBy[r.home]]
	r.lane.queue.pushBack(r)
}

// complete gives r its outcome, once: fact, and cause for facts other than Acked. What
// the request already says of itself (written, server, reason code) stays.
func (e *Engine) complete(r *Request, fact Fact, cause error) {
	l := r.lane
	switch r.state {
	case done, released:
		panic("engine: a request completed twice")
	case queued:
		l.deadQueued++ // its entry stays in the queue until popped or compacted
	case batched:
		l.batch.dirty = true // its bytes come out of the batch before the hand-over
	case sent:
		l.sent--
		e.sent--
	}
	e.unawait(r)
	r.state = done
	r.Outcome.Fact, r.Outcome.Cause = fact, cause
	e.live--
	if r == l.probe {
		l.probe = nil
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

// completeUnqueued completes a request just popped off its lane's queue.
func (e *Engine) completeUnqueued(r *Request, fact Fact, cause error) {
	e.complete(r, fact, cause)
	r.lane.deadQueued-- // complete counted it as still in the queue
}

// maybeRelease hands r back with Config.Release once its outcome is delivered and the
// engine holds it nowhere.
func (e *Engine) maybeRelease(r *Request) {
	if r.state != done || !r.delivered || r.inRing || r.inBatch || r.cancelPending {
		return
	}
	r.state = released
	r.lane = nil
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

// arm sets the one timer to the earliest deadline: of a request on the publish timeout,
// of the drain, of a lane's held window, of the rate limit's next token.
func (e *Engine) arm() {
	var at time.Time
	ok := false
	earlier := func(t time.Time) {
		if !ok || t.Before(at) {
			at, ok = t, true
		}
	}
	if first := e.dls.first(); first != nil {
		earlier(first.deadline)
	}
	if e.draining {
		earlier(e.drainBy)
	}
	for _, l := range e.lanes {
		if !l.heldSince.IsZero() && l.waiting() {
			earlier(l.heldSince.Add(windowPatience))
		}
		if l.heldAwaited > 0 && !l.windowShut {
			earlier(l.heldAwaitedSince.Add(windowPatience))
		}
		if l.pinged && !l.windowShut {
			earlier(l.pingedAt.Add(windowPatience))
		}
		if next, limited := l.nextToken(); limited {
			earlier(next)
		}
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
		r.lane.hold(int(r.id), r)
	}
	r.Outcome.NoConnection = !e.online.Load()
	e.complete(r, Expired, cause)
}

func (e *Engine) handle(ev conn.Event) {
	switch {
	case ev.Up:
		l := e.lanes[min(max(ev.Lane, 0), len(e.lanes)-1)]
		if l.cur != nil {
			l.lost(errReplaced(ev.Conn))
		}
		l.up(ev.Conn)
		e.route()
		if ev.Taken != nil {
			close(ev.Taken)
		}
	case ev.Refused != nil:
		for _, l := range e.lanes {
			for l.queue.len() > 0 {
				if r := l.popQueued(); r != nil {
					e.completeUnqueued(r, Refused, ev.Refused)
				}
			}
		}
	default:
		l := e.laneOf(ev.Conn)
		switch {
		case l == nil:
			// An event of a connection already replaced: nothing of it is ours any more.
			// (Its acks were all taken before its Down event.)
		case ev.Alive:
			l.heard, l.pinged = e.losses, false
		case ev.AcksReady:
			l.heard, l.pinged = e.losses, false // a sign of life too
			e.ackBuf = ev.Conn.TakeAcks(e.ackBuf)
			l.acks(e.ackBuf)
			clear(e.ackBuf) // drop reason strings
		case ev.Written != nil:
			l.writing = false
			l.spare = ev.Written
		case ev.Down != nil:
			l.lost(ev.Down)
			e.route()
		}
	}
}

// laneOf is the lane whose connection c is, or nil.
func (e *Engine) laneOf(c *conn.Conn) *lane {
	for _, l := range e.lanes {
		if l.cur == c && c != nil {
			return l
		}
	}
	return nil
}

// finish ends what is left with Closed and closes the connections in use.
func (e *Engine) finish() {
	e.timer.Stop()
	e.take() // the sealed inbox's last requests
	for _, l := range e.lanes {
		for id, r := range l.table {
			if r != nil && r != abandoned && r.state != done {
				l.table[id] = nil
				e.complete(r, Closed, nil)
			}
		}
		for l.queue.len() > 0 {
			if r := l.popQueued(); r != nil {
				e.completeUnqueued(r, Closed, nil)
			}
		}
	}
	e.deliver()
	for _, l := range e.lanes {
		l.resetBatch()
		if l.cur != nil {
			l.cur.Close(nil)
		}
		// Closed: no server, nothing in flight (the identifiers held went with the
		// connection).
		l.cur, l.server, l.held, l.sent = nil, "", 0, 0
	}
	e.sent = 0
	e.final = e.snapshot()
}

// Stats is a snapshot of the engine's state and counters.
type Stats struct {
	Admitted     uint64   // requests accepted since the start
	InFlight     int      // written and not yet acknowledged, timed-out ones included
	Queued       int      // accepted and not yet written (resends included)
	Resent       uint64   // messages queued again after their connection was lost
	Connections  uint64   // connections made since the start
	Reconnects   uint64   // of those, the ones of a lane that had had one before
	Server       string   // the server of the first connection in use; "" while none is up
	Servers      []string // the servers of the connections in use, by lane
	BytesWritten uint64   // bytes handed to connections
}

func (e *Engine) snapshot() Stats {
	st := e.counts
	st.Queued = e.live - e.sent
	st.Servers = nil
	for _, l := range e.lanes {
		st.InFlight += l.sent + l.held
		if l.cur != nil {
			st.Servers = append(st.Servers, l.server)
		}
	}
	if len(st.Servers) > 0 {
		st.Server = st.Servers[0]
	}
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
