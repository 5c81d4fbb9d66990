package mdclient_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mdclient/mdclient"
	"github.com/mdclient/mdclient/internal/fakebroker"
	"github.com/mdclient/mdclient/internal/faultproxy"
	"github.com/mdclient/mdclient/internal/mosquittotest"
	"github.com/mdclient/mdclient/internal/testproc"
	"github.com/mdclient/mdclient/mdtest"
)

var (
	chaosBudget = flag.Duration("chaos", 6*time.Second, "TestChaos: run random seeds until this much time is used (at least one seed), e.g. -chaos=10m")
	chaosSeed   = flag.Uint64("chaos.seed", 0, "TestChaos: run this one seed (printed by a failing run)")
)

const (
	// chaosTopic prefixes the subjects every broker's subscriber receives ("chaos/#").
	chaosTopic = "chaos/"
	// chaosGrace is the most Close may take beyond the drain timeout (contract §3: a
	// documented grace of at most 1 s).
	chaosGrace = time.Second
	// chaosQuiet is how long every subscriber must stay idle, after the markers, before
	// the subscribers' receipts are taken as complete (see quiesce).
	chaosQuiet = 300 * time.Millisecond
)

// errChaosCancel is the cause of the contexts the publishers cancel themselves.
var errChaosCancel = errors.New("chaos: cancelled by the publisher")

// TestChaos is a seeded, randomized driver that tries to break the contract (contract.md
// §2–§4) rather than confirm the design. Each seed builds a small world — two embedded
// brokers, mosquitto when it is installed, fault proxies in front of them, a dead address
// and a black hole (a proxy that accepts and never answers) — and a client that
// publishers, result readers and a conductor work on at once:
//
//   - publishers call PublishAsync (and some Publish) with random context lifetimes
//     (already done, microseconds, milliseconds, seconds, none, cancelled with a cause),
//     random QoS, random sizes and now and then bad input (empty, '+', '#', NUL, TAB,
//     DEL, U+0085, a noncharacter, invalid UTF-8);
//   - results go to shared channels read at once (buffered and unbuffered), small ones
//     read slowly, ones left unread until Close is called, the client's own one-result
//     channels, and unbuffered ones the caller reads after the call;
//   - the conductor cuts, stalls and throttles connections, calls SetServers (another
//     server, the dead address or the black hole first, a standby, an invalid entry),
//     closes an embedded broker, makes one refuse publishes with a PUBACK failure code
//     for a while, SIGKILLs, SIGSTOPs and restarts mosquitto, and calls
//     Close at a random moment while the publishers go on calling (and call again after
//     it has returned).
//
// After each run the ledger (helpers_test.go) checks every request against every result
// and what the subscribers received (exactly one result, on the right channel; the
// sentinels; FAILED never published; OK published; QoSStandard at most once; bad input,
// done contexts and calls after Close FAILED), and the run checks that Close returned
// within the drain timeout + 1 s, that no call hung, that no unread channel piled up more
// results than the per-channel bound allows, that the goroutines are back to what they
// were (goleak) and that the heap stayed bounded.
//
//	go test -race -run 'TestChaos$' -v .                 # the default budget (-chaos=6s)
//	go test -race -run 'TestChaos$' -chaos=10m -timeout 15m -v .
//	go test -race -run 'TestChaos$' -chaos.seed=N -v .   # one seed again
//
// A seed fixes every random choice; the interleaving of goroutines is the machine's, so a
// seed reproduces a scenario, not necessarily its timing.
func TestChaos(t *testing.T) {
	mosq := chaosHaveMosquitto(t)
	var base runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&base)
	start := time.Now()
	next := uint64(time.Now().UnixNano()) & (1<<48 - 1)
	for i := 0; ; i++ {
		var seed uint64
		switch {
		case *chaosSeed != 0 && i > 0:
			return
		case *chaosSeed != 0:
			seed = *chaosSeed
		case i > 0 && time.Since(start) >= *chaosBudget:
			t.Logf("%d seeds in %v", i, time.Since(start).Round(time.Millisecond))
			return
		default:
			seed = next + uint64(i)
		}
		ok := t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { chaosRunSeed(t, seed, mosq) })
		if !ok {
			t.Logf("seed %d failed; rerun it with: go test -race -run 'TestChaos$' -chaos.seed=%d -v .", seed, seed)
		}
		// A leak that outlives the runs shows as a heap that keeps growing from seed to
		// seed: a run's world (brokers, clients, ledger) is garbage once it returns.
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		if grown := int64(ms.HeapAlloc) - int64(base.HeapAlloc); grown > 32<<20 {
			t.Errorf("seed %d: after the run the heap holds %d MiB more than before the first run (bound 32 MiB); rerun with -chaos.seed=%d",
				seed, grown>>20, seed)
		}
	}
}

// chaosHaveMosquitto reports whether the mosquitto tools are installed; when they are not
// and CI is set, the test fails, as the other mosquitto tests do.
func chaosHaveMosquitto(t *testing.T) bool {
	for _, name := range []string{"mosquitto", "mosquitto_sub", "stdbuf"} {
		if chaosHaveTool(name) {
			continue
		}
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed and CI is set (Debian: apt-get install mosquitto mosquitto-clients)", name)
		}
		t.Logf("%s is not installed: the runs leave mosquitto out", name)
		return false
	}
	return true
}

func chaosHaveTool(name string) bool {
	_, err := testproc.LookTool(name)
	return err == nil
}

// chaosBroker is one broker of a run's world.
type chaosBroker struct {
	name   string
	desc   string // name and settings, for the log
	emb    *mdtest.Server
	sub    *mdtest.Subscription
	mq     *mosquittotest.Broker
	msub   *mosquittotest.Sub
	direct string // a TCP address that bypasses the proxies, for the quiescence marker

	// Owned by the conductor.
	dead         bool      // closed, or killed and not restarted
	stoppedSince time.Time // SIGSTOPped since; zero while running
	continueAt   time.Time // when to SIGCONT it
	restartAt    time.Time // when to restart it after a kill
	refuseUntil  time.Time // an embedded broker refuses chaos/# with a PUBACK failure code until then
}

// chaosProxy is a fault proxy in front of a broker.
type chaosProxy struct {
	name      string
	px        *faultproxy.Proxy
	addr      string // as the client names it
	broker    *chaosBroker
	blackhole bool      // stalled for good: accepts connections and answers nothing
	resumeAt  time.Time // owned by the conductor: when to end the stall or throttle
}

// chaosServer is an address a server list may name.
type chaosServer struct {
	addr   string
	broker *chaosBroker // nil for the dead address and the black hole
}

// Result channel kinds.
const (
	chanFast = iota // read at once, all along
	chanSlow        // read slowly until Close is called, then at once
	chanLazy        // not read until Close is called, then at once
)

