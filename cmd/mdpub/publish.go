package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mdclient/mdclient"
	"github.com/mdclient/mdclient/codec"
	"github.com/mdclient/mdclient/mdtest"
)

// embeddedToken is the allow-token of the embedded broker when --token is not given.
const embeddedToken = "mdpub-allow"

// drainTimeout is the client's drain timeout: after SIGINT or SIGTERM, the longest mdpub
// waits for the results of the messages sent before the client ends them wrapping
// ErrClosed (NOTIFY_PUBLISH_TIMEOUT if written, else NOTIFY_PUBLISH_FAILED). A variable only so that tests can shorten it.
var drainTimeout = mdclient.DefaultDrainTimeout

// statuses are the five outcomes in the order reports show them.
var statuses = [...]mdclient.Status{
	mdclient.NotifyPublishOK,
	mdclient.NotifyPublishNoSubscriber,
	mdclient.NotifyPublishDenied,
	mdclient.NotifyPublishFailed,
	mdclient.NotifyPublishTimeout,
}

func statusIndex(s mdclient.Status) int {
	for i, st := range statuses {
		if st == s {
			return i
		}
	}
	return 3 // an unknown status counts as failed
}

// gate counts the messages the producers hand to the clients and stops them: by a
// producer itself (end of input, --count reached) or by the result loop (--duration, a
// signal). Once closed, the count is final: every message counted gets a result to wait
// for.
type gate struct {
	limit int // 0: none

	mu     sync.Mutex
	n      int
	closed bool
	done   chan struct{} // closed with the gate
}

func newGate(limit int) *gate { return &gate{limit: limit, done: make(chan struct{})} }

// admit counts one more message, or reports false when the gate is closed. Admitting the
// last message --count allows closes the gate.
func (g *gate) admit() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.n++
	if g.limit > 0 && g.n >= g.limit {
		g.closeLocked()
	}
	return true
}

// close stops admitting and returns how many messages were admitted.
func (g *gate) close() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closeLocked()
	return g.n
}

// admitted returns how many messages were admitted so far.
func (g *gate) admitted() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.n
}

func (g *gate) closeLocked() {
	if !g.closed {
		g.closed = true
		close(g.done)
	}
}

// tracker remembers when each message awaiting its result was handed to the client.
type tracker interface {
	// done returns the latency's origin, in nanoseconds since the stream's start, of the
	// message whose result carries closure, and the index of its client, and forgets it;
	// -1 for a closure it does not know.
	done(closure string) (sentAt int64, client int)
}

// slot is where a generated message awaiting its result is remembered.
type slot struct {
	index   int32
	name    string // the closure: index·clients + client, in decimal
	sentAt  int64  // the latency's origin, ns since the start; written by the producer, read by the result loop after the result (the client orders the two)
	content []byte // the message's own content, with --payload-header; else nil
}

// slots tracks one client's generated stream without an allocation per message: a
// message takes a free slot, made the first time it is needed, and its result gives it
// back. At most cap(tokens) slots are taken at once: the client's window.
type slots struct {
	tokens chan struct{} // a taken slot holds one
	client int           // the client's index, from 0
	stride int           // the number of clients

	mu   sync.Mutex
	free []int32
	all  []*slot // by index; a slot never moves
}

func newSlots(window, client, clients int) *slots {
	return &slots{tokens: make(chan struct{}, window), client: client, stride: clients}
}

// take returns a free slot, waiting for one while the window is full, or false once stop
// is closed.
func (s *slots) take(stop <-chan struct{}) (*slot, bool) {
	select {
	case s.tokens <- struct{}{}:
	case <-stop:
		return nil, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.free); n > 0 {
		i := s.free[n-1]
		s.free = s.free[:n-1]
		return s.all[i], true
	}
	i := int32(len(s.all))
	sl := &slot{index: i, name: strconv.Itoa(int(i)*s.stride + s.client)}
	s.all = append(s.all, sl)
	return sl, true
}

// put gives back a slot that was taken.
func (s *slots) put(sl *slot) {
	s.mu.Lock()
	s.free = append(s.free, sl.index)
	s.mu.Unlock()
	<-s.tokens // never blocks: the slot holds a token
}

// get returns slot i, or nil when there is none.
func (s *slots) get(i int) *slot {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i < 0 || i >= len(s.all) {
		return nil
	}
	return s.all[i]
}

