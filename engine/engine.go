package engine

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"time"
	"unsafe"

	"github.com/mdclient/mdclient/codec"
	"github.com/mdclient/mdclient/conn"
)

const (
	// admitBatch caps the requests taken from the input channel in one turn of the loop.
	admitBatch = 256
	// maxBatchBytes caps how much the engine encodes ahead while the writer is busy.
	maxBatchBytes = 256 << 10
	// smallBatch is the size below which the engine yields once before writing a batch.
	smallBatch = 16 << 10
)

// abandoned marks a slot of the in-flight table whose request already has its outcome
// (it timed out) but whose packet identifier the server still holds until it acknowledges.
var abandoned = &Request{}

// Config sets an Engine's bounds.
type Config struct {
	MaxQueued   int // requests waiting beyond those in flight before Submit blocks: at most max(MaxQueued, 2)
	MaxInflight int // cap on unacknowledged publishes, below the server's Receive Maximum; 0: none
	Logger      *slog.Logger
}

// inCap sizes the input channel. Requests in it count against MaxQueued, so it takes a
// quarter of the bound, up to admitBatch, and the engine's queue the rest.
func inCap(maxQueued int) int { return max(1, min(admitBatch, maxQueued/4)) }

// Engine is the actor. Everything below the channels is owned by Run's goroutine.
type Engine struct {
	cfg Config
	log *slog.Logger

	in      chan *Request   // callers → engine: new requests
	events  chan conn.Event // connections and the cluster actor → engine
	cancels chan *Request   // context.AfterFunc callbacks → engine: this request's context ended
	closing chan time.Time  // Close → engine: stop admitting, drain until this deadline
	stats   chan chan Stats // Stats → engine: a channel for the snapshot
	sealed  chan struct{}   // Close → engine: closed once no caller can send on in any more
	quit    chan struct{}   // engine → everyone: closed when Run has returned

	// Owned by Run.
	cur        *conn.Conn // the connection in use; nil while none is up
	server     string     // cur's address
	maxSize    int        // cur's Maximum Packet Size
	queue      ring       // requests waiting for the wire, resends first
	table      []*Request // in-flight requests by packet identifier; slot 0 unused
	free       []uint16   // packet identifiers not in use on cur
	live       int        // requests admitted and without an outcome
	deadQueued int        // entries of queue whose request already has its outcome
	inflight   int        // of those, the ones written on cur and not acknowledged
	counts     Stats      // the cumulative counters of Stats
	final      Stats      // the last snapshot, written before quit is closed
	seq        uint64
	wbuf       []byte            // the batch being encoded
	batch      []*Request        // the requests in wbuf: written once wbuf is handed over
	ackBuf     []codec.Puback    // the acks being handled; swapped with the connection's mailbox
	aliases    map[string]uint16 // topic aliases set up on cur
	aliasMax   int               // cur's Topic Alias Maximum
	spare      []byte            // the other batch buffer, when the writer has given it back
	writing    bool              // a batch is with cur's writer
	dls        deadlines         // requests on the default publish timeout
	timer      *time.Timer
	armed      time.Time // when timer fires; zero when stopped
	draining   bool
	drainBy    time.Time
	isSealed   bool
}