type chaosChan struct {
	name string
	ch   chan mdclient.PublishResult
	kind int
}

// chaosRun is one seed's world.
type chaosRun struct {
	t     *testing.T
	seed  uint64
	rng   *rand.Rand // the conductor's; each publisher has its own
	led   *ledger
	start time.Time
	log   *logRecorder // nil when the client logs nowhere

	c              *mdclient.Client
	opts           []string // the options, described
	drain          time.Duration
	publishTimeout time.Duration
	maxRequests    int64
	closeAfter     time.Duration // when, after the start, the conductor calls Close
	npub           int           // publishers
	maxQueued      int           // the client's WithMaxQueued (or its default)
	window         int           // the largest in-flight window of any server: Receive Maximum, WithMaxInflight
	closeCalledAt  time.Time     // set by the conductor before it closes closeCalled

	brokers    []*chaosBroker
	proxies    []*chaosProxy
	subReaders sync.WaitGroup // the goroutines feeding subscribers' receipts to the ledger
	live       []chaosServer  // addresses of brokers (some behind proxies)
	dead       string         // refuses connections
	hole       string         // the black hole's address
	chans      []*chaosChan

	closeCalled   chan struct{} // closed just before Close is called
	closeReturned chan struct{} // closed once Close has returned
	isClosed      atomic.Bool   // closeReturned is closed
	readersStop   chan struct{} // closed once every result is in: readers stop
	requests      atomic.Int64
	payloadBytes  atomic.Int64

	mu       sync.Mutex // guards the fields below
	timeline []string
	extra    []ledgerViolation // broken promises found outside the ledger
	cancels  []func()
}

// note adds an entry to the run's timeline, printed when the run fails.
func (r *chaosRun) note(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.timeline = append(r.timeline, fmt.Sprintf("+%v %s", r.led.since(time.Now()), fmt.Sprintf(format, args...)))
}

// violation records a broken promise found outside the ledger.
func (r *chaosRun) violation(kind, format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.extra = append(r.extra, ledgerViolation{kind: kind, text: fmt.Sprintf(format, args...)})
}

func (r *chaosRun) addCancel(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cancels = append(r.cancels, f)
}

func chaosRunSeed(t *testing.T, seed uint64, mosq bool) {
	ignore := goleak.IgnoreCurrent()
	var base runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&base)

	r := &chaosRun{
		t:             t,
		seed:          seed,
		rng:           rand.New(rand.NewPCG(seed, 0)),
		led:           newLedger(fmt.Sprintf("chaos%d", seed), chaosTopic),
		closeCalled:   make(chan struct{}),
		closeReturned: make(chan struct{}),
		readersStop:   make(chan struct{}),
	}
	r.start = r.led.start
	r.led.allowRefusals() // the conductor makes embedded brokers refuse for a while
	r.build(mosq && r.rng.IntN(2) == 0)
	t.Logf("seed %d: brokers %s; client %s; %d result channels; %d publishers, up to %d requests; Close after %v",
		seed, r.describeBrokers(), strings.Join(r.opts, " "), len(r.chans), r.npub, r.maxRequests, r.closeAfter)

	// The heap is sampled while the run goes on.
	var peak atomic.Uint64
	samplerDone := make(chan struct{})
	stopSampler := make(chan struct{})
	go func() {
		defer close(samplerDone)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			select {
			case <-tick.C:
			case <-stopSampler:
				return
			}
		}
	}()

	var readers sync.WaitGroup
	for i, ch := range r.chans {
		readers.Add(1)
		go func() {
			defer readers.Done()
			r.read(ch, rand.New(rand.NewPCG(seed, 1000+uint64(i))))
		}()
	}
	var events sync.WaitGroup
	if r.rng.IntN(3) > 0 {
		events.Add(1)
		go func() { // reads every event until Close closes the channel
			defer events.Done()
			n := 0
			for range r.c.Events() {
				n++
			}
			r.note("%d events read", n)
		}()
	} else {
		r.note("events left unread")
	}
	var late sync.WaitGroup // readers of channels their publisher gave up waiting on
	var pubs sync.WaitGroup
	busy := make([]atomic.Pointer[string], r.npub)
	for p := range r.npub {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			r.publisher(p, rand.New(rand.NewPCG(seed, uint64(p)+1)), &busy[p], &late)
		}()
	}

	closeTook := r.conduct()

	// Every call made after Close returns at once, and every call made before has its
	// outcome by now (Close gave what was left FAILED or TIMEOUT).
	pubsDone := make(chan struct{})
	go func() {
		pubs.Wait()
		close(pubsDone)
	}()
	timer := time.NewTimer(10 * time.Second)
	pubsEnded := true
	select {
	case <-pubsDone:
	case <-timer.C:
		pubsEnded = false
		for p := range busy {
			if s := busy[p].Load(); s != nil && *s != "" {
				r.violation("call-hung", "publisher %d is still in %s 10 s after Close returned", p, *s)
			}
		}
	}
	timer.Stop()
	// Every outcome was decided by Close; delivery to channels read at once is immediate.
	if missing := r.led.waitResults(time.Now().Add(2 * time.Second)); missing > 0 {
		r.note("%d requests still without a result 2 s after the publishers ended", missing)
	}
	close(r.readersStop)
	readers.Wait()
	if pubsEnded { // a publisher still calling may yet start a late reader
		late.Wait()
	}
	events.Wait()

	r.quiesce()
	r.teardown()
	close(stopSampler)
	<-samplerDone
	r.mu.Lock()
	for _, f := range r.cancels {
		f()
	}
	r.cancels = nil
	r.mu.Unlock()

	// Close must return within the drain timeout plus the grace, however many callers
	// are still calling.
	if closeTook > r.drain+chaosGrace {
		r.violation("close-slow", "Close took %v with a drain timeout of %v (bound: drain timeout + %v)",
			closeTook.Round(time.Millisecond), r.drain, chaosGrace)
	}
	// Per channel, what waits for a Result channel nobody reads is bounded (§3 Flow
	// control): once WithMaxQueued results (or a share of it) wait for one channel, calls
	// naming it wait. Until Close is called nobody reads a lazy channel, so the results
	// due by then (outcome due half a second before, call returned) sit in it or wait for
	// it. Beyond the threshold (at most maxQueued) come at most the requests the client
	// had already accepted (maxQueued waiting plus one window in flight) and, per
	// publisher, one call that passed the threshold check in a race and one that gave up
	// waiting (its FAILED result waits too). A refused call (its context ended while it
	// waited, an invalid message) must return, and its result must go somewhere: past a
	// quarter over the threshold it waits the publish timeout first, so each publisher
	// adds at most one more result per publish timeout (documented on PublishAsync).
	for _, c := range r.chans {
		if c.kind != chanLazy || r.closeCalledAt.IsZero() {
			continue
		}
		due := r.led.dueBefore(c.ch, r.closeCalledAt, 500*time.Millisecond)
		perPublisher := 2 + int(r.closeCalledAt.Sub(r.start)/r.publishTimeout)
		bound := 2*max(r.maxQueued, 2) + r.window + perPublisher*r.npub
		r.note("unread channel %q: %d results due when Close was called (capacity %d, bound %d)", c.name, due, cap(c.ch), bound)
		if waiting := due - cap(c.ch); waiting > bound {
			r.violation("unbounded-backlog", "%d results were due for the unread channel %q (capacity %d) when Close was called; "+
				"with WithMaxQueued %d, a window of %d, %d publishers and a publish timeout of %v at most %d may wait for one channel",
				waiting, c.name, cap(c.ch), r.maxQueued, r.window, r.npub, r.publishTimeout, bound)
		}
	}
	// Heap: the ledger keeps every payload (P bytes) and every receipt's topic; the
	// client may hold, for requests it has not answered yet, their payloads (the caller's
	// own slices, not copies), a PublishResult per undelivered result and two batch
	// buffers of 256 KiB per connection; each embedded broker copies a payload for its
	// subscription's queue and for mochi's in-flight store, and mosquitto is another
	// process. So the payloads count at most about 4 times (ledger, one copy per broker
	// that received the message, a DUP resend), and everything else is small and fixed:
	// 32 MiB covers mochi's and the client's buffers and the race detector's own
	// allocations (measured peaks on the code of this writing: 1–11 MiB, about twice
	// the payloads). A client that kept what it has answered, or a backlog
	// nobody bounds, shows as a peak beyond that.
	bound := uint64(32<<20) + 4*uint64(r.payloadBytes.Load())
	if p := peak.Load(); p > base.HeapAlloc && p-base.HeapAlloc > bound {
		r.violation("heap", "the heap peaked at %d MiB above its level before the run; bound %d MiB for %d payload bytes",
			(p-base.HeapAlloc)>>20, bound>>20, r.payloadBytes.Load())
	}
	// Goroutines: everything the run started has ended, and so must the client's.
	if err := goleak.Find(ignore); err != nil {
		r.violation("goroutines", "goroutines left after Close and the teardown: %v", err)
	}

	r.report(closeTook, peak.Load()-min(peak.Load(), base.HeapAlloc))
}