// streamTracker tracks the generated streams of all clients: a closure names its client
// and slot.
type streamTracker []*slots

func (tr streamTracker) done(closure string) (int64, int) {
	id, err := strconv.Atoi(closure)
	if err != nil || id < 0 {
		return -1, 0
	}
	k := id % len(tr)
	s := tr[k]
	sl := s.get(id / len(tr))
	if sl == nil {
		return -1, 0
	}
	t := sl.sentAt
	s.put(sl)
	return t, k
}

// lines tracks the messages read from standard input, whose closures are "line-N".
type lines struct {
	free chan struct{} // one token per message that may await its result

	mu     sync.Mutex
	sentAt map[string]int64
}

func newLines(n int) *lines {
	l := &lines{free: make(chan struct{}, n), sentAt: map[string]int64{}}
	for range n {
		l.free <- struct{}{}
	}
	return l
}

func (l *lines) add(closure string, t int64) {
	l.mu.Lock()
	l.sentAt[closure] = t
	l.mu.Unlock()
}

func (l *lines) done(closure string) (int64, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.sentAt[closure]
	if !ok {
		return -1, 0
	}
	delete(l.sentAt, closure)
	l.free <- struct{}{} // never blocks: there is room for every token
	return t, 0
}

// promBounds are the upper bounds, in nanoseconds, of the buckets of --metrics' latency
// histogram.
var promBounds = [...]int64{
	100e3, 250e3, 500e3, 1e6, 2.5e6, 5e6, 10e6, 25e6, 50e6, 100e6, 250e6, 500e6,
	1e9, 2.5e9, 5e9, 10e9, 30e9, 60e9,
}

// tally is what the result loop learns; it owns it.
type tally struct {
	counts    [len(statuses)]uint64
	firstErr  [len(statuses)]string
	hist      *latencies
	buckets   [len(promBounds) + 1]uint64 // latencies per bucket of promBounds, the last above them all
	total     uint64
	perClient []uint64 // results by client index
}

func newTally(clients int) *tally {
	return &tally{hist: newLatencies(), perClient: make([]uint64, clients)}
}

func (t *tally) add(r mdclient.PublishResult, latency time.Duration, client int) {
	i := statusIndex(r.Status)
	t.counts[i]++
	t.total++
	t.perClient[client]++
	if r.Err != nil && t.firstErr[i] == "" {
		t.firstErr[i] = r.Err.Error()
	}
	if latency >= 0 {
		t.hist.record(latency)
		b := 0
		for b < len(promBounds) && int64(latency) > promBounds[b] {
			b++
		}
		t.buckets[b]++
	}
}

// outcomeLine is one line of --stdin's output.
type outcomeLine struct {
	Closure string `json:"closure"`
	Status  string `json:"status"`
	Server  string `json:"server"`
	Error   string `json:"error"`
}

// watcher reads a client's events until Close closes their channel.
type watcher struct {
	up   chan struct{} // closed at the first NotifyServerUp
	all  chan struct{} // closed at the want-th NotifyServerUp: every connection of the client is up
	exit chan struct{} // closed when the channel is drained

	mu      sync.Mutex
	ups     int
	downs   int
	lastErr error // of the latest NotifyServerDown
}