// New returns an engine; Run starts it.
func New(cfg Config) *Engine {
	if cfg.MaxQueued < 1 {
		cfg.MaxQueued = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &Engine{
		cfg:     cfg,
		log:     cfg.Logger,
		in:      make(chan *Request, inCap(cfg.MaxQueued)),
		events:  make(chan conn.Event, 64),
		cancels: make(chan *Request, 64),
		closing: make(chan time.Time, 1),
		stats:   make(chan chan Stats),
		sealed:  make(chan struct{}),
		quit:    make(chan struct{}),
		timer:   t,
	}
}

// Events is where connections and the cluster actor send their events.
func (e *Engine) Events() chan<- conn.Event { return e.events }

// Quit is closed when Run has returned.
func (e *Engine) Quit() <-chan struct{} { return e.quit }

// timerPool holds stopped timers for callers waiting in Submit: a full input channel is
// the steady state of a producer faster than the server, so it must not allocate. (Since
// Go 1.23 a stopped timer's channel holds no stale value, so reuse is safe.)
var timerPool = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

// Submit hands r to the engine. While the queue is full it waits for room until r's
// context ends (or r.Deadline passes) or the engine stops; then it reports false and r
// belongs to the caller again, without an outcome.
func (e *Engine) Submit(r *Request) bool {
	select {
	case e.in <- r:
		return true
	default:
	}
	var expired <-chan time.Time
	if _, ok := r.Ctx.Deadline(); !ok {
		t := timerPool.Get().(*time.Timer)
		t.Reset(time.Until(r.Deadline))
		defer func() {
			t.Stop()
			timerPool.Put(t)
		}()
		expired = t.C
	}
	select {
	case e.in <- r:
		return true
	case <-r.Ctx.Done():
	case <-expired:
	case <-e.quit:
	}
	return false
}

// Fail gives r, which the engine never accepted, its outcome on the caller's goroutine.
func Fail(r *Request, o Outcome, cause error) {
	r.Outcome, r.Cause, r.state = o, cause, done
	r.Owner.Complete(r)
}

// BeginClose makes the engine drain the requests handed to it until deadline; the
// caller stops new ones from coming. Call it once.
func (e *Engine) BeginClose(deadline time.Time) { e.closing <- deadline }

// Seal tells the engine, after BeginClose, that no caller will send another request.
func (e *Engine) Seal() { close(e.sealed) }

// Run is the actor's loop. It returns after Seal, once every accepted request has its
// outcome, having closed the connection in use.
func (e *Engine) Run() error {
	defer close(e.quit)
	defer func() { e.final = e.snapshot() }()
	for {
		e.pump()
		e.arm()
		if e.isSealed && (e.live == 0 || !time.Now().Before(e.drainBy)) {
			e.finish()
			return nil
		}
		in := e.in
		room := e.room()
		if room <= 0 {
			in = nil // backpressure: callers wait in Submit
		}
		var sealed <-chan struct{}
		if e.draining && !e.isSealed {
			sealed = e.sealed
		}
		select {
		case r := <-in:
			e.admit(r)
			e.admitWaiting(min(room, admitBatch) - 1)
		case ev := <-e.events:
			e.handle(ev)
		case r := <-e.cancels:
			cause := context.Cause(r.Ctx)
			e.expire(r, cause)
		case now := <-e.timer.C:
			e.armed = time.Time{}
			e.expireDue(now)
		case reply := <-e.stats:
			reply <- e.snapshot()
		case e.drainBy = <-e.closing:
			e.draining = true
		case <-sealed:
			e.isSealed = true
			for {
				select {
				case r := <-e.in:
					e.admit(r)
					continue
				default:
				}
				break
			}
		}
	}
}

// room is how many more requests the engine takes in now.
func (e *Engine) room() int {
	if e.draining {
		return admitBatch // Close is waiting for the callers handing requests in
	}
	return max(1, e.cfg.MaxQueued-cap(e.in)) - (e.live - e.inflight)
}

// admitWaiting takes in up to n requests that are already in the input channel.
func (e *Engine) admitWaiting(n int) {
	for ; n > 0; n-- {
		select {
		case r := <-e.in:
			e.admit(r)
		default:
			return
		}
	}
}

// admit takes r in. While draining it still does: a request in the input channel was
// handed over before Close refused new ones, so it is drained like the rest.
func (e *Engine) admit(r *Request) {
	r.state, r.written, r.dlPos = queued, false, noDeadline
	r.seq = e.seq
	e.seq++
	e.live++
	e.counts.Admitted++
	if _, ok := r.Ctx.Deadline(); !ok {
		e.dls.push(r)
	}
	if r.Ctx.Done() != nil {
		r.stopCtx = context.AfterFunc(r.Ctx, func() {
			select {
			case e.cancels <- r:
			case <-e.quit:
			}
		})
	}
	e.queue.pushBack(r)
}

// complete gives r its outcome, once.
func (e *Engine) complete(r *Request, o Outcome) {
	switch r.state {
	case inFlight:
		e.inflight--
	case queued:
		e.deadQueued++ // its entry stays in the queue until popped or compacted
	}
	r.Outcome, r.state = o, done
	e.live--
	if r.dlPos != noDeadline {
		e.dls.remove(r)
	}
	if r.stopCtx != nil {
		r.stopCtx()
		r.stopCtx = nil
	}
	r.Owner.Complete(r)
}

// pump moves queued requests onto the wire while identifiers are free, and hands the
// batch to the writer when it is idle.
func (e *Engine) pump() {
	if e.deadQueued > 1024 && e.deadQueued > e.queue.len()/2 {
		e.queue.compact()
		e.deadQueued = 0
	}
	if e.cur == nil {
		return
	}
	// Encode a batch; if the writer was idle and took it, encode the next one meanwhile.
	for {
		e.encode()
		e.gather()
		if !e.flush() {
			return
		}
	}
}

// gather lets callers about to hand in requests do so before a small batch goes to an
// idle writer. Callers publishing from many goroutines are woken by the results the
// engine has just delivered, onto the engine's own processor: without a yield each of
// them would meet an idle writer and get a write (a system call) of its own. When no one
// else is runnable, Gosched returns at once.
func (e *Engine) gather() {
	if e.writing || e.cur == nil || len(e.wbuf) == 0 || len(e.wbuf) >= smallBatch || e.isSealed {
		return
	}
	runtime.Gosched()
	if n := min(e.room(), admitBatch); n > 0 {
		e.admitWaiting(n)
		e.encode()
	}
}

// encode moves queued requests into the batch while packet identifiers are free, up to
// maxBatchBytes, so that no single write holds up the connection for long.
func (e *Engine) encode() {
	for e.queue.len() > 0 && len(e.free) > 0 && len(e.wbuf) < maxBatchBytes {
		r := e.popQueued()
		if r == nil {
			continue // its outcome came while it waited
		}
		p := codec.Publish{
			Topic:           r.Topic,
			Payload:         r.Payload,
			QoS:             1,
			Retain:          r.Retain,
			Dup:             r.written,
			ResponseTopic:   r.ResponseTopic,
			CorrelationData: r.CorrelationData,
		}
		e.alias(&p)
		if n := codec.PublishLen(&p); n > e.maxSize {
			if p.Topic != "" && p.TopicAlias != 0 {
				delete(e.aliases, p.Topic) // set up for this packet, which is not sent
			}
			r.Cause = fmt.Errorf("%d bytes encoded, server allows %d", n, e.maxSize)
			e.complete(r, TooLarge)
			continue
		}
		id := e.free[len(e.free)-1]
		e.free = e.free[:len(e.free)-1]
		p.PacketID = id
		r.id, r.state, r.Server = id, inFlight, e.server
		e.inflight++
		e.table[id] = r
		e.wbuf = codec.AppendPublish(e.wbuf, &p)
		e.batch = append(e.batch, r)
	}
}

// alias replaces a repeated topic with its MQTT 5 topic alias on the connection in use:
// the first PUBLISH of a topic carries the topic and sets up the alias, later ones carry
// only the alias. Aliases are handed out first come, first served, until the server's
// Topic Alias Maximum; later topics go in full.
func (e *Engine) alias(p *codec.Publish) {
	if e.aliasMax == 0 {
		return
	}
	if a, ok := e.aliases[p.Topic]; ok {
		p.Topic, p.TopicAlias = "", a
		return
	}
	if len(e.aliases) < e.aliasMax {
		if e.aliases == nil {
			e.aliases = make(map[string]uint16)
		}
		a := uint16(len(e.aliases) + 1)
		e.aliases[p.Topic] = a
		p.TopicAlias = a
	}
}

// popQueued takes the first entry off the queue: its request, or nil if it already has
// its outcome.
func (e *Engine) popQueued() *Request {
	r := e.queue.popFront()
	if r.state == done {
		e.deadQueued--
		return nil
	}
	return r
}

// flush hands the batch to the writer if it is idle, and reports whether it did.
func (e *Engine) flush() bool {
	if e.writing || len(e.wbuf) == 0 || e.cur == nil {
		return false
	}
	if !e.cur.Send(e.wbuf) {
		return false // the connection is ending; its Down event will follow
	}
	e.writing = true
	e.counts.BytesWritten += uint64(len(e.wbuf))
	for i, r := range e.batch {
		r.written = true
		e.batch[i] = nil
	}
	e.batch = e.batch[:0]
	e.wbuf, e.spare = e.spare[:0], nil
	return true
}

// arm sets the one timer to the earliest deadline.
func (e *Engine) arm() {
	var at time.Time
	first := e.dls.first()
	ok := first != nil
	if ok {
		at = first.Deadline
	}
	// The drain deadline needs a wake-up only once Close has sealed the input; before
	// that Run is woken by Seal itself.
	if e.isSealed && (!ok || e.drainBy.Before(at)) {
		at, ok = e.drainBy, true
	}
	if !ok || (!e.armed.IsZero() && !at.Before(e.armed)) {
		return
	}
	e.armed = at
	e.timer.Reset(time.Until(at))
}

func (e *Engine) expireDue(now time.Time) {
	for r := e.dls.first(); r != nil && !r.Deadline.After(now); r = e.dls.first() {
		e.expire(r, nil)
	}
}

// expire ends r because its context or deadline ended: TIMEOUT once written, else FAILED.
func (e *Engine) expire(r *Request, cause error) {
	switch r.state {
	case done:
		return
	case inFlight:
		// The server holds the identifier until it acknowledges; keep it out of use.
		e.table[r.id] = abandoned
	}
	r.Cause = cause
	if r.written {
		e.complete(r, Timeout)
		return
	}
	r.NoConnection = e.cur == nil
	e.complete(r, Expired)
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
				r.Cause = ev.Refused
				e.complete(r, Denied)
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
		e.flush()
	case ev.Down != nil:
		e.lost(ev.Down)
	}
}