// build makes the world: brokers, proxies, subscribers, channels and the client.
func (r *chaosRun) build(withMosquitto bool) {
	t := r.t
	for _, name := range []string{"A", "B"} {
		opts := []mdtest.Option{mdtest.WithAllowToken(allowToken)}
		rm := []uint16{4, 16, 64, 256, mdtest.DefaultReceiveMaximum}[r.rng.IntN(5)]
		opts = append(opts, mdtest.WithReceiveMaximum(rm))
		name += fmt.Sprintf("(rm%d)", rm)
		r.window = max(r.window, int(rm))
		srv, err := mdtest.NewServer(opts...)
		if err != nil {
			t.Fatal(err)
		}
		sub, err := srv.Subscribe(chaosTopic + "#")
		if err != nil {
			t.Fatal(err)
		}
		b := &chaosBroker{name: name[:1], desc: name, emb: srv, sub: sub, direct: srv.TCPAddr()}
		r.led.subscriber("sub-"+b.name, b.name)
		r.brokers = append(r.brokers, b)
	}
	a, b := r.brokers[0], r.brokers[1]
	r.addLive(a.emb.WSAddr(), a)
	r.addLive("tcp://"+r.proxy("pA", hostPort(a.emb.TCPAddr()), a, false).px.Addr(), a)
	r.addLive(b.emb.TCPAddr(), b)
	r.addLive("ws://"+r.proxy("pB", hostPort(b.emb.WSAddr()), b, false).px.Addr()+"/mqtt", b)
	if withMosquitto {
		cfg := mosquittotest.Config{
			Users: map[string]string{"pub": allowToken, "sub": subPassword},
			// No limit on what mosquitto queues for a slow subscriber: with its default
			// (1000) it drops acknowledged messages, which would be its loss.
			Extra: "max_queued_messages 0\n",
		}
		if r.rng.IntN(2) == 0 {
			cfg.MaxInflight = 100
		}
		r.window = max(r.window, max(cfg.MaxInflight, 20))
		desc := fmt.Sprintf("M(mosquitto, max_inflight %d", max(cfg.MaxInflight, 20))
		if r.rng.IntN(2) == 0 {
			// Announced as Maximum Packet Size: the larger messages are too large for M
			// alone, also when they were first written to another server.
			cfg.Extra += "max_packet_size 16000\n"
			desc += ", max_packet_size 16000"
		}
		mq := mosquittotest.Start(t, cfg)
		m := &chaosBroker{name: "M", desc: desc + ")", mq: mq, direct: mq.TCPAddr()}
		m.msub = mq.Subscribe(t, "sub", subPassword, chaosTopic+"#")
		r.led.subscriber("sub-M", "M")
		r.brokers = append(r.brokers, m)
		r.addLive(mq.WSAddr(), m)
		r.addLive("tcp://"+r.proxy("pM", mq.TCPHostPort(), m, false).px.Addr(), m)
	}
	hole := r.proxy("hole", hostPort(a.emb.TCPAddr()), nil, true)
	hole.px.Stall()
	r.hole = "tcp://" + hole.px.Addr()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.dead = "tcp://" + ln.Addr().String()
	ln.Close()

	// Subscribers' receipts go to the ledger as they come, until teardown closes them.
	for _, b := range r.brokers {
		name := "sub-" + b.name
		r.subReaders.Add(1)
		go func() {
			defer r.subReaders.Done()
			if b.sub != nil {
				for m := range b.sub.Messages() {
					r.led.receipt(name, m.Topic, m.Payload)
				}
				return
			}
			for m := range b.msub.Messages() {
				r.led.receipt(name, m.Topic, m.Payload)
			}
		}()
	}

	// Result channels.
	r.chans = append(r.chans, &chaosChan{name: "shared", ch: make(chan mdclient.PublishResult, []int{16, 256, 1024}[r.rng.IntN(3)]), kind: chanFast})
	if r.rng.IntN(3) > 0 {
		r.chans = append(r.chans, &chaosChan{name: "unbuffered", ch: make(chan mdclient.PublishResult), kind: chanFast})
	}
	if r.rng.IntN(3) > 0 {
		r.chans = append(r.chans, &chaosChan{name: "slow", ch: make(chan mdclient.PublishResult, []int{1, 4}[r.rng.IntN(2)]), kind: chanSlow})
	}
	if r.rng.IntN(3) > 0 {
		r.chans = append(r.chans, &chaosChan{name: "lazy", ch: make(chan mdclient.PublishResult, []int{0, 8}[r.rng.IntN(2)]), kind: chanLazy})
	}

	// The client.
	r.drain = []time.Duration{0, 100 * time.Millisecond, 500 * time.Millisecond, time.Second, 1500 * time.Millisecond}[r.rng.IntN(5)]
	r.publishTimeout = []time.Duration{50 * time.Millisecond, 300 * time.Millisecond, time.Second, 3 * time.Second}[r.rng.IntN(4)]
	connectTimeout := []time.Duration{300 * time.Millisecond, time.Second}[r.rng.IntN(2)]
	r.maxRequests = []int64{300, 1500, 3000}[r.rng.IntN(3)]
	r.closeAfter = 200*time.Millisecond + time.Duration(r.rng.IntN(2300))*time.Millisecond
	r.npub = 2 + r.rng.IntN(4)
	opts := []mdclient.Option{
		mdclient.WithUsername("pub"),
		mdclient.WithDrainTimeout(r.drain),
		mdclient.WithPublishTimeout(r.publishTimeout),
		mdclient.WithConnectTimeout(connectTimeout),
		mdclient.WithKeepAlive(time.Second),
		mdclient.WithReconnectTimeInterval(20 * time.Millisecond),
		mdclient.WithReconnectMaxDelay(200 * time.Millisecond),
	}
	r.opts = append(r.opts, fmt.Sprintf("drain=%v publishTimeout=%v connectTimeout=%v keepAlive=1s", r.drain, r.publishTimeout, connectTimeout))
	r.maxQueued = mdclient.DefaultMaxQueued
	if r.rng.IntN(2) == 0 {
		r.maxQueued = []int{2, 16, 256}[r.rng.IntN(3)]
		opts = append(opts, mdclient.WithMaxQueued(r.maxQueued))
		r.opts = append(r.opts, fmt.Sprintf("maxQueued=%d", r.maxQueued))
	}
	if r.rng.IntN(3) == 0 {
		n := []int{1, 8, 32}[r.rng.IntN(3)]
		opts = append(opts, mdclient.WithMaxInflight(n))
		r.opts = append(r.opts, fmt.Sprintf("maxInflight=%d", n))
		r.window = min(r.window, n)
	}
	if r.rng.IntN(2) == 0 {
		n := 1 + r.rng.IntN(8)
		opts = append(opts, mdclient.WithEventBuffer(n))
		r.opts = append(r.opts, fmt.Sprintf("eventBuffer=%d", n))
	}
	if r.rng.IntN(2) == 0 {
		r.log = newLogRecorder()
		opts = append(opts, mdclient.WithLogger(r.log.Logger()))
		r.opts = append(r.opts, "logger")
	}
	r.c = mdclient.NewClient(opts...)
	r.c.SetEntitlementToken(allowToken)
	list := r.serverList()
	if err := r.c.SetServers(list); err != nil {
		t.Fatalf("seed %d: SetServers(%q): %v", r.seed, list, err)
	}
	r.opts = append(r.opts, fmt.Sprintf("servers=%q", list))
}

