package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mdclient/mdclient/conn"
	"github.com/mdclient/mdclient/internal/mqttpeer"
)

// subjectFor returns a subject whose home is lane h.
func subjectFor(e *Engine, h int, prefix string) string {
	for i := 0; ; i++ {
		if s := fmt.Sprintf("%s/%d", prefix, i); e.homeOf(s) == h {
			return s
		}
	}
}

// TestLanesKeepEachSubjectOnOneConnection: with three lanes, every subject's messages go
// out on the one connection its subject hashes to, in order, and the load spreads.
func TestLanesKeepEachSubjectOnOneConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{Lanes: 3})
		peers := []*mqttpeer.Peer{{Connack: mqttpeer.Connack(100)}, {Connack: mqttpeer.Connack(100)}, {Connack: mqttpeer.Connack(100)}}
		for i, p := range peers {
			r.connectLane(p, i)
		}
		synctest.Wait() // every lane up before the first publish
		var reqs []*Request
		for n := range 5 {
			for s := range 30 {
				reqs = append(reqs, r.publish(context.Background(), fmt.Sprintf("subj/%d", s), fmt.Sprintf("%d", n)))
			}
		}
		synctest.Wait()
		r.exactlyOnce(reqs)
		where := map[string]int{}
		for i, p := range peers {
			got := p.Received()
			if len(got) == 0 {
				t.Errorf("lane %d carried nothing", i)
			}
			last := map[string]string{}
			for _, m := range got {
				if w, ok := where[m.Topic]; ok && w != i {
					t.Errorf("%s on lanes %d and %d", m.Topic, w, i)
				}
				where[m.Topic] = i
				if m.Payload <= last[m.Topic] {
					t.Errorf("%s: %s after %s", m.Topic, m.Payload, last[m.Topic])
				}
				last[m.Topic] = m.Payload
			}
		}
		if st := r.e.Stats(); len(st.Servers) != 3 || st.Connections != 3 || st.Reconnects != 0 {
			t.Errorf("stats %+v", st)
		}
		r.close(time.Second)
	})
}

// TestLaneFailoverKeepsSubjectOrder: a lane's connection is lost with its subject's
// messages in flight; they go out first on another lane, with DUP, before the subject's
// later ones; when the lane is back, it sends nothing of the subject until the other lane
// has its messages acknowledged, and then takes the subject back.
func TestLaneFailoverKeepsSubjectOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{Lanes: 2})
		a := subjectFor(r.e, 0, "a")
		hold := make(chan struct{})
		first := &mqttpeer.Peer{Connack: mqttpeer.Connack(100), Answer: func(mqttpeer.Received) mqttpeer.Answer { return mqttpeer.Answer{Drop: true} }}
		other := &mqttpeer.Peer{Connack: mqttpeer.Connack(100), Answer: func(m mqttpeer.Received) mqttpeer.Answer {
			if m.Payload >= "06" {
				return mqttpeer.Answer{Later: hold}
			}
			return mqttpeer.Answer{}
		}}
		cn := r.connectLane(first, 0)
		r.connectLane(other, 1)
		synctest.Wait()
		var reqs []*Request
		publish := func(from, to int) {
			for i := from; i <= to; i++ {
				reqs = append(reqs, r.publish(context.Background(), a, fmt.Sprintf("%02d", i)))
			}
		}
		publish(1, 5)
		synctest.Wait()
		cn.Abort(errors.New("cut"))
		synctest.Wait()
		publish(6, 10) // lane 0 is down: lane 1 serves a, and holds these unacknowledged
		synctest.Wait()
		back := &mqttpeer.Peer{Connack: mqttpeer.Connack(100)}
		r.connectLane(back, 0)
		synctest.Wait()
		publish(11, 12)
		synctest.Wait()
		if got := back.Payloads(); len(got) != 0 {
			t.Fatalf("the lane back sent %q while the other still had the subject's messages in flight", got)
		}
		close(hold)
		synctest.Wait()
		r.exactlyOnce(reqs)
		if got, want := other.Payloads(), []string{"01", "02", "03", "04", "05", "06", "07", "08", "09", "10"}; !slices.Equal(got, want) {
			t.Errorf("the other lane sent %q, want %q", got, want)
		}
		for _, m := range other.Received()[:5] {
			if !m.Dup {
				t.Errorf("%s resent without DUP", m.Payload)
			}
		}
		if got, want := back.Payloads(), []string{"11", "12"}; !slices.Equal(got, want) {
			t.Errorf("the lane back sent %q, want %q", got, want)
		}
		r.close(time.Second)
	})
}

