package mdclient_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/mdclient/mdclient"
	"github.com/mdclient/mdclient/internal/mosquittotest"
)

var soak = flag.Duration("soak", 0, "run TestSoak for this long, e.g. -soak=5m (0: skip it)")

// TestSoak publishes at a steady rate to three mosquitto nodes for -soak=DURATION while
// the node in use is killed every 30 s and restarted 5 s later. It counts the outcomes,
// samples the heap and the goroutines every 5 s, and logs a summary. It fails if a request
// gets no result or two, if an outcome is neither OK nor NO_SUBSCRIBER (a restarted node's
// subscriber needs a moment to come back), if a message reported OK reached no subscriber,
// or if goroutines or the heap grow.
//
//	go test -run '^TestSoak$' -soak=5m -timeout 15m -v .
func TestSoak(t *testing.T) {
	if *soak <= 0 {
		t.Skip("runs only with -soak=DURATION")
	}
	const (
		rate        = 2000 // publishes per second
		killEvery   = 30 * time.Second
		restartWait = 5 * time.Second
		sampleEvery = 5 * time.Second
		topic       = "soak/stream"
	)
	total := int(soak.Seconds()*rate) + rate
	nodes := []*mosquittotest.Broker{mosquittoNode(t, allowToken), mosquittoNode(t, allowToken), mosquittoNode(t, allowToken)}
	servers := []string{nodes[0].WSAddr(), nodes[1].TCPAddr(), nodes[2].WSAddr()}
	index := map[string]int{}
	for i, s := range servers {
		index[s] = i
	}
	seen := newSoakTally(total)
	for _, b := range nodes {
		soakSubscribe(t, b, "soak/#", seen.receipt)
	}
	// Requests carry no deadline of their own: the publish timeout bounds each.
	c := newClient(t, allowToken, servers, mdclient.WithUsername("pub"), mdclient.WithPublishTimeout(10*time.Second))

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	results := make(chan mdclient.PublishResult, 4096)
	start := time.Now()
	stream := startStream(t, c, ctx, nil, topic, "", rate, total, *soak, results)

	type sample struct {
		at               time.Duration
		sent, results    int
		ok, noSub, other int
		heapInuse        uint64
		goroutines       int
		down             string
	}
	const (
		running = iota
		catchingUp
		resumed
		down
	)
	var (
		samples    []sample
		status     = map[mdclient.Status]int{}
		okFrom     = map[string]int{}
		okIDs      = make([]int, 0, total)
		received   int
		others     []string
		lastOK     string
		events     = map[mdclient.Status]int{}
		phase      = running
		victim     = -1
		resume     func()
		catchBy    time.Time
		sentBefore int64
		killAt     time.Time
		resumes    []time.Duration
		kills      int
		lagged     int
	)
	takeSample := func() {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		s := int(stream.sent.Load())
		k := ""
		if phase == down {
			k = servers[victim]
		}
		samples = append(samples, sample{
			at:         time.Since(start).Round(time.Second),
			sent:       s,
			results:    received,
			ok:         status[mdclient.NotifyPublishOK],
			noSub:      status[mdclient.NotifyPublishNoSubscriber],
			other:      received - status[mdclient.NotifyPublishOK] - status[mdclient.NotifyPublishNoSubscriber],
			heapInuse:  ms.HeapInuse,
			goroutines: runtime.NumGoroutine(),
			down:       k,
		})
	}
	takeSample()
	sampleTick := time.NewTicker(sampleEvery)
	defer sampleTick.Stop()
	chaosTick := time.NewTicker(killEvery)
	defer chaosTick.Stop()
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	var restartTimer <-chan time.Time
	finalDeadline := time.Now().Add(*soak + 60*time.Second)
loop:
	for {
		select {
		case r := <-results:
			received++
			id, err := seen.result(r)
			if err != nil {
				t.Fatal(err)
			}
			status[r.Status]++
			switch r.Status {
			case mdclient.NotifyPublishOK:
				okFrom[r.Server]++
				okIDs = append(okIDs, id)
				lastOK = r.Server
				if !killAt.IsZero() && victim >= 0 && r.Server != servers[victim] {
					resumes = append(resumes, time.Since(killAt))
					killAt = time.Time{}
				}
			case mdclient.NotifyPublishNoSubscriber:
			default:
				if len(others) < 10 {
					others = append(others, fmt.Sprintf("%d: %s %v", id, r.Status, r.Err))
				}
			}
		case ev, ok := <-c.Events():
			if ok {
				events[ev.Type]++
			}
		case <-sampleTick.C:
			takeSample()
		case <-chaosTick.C:
			// Kill the node in use. First the stream pauses until every message sent so far
			// has its result and every one reported OK has reached a subscriber (see
			// TestFailoverKill), then it resumes and the node dies with messages in flight.
			if phase == running && lastOK != "" && time.Since(start) < *soak-time.Second {
				var ok bool
				if resume, ok = stream.Pause(); ok {
					victim, catchBy, phase = index[lastOK], time.Now().Add(3*time.Second), catchingUp
				}
			}
		case <-restartTimer:
			nodes[victim].Restart(t)
			restartTimer, victim, phase = nil, -1, running
		case <-poll.C:
		}
		switch phase {
		case catchingUp:
			caught := received == int(stream.sent.Load()) && seen.distinct() >= status[mdclient.NotifyPublishOK]
			if caught || time.Now().After(catchBy) {
				if !caught {
					lagged++
				}
				sentBefore = stream.sent.Load()
				resume()
				phase = resumed
			}
		case resumed:
			ended := false
			select {
			case <-stream.done:
				ended = true
			default:
			}
			if stream.sent.Load() > sentBefore || ended {
				killAt = time.Now()
				nodes[victim].Kill()
				kills++
				restartTimer = time.After(restartWait)
				phase = down
			}
		}
		select {
		case <-stream.done:
			if received == int(stream.sent.Load()) && restartTimer == nil {
				break loop
			}
		default:
		}
		if time.Now().After(finalDeadline) {
			t.Fatalf("%d of %d results by the deadline; statuses %v", received, stream.sent.Load(), status)
		}
	}
	takeSample()
	missing := seen.waitAll(okIDs, 30*time.Second)

	resent := c.Stats().Resent
	dups := seen.twice()

	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "time\tsent\tresults\tOK\tNO_SUB\tother\theap MiB\tgoroutines\tnode down\t")
	for _, s := range samples {
		fmt.Fprintf(tw, "%v\t%d\t%d\t%d\t%d\t%d\t%.1f\t%d\t%s\t\n", s.at, s.sent, s.results, s.ok, s.noSub, s.other,
			float64(s.heapInuse)/(1<<20), s.goroutines, s.down)
	}
	tw.Flush()
	var worst, sum time.Duration
	for _, d := range resumes {
		worst = max(worst, d)
		sum += d
	}
	avg := time.Duration(0)
	if len(resumes) > 0 {
		avg = sum / time.Duration(len(resumes))
	}
	t.Logf("soak %v at %d msg/s, GOMAXPROCS %d:\n%s", *soak, rate, runtime.GOMAXPROCS(0), b.String())
	t.Logf("outcomes %v; OK per server %v", status, okFrom)
	t.Logf("kills %d (stream not caught up within 3 s before %d of them); publishing resumed on another node after avg %v, worst %v",
		kills, lagged, avg.Round(time.Millisecond), worst.Round(time.Millisecond))
	t.Logf("events %v; resent %d; received twice by subscribers %d; acknowledged but never received %d",
		events, resent, dups, len(missing))

	if id, k := seen.notOnce(int(stream.sent.Load())); id >= 0 {
		t.Errorf("request %d: %d results", id, k)
	}

	if len(others) > 0 {
		t.Errorf("outcomes other than OK and NO_SUBSCRIBER: %v", others)
	}
	if len(missing) > 0 {
		t.Errorf("%d messages reported OK reached no subscriber, e.g. %v", len(missing), missing[:min(5, len(missing))])
	}
	if kills == 0 {
		t.Errorf("no node was killed: run the soak for longer than %v", killEvery)
	}
	// Nothing grows: compare the end with the first sample after the start.
	if len(samples) >= 3 {
		first, last := samples[1], samples[len(samples)-1]
		if last.goroutines > first.goroutines+10 {
			t.Errorf("goroutines grew from %d to %d", first.goroutines, last.goroutines)
		}
		if last.heapInuse > first.heapInuse+32<<20 {
			t.Errorf("heap in use grew from %.1f MiB to %.1f MiB", float64(first.heapInuse)/(1<<20), float64(last.heapInuse)/(1<<20))
		}
	}
}