func (r *chaosRun) addLive(addr string, b *chaosBroker) {
	r.live = append(r.live, chaosServer{addr: addr, broker: b})
	r.led.server(addr, b.name)
}

func (r *chaosRun) proxy(name, target string, b *chaosBroker, blackhole bool) *chaosProxy {
	px, err := faultproxy.New(target)
	if err != nil {
		r.t.Fatal(err)
	}
	p := &chaosProxy{name: name, px: px, broker: b, blackhole: blackhole}
	r.proxies = append(r.proxies, p)
	return p
}

func (r *chaosRun) describeBrokers() string {
	var parts []string
	for _, b := range r.brokers {
		parts = append(parts, b.desc)
	}
	return strings.Join(parts, ",")
}

// serverList draws a server list: one or two live servers, now and then a standby, the
// dead address or the black hole listed first.
func (r *chaosRun) serverList() []string {
	pick := func() string { return r.live[r.rng.IntN(len(r.live))].addr }
	switch r.rng.IntN(6) {
	case 0:
		return []string{pick()}
	case 1:
		return []string{r.dead, pick()}
	case 2:
		return []string{r.hole, pick()}
	case 3:
		return []string{pick(), pick()}
	case 4:
		return []string{"100 " + pick(), "0 " + pick()}
	default:
		return []string{r.dead, r.hole, pick()}
	}
}

// read takes results from one channel into the ledger until readersStop. A slow channel
// is read with a pause after each result and a lazy one not at all until Close is called;
// from then on every channel is read at once, as the contract asks of a caller who wants
// every result (the client may give up on a channel nobody reads for about a second after
// Close).
func (r *chaosRun) read(c *chaosChan, rng *rand.Rand) {
	if c.kind == chanLazy {
		select {
		case <-r.closeCalled:
		case <-r.readersStop:
			return
		}
	}
	for {
		select {
		case res := <-c.ch:
			r.led.result(c.name, c.ch, res)
		case <-r.readersStop:
			return
		}
		if c.kind != chanSlow {
			continue
		}
		select {
		case <-r.closeCalled:
		default:
			pause := time.NewTimer(time.Duration(1+rng.IntN(5)) * time.Millisecond)
			select {
			case <-pause.C:
			case <-r.closeCalled:
			case <-r.readersStop:
			}
			pause.Stop()
		}
	}
}

// Publishing modes.
const (
	modeShared     = iota // PublishAsync naming one of the run's channels
	modeOwn               // PublishAsync with a nil Result: the client's own channel
	modeUnbuffered        // PublishAsync naming a fresh unbuffered channel, read after the call
	modePublish           // Publish
	modeCount
)

var modeNames = [modeCount]string{"PublishAsync", "PublishAsync(own channel)", "PublishAsync(unbuffered, read after the call)", "Publish"}

