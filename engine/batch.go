package engine

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/mdclient/mdclient/codec"
)

const (
	// maxBatchBytes caps how much the engine encodes ahead while the writer is busy, so
	// that no single write holds up the connection for long.
	maxBatchBytes = 256 << 10
	// smallBatch is the size below which the engine yields once before writing a batch.
	smallBatch = 16 << 10
	// minAliasedTopic: a shorter topic costs no more in full than as an alias (2 + 3 bytes).
	minAliasedTopic = 4
)

var (
	errQoS0Only  = errors.New("the server accepts only QoS 0 (CONNACK Maximum QoS 0)")
	errNoRetains = errors.New("the server keeps no retained messages (CONNACK Retain Available 0)")
)

// batch is what the engine hands the writer next: PUBLISH packets encoded in one buffer,
// and their requests, which stay batched until the hand-over. A request whose outcome
// comes before that (its context ended) is taken out: the batch is then rebuilt from
// the requests left, so that only bytes handed over count as written.
type batch struct {
	buf        []byte
	reqs       []*Request
	newAliases []string // topics whose alias this batch sets up, undone by a rebuild
	dirty      bool     // a request in reqs has its outcome: rebuild before the hand-over
}

// resetBatch empties the batch, which no connection will take: what was batched has
// gone back to the queue, or ended.
func (e *Engine) resetBatch() {
	b := &e.batch
	for _, r := range b.reqs {
		r.inBatch = false
		e.maybeRelease(r)
	}
	clear(b.reqs)
	b.buf, b.reqs, b.newAliases, b.dirty = b.buf[:0], b.reqs[:0], b.newAliases[:0], false
}

// pump moves queued requests onto the wire while identifiers are free, and hands the
// batch to the writer when it is idle.
func (e *Engine) pump() {
	if e.deadQueued > 1024 && e.deadQueued > e.queue.len()/2 {
		e.queue.compact(e.maybeRelease)
		e.deadQueued = 0
	}
	if e.cur == nil {
		return
	}
	e.checkWindow()
	// Encode a batch; if the writer was idle and took it, encode the next one meanwhile.
	for {
		e.encode()
		e.gather()
		if !e.flush() {
			return
		}
	}
}

// encode moves queued requests into the batch while packet identifiers are free, up to
// maxBatchBytes. A request whose context has ended, or that the server cannot take,
// gets its outcome here, before anything of it is encoded.
func (e *Engine) encode() {
	for e.queue.len() > 0 && len(e.free) > 0 && len(e.batch.buf) < maxBatchBytes && e.probe == nil {
		r := e.queue.front()
		if r.state == done {
			e.queue.popFront()
			e.deadQueued--
			e.maybeRelease(r)
			continue
		}
		if r.Ctx.Err() != nil || !e.now.Before(r.deadline) {
			e.expire(r, deadlineCause(r)) // the next turn of the loop pops it
			continue
		}
		if fact, why := e.refuses(r); why != nil {
			e.complete(r, fact, why)
			continue
		}
		if !e.takeToken() {
			return // the rate limit: the timer wakes the engine for the next token
		}
		e.queue.popFront()
		id := e.free[len(e.free)-1]
		e.free = e.free[:len(e.free)-1]
		r.id, r.state = id, batched
		e.table[id] = r
		e.append(r)
		if e.needProbe {
			e.probe, e.needProbe = r, false
		}
	}
}

// deadlineCause is why r's time is up: its context's cause, and for a context whose
// deadline passed before its own timer said so, context.DeadlineExceeded (the requests
// on the client's publish timeout have no cause).
func deadlineCause(r *Request) error {
	if err := context.Cause(r.Ctx); err != nil {
		return err
	}
	if r.dlPos == noDeadline {
		return context.DeadlineExceeded
	}
	return nil
}

// takeToken takes a token of the rate limit's bucket, if there is a limit; it reports
// false when none is left.
func (e *Engine) takeToken() bool {
	if e.cfg.Rate <= 0 {
		return true
	}
	if e.tokensAt.IsZero() {
		e.tokensAt = e.now
	}
	e.tokens = min(float64(e.cfg.Burst), e.tokens+e.now.Sub(e.tokensAt).Seconds()*e.cfg.Rate)
	e.tokensAt = e.now
	if e.tokens < 1 {
		return false
	}
	e.tokens--
	return true
}

// minTokenWait is the shortest the engine sleeps for tokens: at a high rate it then wakes
// once for several messages, not once per message.
const minTokenWait = time.Millisecond

// nextToken is when the next token comes, if requests wait for one.
func (e *Engine) nextToken() (time.Time, bool) {
	if e.cfg.Rate <= 0 || e.cur == nil || e.queue.len() == e.deadQueued || e.tokens >= 1 || len(e.free) == 0 {
		return time.Time{}, false
	}
	wait := time.Duration((1 - e.tokens) / e.cfg.Rate * float64(time.Second))
	return e.tokensAt.Add(max(wait, minTokenWait)), true
}

// refuses says why the server in use cannot take r, if it cannot.
func (e *Engine) refuses(r *Request) (Fact, error) {
	switch {
	case e.lim.MaximumQoS == 0:
		return Invalid, errQoS0Only
	case r.Packet.Retain && !e.lim.RetainAvailable:
		return Invalid, errNoRetains
	}
	if n := codec.PublishLen(&r.Packet); n > e.lim.MaxPacketSize {
		return TooLarge, fmt.Errorf("%d bytes encoded, the server allows %d", n, e.lim.MaxPacketSize)
	}
	return Acked, nil
}