// TestLanesAllDown: with no lane up, requests wait; the first lane to come up serves
// every subject, and the others take theirs back when they come up.
func TestLanesAllDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{Lanes: 3})
		var reqs []*Request
		for s := range 12 {
			reqs = append(reqs, r.publish(context.Background(), fmt.Sprintf("s/%d", s), "x"))
		}
		synctest.Wait()
		one := &mqttpeer.Peer{Connack: mqttpeer.Connack(100)}
		r.connectLane(one, 2)
		synctest.Wait()
		r.exactlyOnce(reqs)
		if n := len(one.Received()); n != 12 {
			t.Errorf("the only lane up carried %d of 12", n)
		}
		two := &mqttpeer.Peer{Connack: mqttpeer.Connack(100)}
		r.connectLane(two, 0)
		synctest.Wait()
		later := r.publish(context.Background(), subjectFor(r.e, 0, "s"), "later")
		synctest.Wait()
		if o := r.outcome(later); o.Fact != Acked || len(two.Received()) != 1 {
			t.Errorf("lane 0, back, did not take its subject: %+v, it carried %d", o, len(two.Received()))
		}
		r.close(time.Second)
	})
}

// TestLaneWaitsForTimedOutMessages: messages of a subject that timed out on the lane that
// served it while its home was down may still be on their way (a stalled path): the
// home, back, sends nothing of the subject until that lane has them acknowledged,
// whether they timed out before the home came back or after; if they stay unanswered
// for windowPatience, that lane gets a fresh connection and the home goes on.
func TestLaneWaitsForTimedOutMessages(t *testing.T) {
	for _, c := range []struct {
		name             string
		before, answered bool
	}{
		{"timed out before the home is back", true, true},
		{"timed out after the home is back", false, true},
		{"never answered", true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(t, Config{Lanes: 2})
				a := subjectFor(r.e, 0, "a")
				hold := make(chan struct{})
				first := &mqttpeer.Peer{Connack: mqttpeer.Connack(100)}
				other := &mqttpeer.Peer{Connack: mqttpeer.Connack(100), Answer: func(m mqttpeer.Received) mqttpeer.Answer {
					return mqttpeer.Answer{Later: hold}
				}}
				cn := r.connectLane(first, 0)
				oc := r.connectLane(other, 1)
				synctest.Wait()
				cn.Abort(errors.New("cut"))
				synctest.Wait()
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				var reqs []*Request
				for i := 1; i <= 3; i++ { // lane 1 serves a; its server does not answer yet
					reqs = append(reqs, r.publish(ctx, a, fmt.Sprintf("%02d", i)))
				}
				synctest.Wait()
				back := &mqttpeer.Peer{Connack: mqttpeer.Connack(100)}
				if c.before {
					time.Sleep(1500 * time.Millisecond) // virtual time: the three time out
					synctest.Wait()
					r.connectLane(back, 0)
				} else {
					r.connectLane(back, 0)
					synctest.Wait()
					time.Sleep(1500 * time.Millisecond)
				}
				synctest.Wait()
				for _, q := range reqs {
					if o := r.outcome(q); o.Fact != Expired || !o.Written {
						t.Fatalf("%+v, want expired after writing", o)
					}
				}
				later := r.publish(context.Background(), a, "04")
				synctest.Wait()
				if got := back.Payloads(); len(got) != 0 {
					t.Fatalf("the home sent %q while the other lane still had the subject's timed-out messages unanswered", got)
				}
				if c.answered {
					close(hold)
				} else {
					time.Sleep(windowPatience)
				}
				synctest.Wait()
				if o := r.outcome(later); o.Fact != Acked {
					t.Errorf("the later message: %+v", o)
				}
				if got, want := back.Payloads(), []string{"04"}; !slices.Equal(got, want) {
					t.Errorf("the home sent %q, want %q", got, want)
				}
				if !c.answered {
					if err := oc.Err(); !errors.Is(err, ErrWindowHeld) {
						t.Errorf("the lane holding them ended with %v, want ErrWindowHeld", err)
					}
					close(hold)
				}
				r.close(time.Second)
			})
		})
	}
}

