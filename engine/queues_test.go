package engine

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRingOrder(t *testing.T) {
	var q ring
	reqs := make([]*Request, 200)
	for i := range reqs {
		reqs[i] = &Request{seq: uint64(i)}
	}
	// Back pushes across two growths, then resends pushed to the front in reverse.
	for _, r := range reqs[100:] {
		q.pushBack(r)
	}
	for i := 99; i >= 0; i-- {
		q.pushFront(reqs[i])
	}
	for i := range reqs {
		if q.len() != len(reqs)-i {
			t.Fatalf("len %d, want %d", q.len(), len(reqs)-i)
		}
		if r := q.popFront(); r != reqs[i] {
			t.Fatalf("pop %d gave seq %d", i, r.seq)
		}
	}
}

func TestDeadlines(t *testing.T) {
	var d deadlines
	base := time.Now()
	reqs := make([]*Request, 150)
	for i := range reqs {
		reqs[i] = &Request{deadline: base.Add(time.Duration(i) * time.Millisecond)}
	}
	reqs[7].deadline = base // a caller that raced: its deadline is not before the one ahead of it
	for _, r := range reqs {
		d.push(r)
	}
	if !reqs[7].deadline.Equal(reqs[6].deadline) {
		t.Errorf("out-of-order deadline %v not raised to %v", reqs[7].deadline, reqs[6].deadline)
	}
	// Holes in the middle stay until the head reaches them; the head is always live.
	d.remove(reqs[5])
	d.remove(reqs[0])
	if d.first() != reqs[1] {
		t.Fatalf("first is not the earliest live request")
	}
	for i := 1; i < 150; i++ {
		if i == 5 {
			continue
		}
		if d.first() != reqs[i] {
			t.Fatalf("first should be request %d", i)
		}
		d.remove(reqs[i])
		if reqs[i].dlPos != noDeadline {
			t.Fatalf("removed request still has a position")
		}
	}
	if d.first() != nil || d.head != d.tail {
		t.Fatalf("not empty after removing everything: head %d tail %d", d.head, d.tail)
	}
}

func TestRingCompact(t *testing.T) {
	var q ring
	reqs := make([]*Request, 100)
	for i := range reqs {
		reqs[i] = &Request{seq: uint64(i)}
		if i%3 == 0 {
			reqs[i].state = done
		}
		q.pushBack(reqs[i])
	}
	q.compact(func(*Request) {})
	if q.len() != 66 {
		t.Fatalf("%d left after compaction, want 66", q.len())
	}
	for i := range reqs {
		if i%3 == 0 {
			continue
		}
		if r := q.popFront(); r != reqs[i] {
			t.Fatalf("order broken at %d: got seq %d", i, r.seq)
		}
	}
}