// append encodes r, which has its packet identifier, at the end of the batch.
func (e *Engine) append(r *Request) {
	p := r.Packet // a copy: the choices made for this connection stay off the request
	p.PacketID, p.Dup = r.id, r.Outcome.Written
	e.alias(&p)
	e.batch.buf = codec.AppendPublish(e.batch.buf, &p)
	e.batch.reqs = append(e.batch.reqs, r)
	r.inBatch = true
}

// alias replaces a repeated topic with its MQTT 5 topic alias on the connection in use:
// the first PUBLISH of a topic carries the topic and sets up the alias, later ones carry
// only the alias. Aliases are handed out first come, first served, until the server's
// Topic Alias Maximum; later topics go in full. Setting one up adds 3 bytes, never past
// the server's Maximum Packet Size.
func (e *Engine) alias(p *codec.Publish) {
	if e.lim.TopicAliasMaximum == 0 || len(p.Topic) < minAliasedTopic {
		return
	}
	if a, ok := e.aliases[p.Topic]; ok {
		p.Topic, p.TopicAlias = "", a
		return
	}
	if len(e.aliases) >= e.lim.TopicAliasMaximum {
		return
	}
	p.TopicAlias = uint16(len(e.aliases) + 1)
	if codec.PublishLen(p) > e.lim.MaxPacketSize {
		p.TopicAlias = 0
		return
	}
	if e.aliases == nil {
		e.aliases = make(map[string]uint16)
	}
	e.aliases[p.Topic] = p.TopicAlias
	e.batch.newAliases = append(e.batch.newAliases, p.Topic)
}

// gather lets callers about to hand in requests do so before a small batch goes to an
// idle writer. Callers publishing from many goroutines are woken by the results the
// engine has just delivered, onto the engine's own processor: without a yield each of
// them would meet an idle writer and get a write (a system call) of its own. When no one
// else is runnable, Gosched returns at once.
func (e *Engine) gather() {
	if e.writing || e.cur == nil || len(e.batch.buf) == 0 || len(e.batch.buf) >= smallBatch || e.draining {
		return
	}
	runtime.Gosched()
	e.take()
	e.encode()
}

// flush hands the batch to the writer if it is idle, and reports whether it did. This is
// the moment its requests are written.
func (e *Engine) flush() bool {
	if e.writing || e.cur == nil || len(e.batch.reqs) == 0 {
		return false
	}
	if e.batch.dirty {
		e.rebuild()
		if len(e.batch.reqs) == 0 {
			return false
		}
	}
	if !e.cur.Send(e.batch.buf) {
		return false // the connection is ending; its Down event will follow
	}
	e.writing = true
	e.counts.BytesWritten += uint64(len(e.batch.buf))
	for _, r := range e.batch.reqs {
		r.state, r.inBatch = sent, false
		r.Outcome.Written, r.Outcome.Server = true, e.server
	}
	e.sent += len(e.batch.reqs)
	clear(e.batch.reqs)
	e.batch.reqs, e.batch.newAliases = e.batch.reqs[:0], e.batch.newAliases[:0]
	e.batch.buf, e.spare = e.spare[:0], nil
	return true
}

// rebuild encodes the batch again without the requests that got their outcome in it,
// freeing their identifiers (the server never saw them) and setting up again the aliases
// they set up.
func (e *Engine) rebuild() {
	for _, t := range e.batch.newAliases {
		delete(e.aliases, t)
	}
	reqs := e.batch.reqs
	e.batch.buf, e.batch.reqs, e.batch.newAliases, e.batch.dirty = e.batch.buf[:0], reqs[:0], e.batch.newAliases[:0], false
	for _, r := range reqs {
		if r.state == done {
			e.table[r.id] = nil
			e.free = append(e.free, r.id)
			r.inBatch = false
			e.maybeRelease(r)
			continue
		}
		e.append(r)
	}
	clear(reqs[len(e.batch.reqs):])
}

// windowPatience is how long the window may stay held by unanswered publishes (see
// windowHeld) before the engine opens a fresh connection. A slow server acknowledges
// something meanwhile, which frees identifiers and ends the wait.
const windowPatience = time.Second

// windowHeld reports whether publishes that timed out unanswered hold at least half of
// the window and none is free.
func (e *Engine) windowHeld() bool {
	window := len(e.table) - 1
	return e.cur != nil && !e.windowShut && len(e.free) == 0 && e.held > 0 && 2*e.held >= window
}

// checkWindow opens a fresh connection once the window has been held for windowPatience
// and a request waits for it: the server frees those identifiers only by acknowledging
// them, and may never do so. The patience counts from when the window was first seen
// held, also while no request waited (callers whose contexts are shorter than the
// patience would otherwise never see it run out).
func (e *Engine) checkWindow() {
	if !e.windowHeld() {
		e.heldSince = time.Time{}
		return
	}
	if e.heldSince.IsZero() {
		e.heldSince = e.now
	}
	if e.now.Sub(e.heldSince) < windowPatience || e.live == e.sent {
		return
	}
	e.windowShut = true
	err := fmt.Errorf("%w: %d of %d packet identifiers", ErrWindowHeld, e.held, len(e.table)-1)
	e.log.Warn("mdclient: reconnecting", "server", e.server, "reason", err)
	e.cur.Close(err)
}

// popQueued takes the first entry off the queue: its request, or nil if it already has
// its outcome.
func (e *Engine) popQueued() *Request {
	r := e.queue.popFront()
	if r.state == done {
		e.deadQueued--
		e.maybeRelease(r)
		return nil
	}
	return r
}