// soakTally is the soak's bookkeeping of exactly-once and of what the subscribers
// received: a byte per request for its results and an int for its receipts, allocated
// before the first heap sample. It is not the ledger (helpers_test.go), on purpose: the
// ledger keeps a description of every request, result and receipt (about 400 bytes per
// request), which at 2000 requests a second grows the heap by hundreds of MiB in a
// 5-minute soak, and a growing heap is what the soak looks for.
type soakTally struct {
	results []uint8 // per request; the test goroutine's own

	mu      sync.Mutex
	count   []int // receipts per request over all nodes, duplicates included
	all     int   // requests received at least once
	changed chan struct{}
}

func newSoakTally(n int) *soakTally {
	return &soakTally{results: make([]uint8, n), count: make([]int, n), changed: make(chan struct{}, 1)}
}

// result records the result r and returns its request's number; an error for a closure
// that is no request's or for a second result.
func (s *soakTally) result(r mdclient.PublishResult) (int, error) {
	id, err := strconv.Atoi(r.Closure)
	if err != nil || id < 0 || id >= len(s.results) {
		return 0, fmt.Errorf("result with unknown closure %q", r.Closure)
	}
	if s.results[id]++; s.results[id] > 1 {
		return 0, fmt.Errorf("closure %d: a second result %+v", id, r)
	}
	return id, nil
}