func watch(c *mdclient.Client, want int) *watcher {
	w := &watcher{up: make(chan struct{}), all: make(chan struct{}), exit: make(chan struct{})}
	go func() {
		defer close(w.exit)
		for ev := range c.Events() {
			w.mu.Lock()
			switch ev.Type {
			case mdclient.NotifyServerUp:
				w.ups++
				if w.ups == 1 {
					close(w.up)
				}
				if w.ups == want {
					close(w.all)
				}
			case mdclient.NotifyServerDown:
				w.downs++
				w.lastErr = ev.Err
			}
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *watcher) counts() (ups, downs int, lastErr error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ups, w.downs, w.lastErr
}

// pubClient is one of the --clients independent clients.
type pubClient struct {
	index int    // from 0; its number (%i, the header's) is index+1
	id    string // its MQTT client id (%c); connection i adds "-i" with --connections
	c     *mdclient.Client
	w     *watcher
	subj  clientSubject
}

// clientIDs returns n client ids, "mdpub-" with 8 random hex digits shared by the run, a
// dash and the client's number.
func clientIDs(n int) []string {
	var b [4]byte
	rand.Read(b[:])
	prefix := "mdpub-" + hex.EncodeToString(b[:]) + "-"
	ids := make([]string, n)
	for i := range ids {
		ids[i] = prefix + strconv.Itoa(i+1)
	}
	return ids
}

// clientIDLen is the length of the longest id clientIDs(n) makes.
func clientIDLen(n int) int { return len("mdpub-12345678-") + len(strconv.Itoa(n)) }

// fleet is the run's clients.
type fleet []*pubClient

// stats adds up the clients' Stats; servers counts their live connections.
func (f fleet) stats() (st mdclient.Stats, servers int) {
	for _, pc := range f {
		s := pc.c.Stats()
		st.Accepted += s.Accepted
		st.OK += s.OK
		st.NoSubscriber += s.NoSubscriber
		st.Denied += s.Denied
		st.Timeout += s.Timeout
		st.Failed += s.Failed
		st.InFlight += s.InFlight
		st.Queued += s.Queued
		st.Undelivered += s.Undelivered
		st.Resent += s.Resent
		st.Reconnects += s.Reconnects
		st.BytesWritten += s.BytesWritten
		servers += len(s.Servers)
	}
	return st, servers
}

// downs adds up the server down events the clients reported.
func (f fleet) downs() int {
	n := 0
	for _, pc := range f {
		_, d, _ := pc.w.counts()
		n += d
	}
	return n
}

// close closes every client at once and waits for them and their watchers.
func (f fleet) close() {
	var wg sync.WaitGroup
	for _, pc := range f {
		wg.Go(func() {
			pc.c.Close()
			<-pc.w.exit
		})
	}
	wg.Wait()
}

// waitConnected waits until every connection of every client is up, for at most timeout.
// When that passes it goes on if every client has a connection up, and says so; otherwise
// it returns an exit code (and false).
func (f fleet) waitConnected(ctx context.Context, connections int, timeout time.Duration, errw io.Writer) (int, bool) {
	connect := time.NewTimer(timeout)
	defer connect.Stop()
	for _, pc := range f {
		select {
		case <-pc.w.all:
			continue
		case <-connect.C:
		case <-ctx.Done():
			fmt.Fprintln(errw, "mdpub: interrupted before a server was reached")
			return exitInterrupted, false
		}
		break
	}
	reached, up := 0, 0
	var why error
	for _, pc := range f {
		ups, _, err := pc.w.counts()
		if ups > 0 {
			reached++
		}
		up += min(ups, connections)
		if err != nil {
			why = err
		}
	}
	switch {
	case reached == len(f) && up == len(f)*connections:
		return 0, true
	case reached == len(f):
		fmt.Fprintf(errw, "mdpub: %d of %d connections up within %v; publishing on them\n", up, len(f)*connections, timeout)
		return 0, true
	}
	reason := "no answer"
	if why != nil {
		reason = why.Error()
	}
	if reached == 0 {
		fmt.Fprintf(errw, "mdpub: no server reachable within %v: %s\n", timeout, reason)
	} else {
		fmt.Fprintf(errw, "mdpub: %d of %d clients reached no server within %v: %s\n", len(f)-reached, len(f), timeout, reason)
	}
	return exitUsage, false
}

// publish runs the stream described by cfg and reports on it; it returns the exit code.
func publish(ctx context.Context, cfg config, e env) int {
	rep := newReporter(cfg, e)
	var ms *metricsServer
	if cfg.metrics != "" {
		var err error
		if ms, err = listenMetrics(cfg.metrics); err != nil {
			fmt.Fprintf(e.stderr, "mdpub: --metrics: %v\n", err)
			return exitUsage
		}
		defer ms.close()
	}
	servers := cfg.servers
	var embedded string
	if len(servers) == 0 {
		token := cfg.token
		if token == "" {
			token = embeddedToken
		}
		broker, err := mdtest.NewServer(mdtest.WithAllowToken(token))
		if err != nil {
			fmt.Fprintf(e.stderr, "mdpub: embedded broker: %v\n", err)
			return exitUsage
		}
		defer broker.Close()
		filter := cfg.tpl.filter()
		sub, err := broker.Subscribe(filter)
		if err != nil {
			fmt.Fprintf(e.stderr, "mdpub: embedded broker: %v\n", err)
			return exitUsage
		}
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			for range sub.Messages() {
			}
		}()
		defer func() { sub.Close(); <-drained }()
		servers, cfg.token = []string{broker.WSAddr()}, token
		embedded = fmt.Sprintf("embedded broker (also at %s), subscriber on %q", broker.TCPAddr(), filter)
	}

	opts := []mdclient.Option{
		mdclient.WithPublishTimeout(cfg.timeout),
		mdclient.WithConnectTimeout(cfg.connectTimeout),
		mdclient.WithDrainTimeout(drainTimeout),
		mdclient.WithConnections(cfg.connections),
	}
	if cfg.inflight > 0 {
		opts = append(opts, mdclient.WithMaxInflight(cfg.inflight))
	}
	if cfg.rate > 0 {
		// The producers keep the schedule; the client's limiter caps what a producer that
		// fell behind sends to catch up, as a broker's quota would want. Its burst lets the
		// schedule's own bursts (a millisecond's worth, see pacer) through. Latency counts
		// from the due time, so a wait in the limiter counts too.
		perClient := float64(cfg.rate) / float64(cfg.clients)
		opts = append(opts, mdclient.WithRateLimit(perClient, max(int(perClient/50), 10)))
	}
	ids := clientIDs(cfg.clients)
	clients := make(fleet, cfg.clients)
	for k := range clients {
		c := mdclient.NewClient(append(opts, mdclient.WithClientID(ids[k]))...)
		c.SetEntitlementToken(cfg.token)
		clients[k] = &pubClient{index: k, id: ids[k], c: c, w: watch(c, cfg.connections), subj: cfg.tpl.forClient(k+1, ids[k])}
	}
	var closed chan struct{} // closed when the Close begun on an interrupt returns
	defer func() {
		clients.close()
		if closed != nil {
			<-closed
		}
	}()
	for _, pc := range clients {
		if err := pc.c.SetServers(servers); err != nil {
			fmt.Fprintf(e.stderr, "mdpub: %v\n", err)
			return exitUsage
		}
	}
	if code, ok := clients.waitConnected(ctx, cfg.connections, cfg.connectTimeout, e.stderr); !ok {
		return code
	}
	g := newGate(cfg.count)
	var src *metricsSource
	if ms != nil {
		// Scrapes wait for the result loop from now on, which begins at once.
		src = newMetricsSource(clients, g)
		ms.serve(src)
	}
	rep.begin(servers, embedded, ms.url())

	// At most cfg.window results per client are outstanding (a message takes a slot or
	// token that only its result gives back). With room for as many (up to a bound) the
	// clients seldom have to hold one back; the loop below reads until the last.
	results := make(chan mdclient.PublishResult, min(max(4096, cfg.window*cfg.clients), 1<<16))
	start := time.Now()
	var tr tracker
	var prodErr error // the reader's; read only once producerExit is closed
	producerExit := make(chan struct{})
	if cfg.stdin {
		l := newLines(cfg.window)
		tr = l
		go func() {
			defer close(producerExit)
			prodErr = readLines(e.stdin, clients[0], cfg, g, l, start, results)
		}()
	} else {
		st := make(streamTracker, len(clients))
		var wg sync.WaitGroup
		for k, pc := range clients {
			st[k] = newSlots(cfg.window, k, len(clients))
			wg.Go(func() { generate(pc, cfg, g, st[k], start, results) })
		}
		tr = st
		go func() {
			defer close(producerExit)
			wg.Wait()
		}()
	}

	var stopAt <-chan time.Time
	if cfg.duration > 0 {
		t := time.NewTimer(cfg.duration)
		defer t.Stop()
		stopAt = t.C
	}
	var tick <-chan time.Time
	if rep.every > 0 {
		t := time.NewTicker(rep.every)
		defer t.Stop()
		tick = t.C
	}
	var snapshots chan chan loopSnapshot
	if src != nil {
		snapshots = src.requests
	}

	var out *bufio.Writer
	var enc *json.Encoder
	if cfg.stdin {
		out = bufio.NewWriterSize(e.stdout, 64<<10)
		enc = json.NewEncoder(out)
		enc.SetEscapeHTML(false)
	}
	t := newTally(len(clients))
	total := -1 // known once the gate is closed
	stoppedEarly, interrupted := false, false
	var tooLarge error // the first result's, when it says the messages exceed the server's Maximum Packet Size
	gateDone, ctxDone := g.done, ctx.Done()
	for total < 0 || int(t.total) < total {
		select {
		case r := <-results:
			now := time.Since(start)
			latency := time.Duration(-1)
			sent, k := tr.done(r.Closure)
			if sent >= 0 {
				latency = now - time.Duration(sent)
			}
			if t.total == 0 && !cfg.stdin && errors.Is(r.Err, mdclient.ErrMessageTooLarge) {
				// Every message has --size bytes: none would fit. Stop sending and wait
				// only for those already sent, which fail as fast.
				tooLarge = r.Err
				total, stoppedEarly = g.close(), true
			}
			t.add(r, latency, k)
			if enc != nil {
				line := outcomeLine{Closure: r.Closure, Status: string(r.Status), Server: r.Server}
				if r.Err != nil {
					line.Error = r.Err.Error()
				}
				enc.Encode(line)
				if len(results) == 0 {
					out.Flush()
				}
			}
		case <-gateDone:
			total, gateDone = g.close(), nil
		case <-stopAt:
			total, stopAt, stoppedEarly = g.close(), nil, true
		case <-ctxDone:
			total, ctxDone, stoppedEarly, interrupted = g.close(), nil, true, true
			rep.stopping(total-int(t.total), drainTimeout)
			// Close waits up to the drain timeout for the results of the messages sent
			// and ends the others wrapping ErrClosed, so the wait is bounded.
			closed = make(chan struct{})
			go func() {
				defer close(closed)
				clients.close()
			}()
		case <-tick:
			st, _ := clients.stats()
			rep.progress(time.Since(start), st)
		case reply := <-snapshots:
			reply <- t.snapshot()
		}
	}
	elapsed := time.Since(start)
	if src != nil {
		src.finish(t.snapshot())
	}
	if out != nil {
		out.Flush()
	}
	var readErr error
	if !cfg.stdin || !stoppedEarly {
		<-producerExit
		readErr = prodErr
	} else {
		// A stdin reader stopped early may be blocked reading; it stops at its next line,
		// or with the process.
		select {
		case <-producerExit:
			readErr = prodErr
		default:
		}
	}
	if tooLarge != nil && !interrupted {
		rep.clear()
		fmt.Fprintf(e.stderr, "mdpub: --size %d is too large for the server's Maximum Packet Size: %v\n", cfg.size, tooLarge)
		return exitUsage
	}
	st, up := clients.stats()
	code := exitOK
	if t.counts[0] != t.total {
		code = exitNotOK
	}
	if readErr != nil {
		fmt.Fprintf(e.stderr, "mdpub: reading standard input: %v\n", readErr)
		code = max(code, exitNotOK)
	}
	rep.summary(summaryOf(cfg, servers, embedded != "", t, elapsed, st, up, clients.downs(), interrupted))
	if interrupted {
		return exitInterrupted
	}
	return code
}

// filler returns size bytes of a-z.
func filler(size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}

// generate publishes cfg.size-byte messages on pc until the gate closes. With --rate, the
// client's share of the schedule is every cfg.clients-th message of the run, from its
// index: message j of client k is due at start + (j·clients + k)/rate.
func generate(pc *pubClient, cfg config, g *gate, s *slots, start time.Time, results chan mdclient.PublishResult) {
	shared := filler(cfg.size)
	startUnix := start.UnixNano()
	var p pacer
	defer p.stop()
	var subject []byte
	ctx := context.Background() // each message has the publish timeout; stopping the stream does not cut them short
	// Closed loop with --count: each client publishes its own share, so that the client
	// that starts first does not take a whole window's worth of a short stream.
	share := -1
	if cfg.rate == 0 && cfg.count > 0 {
		share = cfg.count / cfg.clients
		if pc.index < cfg.count%cfg.clients {
			share++
		}
	}
	for j := 0; j != share; j++ {
		due := time.Duration(-1)
		if cfg.rate > 0 {
			due = dueAt(j*cfg.clients+pc.index, cfg.rate)
			if !p.wait(start.Add(due), g.done) {
				return
			}
		}
		sl, ok := s.take(g.done)
		if !ok {
			return
		}
		if !g.admit() {
			s.put(sl)
			return
		}
		origin := time.Since(start)
		if due >= 0 {
			// Open loop: from when the message was due, so that the time it waited to be
			// sent counts; from the call if it went up to a millisecond early.
			origin = min(origin, due)
		}
		sl.sentAt = int64(origin)
		content := shared
		seq := uint64(j + 1)
		if cfg.payloadHeader {
			if sl.content == nil {
				sl.content = filler(cfg.size)
			}
			content = sl.content
			putHeader(content, seq, startUnix+int64(origin), uint32(pc.index+1))
		}
		m := cfg.message(content, sl.name)
		m.Subject = pc.subj.subject(&subject, seq)
		pc.c.PublishAsync(ctx, mdclient.PublishRequest{Message: m, Result: results})
	}
}

// dueAt is when message i of the run is due at rate messages per second.
func dueAt(i, rate int) time.Duration {
	return time.Duration(float64(i) / float64(rate) * float64(time.Second))
}

// readLines publishes each line of r (without its line ending) on pc until the end of r
// or the gate closes. It returns a read error other than the end of input. With --rate,
// line n is due at start + (n-1)/rate plus the time spent so far waiting for input: a slow
// input delays the schedule, a slow server does not.
func readLines(r io.Reader, pc *pubClient, cfg config, g *gate, l *lines, start time.Time, results chan mdclient.PublishResult) error {
	defer g.close()
	br := bufio.NewReaderSize(r, 64<<10)
	var p pacer
	defer p.stop()
	var reading time.Duration // spent waiting for input
	var subject []byte
	ctx := context.Background()
	for n := 1; ; n++ {
		readStart := time.Now()
		line, err := readLine(br)
		reading += time.Since(readStart)
		if err != nil && (len(line) == 0 || !errors.Is(err, io.EOF)) {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		due := time.Duration(-1)
		if cfg.rate > 0 {
			due = dueAt(n-1, cfg.rate) + reading
			if !p.wait(start.Add(due), g.done) {
				return nil
			}
		}
		select {
		case <-l.free:
		case <-g.done:
			return nil
		}
		if !g.admit() {
			l.free <- struct{}{}
			return nil
		}
		origin := time.Since(start)
		if due >= 0 {
			origin = min(origin, due)
		}
		closure := "line-" + strconv.Itoa(n)
		l.add(closure, int64(origin))
		m := cfg.message(line, closure)
		m.Subject = pc.subj.subject(&subject, uint64(n))
		pc.c.PublishAsync(ctx, mdclient.PublishRequest{Message: m, Result: results})
		if err != nil { // the last line, without a line ending
			return nil
		}
	}
}

// maxLine is the most of a line --stdin keeps: one byte more than any MQTT packet holds,
// so that a longer line is still refused as too large (FAILED, wrapping
// ErrMessageTooLarge) without its whole length in memory; the rest is read and dropped.
var maxLine = codec.MaxPacketSize + 1

// readLine reads one line with its ending, as bufio.Reader.ReadBytes does (a new slice:
// the message keeps it until written), keeping at most maxLine bytes of it.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	b := append([]byte(nil), line[:min(len(line), maxLine)]...)
	for err == bufio.ErrBufferFull {
		line, err = br.ReadSlice('\n')
		if room := maxLine - len(b); room > 0 {
			b = append(b, line[:min(len(line), room)]...)
		}
	}
	return b, err
}

// pacer waits for messages' due times. It waits only when a message is a millisecond
// early or more (timers are not finer), so that fast rates go in bursts of at most a
// millisecond's worth; a producer behind schedule catches up without waiting.
type pacer struct {
	timer *time.Timer
}

// wait returns when due comes (true) or stop is closed (false).
func (p *pacer) wait(due time.Time, stop <-chan struct{}) bool {
	d := time.Until(due)
	if d < time.Millisecond {
		select {
		case <-stop:
			return false
		default:
			return true
		}
	}
	if p.timer == nil {
		p.timer = time.NewTimer(d)
	} else {
		p.timer.Reset(d)
	}
	select {
	case <-p.timer.C:
		return true
	case <-stop:
		return false
	}
}

func (p *pacer) stop() {
	if p.timer != nil {
		p.timer.Stop()
	}
}

// describeQoS names a QoS as --qos does.
func describeQoS(q mdclient.QoS) string {
	v := qos(q)
	return v.String()
}

// joinServers lists server entries for a report.
func joinServers(servers []string) string { return strings.Join(servers, ", ") }
