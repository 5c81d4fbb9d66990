package engine

import "time"

// ring is a double-ended queue of requests waiting for the wire. Its capacity is a power
// of two and only grows.
type ring struct {
	buf        []*Request
	head, size int
}

func (q *ring) len() int { return q.size }

func (q *ring) grow() {
	n := max(64, 2*len(q.buf))
	buf := make([]*Request, n)
	for i := 0; i < q.size; i++ {
		buf[i] = q.buf[(q.head+i)&(len(q.buf)-1)]
	}
	q.buf, q.head = buf, 0
}

func (q *ring) pushBack(r *Request) {
	r.inRing = true
	if q.size == len(q.buf) {
		q.grow()
	}
	q.buf[(q.head+q.size)&(len(q.buf)-1)] = r
	q.size++
}

func (q *ring) pushFront(r *Request) {
	r.inRing = true
	if q.size == len(q.buf) {
		q.grow()
	}
	q.head = (q.head - 1) & (len(q.buf) - 1)
	q.buf[q.head] = r
	q.size++
}

func (q *ring) popFront() *Request {
	r := q.buf[q.head]
	q.buf[q.head] = nil
	q.head = (q.head + 1) & (len(q.buf) - 1)
	q.size--
	r.inRing = false
	return r
}

// compact drops the requests that already have their outcome, keeping the order, and
// hands each dropped one to dropped.
func (q *ring) compact(dropped func(*Request)) {
	n := 0
	for i := 0; i < q.size; i++ {
		if r := q.buf[(q.head+i)&(len(q.buf)-1)]; r.state != done {
			q.buf[(q.head+n)&(len(q.buf)-1)] = r
			n++
		} else {
			r.inRing = false
			dropped(r)
		}
	}
	for i := n; i < q.size; i++ {
		q.buf[(q.head+i)&(len(q.buf)-1)] = nil
	}
	q.size = n
}

// deadlines holds the requests that run on the client's default publish timeout, in
// admission order. Their deadlines are admission time plus one constant, so the order is
// also deadline order (push keeps it so when callers race): the earliest is always at the
// head, with no heap. A completed request leaves a nil hole, skipped when it reaches the
// head; acknowledgements arrive mostly in order, so holes rarely pile up.
type deadlines struct {
	buf        []*Request // power-of-two ring
	head, tail uint64     // absolute positions; buf[pos&mask]
	last       time.Time  // the latest deadline pushed
}

func (d *deadlines) push(r *Request) {
	if d.tail-d.head == uint64(len(d.buf)) {
		d.grow()
	}
	if r.deadline.Before(d.last) {
		r.deadline = d.last
	}
	d.last = r.deadline
	r.dlPos = d.tail
	d.buf[d.tail&uint64(len(d.buf)-1)] = r
	d.tail++
}

func (d *deadlines) grow() {
	buf := make([]*Request, max(64, 2*len(d.buf)))
	for pos := d.head; pos < d.tail; pos++ {
		buf[pos&uint64(len(buf)-1)] = d.buf[pos&uint64(len(d.buf)-1)]
	}
	d.buf = buf
}

// remove leaves a hole where r was.
func (d *deadlines) remove(r *Request) {
	d.buf[r.dlPos&uint64(len(d.buf)-1)] = nil
	r.dlPos = noDeadline
	d.trim()
}

// trim drops the holes at the head.
func (d *deadlines) trim() {
	for d.head < d.tail && d.buf[d.head&uint64(len(d.buf)-1)] == nil {
		d.head++
	}
}

// first is the request with the earliest deadline, or nil.
func (d *deadlines) first() *Request {
	if d.head == d.tail {
		return nil
	}
	return d.buf[d.head&uint64(len(d.buf)-1)]
}

// noDeadline is a Request's dlPos while it is not in deadlines.
const noDeadline = ^uint64(0)

func (q *ring) front() *Request { return q.buf[q.head] }