// publisher makes requests until Close has returned, then a few more.
func (r *chaosRun) publisher(p int, rng *rand.Rand, busy *atomic.Pointer[string], late *sync.WaitGroup) {
	type own struct {
		e  *ledgerEntry
		ch <-chan mdclient.PublishResult
	}
	var owns []own
	defer func() {
		// The client's own channels hold their one result: read them now.
		deadline := time.NewTimer(5 * time.Second)
		defer deadline.Stop()
		for _, o := range owns {
			select {
			case res := <-o.ch:
				r.led.result("own", nil, res)
			case <-deadline.C:
				return
			}
		}
	}()
	// Most publishers are paced so that the run's requests spread until Close (by then
	// about maxRequests), a few call as fast as they can.
	var pace *time.Ticker
	if rng.IntN(5) > 0 {
		d := time.Duration(float64(r.closeAfter) * float64(r.npub) / float64(r.maxRequests) * (0.5 + 1.5*rng.Float64()))
		pace = time.NewTicker(max(d, 50*time.Microsecond))
		defer pace.Stop()
	}
	after := rng.IntN(8) // calls after Close has returned
	if p == 0 {
		after += 2
	}
	for {
		closed := r.isClosed.Load()
		if closed {
			if after == 0 {
				return
			}
			after--
		} else if r.requests.Load() >= r.maxRequests {
			<-r.closeReturned // the budget is spent: wait for Close, then call again
			continue
		}
		r.call(p, r.requests.Add(1), rng, closed, busy, late, func(e *ledgerEntry, ch <-chan mdclient.PublishResult) {
			owns = append(owns, own{e, ch})
		})
		if pace != nil && !closed {
			select {
			case <-pace.C:
			case <-r.closeReturned:
			}
		}
	}
}

// call makes one request.
func (r *chaosRun) call(p int, n int64, rng *rand.Rand, closed bool, busy *atomic.Pointer[string], late *sync.WaitGroup, keep func(*ledgerEntry, <-chan mdclient.PublishResult)) {
	m := mdclient.Message{Closure: fmt.Sprintf("s%d-p%d-%d", r.seed, p, n)}
	invalid := false
	switch x := rng.IntN(100); {
	case x < 4:
		invalid = true
		m.Subject = []string{"", chaosTopic + "+", chaosTopic + "#", chaosTopic + "nul\x00x", chaosTopic + "tab\tx",
			chaosTopic + "nel\u0085x", chaosTopic + "del\x7fx", chaosTopic + "bad\xffutf8", chaosTopic + "nonchar\ufffex"}[rng.IntN(9)]
	case x < 12:
		m.Subject = fmt.Sprintf("lonely/p%d", p) // no subscriber
	default:
		m.Subject = fmt.Sprintf("%sp%d/%d", chaosTopic, p, n%4)
	}
	pad := rng.IntN(200)
	switch x := rng.IntN(100); {
	case x < 5:
		pad = 4000 + rng.IntN(28000)
	case x < 30:
		pad = 200 + rng.IntN(3800)
	}
	m.Content = r.led.payload(m.Closure, pad)
	r.payloadBytes.Add(int64(len(m.Content)))
	if rng.IntN(2) == 0 {
		m.QoS = mdclient.QoSStandard
	}

	ctx, ctxDesc, lifetime, due := r.context(rng)
	mode := rng.IntN(100)
	switch {
	case mode < 55:
		mode = modeShared
	case mode < 70:
		mode = modeOwn
	case mode < 80:
		mode = modeUnbuffered
	default:
		mode = modePublish
	}
	var ch chan mdclient.PublishResult
	how := modeNames[mode]
	switch mode {
	case modeShared:
		c := r.chans[rng.IntN(len(r.chans))]
		ch = c.ch
		how += "(" + c.name + ")"
	case modeUnbuffered:
		ch = make(chan mdclient.PublishResult)
	}
	select {
	case <-r.closeCalled:
		if closed {
			how += " after Close"
		} else {
			how += " during Close"
		}
	default:
	}
	how += ", ctx " + ctxDesc
	doing := fmt.Sprintf("%s for closure %q", how, m.Closure)
	busy.Store(&doing) // cleared once the API call has returned
	e := r.led.add(&m, ledgerRequest{how: how, ch: ch, invalid: invalid, ctxDone: ctx.Err() != nil, after: closed, due: due})
	switch mode {
	case modePublish:
		st, err := r.c.Publish(ctx, m)
		busy.Store(nil)
		r.led.published(e, st, err)
	case modeOwn:
		ret := r.c.PublishAsync(ctx, mdclient.PublishRequest{Message: m})
		busy.Store(nil)
		r.led.returned(e, ret)
		keep(e, ret)
	case modeShared:
		ret := r.c.PublishAsync(ctx, mdclient.PublishRequest{Message: m, Result: ch})
		busy.Store(nil)
		r.led.returned(e, ret)
	case modeUnbuffered:
		ret := r.c.PublishAsync(ctx, mdclient.PublishRequest{Message: m, Result: ch})
		busy.Store(nil)
		r.led.returned(e, ret)
		// Read the channel after the call: here, until the outcome is due (by the
		// context's end or the publish timeout, or by Close's end), then, or at once
		// after Close, from a goroutine of its own until the readers stop.
		limit := max(lifetime, r.publishTimeout) + r.drain + chaosGrace + 3*time.Second
		if !closed {
			timer := time.NewTimer(limit)
			defer timer.Stop()
			select {
			case res := <-ch:
				r.led.result("unbuffered-own", ch, res)
				return
			case <-timer.C:
				r.note("closure %q: no result on its unbuffered channel %v after the call", m.Closure, limit)
			}
		}
		late.Add(1)
		go func() {
			defer late.Done()
			select {
			case res := <-ch:
				r.led.result("unbuffered-own", ch, res)
			case <-r.readersStop:
			}
		}()
	}
}

// context draws a request's context: its description, its lifetime (0 when it has no
// deadline of its own) and when the request's outcome is due at the latest.
func (r *chaosRun) context(rng *rand.Rand) (context.Context, string, time.Duration, time.Time) {
	now := time.Now()
	timeout := func(d time.Duration) (context.Context, string, time.Duration, time.Time) {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		r.addCancel(cancel)
		return ctx, d.String(), d, now.Add(d)
	}
	switch x := rng.IntN(100); {
	case x < 5:
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		return ctx, "already cancelled", 0, now
	case x < 15:
		return timeout(time.Duration(1+rng.IntN(100)) * time.Microsecond)
	case x < 40:
		return timeout(time.Duration(1+rng.IntN(100)) * time.Millisecond)
	case x < 60:
		return timeout(time.Second + time.Duration(rng.IntN(2000))*time.Millisecond)
	case x < 70:
		d := time.Duration(1+rng.IntN(300)) * time.Millisecond
		ctx, cancel := context.WithCancelCause(context.Background())
		tm := time.AfterFunc(d, func() { cancel(errChaosCancel) })
		r.addCancel(func() {
			tm.Stop()
			cancel(errChaosCancel)
		})
		return ctx, "cancelled after " + d.String(), d, now.Add(d)
	default:
		return context.Background(), "none (publish timeout)", 0, now.Add(r.publishTimeout)
	}
}