// notOnce returns the first of the requests 0..n-1 that does not have exactly one result,
// with its number of results; -1 if all have.
func (s *soakTally) notOnce(n int) (id, results int) {
	for id := range n {
		if s.results[id] != 1 {
			return id, int(s.results[id])
		}
	}
	return -1, 0
}

// receipt records a message a subscriber received: the request's number, 4 bytes
// big-endian (anything else is none of this test's requests).
func (s *soakTally) receipt(payload []byte) {
	s.mu.Lock()
	if len(payload) == 4 && int(binary.BigEndian.Uint32(payload)) < len(s.count) {
		id := binary.BigEndian.Uint32(payload)
		if s.count[id] == 0 {
			s.all++
		}
		s.count[id]++
	}
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// distinct returns how many requests some subscriber has received.
func (s *soakTally) distinct() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.all
}

// twice returns how many requests the subscribers received more than once.
func (s *soakTally) twice() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, k := range s.count {
		if k > 1 {
			n++
		}
	}
	return n
}

// missing returns the ids in want that no subscriber received.
func (s *soakTally) missing(want []int) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for _, id := range want {
		if s.count[id] == 0 {
			out = append(out, id)
		}
	}
	return out
}

// waitAll waits until every id in want was received by some subscriber, or until d has
// passed, and returns the ids still missing.
func (s *soakTally) waitAll(want []int, d time.Duration) []int {
	var miss []int
	untilPinged(s.changed, d, func() bool {
		miss = s.missing(want)
		return len(miss) == 0
	})
	return miss
}

// soakSubscribe runs mosquitto_sub on b's TCP listener, subscribed to filter with QoS 1,
// and calls got with the payload of every message it prints, until the test ends. Unlike
// mosquittotest.Sub it keeps nothing of mosquitto_sub's output, so that a long soak's heap
// figures are the client's. mosquitto_sub reconnects and subscribes again by itself after
// its broker is restarted.
func soakSubscribe(t *testing.T, b *mosquittotest.Broker, filter string, got func(payload []byte)) {
	t.Helper()
	stdbuf, err := exec.LookPath("stdbuf")
	if err != nil {
		t.Skip("stdbuf not installed")
	}
	sub, err := exec.LookPath("mosquitto_sub")
	if err != nil {
		t.Skip("mosquitto_sub not installed")
	}
	// -F "P:%x": a line "P:" and the payload in hex per message; -d's debug lines start
	// otherwise, and "Subscribed (mid: N): 1" tells that the SUBACK came.
	cmd := exec.Command(stdbuf, "-oL", sub, "-V", "mqttv5", "-d", "-h", "127.0.0.1", "-p", strconv.Itoa(b.TCPPort()),
		"-u", "sub", "-P", subPassword, "-t", filter, "-q", "1", "-F", "P:%x")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	subscribed := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		payload := make([]byte, 0, 64)
		ready := false
		for sc.Scan() {
			line := sc.Bytes()
			if hexed, ok := bytes.CutPrefix(line, []byte("P:")); ok {
				if len(hexed)/2 > cap(payload) {
					payload = make([]byte, 0, len(hexed)/2)
				}
				payload = payload[:len(hexed)/2]
				if _, err := hex.Decode(payload, hexed); err != nil {
					got(hexed) // not ours: recorded as such
					continue
				}
				got(payload)
				continue
			}
			if !ready && bytes.HasPrefix(line, []byte("Subscribed (mid: ")) {
				ready = true
				close(subscribed)
			}
		}
		io.Copy(io.Discard, out)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		cmd.Wait()
	})
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case <-subscribed:
	case <-done:
		t.Fatalf("mosquitto_sub on %s ended before subscribing", b.TCPAddr())
	case <-timer.C:
		t.Fatalf("mosquitto_sub on %s not subscribed within 10 s", b.TCPAddr())
	}
}