// TestPoisonMovesAsAProbe: a message every server drops the connection over, with several
// lanes: when its lane dies, its subject's messages move to another lane and the suspect
// goes out alone there too, so that the poison takes no other lane's messages down with
// it three times (found by the outside tester: 18–36 innocent messages of 1000 given up).
func TestPoisonMovesAsAProbe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{Lanes: 3})
		answer := func(m mqttpeer.Received) mqttpeer.Answer { return mqttpeer.Answer{Disconnect: m.Payload == "poison"} }
		stop := make(chan struct{})
		ended := make(chan struct{})
		for i := range 3 { // the cluster's part: each lane connects again at once
			go func() {
				defer func() { ended <- struct{}{} }()
				for {
					cn := r.connectLane(&mqttpeer.Peer{Connack: mqttpeer.Connack(100), Answer: answer}, i)
					select {
					case <-cn.Done():
					case <-stop:
						return
					}
					time.Sleep(10 * time.Millisecond) // the cluster's reconnect: the subjects move meanwhile
				}
			}()
		}
		synctest.Wait()
		poisonSubject := subjectFor(r.e, 0, "p")
		var reqs []*Request
		var poison *Request
		for n := range 40 { // in one burst: the batches are large, the poison among others
			for s := range 30 {
				reqs = append(reqs, r.publish(context.Background(), fmt.Sprintf("s/%d", s), fmt.Sprint(n)))
			}
			if n == 2 {
				poison = r.publish(context.Background(), poisonSubject, "poison")
			}
		}
		synctest.Wait()
		time.Sleep(time.Second)
		synctest.Wait()
		if o := r.outcome(poison); o.Fact != Poisoned {
			t.Errorf("poison: %+v", o)
		}
		lost := 0
		for _, q := range reqs {
			if o := r.outcome(q); o.Fact != Acked {
				lost++
				if lost <= 3 {
					t.Errorf("%s #%s: %+v", q.Packet.Topic, q.Packet.Payload, o)
				}
			}
		}
		if lost > 0 {
			t.Errorf("%d of %d other messages not acknowledged", lost, len(reqs))
		}
		close(stop)
		r.close(time.Second)
		for range 3 {
			<-ended
		}
	})
}

// TestLaneLossSendsAwaitedMessagesToTheirHome: a lane serving another lane's subject
// while that one was down still has the subject's oldest message in flight when the home
// lane is back; the home lane waits for it. When the serving lane's connection is then
// lost, that message goes to the home lane, ahead of the subject's later ones — not back
// to the lost lane's queue, where it would go out after them (found by an outside tester
// cutting all of a pool's connections in a row).
func TestLaneLossSendsAwaitedMessagesToTheirHome(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{Lanes: 2})
		a := subjectFor(r.e, 0, "a")
		silent := func(mqttpeer.Received) mqttpeer.Answer { return mqttpeer.Answer{Drop: true} }
		home := r.connectLane(&mqttpeer.Peer{Connack: mqttpeer.Connack(100), Answer: silent}, 0)
		serving := r.connectLane(&mqttpeer.Peer{Connack: mqttpeer.Connack(100), Answer: silent}, 1)
		synctest.Wait()
		var reqs []*Request
		publish := func(from, to int) {
			for i := from; i <= to; i++ {
				reqs = append(reqs, r.publish(context.Background(), a, fmt.Sprintf("%02d", i)))
			}
		}
		publish(1, 5) // in flight on lane 0, never answered
		synctest.Wait()
		home.Abort(errors.New("cut"))
		synctest.Wait() // lane 1 serves a now: 01 goes out alone (a probe), unanswered
		publish(6, 8)
		synctest.Wait()
		back := &mqttpeer.Peer{Connack: mqttpeer.Connack(100)}
		r.connectLane(back, 0)
		synctest.Wait() // a is home again; lane 0 waits for 01, on lane 1
		if got := back.Payloads(); len(got) != 0 {
			t.Fatalf("the home lane sent %q while 01 was in flight on the other lane", got)
		}
		serving.Abort(errors.New("cut"))
		synctest.Wait()
		r.exactlyOnce(reqs)
		if got, want := back.Payloads(), []string{"01", "02", "03", "04", "05", "06", "07", "08"}; !slices.Equal(got, want) {
			t.Errorf("the home lane sent %q, want %q", got, want)
		}
		r.close(time.Second)
	})
}