// conduct injects faults at random until Close, which it calls at a random moment, has
// returned, and returns how long Close took.
func (r *chaosRun) conduct() time.Duration {
	closeAt := r.start.Add(r.closeAfter)
	var closeDone chan time.Duration
	var closeStarted time.Time
	released := false
	for {
		step := time.NewTimer(time.Duration(20+r.rng.IntN(230)) * time.Millisecond)
		select {
		case <-step.C:
		case took := <-closeDone:
			step.Stop()
			r.isClosed.Store(true)
			close(r.closeReturned)
			r.note("Close returned after %v", took.Round(time.Millisecond))
			if err := r.c.SetServers(r.serverList()); !errors.Is(err, mdclient.ErrClosed) {
				r.note("SetServers after Close returned %v", err)
			}
			return took
		}
		now := time.Now()
		r.housekeeping(now)
		if closeDone == nil && !now.Before(closeAt) {
			closeDone = make(chan time.Duration, 1)
			closeStarted = now
			r.closeCalledAt = now
			r.note("Close called (%d requests so far)", r.requests.Load())
			close(r.closeCalled)
			go func() {
				t0 := time.Now()
				if err := r.c.Close(); err != nil {
					r.note("Close: %v", err)
				}
				closeDone <- time.Since(t0)
			}()
		}
		if closeDone != nil && !released && now.Sub(closeStarted) > r.drain+chaosGrace+10*time.Second {
			// Close hangs: let every fault go so that the run can end and report it.
			released = true
			r.note("Close has not returned after %v: releasing every fault", now.Sub(closeStarted).Round(time.Millisecond))
			r.releaseFaults()
			continue
		}
		if closeDone != nil && released && now.Sub(closeStarted) > r.drain+chaosGrace+40*time.Second {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			r.t.Fatalf("seed %d: Close has not returned after %v, even with every fault released; goroutines:\n%s",
				r.seed, now.Sub(closeStarted).Round(time.Millisecond), buf)
		}
		if !released {
			r.fault(now)
		}
	}
}

// housekeeping ends the faults whose time is up.
func (r *chaosRun) housekeeping(now time.Time) {
	for _, p := range r.proxies {
		if !p.resumeAt.IsZero() && !now.Before(p.resumeAt) {
			p.resumeAt = time.Time{}
			p.px.Resume()
			r.note("resume %s", p.name)
		}
	}
	for _, b := range r.brokers {
		if !b.refuseUntil.IsZero() && !now.Before(b.refuseUntil) {
			b.refuseUntil = time.Time{}
			if !b.dead {
				b.emb.SetReasonCode(chaosTopic+"#", 0)
				r.note("%s accepts again", b.name)
			}
		}
		if !b.continueAt.IsZero() && !now.Before(b.continueAt) {
			b.continueAt, b.stoppedSince = time.Time{}, time.Time{}
			b.mq.Continue()
			r.note("SIGCONT %s", b.name)
		}
		if !b.restartAt.IsZero() && !now.Before(b.restartAt) {
			b.restartAt, b.dead = time.Time{}, false
			b.mq.Restart(r.t)
			r.note("restarted %s", b.name)
		}
	}
}

// fault injects one fault, or none.
func (r *chaosRun) fault(now time.Time) {
	var faultable []*chaosProxy
	for _, p := range r.proxies {
		if !p.blackhole && p.resumeAt.IsZero() {
			faultable = append(faultable, p)
		}
	}
	var mq *chaosBroker
	for _, b := range r.brokers {
		if b.mq != nil && !b.dead && b.stoppedSince.IsZero() {
			mq = b
		}
	}
	switch x := r.rng.IntN(100); {
	case x < 20:
		if len(faultable) > 0 {
			p := faultable[r.rng.IntN(len(faultable))]
			p.px.Cut()
			r.note("cut %s", p.name)
		}
	case x < 35:
		if len(faultable) > 0 {
			p := faultable[r.rng.IntN(len(faultable))]
			d := time.Duration(50+r.rng.IntN(1500)) * time.Millisecond
			p.px.Stall()
			p.resumeAt = now.Add(d)
			r.note("stall %s for %v", p.name, d)
		}
	case x < 43:
		if len(faultable) > 0 {
			p := faultable[r.rng.IntN(len(faultable))]
			d := time.Duration(100+r.rng.IntN(2000)) * time.Millisecond
			rate := (4 + r.rng.IntN(60)) << 10
			p.px.Throttle(rate)
			p.resumeAt = now.Add(d)
			r.note("throttle %s to %d KiB/s for %v", p.name, rate>>10, d)
		}
	case x < 63:
		list := r.serverList()
		err := r.c.SetServers(list)
		r.note("SetServers(%q): %v", list, err)
		if err != nil && !errors.Is(err, mdclient.ErrClosed) {
			r.violation("set-servers", "SetServers(%q) with valid entries returned %v", list, err)
		}
	case x < 66:
		bad := []string{r.live[0].addr, "tcp://nowhere:x"}
		err := r.c.SetServers(bad)
		r.note("SetServers(%q): %v", bad, err)
		if !errors.Is(err, mdclient.ErrInvalidServer) && !errors.Is(err, mdclient.ErrClosed) {
			r.violation("set-servers", "SetServers(%q) returned %v, want an error wrapping ErrInvalidServer", bad, err)
		}
	case x < 69:
		b := r.brokers[1] // B: A stays, so that the black hole keeps its target
		if !b.dead {
			b.dead = true
			r.led.lost(b.name, now, "closed")
			b.emb.Close()
			r.note("closed broker %s", b.name)
		}
	case x < 74:
		if mq != nil {
			from := now
			if !mq.stoppedSince.IsZero() {
				from = mq.stoppedSince
			}
			r.led.lost(mq.name, from, "SIGKILL")
			mq.mq.Kill()
			mq.dead = true
			d := time.Duration(200+r.rng.IntN(800)) * time.Millisecond
			mq.restartAt = now.Add(d)
			r.note("SIGKILL %s (restart in %v)", mq.name, d)
		}
	case x < 80:
		if mq != nil {
			d := time.Duration(100+r.rng.IntN(1400)) * time.Millisecond
			mq.mq.Stop()
			mq.stoppedSince, mq.continueAt = now, now.Add(d)
			r.note("SIGSTOP %s for %v", mq.name, d)
		}
	case x < 83:
		if mq != nil {
			r.led.lost(mq.name, now, "restart")
			mq.mq.Restart(r.t)
			r.note("restarted %s (SIGKILL and start)", mq.name)
		}
	case x < 90:
		// A failure code, never a denied one: every server lets the token publish, and a
		// message refused after it was resent must read TIMEOUT (it may be published).
		b := r.brokers[r.rng.IntN(2)]
		if !b.dead && b.refuseUntil.IsZero() {
			code := [...]byte{0x80, 0x97, 0x99}[r.rng.IntN(3)]
			d := time.Duration(100+r.rng.IntN(2000)) * time.Millisecond
			b.emb.SetReasonCode(chaosTopic+"#", code)
			b.refuseUntil = now.Add(d)
			r.note("%s refuses with 0x%02x for %v", b.name, code, d)
		}
	}
}

