package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mdclient/mdclient"
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

// gate counts the messages a producer hands to the client and stops it: by the producer
// itself (end of input, --count reached) or by the result loop (--duration, a signal).
// Once closed, the count is final: every message counted gets a result to wait for.
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

func (g *gate) closeLocked() {
	if !g.closed {
		g.closed = true
		close(g.done)
	}
}

// tracker remembers when each message awaiting its result was handed to the client.
type tracker interface {
	// done returns the send time, in nanoseconds since the stream's start, of the message
	// whose result carries closure, and forgets it.
	done(closure string) int64
}

// slots tracks a generated stream without an allocation per message: a message takes a
// free slot, whose number (pre-formatted) is its closure.
type slots struct {
	free   chan int32 // slots not in use
	sentAt []int64    // by slot; written by the producer, read by the result loop after the result (the client orders the two)
	names  []string   // by slot: the closure
}

func newSlots(n int) *slots {
	s := &slots{free: make(chan int32, n), sentAt: make([]int64, n), names: make([]string, n)}
	for i := range n {
		s.free <- int32(i)
		s.names[i] = strconv.Itoa(i)
	}
	return s
}

func (s *slots) done(closure string) int64 {
	i, err := strconv.Atoi(closure)
	if err != nil || i < 0 || i >= len(s.sentAt) {
		return -1
	}
	t := s.sentAt[i]
	s.free <- int32(i) // never blocks: there is room for every slot
	return t
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

func (l *lines) done(closure string) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.sentAt[closure]
	if !ok {
		return -1
	}
	delete(l.sentAt, closure)
	l.free <- struct{}{} // never blocks: there is room for every token
	return t
}

// tally is what the result loop learns; it owns it.
type tally struct {
	counts   [len(statuses)]uint64
	firstErr [len(statuses)]string
	hist     *latencies
	total    uint64
}

func (t *tally) add(r mdclient.PublishResult, latency time.Duration) {
	i := statusIndex(r.Status)
	t.counts[i]++
	t.total++
	if r.Err != nil && t.firstErr[i] == "" {
		t.firstErr[i] = r.Err.Error()
	}
	if latency >= 0 {
		t.hist.record(latency)
	}
}

// outcomeLine is one line of --stdin's output.
type outcomeLine struct {
	Closure string `json:"closure"`
	Status  string `json:"status"`
	Server  string `json:"server"`
	Error   string `json:"error"`
}

// watcher reads the client's events until Close closes their channel.
type watcher struct {
	up   chan struct{} // closed at the first NotifyServerUp
	exit chan struct{} // closed when the channel is drained

	mu      sync.Mutex
	ups     int
	downs   int
	lastErr error // of the latest NotifyServerDown
}