func (e *Engine) up(c *conn.Conn) {
	lim := c.Limits()
	window := lim.ReceiveMaximum
	if e.cfg.MaxInflight > 0 {
		window = min(window, e.cfg.MaxInflight)
	}
	e.cur, e.server, e.maxSize = c, c.Endpoint().String(), lim.MaxPacketSize
	e.aliasMax = lim.TopicAliasMaximum
	clear(e.aliases) // aliases live as long as a connection
	e.counts.Connections++
	e.table = slices.Grow(e.table[:0], window+1)[:window+1]
	clear(e.table)
	e.free = slices.Grow(e.free[:0], window)[:0]
	for id := window; id >= 1; id-- {
		e.free = append(e.free, uint16(id))
	}
	e.writing = false
	clear(e.batch)
	e.wbuf, e.batch = e.wbuf[:0], e.batch[:0]
}

// lost handles the end of the connection in use: at-least-once messages in flight go to
// the front of the queue, in their original order, to be sent again; at-most-once ones
// fail.
func (e *Engine) lost(cause error) {
	var resend []*Request
	for id, r := range e.table {
		if r == nil || r == abandoned {
			continue
		}
		e.table[id] = nil
		if r.AtMostOnce {
			r.Cause = cause
			e.complete(r, Lost)
			continue
		}
		r.state = queued
		e.inflight--
		resend = append(resend, r)
	}
	slices.SortFunc(resend, func(a, b *Request) int { return cmp.Compare(b.seq, a.seq) })
	for _, r := range resend {
		e.queue.pushFront(r)
	}
	e.cur, e.server, e.free, e.writing = nil, "", e.free[:0], false
	clear(e.batch)
	e.wbuf, e.batch = e.wbuf[:0], e.batch[:0]
	if len(resend) > 0 {
		e.log.Info("mdclient: resending unacknowledged messages", "count", len(resend), "reason", cause)
	}
}