// releaseFaults ends every stall, throttle and SIGSTOP (the black hole's too).
func (r *chaosRun) releaseFaults() {
	for _, p := range r.proxies {
		p.resumeAt = time.Time{}
		p.px.Resume()
	}
	for _, b := range r.brokers {
		if !b.stoppedSince.IsZero() {
			b.mq.Continue()
			b.stoppedSince, b.continueAt = time.Time{}, time.Time{}
		}
		b.restartAt = time.Time{} // a killed mosquitto stays dead
		if !b.refuseUntil.IsZero() {
			b.refuseUntil = time.Time{}
			if !b.dead {
				b.emb.SetReasonCode(chaosTopic+"#", 0) // the quiescence markers must get through
			}
		}
	}
}

// quiesce waits until the subscribers have received everything they are going to.
//
// The quiescence rule. Absence at a subscriber ("no FAILED message reached one") and
// presence ("every OK reached one") are only decidable once nothing more can arrive, so:
//
//  1. the client is closed (its connections are gone), every publisher has ended and
//     every result is in;
//  2. every fault is released — stalled and throttled proxies resume, a SIGSTOPped
//     mosquitto continues — so that bytes the client handed to a connection and that
//     still sit in a proxy or a socket buffer are delivered: a message the client called
//     FAILED must not be hidden by a path that never recovers;
//  3. every proxy has closed every connection through it (the client closed its end, so
//     each ends once its bytes are forwarded; after 3 s a proxy is cut);
//  4. a marker is published to each live broker by a fresh client, straight to its TCP
//     listener, and received by that broker's subscriber (retried for up to 8 s, as a
//     restarted mosquitto's subscriber needs a moment to resubscribe);
//  5. then every subscriber stays idle for chaosQuiet (300 ms), within at most 5 s.
//
// A broker handles one connection's packets in order and routes a publish before (or,
// mochi, just after) acknowledging it, and the connections that carried the client's
// messages were closed before the marker was even sent; the idle time covers a broker
// that routes the marker before it has finished an older connection's last packets.
// No sleep: every wait is on a channel with a deadline.
func (r *chaosRun) quiesce() {
	r.releaseFaults()
	deadline := time.Now().Add(3 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	for _, p := range r.proxies {
		for p.px.Conns() > 0 && time.Now().Before(deadline) {
			<-tick.C
		}
		if n := p.px.Conns(); n > 0 {
			r.note("quiesce: %s still had %d connections after 3 s: cut", p.name, n)
			p.px.Cut()
		}
	}
	tick.Stop()

	markDeadline := time.Now().Add(8 * time.Second)
	for _, b := range r.brokers {
		if b.dead {
			continue
		}
		sub := "sub-" + b.name
		if !r.marker(b, sub, markDeadline) {
			r.note("quiesce: the marker did not reach %s", sub)
		}
	}

	idle := time.NewTimer(chaosQuiet)
	defer idle.Stop()
	limit := time.NewTimer(5 * time.Second)
	defer limit.Stop()
	for {
		select {
		case <-r.led.Received():
			if !idle.Stop() {
				<-idle.C
			}
			idle.Reset(chaosQuiet)
		case <-idle.C:
			return
		case <-limit.C:
			r.note("quiesce: the subscribers were never idle for %v within 5 s", chaosQuiet)
			return
		}
	}
}

// marker publishes b's quiescence marker until b's subscriber has received it.
func (r *chaosRun) marker(b *chaosBroker, sub string, deadline time.Time) bool {
	c := mdclient.NewClient(mdclient.WithUsername("pub"), mdclient.WithConnectTimeout(time.Second))
	defer c.Close()
	c.SetEntitlementToken(allowToken)
	if err := c.SetServers([]string{b.direct}); err != nil {
		r.t.Fatal(err)
	}
	payload := r.led.markerPayload(sub)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := c.Publish(ctx, mdclient.Message{Subject: chaosTopic + "marker", Content: payload, Closure: "marker"})
		cancel()
		if r.led.awaitMarker(sub, time.Second) {
			return true
		}
		r.note("quiesce: marker to %s: %s %v", b.name, st, err)
	}
	return false
}

// teardown closes everything the run started.
func (r *chaosRun) teardown() {
	for _, b := range r.brokers {
		if b.msub != nil {
			b.msub.Close()
			b.mq.Kill()
		}
	}
	for _, p := range r.proxies {
		p.px.Close()
	}
	for _, b := range r.brokers {
		if b.emb != nil {
			b.emb.Close() // closes its subscription, which ends its reader
		}
	}
	r.subReaders.Wait()
}

// report fails the run with every broken promise, grouped by kind, and logs the run.
func (r *chaosRun) report(closeTook time.Duration, heapPeak uint64) {
	t := r.t
	vs := append(r.led.check(), r.extra...)
	t.Logf("seed %d: %s; %d OK excused (acknowledged by a broker just before it was killed or closed); Close took %v; heap peak +%d MiB",
		r.seed, r.led.counts(), r.led.excused(), closeTook.Round(time.Millisecond), heapPeak>>20)
	if len(vs) == 0 {
		return
	}
	failViolations(t, fmt.Sprintf("seed %d: ", r.seed), vs)
	r.mu.Lock()
	t.Logf("seed %d: timeline:\n  %s", r.seed, strings.Join(r.timeline, "\n  "))
	r.mu.Unlock()
	if r.log != nil {
		t.Logf("seed %d: the client's last log records:%s", r.seed, r.log.Tail(30))
	}
	t.Logf("seed %d: rerun with: go test -race -run 'TestChaos$' -chaos.seed=%d -v .", r.seed, r.seed)
}

// The reproductions: one small deterministic test for each kind of violation TestChaos
// reports on the code of its time. Each names the contract sentence it checks.

// reproWorld is an embedded broker with a subscriber on chaos/# whose receipts go to a
// ledger, and optionally a fault proxy in front of its TCP listener.
type reproWorld struct {
	led *ledger
	srv *mdtest.Server
	px  *faultproxy.Proxy // nil unless asked for
	// addr is the address clients use: the proxy's when there is one.
	addr string
}

func newReproWorld(t *testing.T, proxied bool) *reproWorld {
	t.Helper()
	w := &reproWorld{led: newLedger("repro-"+t.Name(), chaosTopic), srv: embedded(t)}
	w.led.subscriber("sub", "S")
	w.led.watchEmbedded(t, "sub", w.srv, chaosTopic+"#")
	w.addr = w.srv.TCPAddr()
	if proxied {
		w.px = newFaultProxy(t, hostPort(w.srv.TCPAddr()))
		w.addr = "tcp://" + w.px.Addr()
	}
	w.led.server(w.addr, "S")
	return w
}

