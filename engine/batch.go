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

// pump moves queued requests onto the wire while identifiers are free, and hands the
// batch to the writer when it is idle.
func (l *lane) pump() {
	if l.deadQueued > 1024 && l.deadQueued > l.queue.len()/2 {
		l.queue.compact(l.e.maybeRelease)
		l.deadQueued = 0
	}
	if l.cur == nil {
		return
	}
	l.checkWindow()
	// Encode a batch; if the writer was idle and took it, encode the next one meanwhile.
	for {
		l.encode()
		l.gather()
		if !l.flush() {
			return
		}
	}
}

// encode moves queued requests into the batch while packet identifiers are free, up to
// maxBatchBytes. A request whose context has ended, or that the server cannot take,
// gets its outcome here, before anything of it is encoded.
func (l *lane) encode() {
	e := l.e
	for l.queue.len() > 0 && len(l.free) > 0 && len(l.batch.buf) < maxBatchBytes && l.probe == nil && l.awaited == 0 {
		r := l.queue.front()
		if r.state == done {
			l.queue.popFront()
			l.deadQueued--
			e.maybeRelease(r)
			continue
		}
		if r.Ctx.Err() != nil || !e.now.Before(r.deadline) {
			e.expire(r, deadlineCause(r)) // the next turn of the loop pops it
			continue
		}
		if fact, why := l.refuses(r); why != nil {
			e.complete(r, fact, why)
			continue
		}
		if l.needProbe && r.deaths > 0 && l.heard < r.lostAt {
			// A suspect lost after cur last showed it reaches its server: cur may have
			// failed in the same outage, unnoticed yet, and a loss there would be charged
			// to the message. It waits for a sign of life (acks, or the PINGRESP asked
			// for here), or for cur's end, which moves it on uncharged.
			if !l.pinged {
				l.pinged, l.pingedAt = true, e.now
				l.cur.Ping()
			}
			return
		}
		if !e.takeToken() {
			return // the rate limit: the timer wakes the engine for the next token
		}
		l.queue.popFront()
		id := l.free[len(l.free)-1]
		l.free = l.free[:len(l.free)-1]
		r.id, r.state = id, batched
		l.table[id] = r
		l.append(r)
		if l.needProbe {
			l.probe, l.needProbe = r, false
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

// nextToken is when the next token comes, if requests wait for one on l.
func (l *lane) nextToken() (time.Time, bool) {
	e := l.e
	if e.cfg.Rate <= 0 || l.cur == nil || !l.waiting() || e.tokens >= 1 || len(l.free) == 0 {
		return time.Time{}, false
	}
	wait := time.Duration((1 - e.tokens) / e.cfg.Rate * float64(time.Second))
	return e.tokensAt.Add(max(wait, minTokenWait)), true
}

// refuses says why the server in use cannot take r, if it cannot.
func (l *lane) refuses(r *Request) (Fact, error) {
	switch {
	case l.lim.MaximumQoS == 0:
		return Invalid, errQoS0Only
	case r.Packet.Retain && !l.lim.RetainAvailable:
		return Invalid, errNoRetains
	}
	if n := codec.PublishLen(&r.Packet); n > l.lim.MaxPacketSize {
		return TooLarge, fmt.Errorf("%d bytes encoded, the server allows %d", n, l.lim.MaxPacketSize)
	}
	return Acked, nil
}

// append encodes r, which has its packet identifier, at the end of the batch.
func (l *lane) append(r *Request) {
	p := r.Packet // a copy: the choices made for this connection stay off the request
	p.PacketID, p.Dup = r.id, r.Outcome.Written
	l.alias(&p)
	l.batch.buf = codec.AppendPublish(l.batch.buf, &p)
	l.batch.reqs = append(l.batch.reqs, r)
	r.inBatch = true
}

// alias replaces a repeated topic with its MQTT 5 topic alias on the connection in use:
// the first PUBLISH of a topic carries the topic and sets up the alias, later ones carry
// only the alias. Aliases are handed out first come, first served, until the server's
// Topic Alias Maximum; later topics go in full. Setting one up adds 3 bytes, never past
// the server's Maximum Packet Size.
func (l *lane) alias(p *codec.Publish) {
	if l.lim.TopicAliasMaximum == 0 || len(p.Topic) < minAliasedTopic {
		return
	}
	if a, ok := l.aliases[p.Topic]; ok {
		p.Topic, p.TopicAlias = "", a
		return
	}
	if len(l.aliases) >= l.lim.TopicAliasMaximum {
		return
	}
	p.TopicAlias = uint16(len(l.aliases) + 1)
	if codec.PublishLen(p) > l.lim.MaxPacketSize {
		p.TopicAlias = 0
		return
	}
	if l.aliases == nil {
		l.aliases = make(map[string]uint16)
	}
	l.aliases[p.Topic] = p.TopicAlias
	l.batch.newAliases = append(l.batch.newAliases, p.Topic)
}

// gather lets callers about to hand in requests do so before a small batch goes to an
// idle writer. Callers publishing from many goroutines are woken by the results the
// engine has just delivered, onto the engine's own processor: without a yield each of
// them would meet an idle writer and get a write (a system call) of its own. When no one
// else is runnable, Gosched returns at once.
func (l *lane) gather() {
	if l.writing || l.cur == nil || len(l.batch.buf) == 0 || len(l.batch.buf) >= smallBatch || l.e.draining {
		return
	}
	runtime.Gosched()
	l.e.take()
	l.encode()
}

// flush hands the batch to the writer if it is idle, and reports whether it did. This is
// the moment its requests are written.
func (l *lane) flush() bool {
	if l.writing || l.cur == nil || len(l.batch.reqs) == 0 {
		return false
	}
	if l.batch.dirty {
		l.rebuild()
		if len(l.batch.reqs) == 0 {
			return false
		}
	}
	if !l.cur.Send(l.batch.buf) {
		return false // the connection is ending; its Down event will follow
	}
	l.writing = true
	l.e.counts.BytesWritten += uint64(len(l.batch.buf))
	for _, r := range l.batch.reqs {
		r.state, r.inBatch = sent, false
		r.Outcome.Written, r.Outcome.Server = true, l.server
	}
	l.sent += len(l.batch.reqs)
	l.e.sent += len(l.batch.reqs)
	clear(l.batch.reqs)
	l.batch.reqs, l.batch.newAliases = l.batch.reqs[:0], l.batch.newAliases[:0]
	l.batch.buf, l.spare = l.spare[:0], nil
	return true
}

// rebuild encodes the batch again without the requests that got their outcome in it,
// freeing their identifiers (the server never saw them) and setting up again the aliases
// they set up.
func (l *lane) rebuild() {
	for _, t := range l.batch.newAliases {
		delete(l.aliases, t)
	}
	reqs := l.batch.reqs
	l.batch.buf, l.batch.reqs, l.batch.newAliases, l.batch.dirty = l.batch.buf[:0], reqs[:0], l.batch.newAliases[:0], false
	for _, r := range reqs {
		if r.state == done {
			l.table[r.id] = nil
			l.free = append(l.free, r.id)
			r.inBatch = false
			l.e.maybeRelease(r)
			continue
		}
		l.append(r)
	}
	clear(reqs[len(l.batch.reqs):])
}