func (e *Engine) acks(acks []codec.Puback) {
	for _, a := range acks {
		id := int(a.PacketID)
		if id >= len(e.table) || e.table[id] == nil {
			e.cur.Abort(fmt.Errorf("%w: PUBACK for packet id %d, which is not in flight", conn.ErrProtocol, id))
			return
		}
		r := e.table[id]
		e.table[id] = nil
		e.free = append(e.free, uint16(id))
		if r == abandoned {
			continue
		}
		r.Reason, r.ReasonString = a.ReasonCode, a.ReasonString
		switch {
		case a.ReasonCode == 0x10:
			e.complete(r, NoSubscriber)
		case a.ReasonCode < 0x80:
			e.complete(r, OK)
		case a.ReasonCode == 0x87:
			e.complete(r, Denied)
		default:
			e.complete(r, Rejected)
		}
	}
}

// finish ends what is left with Closed and closes the connection in use.
func (e *Engine) finish() {
	e.timer.Stop()
	for id, r := range e.table {
		if r != nil && r != abandoned {
			e.table[id] = nil
			e.complete(r, Closed)
		}
	}
	for e.queue.len() > 0 {
		if r := e.popQueued(); r != nil {
			e.complete(r, Closed)
		}
	}
	if e.cur != nil {
		e.cur.Close()
	}
}

// StringBytes views s as bytes without copying, for fields the codec only reads.
func StringBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// Stats is a snapshot of the engine's state and counters.
type Stats struct {
	Admitted     uint64 // requests accepted since the start
	InFlight     int    // written and not yet acknowledged
	Queued       int    // accepted and waiting for the wire (including resends)
	Connections  uint64 // connections made since the start
	Server       string // the server in use; "" while none is connected
	BytesWritten uint64 // bytes handed to connections
}

func (e *Engine) snapshot() Stats {
	st := e.counts
	st.InFlight, st.Queued, st.Server = e.inflight, e.live-e.inflight, e.server
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