// message registers a request for subject and returns its message.
func (w *reproWorld) message(closure, subject string, pad int, qos mdclient.QoS, req ledgerRequest) (mdclient.Message, *ledgerEntry) {
	m := mdclient.Message{Subject: subject, Closure: closure, QoS: qos}
	m.Content = w.led.payload(closure, pad)
	return m, w.led.add(&m, req)
}

// flush publishes a marker on c and waits for the subscriber to receive it: one client's
// messages are handled by the broker in order, so whatever c wrote before the marker has
// reached the subscriber by then, or never will.
func (w *reproWorld) flush(t *testing.T, c *mdclient.Client) {
	t.Helper()
	payload := w.led.markerPayload("sub")
	st, err := c.Publish(ctxTimeout(t, 10*time.Second), mdclient.Message{Subject: chaosTopic + "marker", Content: payload})
	if st != mdclient.NotifyPublishOK {
		t.Fatalf("marker: %s %v", st, err)
	}
	if !w.led.awaitMarker("sub", 10*time.Second) {
		t.Fatal("the subscriber did not receive the marker")
	}
}

// TestChaosReproExpiredInBatchSent: "a request whose context ends while it sits in a
// batch not yet handed over is taken out of it, or counted as written" and "FAILED means
// not published" (§3). While the connection's writer is blocked on a stalled path with a
// large message, a small one is encoded into the next batch; its context ends there (it
// is reported FAILED wrapping ErrTimeout), and once the path recovers the batch goes out
// with it anyway.
func TestChaosReproExpiredInBatchSent(t *testing.T) {
	w := newReproWorld(t, true)
	c := newClient(t, allowToken, []string{w.addr}, mdclient.WithDrainTimeout(5*time.Second))
	w.flush(t, c)
	w.px.Stall()
	before := c.Stats().BytesWritten
	const bigSize = 16 << 20 // more than the socket buffers of the stalled path hold
	big, bigEntry := w.message("big", chaosTopic+"big", bigSize, mdclient.QoSGuaranteed, ledgerRequest{how: "PublishAsync"})
	bigCh := c.PublishAsync(ctxTimeout(t, 60*time.Second), mdclient.PublishRequest{Message: big})
	// The big batch is with the writer once it is counted as written.
	if !eventually(10*time.Second, func() bool { return c.Stats().BytesWritten >= before+bigSize }) {
		t.Fatalf("the big message was never handed to the connection")
	}
	small, _ := w.message("small", chaosTopic+"small", 10, mdclient.QoSGuaranteed, ledgerRequest{how: "PublishAsync"})
	ctx, cancelSmall := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancelSmall()
	res := <-c.PublishAsync(ctx, mdclient.PublishRequest{Message: small})
	w.led.result("small", nil, res)
	t.Logf("the small message, whose context ended while the writer was busy: %s", describeResult(res))
	w.px.Resume()
	w.led.result("big", nil, <-bigCh)
	w.led.awaitReceipt(bigEntry, 30*time.Second)
	w.flush(t, c)
	failViolations(t, "", w.led.check())
}

// TestChaosReproClosedInFlightSent: "NOTIFY_PUBLISH_TIMEOUT whenever its bytes may have
// left the client and no acknowledgement came: ... Close ended with it unacknowledged
// (wrapping ErrClosed)" (§3). A message written to a stalled path is unacknowledged when
// the drain timeout ends; Close reports it FAILED wrapping ErrClosed, and once the path
// recovers the broker publishes it.
func TestChaosReproClosedInFlightSent(t *testing.T) {
	w := newReproWorld(t, true)
	c := openClient(t, allowToken, []string{w.addr}, mdclient.WithDrainTimeout(100*time.Millisecond))
	w.flush(t, c)
	w.px.Stall()
	before := c.Stats().BytesWritten
	m, e := w.message("in-flight", chaosTopic+"inflight", 10, mdclient.QoSGuaranteed, ledgerRequest{how: "PublishAsync"})
	ch := c.PublishAsync(ctxTimeout(t, 30*time.Second), mdclient.PublishRequest{Message: m})
	if !eventually(10*time.Second, func() bool { return c.Stats().BytesWritten > before }) {
		t.Fatal("the message was never handed to the connection")
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	res := <-ch
	w.led.result("in-flight", nil, res)
	t.Logf("written, unacknowledged at Close: %s", describeResult(res))
	if res.Status != mdclient.NotifyPublishTimeout {
		t.Errorf("a message handed to the connection and unacknowledged when Close ended got %s, want TIMEOUT wrapping ErrClosed", describeResult(res))
	}
	w.px.Resume()
	if w.led.awaitReceipt(e, 5*time.Second) {
		t.Logf("and the subscriber received it")
	}
	failViolations(t, "", w.led.check())
}

// TestChaosReproStandardLostFailed: "NOTIFY_PUBLISH_TIMEOUT whenever ... the connection
// was lost with a QoSStandard message in flight" and "QoSStandard messages not yet
// acknowledged get TIMEOUT at once (they may have arrived)" (§3). A server reads the
// message and drops the connection (DISCONNECT 0x8B) before acknowledging it.
func TestChaosReproStandardLostFailed(t *testing.T) {
	fake, err := fakebrokerAfterPublish([]byte{0xE0, 0x01, 0x8B}) // DISCONNECT, server shutting down
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	c := newClient(t, allowToken, []string{fake.Addr()}, mdclient.WithReconnectTimeInterval(time.Second))
	st, err := c.Publish(ctxTimeout(t, 10*time.Second), mdclient.Message{Subject: "a/b", Content: []byte("x"), QoS: mdclient.QoSStandard})
	t.Logf("QoSStandard, read by the server, connection dropped before the ack: %s %v", st, err)
	select {
	case s := <-fake.Sessions():
		if s.PacketID == 0 {
			t.Fatalf("the fake server never read the PUBLISH: %+v", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no session on the fake server")
	}
	if st != mdclient.NotifyPublishTimeout {
		t.Errorf("got %s (%v); want TIMEOUT: the server had the message when the connection was lost", st, err)
	} else if !errors.Is(err, mdclient.ErrTimeout) {
		t.Errorf("TIMEOUT with an error that does not wrap ErrTimeout: %v", err)
	}
}

// fakebrokerAfterPublish starts a fake server that reads the client's first PUBLISH and
// then sends frame.
func fakebrokerAfterPublish(frame []byte) (*fakebroker.Server, error) {
	return fakebroker.Start(fakebroker.Script{
		When:  fakebroker.AfterPublish,
		Frame: func(uint16) []byte { return frame },
	})
}