func watch(c *mdclient.Client) *watcher {
	w := &watcher{up: make(chan struct{}), exit: make(chan struct{})}
	go func() {
		defer close(w.exit)
		for ev := range c.Events() {
			w.mu.Lock()
			switch ev.Type {
			case mdclient.NotifyServerUp:
				if w.ups == 0 {
					close(w.up)
				}
				w.ups++
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

// publish runs the stream described by cfg and reports on it; it returns the exit code.
func publish(ctx context.Context, cfg config, e env) int {
	rep := newReporter(cfg, e)
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
		sub, err := broker.Subscribe(cfg.subject)
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
		embedded = fmt.Sprintf("embedded broker (also at %s), subscriber on %q", broker.TCPAddr(), cfg.subject)
	}

	opts := []mdclient.Option{
		mdclient.WithPublishTimeout(cfg.timeout),
		mdclient.WithConnectTimeout(cfg.connectTimeout),
		mdclient.WithDrainTimeout(drainTimeout),
	}
	if cfg.inflight > 0 {
		opts = append(opts, mdclient.WithMaxInflight(cfg.inflight))
	}
	if cfg.rate > 0 {
		// The client writes at the rate; the producer hands messages in on the same
		// schedule, so that none waits long in the client before its turn.
		opts = append(opts, mdclient.WithRateLimit(float64(cfg.rate), max(1, cfg.rate/100)))
	}
	c := mdclient.NewClient(opts...)
	c.SetEntitlementToken(cfg.token)
	w := watch(c)
	var closed chan struct{} // closed when the Close begun on an interrupt returns
	defer func() {
		c.Close()
		if closed != nil {
			<-closed
		}
		<-w.exit
	}()
	if err := c.SetServers(servers); err != nil {
		fmt.Fprintf(e.stderr, "mdpub: %v\n", err)
		return exitUsage
	}

	connect := time.NewTimer(cfg.connectTimeout)
	defer connect.Stop()
	select {
	case <-w.up:
	case <-connect.C:
		_, _, err := w.counts()
		why := "no answer"
		if err != nil {
			why = err.Error()
		}
		fmt.Fprintf(e.stderr, "mdpub: no server reachable within %v: %s\n", cfg.connectTimeout, why)
		return exitUsage
	case <-ctx.Done():
		fmt.Fprintln(e.stderr, "mdpub: interrupted before a server was reached")
		return exitInterrupted
	}
	rep.begin(servers, embedded)

	// At most cfg.window results are outstanding (a message takes a slot or token that only
	// its result gives back), so with room for as many the client never has to hold one
	// back: when Close ends the drain on an interrupt, every result is in the channel.
	results := make(chan mdclient.PublishResult, max(4096, cfg.window))
	g := newGate(cfg.count)
	start := time.Now()
	var tr tracker
	var prodErr error // the reader's; read only once producerExit is closed
	producerExit := make(chan struct{})
	if cfg.stdin {
		l := newLines(cfg.window)
		tr = l
		go func() {
			defer close(producerExit)
			prodErr = readLines(e.stdin, c, cfg, g, l, start, results)
		}()
	} else {
		s := newSlots(cfg.window)
		tr = s
		go func() {
			defer close(producerExit)
			generate(c, cfg, g, s, start, results)
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

	var out *bufio.Writer
	var enc *json.Encoder
	if cfg.stdin {
		out = bufio.NewWriterSize(e.stdout, 64<<10)
		enc = json.NewEncoder(out)
		enc.SetEscapeHTML(false)
	}
	t := tally{hist: newLatencies()}
	total := -1 // known once the gate is closed
	stoppedEarly, interrupted := false, false
	var tooLarge error // the first result's, when it says the messages exceed the server's Maximum Packet Size
	gateDone, ctxDone := g.done, ctx.Done()
	for total < 0 || int(t.total) < total {
		select {
		case r := <-results:
			now := time.Since(start)
			latency := time.Duration(-1)
			if sent := tr.done(r.Closure); sent >= 0 {
				latency = now - time.Duration(sent)
			}
			if t.total == 0 && !cfg.stdin && errors.Is(r.Err, mdclient.ErrMessageTooLarge) {
				// Every message has --size bytes: none would fit. Stop sending and wait
				// only for those already sent, which fail as fast.
				tooLarge = r.Err
				total, stoppedEarly = g.close(), true
			}
			t.add(r, latency)
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
				c.Close()
			}()
		case <-tick:
			rep.progress(time.Since(start), c.Stats())
		}
	}
	elapsed := time.Since(start)
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
	st := c.Stats()
	_, downs, _ := w.counts()
	code := exitOK
	if t.counts[0] != t.total {
		code = exitNotOK
	}
	if readErr != nil {
		fmt.Fprintf(e.stderr, "mdpub: reading standard input: %v\n", readErr)
		code = max(code, exitNotOK)
	}
	rep.summary(summaryOf(cfg, servers, embedded != "", &t, elapsed, st, downs, interrupted))
	if interrupted {
		return exitInterrupted
	}
	return code
}

// generate publishes cfg.size-byte messages until the gate closes.
func generate(c *mdclient.Client, cfg config, g *gate, s *slots, start time.Time, results chan mdclient.PublishResult) {
	content := make([]byte, cfg.size)
	for i := range content {
		content[i] = 'a' + byte(i%26)
	}
	p := newPacer(cfg.rate, start)
	defer p.stop()
	ctx := context.Background() // each message has the publish timeout; stopping the stream does not cut them short
	for seq := 0; ; seq++ {
		if !p.wait(seq, g.done) {
			return
		}
		var slot int32
		select {
		case slot = <-s.free:
		case <-g.done:
			return
		}
		if !g.admit() {
			s.free <- slot
			return
		}
		s.sentAt[slot] = int64(time.Since(start))
		c.PublishAsync(ctx, mdclient.PublishRequest{Message: cfg.message(content, s.names[slot]), Result: results})
	}
}

// readLines publishes each line of r (without its line ending) until the end of r or the
// gate closes. It returns a read error other than the end of input.
func readLines(r io.Reader, c *mdclient.Client, cfg config, g *gate, l *lines, start time.Time, results chan mdclient.PublishResult) error {
	defer g.close()
	br := bufio.NewReaderSize(r, 64<<10)
	p := newPacer(cfg.rate, start)
	defer p.stop()
	ctx := context.Background()
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if err != nil && (len(line) == 0 || !errors.Is(err, io.EOF)) {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		if !p.wait(n-1, g.done) {
			return nil
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
		closure := "line-" + strconv.Itoa(n)
		l.add(closure, int64(time.Since(start)))
		c.PublishAsync(ctx, mdclient.PublishRequest{Message: cfg.message(line, closure), Result: results})
		if err != nil { // the last line, without a line ending
			return nil
		}
	}
}

// pacer spaces messages rate per second apart, from start: message seq is due at
// start + seq/rate. A producer behind schedule catches up without waiting; one ahead
// waits only when it is a millisecond early or more, so that fast rates go in bursts.
type pacer struct {
	rate  int
	start time.Time
	timer *time.Timer
}

func newPacer(rate int, start time.Time) *pacer { return &pacer{rate: rate, start: start} }

// wait returns when message seq is due (true) or stop is closed (false).
func (p *pacer) wait(seq int, stop <-chan struct{}) bool {
	if p.rate <= 0 {
		return true
	}
	due := p.start.Add(time.Duration(float64(seq) / float64(p.rate) * float64(time.Second)))
	d := time.Until(due)
	if d < time.Millisecond {
		return true
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