// TestOneOutageCountsOnce: a pool's connections fail together (here: their servers go
// deaf), and the engine hears of their ends one by one. A message lost on lane 0 moves to
// lane 1, whose connection is dead too but not known to be: it waits there for a sign of
// life (it asks for a PINGRESP) instead of being written and charged another loss, moves
// on uncharged when lane 1 ends, likewise on lane 2, and goes out on the next connection
// (found by the sixth outside tester: two outages gave up guaranteed messages as lost 3
// times in a row).
func TestOneOutageCountsOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{Lanes: 3})
		var peers []*mqttpeer.Peer
		var cns []*conn.Conn
		for l := range 3 {
			p := &mqttpeer.Peer{Connack: mqttpeer.Connack(100), Answer: func(mqttpeer.Received) mqttpeer.Answer { return mqttpeer.Answer{Drop: true} }}
			peers = append(peers, p)
			cns = append(cns, r.connectLane(p, l))
		}
		synctest.Wait()
		q := r.publish(context.Background(), subjectFor(r.e, 0, "a"), "m")
		synctest.Wait()
		for _, p := range peers {
			p.Deaf.Store(true) // the outage
		}
		for _, cn := range cns { // the engine hears of the ends one by one
			cn.Abort(errors.New("outage"))
			synctest.Wait()
		}
		if !r.pending(q) {
			t.Fatalf("given up after one outage: %+v", r.outcome(q))
		}
		for l, p := range peers[1:] {
			if got := p.Payloads(); len(got) != 0 {
				t.Errorf("lane %d, dead unnoticed, was handed %q", l+1, got)
			}
		}
		r.connectLane(&mqttpeer.Peer{Connack: mqttpeer.Connack(100)}, 0)
		synctest.Wait()
		if o := r.outcome(q); o.Fact != Acked || !o.Resent {
			t.Errorf("%+v, want Acked after a resend", o)
		}
		r.close(time.Second)
	})
}

// TestSuspectGoesOutOnALiveSibling: a message lost on lane 0 moves to lane 1, which is
// alive: it answers the PINGREQ, and the message goes out there at once.
func TestSuspectGoesOutOnALiveSibling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{Lanes: 2})
		first := &mqttpeer.Peer{Connack: mqttpeer.Connack(100), Answer: func(mqttpeer.Received) mqttpeer.Answer { return mqttpeer.Answer{Drop: true} }}
		cn := r.connectLane(first, 0)
		other := &mqttpeer.Peer{Connack: mqttpeer.Connack(100)}
		r.connectLane(other, 1)
		synctest.Wait()
		q := r.publish(context.Background(), subjectFor(r.e, 0, "a"), "m")
		synctest.Wait()
		cn.Abort(errors.New("cut"))
		synctest.Wait()
		if o := r.outcome(q); o.Fact != Acked || !o.Resent || o.Server != "tcp://pipe" {
			t.Errorf("%+v, want Acked on the other lane", o)
		}
		if got := other.Received(); len(got) != 1 || !got[0].Dup {
			t.Errorf("the other lane read %+v", got)
		}
		r.close(time.Second)
	})
}

// TestSuspectLeavesASilentSibling: a message lost on lane 0 moves to lane 1, whose server
// has gone silent without the client knowing; lane 1 does not answer the PINGREQ, and
// after windowPatience its connection is closed, so that the message moves on to lane 2,
// which is alive (found by the seventh outside tester: messages waited on a frozen
// sibling until keep-alive or their context ended, while a live connection was there).
func TestSuspectLeavesASilentSibling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{Lanes: 3})
		silent := func() *mqttpeer.Peer {
			return &mqttpeer.Peer{Connack: mqttpeer.Connack(100), Answer: func(mqttpeer.Received) mqttpeer.Answer { return mqttpeer.Answer{Drop: true} }}
		}
		cn := r.connectLane(silent(), 0)
		frozen := silent()
		r.connectLane(frozen, 1)
		alive := &mqttpeer.Peer{Connack: mqttpeer.Connack(100)}
		r.connectLane(alive, 2)
		synctest.Wait()
		q := r.publish(context.Background(), subjectFor(r.e, 0, "a"), "m")
		synctest.Wait()
		frozen.Deaf.Store(true)
		start := time.Now()
		cn.Abort(errors.New("cut"))
		synctest.Wait()
		time.Sleep(windowPatience + time.Millisecond)
		synctest.Wait()
		if r.pending(q) {
			t.Fatalf("still waiting after %v", time.Since(start))
		}
		if o := r.outcome(q); o.Fact != Acked || !o.Resent {
			t.Fatalf("%+v after %v, want Acked on the live lane", o, time.Since(start))
		}
		if got := frozen.Payloads(); len(got) != 0 {
			t.Errorf("the silent lane was handed %q", got)
		}
		if got := alive.Payloads(); !slices.Equal(got, []string{"m"}) {
			t.Errorf("the live lane read %q", got)
		}
		if st := r.e.Stats(); st.Connections != 3 || len(st.Servers) != 1 {
			t.Errorf("stats %+v: want the silent lane's connection closed", st)
		}
		r.close(time.Second)
	})
}
