package mdclient_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mdclient/mdclient"
	"github.com/mdclient/mdclient/internal/faultproxy"
	"github.com/mdclient/mdclient/internal/mosquittotest"
	"github.com/mdclient/mdclient/mdtest"
)

// The test kit of the root package's tests:
//
//   - servers: embedded brokers, mosquitto, fault proxies, subscribers;
//   - clients: one connected for the test, contexts, both transports, Close with a limit;
//   - waiting: polling a condition, or re-checking it when a channel pings, until a deadline;
//   - outcomes and events: the status a call must end with, waiting for an event;
//   - results: collect (exactly one result per closure), a steady stream of publishes;
//   - the ledger: every request, result and receipt of a test, checked against the
//     contract's promises (exactly once, the FAILED/TIMEOUT rule, OK means published);
//   - logRecorder: a slog.Handler that keeps what the client logged.

// TestMain fails the package's run when a test leaves goroutines behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	// allowToken is the entitlement token the tests' servers let publish (for mosquitto,
	// the password of the user "pub").
	allowToken = "allow-token"
	// subPassword is the password of mosquitto's subscriber "sub".
	subPassword = "sub-secret"
)

// Servers.

// embedded starts an embedded broker that lets allowToken publish.
func embedded(t *testing.T) *mdtest.Server {
	t.Helper()
	s, err := mdtest.NewServer(mdtest.WithAllowToken(allowToken))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// subscribe attaches a subscriber for filter to srv, closed when the test ends.
func subscribe(t *testing.T, srv *mdtest.Server, filter string) *mdtest.Subscription {
	t.Helper()
	sub, err := srv.Subscribe(filter)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	return sub
}

// startMosquitto starts Debian's mosquitto with the publisher "pub" (password allowToken)
// allowed to write allowed/# and lonely/# only, and the subscriber "sub" reading allowed/#.
// Payloads above 1000 bytes are refused with a PUBACK failure code, packets above 4000
// bytes by the announced Maximum Packet Size.
func startMosquitto(t *testing.T) *mosquittotest.Broker {
	return mosquittotest.Start(t, mosquittotest.Config{
		Users: map[string]string{"pub": allowToken, "sub": subPassword},
		ACL:   "user pub\ntopic write allowed/#\ntopic write lonely/#\n\nuser sub\ntopic read allowed/#\n",
		Extra: "message_size_limit 1000\nmax_packet_size 4000\n",
	})
}

// mosquittoNode starts a mosquitto for the failover tests, with the publisher "pub"
// (password pubPassword) and the subscriber "sub" (password subPassword), no ACL, a
// Receive Maximum of 1000, and no limit on the messages it queues for a slow subscriber:
// with mosquitto's default (max_queued_messages 1000) a subscriber that falls behind
// loses messages that the publisher saw acknowledged, which would be mosquitto's loss,
// not the client's.
func mosquittoNode(t *testing.T, pubPassword string) *mosquittotest.Broker {
	t.Helper()
	return mosquittotest.Start(t, mosquittotest.Config{
		Users:       map[string]string{"pub": pubPassword, "sub": subPassword},
		MaxInflight: 1000,
		Extra:       "max_queued_messages 0\n",
	})
}

// newFaultProxy starts a fault proxy in front of target ("host:port"), closed when the
// test ends.
func newFaultProxy(t *testing.T, target string) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// hostPort strips the scheme and the path of a server address: "tcp://h:p" and
// "ws://h:p/mqtt" give "h:p".
func hostPort(addr string) string {
	_, hp, _ := strings.Cut(addr, "://")
	hp, _, _ = strings.Cut(hp, "/")
	return hp
}

// receivedUntilMarker reads sub until a message with payload marker arrives, and returns
// the payloads before it. A marker published on the same connection after the messages
// under test arrives after them: the broker routes one connection's publishes in order.
func receivedUntilMarker(t *testing.T, sub *mdtest.Subscription, marker string) map[string]int {
	t.Helper()
	got := map[string]int{}
	timeout := time.NewTimer(20 * time.Second)
	defer timeout.Stop()
	for {
		select {
		case m := <-sub.Messages():
			if string(m.Payload) == marker {
				return got
			}
			got[string(m.Payload)]++
		case <-timeout.C:
			t.Fatalf("the marker never arrived (%d messages before)", len(got))
			return nil
		}
	}
}

// Clients.

// newClient returns a client connected to servers, closed when the test ends.
func newClient(t *testing.T, token string, servers []string, opts ...mdclient.Option) *mdclient.Client {
	t.Helper()
	c := openClient(t, token, servers, opts...)
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

// openClient returns a client connected to servers, for a test that closes it itself.
func openClient(t *testing.T, token string, servers []string, opts ...mdclient.Option) *mdclient.Client {
	t.Helper()
	c := mdclient.NewClient(opts...)
	c.SetEntitlementToken(token)
	if err := c.SetServers(servers); err != nil {
		c.Close()
		t.Fatal(err)
	}
	return c
}

// ctxTimeout returns a context that ends after d, or when the test ends.
func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// transports runs f once over WebSocket and once over TCP.
func transports(t *testing.T, ws, tcp string, f func(t *testing.T, addr string)) {
	t.Run("ws", func(t *testing.T) { f(t, ws) })
	t.Run("tcp", func(t *testing.T) { f(t, tcp) })
}

// closeWithin closes c and reports how long Close took. If Close has not returned after
// limit, it reports false and calls release (which should unblock whatever Close waits
// for), then waits for Close without limit.
func closeWithin(t *testing.T, c *mdclient.Client, limit time.Duration, release func()) (time.Duration, bool) {
	t.Helper()
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("Close panicked: %v", p)
			}
		}()
		done <- c.Close()
	}()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	ok := true
	var err error
	select {
	case err = <-done:
	case <-timer.C:
		ok = false
		release()
		err = <-done
	}
	if err != nil {
		t.Errorf("Close: %v", err)
	}
	return time.Since(start), ok
}

// Waiting, on a deadline (never a sleep).

// eventually polls cond every few milliseconds until it holds or d has passed, and
// reports whether it held.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			return cond()
		}
	}
	return true
}

// untilPinged evaluates cond, and again each time ping fires, until it holds or d has
// passed; it reports whether it held.
func untilPinged(ping <-chan struct{}, d time.Duration, cond func() bool) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for !cond() {
		select {
		case <-ping:
		case <-timer.C:
			return cond()
		}
	}
	return true
}

// Outcomes and events.

// wantStatus fails the test unless a call ended with status want and an error that wraps
// sentinel (nil: no error).
func wantStatus(t *testing.T, st mdclient.Status, err error, want mdclient.Status, sentinel error) {
	t.Helper()
	if st != want {
		t.Fatalf("status %s (err %v), want %s", st, err, want)
	}
	if sentinel == nil {
		if err != nil {
			t.Fatalf("status %s with error %v", st, err)
		}
		return
	}
	if !errors.Is(err, sentinel) {
		t.Fatalf("error %v does not wrap %v", err, sentinel)
	}
}

// acknowledged reports whether a server acknowledged the message: OK or NO_SUBSCRIBER.
func acknowledged(st mdclient.Status) bool {
	return st == mdclient.NotifyPublishOK || st == mdclient.NotifyPublishNoSubscriber
}

// nextEvent reads c's events until one of type typ for server arrives (any server when
// server is ""), and returns it with the time it was read; false after d. seen lists the
// other events read meanwhile.
func nextEvent(c *mdclient.Client, typ mdclient.Status, server string, d time.Duration) (ev mdclient.Event, at time.Time, seen []string, ok bool) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case ev, open := <-c.Events():
			if !open {
				return ev, time.Time{}, append(seen, "(closed)"), false
			}
			if ev.Type == typ && (server == "" || ev.Server == server) {
				return ev, time.Now(), seen, true
			}
			seen = append(seen, fmt.Sprintf("%s %s %v", ev.Type, ev.Server, ev.Err))
		case <-timer.C:
			return mdclient.Event{}, time.Time{}, seen, false
		}
	}
}

// awaitEvent is nextEvent that fails the test when no such event comes within d.
func awaitEvent(t *testing.T, c *mdclient.Client, typ mdclient.Status, server string, d time.Duration) (mdclient.Event, time.Time) {
	t.Helper()
	ev, at, seen, ok := nextEvent(c, typ, server, d)
	if !ok {
		t.Fatalf("no %s for %q within %v; seen %v", typ, server, d, seen)
	}
	return ev, at
}

// Results.

// collect reads n results from ch, failing the test after d, and checks that every
// closure "0".."n-1" comes exactly once (with a ledger). pre are results of the n already
// taken from ch. The result of closure i is at index i.
func collect(t *testing.T, ch <-chan mdclient.PublishResult, n int, d time.Duration, pre ...mdclient.PublishResult) []mdclient.PublishResult {
	t.Helper()
	out := make([]mdclient.PublishResult, n)
	collectEach(t, ch, n, d, func(i int, r mdclient.PublishResult) { out[i] = r }, pre...)
	return out
}

// collectEach is collect that hands each result to each, with its closure's number, as
// it comes.
func collectEach(t *testing.T, ch <-chan mdclient.PublishResult, n int, d time.Duration, each func(int, mdclient.PublishResult), pre ...mdclient.PublishResult) {
	t.Helper()
	led := newLedger(t.Name(), "")
	led.expect(n)
	led.take(t, ch, n, d, func(e *ledgerEntry, r mdclient.PublishResult) { each(e.seq, r) }, pre...)
}

// noMore checks that no result beyond those expected is waiting on ch.
func noMore(t *testing.T, ch <-chan mdclient.PublishResult) {
	t.Helper()
	select {
	case r := <-ch:
		t.Errorf("a result beyond the requests: %+v", r)
	default:
	}
}

// streamUntilClosed publishes n messages of size bytes to subject on c from a goroutine,
// all with results on the returned channel, and returns a channel closed when the
// producer is done.
func streamUntilClosed(c *mdclient.Client, n, size int, subject string) (chan mdclient.PublishResult, chan struct{}) {
	results := make(chan mdclient.PublishResult, n)
	done := make(chan struct{})
	content := make([]byte, size) // shared and never modified, as the contract allows
	go func() {
		defer close(done)
		for i := range n {
			c.PublishAsync(context.Background(), mdclient.PublishRequest{Result: results,
				Message: mdclient.Message{Subject: subject, Content: content, Closure: fmt.Sprint(i)}})
		}
	}()
	return results, done
}

// stream publishes messages 0, 1, ... at a steady rate, all results to one channel. The
// closure of message i is a prefix and i. With a ledger, each request is registered with
// it just before the call and its payload names it (ledger.payload); without, the payload
// is i, 4 bytes big-endian.
type stream struct {
	sent   atomic.Int64       // requests handed to PublishAsync so far
	pause  chan chan struct{} // Pause → producer: hold until this channel is closed
	stop   chan struct{}      // closed to end the stream early
	done   chan struct{}      // closed when the producer has returned
	finish func()             // stops the producer and waits for it; idempotent
}

// startStream starts publishing n messages to topic (or until d has passed, when d > 0) at
// rate per second, bounded by ctx; led may be nil. When the test ends the producer is
// stopped, its requests' context cancelled (so that it cannot stay blocked in
// PublishAsync), and it is awaited.
func startStream(t *testing.T, c *mdclient.Client, ctx context.Context, led *ledger, topic, prefix string, rate float64, n int, d time.Duration, results chan mdclient.PublishResult) *stream {
	s := &stream{pause: make(chan chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	ctx, cancel := context.WithCancel(ctx)
	var once sync.Once
	s.finish = func() {
		once.Do(func() {
			close(s.stop)
			cancel()
		})
		<-s.done
	}
	t.Cleanup(s.finish) // cleanups run last-in first-out: before the client's Close
	publish := func(i int) {
		m := mdclient.Message{Subject: topic, Closure: prefix + strconv.Itoa(i)}
		if led == nil {
			m.Content = binary.BigEndian.AppendUint32(nil, uint32(i))
			c.PublishAsync(ctx, mdclient.PublishRequest{Message: m, Result: results})
			return
		}
		m.Content = led.payload(m.Closure, 0)
		e := led.add(&m, ledgerRequest{how: "PublishAsync", ch: results})
		led.returned(e, c.PublishAsync(ctx, mdclient.PublishRequest{Message: m, Result: results}))
	}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		start := time.Now()
		for i := 0; i < n; {
			if d > 0 && time.Since(start) >= d {
				return
			}
			due := min(n, int(time.Since(start).Seconds()*rate)+1)
			for ; i < due; i++ {
				publish(i)
				s.sent.Store(int64(i + 1))
			}
			select {
			case <-tick.C:
			case resume := <-s.pause:
				select {
				case <-resume:
				case <-s.stop:
					return
				}
				// Carry on at the same rate, without a burst to make up for the pause.
				start = time.Now().Add(-time.Duration(float64(i) / rate * float64(time.Second)))
			case <-s.stop:
				return
			}
		}
	}()
	return s
}

// Pause holds the producer between two requests and returns the function that lets it
// go on. It reports false if the stream has ended.
func (s *stream) Pause() (resume func(), ok bool) {
	ch := make(chan struct{})
	select {
	case s.pause <- ch:
		return func() { close(ch) }, true
	case <-s.done:
		return func() {}, false
	}
}

// The ledger.

// ledger records every request a test makes (each under a unique Closure), every result
// that comes back and every message a subscriber receives, and checks the contract's
// promises against them once the run is over (check):
//
//   - exactly one result per request: never zero, never two, and on the channel the request
//     named;
//   - every result's Err wraps the sentinel of its status: ErrFailed for FAILED, ErrTimeout
//     for TIMEOUT, ErrDenied, ErrNoSubscriber; nil for OK;
//   - FAILED means not published: no subscriber ever received a message whose result was
//     NOTIFY_PUBLISH_FAILED;
//   - OK means published: a subscriber of the server that answered received it, except for
//     messages that a broker may have lost itself (see lost);
//   - a QoSStandard message is never sent twice, so it reaches subscribers at most once;
//   - bad input is FAILED wrapping ErrInvalidMessage; a context already done when the call
//     is made sends nothing (FAILED); a call made after Close returned is FAILED wrapping
//     ErrClosed.
//
// Each message's payload names its request (payload), so a subscriber's receipt is matched
// to its request whatever the topic. All methods are safe for concurrent use.
//
// Tests that only need exactly-once use part of it (collect, take, onceViolations);
// TestChaos and the failover tests use all of it (check).
type ledger struct {
	tag     string // this run's mark at the start of every payload
	watched string // subjects with this prefix reach the subscribers of every broker
	// refusals: the servers may refuse a publish with a PUBACK failure code, so a FAILED
	// result may carry one instead of a sentinel (see allowRefusals).
	refusals bool
	start    time.Time // times are reported relative to it

	mu          sync.Mutex
	entries     map[string]*ledgerEntry // by closure
	order       []*ledgerEntry          // in registration order
	pending     int                     // entries without a result
	problems    []ledgerViolation       // found while recording
	servers     map[string]string       // server address (as the client names it) → broker
	subs        map[string]string       // subscriber → the broker it is attached to
	losses      []ledgerLoss
	markers     map[string]time.Time // subscriber → when it received its quiescence marker
	strays      int                  // receipts that are not this run's (other tags)
	receipts    int                  // receipts of this run's messages
	distinctAll int                  // requests received by some subscriber
	distinctBy  map[string]int       // subscriber → requests it received
	exempt      int                  // OK results check found unreceived but excused by a loss

	resultIn chan struct{} // capacity 1: a result was recorded
	received chan struct{} // capacity 1: a subscriber received something
}

// ledgerEntry is one request.
type ledgerEntry struct {
	closure  string
	seq      int
	subject  string
	qos      mdclient.QoS
	size     int
	how      string                      // how it was made: API, channel, context, for messages
	ch       chan mdclient.PublishResult // the Result channel it named; nil for Publish
	invalid  bool                        // the message is bad input
	ctxDone  bool                        // its context was done before the call
	after    bool                        // the call began after Close had returned
	calledAt time.Duration
	due      time.Time // see ledgerRequest.due
	// returnedAt is when PublishAsync returned (see returned); zero before.
	returnedAt time.Time
	results    []ledgerResult
	got        []ledgerReceipt
}

type ledgerResult struct {
	res mdclient.PublishResult
	at  time.Duration
	via string                      // the reader that took it
	ch  chan mdclient.PublishResult // the channel it arrived on; nil for Publish
}

type ledgerReceipt struct {
	sub, broker, topic string
	at                 time.Duration
}

// ledgerLoss says that broker may have lost messages it acknowledged at or after from: it
// was SIGKILLed (mosquitto acknowledges a QoS 1 message once queued for its subscribers,
// and what it still queues dies with it) or closed (the embedded broker routes to its
// subscriptions just after the PUBACK, and Close discards what they still queue).
type ledgerLoss struct {
	broker string
	from   time.Time
	why    string
}

// ledgerViolation is one broken promise: its kind (for grouping) and what happened.
type ledgerViolation struct {
	kind, text string
	group      string // how the request was made (its API, channel and timing), for grouping; may be ""
}

func (v ledgerViolation) String() string { return v.kind + ": " + v.text }

// ledgerPayloadSep separates the fields of a payload: tag, closure, padding.
const ledgerPayloadSep = '|'

// newLedger returns a ledger for a run marked tag, whose subscribers receive every subject
// that starts with watched.
func newLedger(tag, watched string) *ledger {
	return &ledger{
		tag:        tag,
		watched:    watched,
		start:      time.Now(),
		entries:    make(map[string]*ledgerEntry),
		servers:    make(map[string]string),
		subs:       make(map[string]string),
		markers:    make(map[string]time.Time),
		distinctBy: make(map[string]int),
		resultIn:   make(chan struct{}, 1),
		received:   make(chan struct{}, 1),
	}
}

// since is t relative to the ledger's start.
func (l *ledger) since(t time.Time) time.Duration { return t.Sub(l.start).Round(time.Microsecond) }

// payload returns the content of the request closure: "tag|closure|" and pad bytes.
func (l *ledger) payload(closure string, pad int) []byte {
	b := make([]byte, 0, len(l.tag)+len(closure)+2+pad)
	b = append(b, l.tag...)
	b = append(b, ledgerPayloadSep)
	b = append(b, closure...)
	b = append(b, ledgerPayloadSep)
	for i := range pad {
		b = append(b, 'a'+byte(i%26))
	}
	return b
}

// markerPayload is the content of the quiescence marker for subscriber sub.
func (l *ledger) markerPayload(sub string) []byte {
	return []byte("marker" + string(ledgerPayloadSep) + l.tag + string(ledgerPayloadSep) + sub)
}

// allowRefusals tells the ledger that the servers may refuse publishes with a PUBACK
// failure code (≥ 0x80): a FAILED result naming such a code then counts as not published.
// Without it, every FAILED result must wrap a sentinel that says the message was never
// sent.
func (l *ledger) allowRefusals() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refusals = true
}

// server names the broker behind a server address, so that an OK from it is looked for at
// that broker's subscriber.
func (l *ledger) server(addr, broker string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.servers[addr] = broker
}

// subscriber names the broker a subscriber is attached to.
func (l *ledger) subscriber(sub, broker string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.subs[sub] = broker
}

// lost records that broker may have lost messages it acknowledged at or after from.
func (l *ledger) lost(broker string, from time.Time, why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.losses = append(l.losses, ledgerLoss{broker: broker, from: from, why: why})
}

// ledgerRequest describes a request about to be made.
type ledgerRequest struct {
	how     string
	ch      chan mdclient.PublishResult // the Result channel named (nil: Publish, or the client's own)
	invalid bool
	ctxDone bool
	after   bool
	// due is when the outcome is due at the latest: the context's deadline, or the call
	// plus the publish timeout; zero when the test does not know.
	due time.Time
}

// add registers the request for m before the call is made. m.Closure must be unique.
func (l *ledger) add(m *mdclient.Message, req ledgerRequest) *ledgerEntry {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, dup := l.entries[m.Closure]; dup {
		panic("ledger: closure " + m.Closure + " used twice")
	}
	e := &ledgerEntry{
		closure: m.Closure, seq: len(l.order), subject: m.Subject, qos: m.QoS, size: len(m.Content),
		how: req.how, ch: req.ch, invalid: req.invalid, ctxDone: req.ctxDone, after: req.after,
		calledAt: l.since(now), due: req.due,
	}
	l.entries[m.Closure] = e
	l.order = append(l.order, e)
	l.pending++
	return e
}

// returned tells the ledger which channel PublishAsync returned for e; it must be the one
// e named, when it named one.
func (l *ledger) returned(e *ledgerEntry, ch <-chan mdclient.PublishResult) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	e.returnedAt = now
	if e.ch == nil || ch == (<-chan mdclient.PublishResult)(e.ch) {
		return
	}
	l.problems = append(l.problems, ledgerViolation{kind: "wrong-channel", text: fmt.Sprintf("closure %q (%s): PublishAsync returned a channel other than its Result channel", e.closure, e.how)})
}

// result records r, which the reader via took from ch, and returns its request; nil if
// no request had its closure.
func (l *ledger) result(via string, ch chan mdclient.PublishResult, r mdclient.PublishResult) *ledgerEntry {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.entries[r.Closure]
	if !ok {
		l.problems = append(l.problems, ledgerViolation{kind: "unknown-result", text: fmt.Sprintf("reader %s got a result for closure %q, which no request had: %s", via, r.Closure, describeResult(r))})
		return nil
	}
	l.record(e, ledgerResult{res: r, at: l.since(now), via: via, ch: ch})
	return e
}

// expect registers n requests whose closures are "0".."n-1", for a test that makes them
// itself and only reads their results through the ledger. Each has room for its result:
// recording it allocates nothing, for tests that measure the heap while they read.
func (l *ledger) expect(n int) {
	for i := range n {
		e := l.add(&mdclient.Message{Closure: strconv.Itoa(i)}, ledgerRequest{how: "request " + strconv.Itoa(i)})
		e.results = make([]ledgerResult, 0, 1)
	}
}

// take reads n results from ch into l (the first ones from pre: results already taken
// from ch) and hands each to each, with its request. It fails t at the first result that
// breaks exactly-once (a second result for a request, or a closure no request had), and
// when the n results are not all in after d.
func (l *ledger) take(t *testing.T, ch <-chan mdclient.PublishResult, n int, d time.Duration, each func(*ledgerEntry, mdclient.PublishResult), pre ...mdclient.PublishResult) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for k := range n {
		var r mdclient.PublishResult
		if k < len(pre) {
			r = pre[k]
		} else {
			select {
			case r = <-ch:
			case <-timer.C:
				t.Fatalf("%d of %d results missing after %v", n-k, n, d)
			}
		}
		e := l.result("take", nil, r)
		if v, bad := l.firstProblem(); bad {
			t.Fatal(v)
		}
		if each != nil {
			each(e, r)
		}
	}
}

// firstProblem returns the first broken promise found while recording, if any.
func (l *ledger) firstProblem() (ledgerViolation, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.problems) == 0 {
		return ledgerViolation{}, false
	}
	return l.problems[0], true
}

// first returns the first result of the request closure and when it was recorded; false
// while it has none.
func (l *ledger) first(closure string) (mdclient.PublishResult, time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.entries[closure]
	if !ok || len(e.results) == 0 {
		return mdclient.PublishResult{}, time.Time{}, false
	}
	return e.results[0].res, l.start.Add(e.results[0].at), true
}

// published records what Publish returned for e.
func (l *ledger) published(e *ledgerEntry, st mdclient.Status, err error) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if (st == mdclient.NotifyPublishOK) != (err == nil) {
		l.problems = append(l.problems, ledgerViolation{kind: "publish-return", text: fmt.Sprintf("closure %q (%s): Publish returned (%s, %v); it must return (OK, nil) or another status with an error", e.closure, e.how, st, err)})
	}
	l.record(e, ledgerResult{res: mdclient.PublishResult{Status: st, Closure: e.closure, Err: err}, at: l.since(now), via: "Publish"})
}

// record adds a result to e; l.mu is held.
func (l *ledger) record(e *ledgerEntry, lr ledgerResult) {
	e.results = append(e.results, lr)
	switch len(e.results) {
	case 1:
		l.pending--
		select {
		case l.resultIn <- struct{}{}:
		default:
		}
	case 2:
		l.problems = append(l.problems, ledgerViolation{kind: "two-results", text: fmt.Sprintf("closure %q (%s): a second result %s at +%v via %s; the first was %s at +%v via %s",
			e.closure, e.how, describeResult(lr.res), lr.at, lr.via, describeResult(e.results[0].res), e.results[0].at, e.results[0].via)})
	}
	if e.ch != nil && lr.ch != nil && lr.ch != e.ch {
		l.problems = append(l.problems, ledgerViolation{kind: "wrong-channel", text: fmt.Sprintf("closure %q (%s): its result %s arrived on another request's channel (reader %s)", e.closure, e.how, describeResult(lr.res), lr.via)})
	}
}

// receipt records that subscriber sub received payload on topic.
func (l *ledger) receipt(sub, topic string, payload []byte) {
	now := time.Now()
	defer func() {
		select {
		case l.received <- struct{}{}:
		default:
		}
	}()
	tag, rest, ok := bytes.Cut(payload, []byte{ledgerPayloadSep})
	l.mu.Lock()
	defer l.mu.Unlock()
	if ok && string(tag) == "marker" {
		mtag, msub, _ := bytes.Cut(rest, []byte{ledgerPayloadSep})
		if string(mtag) == l.tag && string(msub) == sub {
			if _, seen := l.markers[sub]; !seen {
				l.markers[sub] = now
			}
		}
		return
	}
	if !ok || string(tag) != l.tag {
		l.strays++
		return
	}
	closure, _, _ := bytes.Cut(rest, []byte{ledgerPayloadSep})
	e, known := l.entries[string(closure)]
	if !known {
		l.problems = append(l.problems, ledgerViolation{kind: "unknown-receipt", text: fmt.Sprintf("subscriber %s received closure %q on %q, which no request had", sub, closure, topic)})
		return
	}
	l.receipts++
	if len(e.got) == 0 {
		l.distinctAll++
	}
	if !slices.ContainsFunc(e.got, func(g ledgerReceipt) bool { return g.sub == sub }) {
		l.distinctBy[sub]++
	}
	e.got = append(e.got, ledgerReceipt{sub: sub, broker: l.subs[sub], topic: topic, at: l.since(now)})
}

// distinct returns how many requests subscriber sub has received (each once however
// often it came); with sub "", how many some subscriber has.
func (l *ledger) distinct(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if sub == "" {
		return l.distinctAll
	}
	return l.distinctBy[sub]
}

// receivedTwice returns how many requests reached the subscribers more than once (a
// QoSGuaranteed message resent after a broker had routed it).
func (l *ledger) receivedTwice() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.order {
		if len(e.got) > 1 {
			n++
		}
	}
	return n
}

// watchEmbedded subscribes a subscriber named name to filter on srv and records what it
// receives, until the test ends.
func (l *ledger) watchEmbedded(t *testing.T, name string, srv *mdtest.Server, filter string) {
	t.Helper()
	sub, err := srv.Subscribe(filter)
	if err != nil {
		t.Fatal(err)
	}
	l.feed(t, name, func() (string, []byte, bool) {
		m, ok := <-sub.Messages()
		return m.Topic, m.Payload, ok
	}, func() { sub.Close() })
}

// watchMosquitto is watchEmbedded for mosquitto: a mosquitto_sub of the user "sub".
func (l *ledger) watchMosquitto(t *testing.T, name string, b *mosquittotest.Broker, filter string) {
	t.Helper()
	sub := b.Subscribe(t, "sub", subPassword, filter)
	l.feed(t, name, func() (string, []byte, bool) {
		m, ok := <-sub.Messages()
		return m.Topic, m.Payload, ok
	}, sub.Close)
}

// feed records every message next returns as received by subscriber name, until next
// reports false; when the test ends, it calls stop (which must make next report false)
// and waits.
func (l *ledger) feed(t *testing.T, name string, next func() (topic string, payload []byte, ok bool), stop func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			topic, payload, ok := next()
			if !ok {
				return
			}
			l.receipt(name, topic, payload)
		}
	}()
	t.Cleanup(func() {
		stop()
		<-done
	})
}

// read records every result that arrives on ch (and hands it to each, when not nil), from
// a goroutine of its own, until the returned stop is called; stop waits for it.
func (l *ledger) read(via string, ch chan mdclient.PublishResult, each func(mdclient.PublishResult)) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case r := <-ch:
				l.result(via, ch, r)
				if each != nil {
					each(r)
				}
			case <-quit:
				return
			}
		}
	}()
	return func() {
		close(quit)
		<-done
	}
}

// markerSeen reports whether sub has received its quiescence marker.
func (l *ledger) markerSeen(sub string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.markers[sub]
	return ok
}

// Received is pinged (capacity 1) whenever a subscriber receives anything.
func (l *ledger) Received() <-chan struct{} { return l.received }

// awaitReceived waits until every request reported OK has reached a subscriber as check
// asks (its subject watched, and not excused by a loss), or until d has passed. It
// returns how many have not.
func (l *ledger) awaitReceived(d time.Duration) int {
	l.mu.Lock()
	owed := slices.Clone(l.order)
	l.mu.Unlock()
	// Each time, only the requests still owed are looked at again.
	settled := func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		owed = slices.DeleteFunc(owed, func(e *ledgerEntry) bool { return !l.owesReceipt(e) })
		return len(owed) == 0
	}
	untilPinged(l.received, d, settled)
	return len(owed)
}

// owesReceipt reports whether e's first result is OK, its subject watched, and no
// subscriber has received it as okReceived asks, nor may its broker have lost it. l.mu is
// held.
func (l *ledger) owesReceipt(e *ledgerEntry) bool {
	if len(e.results) == 0 {
		return false
	}
	first := e.results[0]
	if first.res.Status != mdclient.NotifyPublishOK || !strings.HasPrefix(e.subject, l.watched) || l.okReceived(e, first.res) {
		return false
	}
	return !l.mayHaveLost(l.servers[first.res.Server], l.start.Add(first.at))
}

// okReceived reports whether e, reported OK in r, reached a subscriber of the broker that
// answered (any subscriber when the ledger does not know the server). l.mu is held.
func (l *ledger) okReceived(e *ledgerEntry, r mdclient.PublishResult) bool {
	broker := l.servers[r.Server]
	for _, g := range e.got {
		if broker == "" || g.broker == broker {
			return true
		}
	}
	return false
}

// awaitMarker waits up to d for sub's quiescence marker.
func (l *ledger) awaitMarker(sub string, d time.Duration) bool {
	return untilPinged(l.received, d, func() bool { return l.markerSeen(sub) })
}

// awaitReceipt waits up to d for a subscriber to receive e's message.
func (l *ledger) awaitReceipt(e *ledgerEntry, d time.Duration) bool {
	return untilPinged(l.received, d, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(e.got) > 0
	})
}

// waitResults waits until every request registered so far has a result, or deadline.
// It returns the number still without one.
func (l *ledger) waitResults(deadline time.Time) int {
	pending := func() int {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.pending
	}
	untilPinged(l.resultIn, time.Until(deadline), func() bool { return pending() == 0 })
	return pending()
}

// dueBefore counts the requests naming ch whose PublishAsync call had returned before t
// and whose outcome was due (ledgerRequest.due) at least margin before t: results that
// exist by t, delivered into ch or waiting for it.
func (l *ledger) dueBefore(ch chan mdclient.PublishResult, t time.Time, margin time.Duration) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.order {
		if e.ch == ch && !e.returnedAt.IsZero() && e.returnedAt.Before(t) && !e.due.IsZero() && e.due.Add(margin).Before(t) {
			n++
		}
	}
	return n
}

// ledgerLossWindow is how long before a broker's death its acknowledgements count as
// possibly lost: mochi routes to its subscriptions microseconds after the PUBACK, and
// mosquitto_sub reads as fast as mosquitto sends; two seconds cover a loaded machine
// under -race many times over.
const ledgerLossWindow = 2 * time.Second

// onceViolations returns what breaks exactly-once: the problems found while recording (a
// second result, a result no request had, one on the wrong channel) and the requests
// without a result, in their order. Call it once the results are all in.
func (l *ledger) onceViolations() []ledgerViolation {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.onceLocked()
}

func (l *ledger) onceLocked() []ledgerViolation {
	out := append([]ledgerViolation(nil), l.problems...)
	for _, e := range l.order {
		if len(e.results) == 0 {
			out = append(out, e.violation("no-result", "no result at all (called at +%v)", e.calledAt))
		}
	}
	return out
}

// violation is a broken promise about e.
func (e *ledgerEntry) violation(kind, format string, args ...any) ledgerViolation {
	group, _, _ := strings.Cut(e.how, ", ctx")
	return ledgerViolation{kind, fmt.Sprintf("closure %q (%s): ", e.closure, e.describe()) + fmt.Sprintf(format, args...), group}
}

// check returns every broken promise: those of onceViolations, then the others in the
// order of the requests. Call it once results and receipts are all in.
func (l *ledger) check() []ledgerViolation {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.onceLocked()
	l.exempt = 0
	bad := func(e *ledgerEntry, kind, format string, args ...any) {
		out = append(out, e.violation(kind, format, args...))
	}
	for _, e := range l.order {
		if len(e.results) == 0 {
			continue
		}
		first := e.results[0]
		r := first.res
		if r.Closure != e.closure {
			bad(e, "closure", "result %s carries closure %q", describeResult(r), r.Closure)
		}
		if err := sentinelMismatch(r); err != "" {
			bad(e, "sentinel", "result %s at +%v: %s", describeResult(r), first.at, err)
		}
		failedWith := func(sentinels ...error) bool {
			if r.Status != mdclient.NotifyPublishFailed {
				return false
			}
			for _, s := range sentinels {
				if errors.Is(r.Err, s) {
					return true
				}
			}
			return false
		}
		switch {
		case e.invalid:
			// Bad input is refused before anything else is looked at; a call after Close
			// or with a done context may say so instead.
			also := []error{mdclient.ErrInvalidMessage}
			if e.after {
				also = append(also, mdclient.ErrClosed)
			}
			if e.ctxDone {
				also = append(also, mdclient.ErrTimeout)
			}
			if !failedWith(also...) {
				bad(e, "invalid-accepted", "bad input got %s at +%v; want FAILED wrapping ErrInvalidMessage before anything is sent", describeResult(r), first.at)
			}
		case e.after:
			also := []error{mdclient.ErrClosed}
			if e.ctxDone {
				also = append(also, mdclient.ErrTimeout)
			}
			if !failedWith(also...) {
				bad(e, "after-close", "called after Close had returned, got %s at +%v; want FAILED wrapping ErrClosed", describeResult(r), first.at)
			}
		case e.ctxDone:
			if r.Status != mdclient.NotifyPublishFailed {
				bad(e, "done-context-sent", "its context was done before the call, so nothing may be sent; got %s at +%v", describeResult(r), first.at)
			}
		}
		if r.Status == mdclient.NotifyPublishDenied {
			bad(e, "denied", "got %s at +%v although every server of the test lets the token publish", describeResult(r), first.at)
		}
		if r.Status == mdclient.NotifyPublishFailed && !knownUnpublished(r.Err, l.refusals) {
			bad(e, "failed-cause", "result %s at +%v: FAILED only when the client knows the message was not published "+
				"(its context or Close came first, bad input, too large, or a PUBACK failure code), and this error says none of that",
				describeResult(r), first.at)
		}
		if r.Status == mdclient.NotifyPublishFailed && len(e.got) > 0 {
			bad(e, "failed-but-published"+causeName(r.Err), "result %s at +%v, but %s: FAILED must mean not published", describeResult(r), first.at, describeReceipts(e.got))
		}
		if e.qos == mdclient.QoSStandard && len(e.got) > 1 {
			bad(e, "standard-twice", "QoSStandard (never sent twice) reached subscribers %d times: %s", len(e.got), describeReceipts(e.got))
		}
		if r.Status == mdclient.NotifyPublishOK && strings.HasPrefix(e.subject, l.watched) {
			broker := l.servers[r.Server]
			found := l.okReceived(e, r)
			if !found && l.mayHaveLost(broker, l.start.Add(first.at)) {
				l.exempt++
			} else if !found {
				where := "a subscriber"
				if broker != "" {
					where = "the subscriber of broker " + broker
				}
				bad(e, "ok-not-received", "result %s at +%v, but %s never received it (%s)", describeResult(r), first.at, where, describeReceipts(e.got))
			}
		}
	}
	return out
}

// excused returns how many OK results the last check found unreceived and excused,
// because their broker may have lost them (see lost).
func (l *ledger) excused() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.exempt
}

// mayHaveLost reports whether broker may have lost a message whose result was read at
// read: the acknowledgement came before that, so within the loss window only if read is
// at most ledgerLossWindow before the loss began (or after it). l.mu is held.
func (l *ledger) mayHaveLost(broker string, read time.Time) bool {
	for _, x := range l.losses {
		if (broker == "" || x.broker == broker) && !read.Before(x.from.Add(-ledgerLossWindow)) {
			return true
		}
	}
	return false
}

// pubackFailure matches the reason code of a PUBACK failure (0x80 and above) in an error.
var pubackFailure = regexp.MustCompile(`0x[89a-fA-F][0-9a-fA-F]\b`)

// knownUnpublished reports whether a FAILED result's error gives a reason the contract
// accepts for "not published": the context or Close came first (never written), no
// server, bad input or too large, or (when refusals) the server refused it with a PUBACK
// code >= 0x80, which the error names.
func knownUnpublished(err error, refusals bool) bool {
	for _, s := range []error{mdclient.ErrTimeout, mdclient.ErrNoServers, mdclient.ErrClosed, mdclient.ErrInvalidMessage, mdclient.ErrMessageTooLarge} {
		if errors.Is(err, s) {
			return true
		}
	}
	return refusals && err != nil && pubackFailure.MatchString(err.Error())
}

// sentinelMismatch says how r's error fails to wrap the sentinel of its status, or "".
func sentinelMismatch(r mdclient.PublishResult) string {
	var want error
	switch r.Status {
	case mdclient.NotifyPublishOK:
		if r.Err != nil {
			return "OK with a non-nil error"
		}
		return ""
	case mdclient.NotifyPublishFailed:
		want = mdclient.ErrFailed
	case mdclient.NotifyPublishTimeout:
		want = mdclient.ErrTimeout
	case mdclient.NotifyPublishDenied:
		want = mdclient.ErrDenied
	case mdclient.NotifyPublishNoSubscriber:
		want = mdclient.ErrNoSubscriber
	default:
		return fmt.Sprintf("status %q is not a publish outcome", r.Status)
	}
	if !errors.Is(r.Err, want) {
		return fmt.Sprintf("its error does not wrap %q", want)
	}
	return ""
}

// ledgerCounts is a summary of a run.
type ledgerCounts struct {
	Requests, Receipts, Strays int
	Status                     map[mdclient.Status]int
	// Kinds counts results by status and first wrapped cause, e.g. "FAILED/closed".
	Kinds map[string]int
}

func (l *ledger) counts() ledgerCounts {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := ledgerCounts{Requests: len(l.order), Receipts: l.receipts, Strays: l.strays,
		Status: map[mdclient.Status]int{}, Kinds: map[string]int{}}
	for _, e := range l.order {
		if len(e.results) == 0 {
			c.Kinds["none"]++
			continue
		}
		r := e.results[0].res
		c.Status[r.Status]++
		c.Kinds[shortStatus(r.Status)+causeName(r.Err)]++
	}
	return c
}

func (c ledgerCounts) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d requests, %d receipts:", c.Requests, c.Receipts)
	for _, k := range sortedKeys(c.Kinds) {
		fmt.Fprintf(&b, " %s=%d", k, c.Kinds[k])
	}
	return b.String()
}

func shortStatus(s mdclient.Status) string { return strings.TrimPrefix(string(s), "NOTIFY_PUBLISH_") }

// causeName names the most telling sentinel r's error wraps, as "/name", or "".
func causeName(err error) string {
	for _, s := range []struct {
		err  error
		name string
	}{
		{mdclient.ErrInvalidMessage, "invalid"}, {mdclient.ErrMessageTooLarge, "too-large"},
		{mdclient.ErrClosed, "closed"}, {mdclient.ErrNoServers, "no-servers"}, {mdclient.ErrTimeout, "timeout"},
	} {
		if errors.Is(err, s.err) {
			return "/" + s.name
		}
	}
	if err != nil && !errors.Is(err, mdclient.ErrNoSubscriber) {
		return "/other"
	}
	return ""
}

func (e *ledgerEntry) describe() string {
	q := "QoSGuaranteed"
	if e.qos == mdclient.QoSStandard {
		q = "QoSStandard"
	}
	return fmt.Sprintf("%s, %s, subject %q, %d bytes, called at +%v", e.how, q, e.subject, e.size, e.calledAt)
}

func describeResult(r mdclient.PublishResult) string {
	s := shortStatus(r.Status)
	if r.Server != "" {
		s += " from " + r.Server
	}
	if r.Err != nil {
		s += fmt.Sprintf(" (%v)", r.Err)
	}
	return s
}

func describeReceipts(got []ledgerReceipt) string {
	if len(got) == 0 {
		return "received by no subscriber"
	}
	parts := make([]string, len(got))
	for i, g := range got {
		parts[i] = fmt.Sprintf("subscriber %s (broker %s) received it on %q at +%v", g.sub, g.broker, g.topic, g.at)
	}
	return strings.Join(parts, "; ")
}

// violationExamples is how many violations of one kind failViolations shows.
const violationExamples = 5

// failViolations fails t with vs, one error per kind (prefix first): how many, how their
// requests were made when that differs, and the first few.
func failViolations(t *testing.T, prefix string, vs []ledgerViolation) {
	t.Helper()
	byKind := map[string][]string{}
	groups := map[string]map[string]int{} // kind → how the requests were made → count
	for _, v := range vs {
		if _, ok := byKind[v.kind]; !ok {
			groups[v.kind] = map[string]int{}
		}
		byKind[v.kind] = append(byKind[v.kind], v.text)
		if v.group != "" {
			groups[v.kind][v.group]++
		}
	}
	for _, k := range sortedKeys(byKind) {
		list := byKind[k]
		var b strings.Builder
		fmt.Fprintf(&b, "%s%s: %d violation(s)", prefix, k, len(list))
		if g := groups[k]; len(g) > 1 {
			b.WriteString(" by request:")
			for _, h := range sortedKeys(g) {
				fmt.Fprintf(&b, " %s ×%d;", h, g[h])
			}
		}
		for i, s := range list {
			if i == violationExamples {
				fmt.Fprintf(&b, "\n    … and %d more", len(list)-violationExamples)
				break
			}
			b.WriteString("\n    ")
			b.WriteString(s)
		}
		t.Error(b.String())
	}
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// The log recorder.

// logRecorder is a slog.Handler that keeps every record at every level, for tests that
// look at what the client logged. Handlers made by WithAttrs and WithGroup share the
// records of the one they came from. Safe for concurrent use.
type logRecorder struct {
	store  *logStore
	prefix string      // group prefix, with a trailing dot
	attrs  []slog.Attr // from WithAttrs, keys already prefixed
}

type logStore struct {
	mu   sync.Mutex
	recs []logRecord
	wake chan struct{} // capacity 1: a record was added
}

// logRecord is one record, flattened.
type logRecord struct {
	Time  time.Time
	Level slog.Level
	Msg   string
	Attrs map[string]any // group-qualified keys ("g.key"); resolved values
}

// attr returns the attribute key printed with %v, or "".
func (r logRecord) attr(key string) string {
	v, ok := r.Attrs[key]
	if !ok {
		return ""
	}
	return fmt.Sprint(v)
}

// attrErr returns the attribute key if it is an error.
func (r logRecord) attrErr(key string) error {
	err, _ := r.Attrs[key].(error)
	return err
}

// Text is everything the record says: its message and every attribute, values printed
// with %+v (and an error's text too), for looking for a string in it.
func (r logRecord) Text() string {
	var b strings.Builder
	b.WriteString(r.Msg)
	for _, k := range sortedKeys(r.Attrs) {
		v := r.Attrs[k]
		fmt.Fprintf(&b, " %s=%+v", k, v)
		if err, ok := v.(error); ok {
			fmt.Fprintf(&b, " (%s)", err.Error())
		}
	}
	return b.String()
}

func (r logRecord) String() string {
	return fmt.Sprintf("%s %v %s", r.Time.Format("15:04:05.000000"), r.Level, r.Text())
}

func newLogRecorder() *logRecorder {
	return &logRecorder{store: &logStore{wake: make(chan struct{}, 1)}}
}

// Logger returns a logger writing to h.
func (h *logRecorder) Logger() *slog.Logger { return slog.New(h) }

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{Time: r.Time, Level: r.Level, Msg: r.Message, Attrs: map[string]any{}}
	var add func(prefix string, a slog.Attr)
	add = func(prefix string, a slog.Attr) {
		v := a.Value.Resolve()
		if v.Kind() == slog.KindGroup {
			p := prefix
			if a.Key != "" {
				p += a.Key + "."
			}
			for _, g := range v.Group() {
				add(p, g)
			}
			return
		}
		rec.Attrs[prefix+a.Key] = v.Any()
	}
	for _, a := range h.attrs {
		add("", a)
	}
	r.Attrs(func(a slog.Attr) bool {
		add(h.prefix, a)
		return true
	})
	h.store.mu.Lock()
	h.store.recs = append(h.store.recs, rec)
	h.store.mu.Unlock()
	select {
	case h.store.wake <- struct{}{}:
	default:
	}
	return nil
}

func (h *logRecorder) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := &logRecorder{store: h.store, prefix: h.prefix, attrs: append([]slog.Attr(nil), h.attrs...)}
	for _, a := range attrs {
		a.Key = h.prefix + a.Key
		n.attrs = append(n.attrs, a)
	}
	return n
}

func (h *logRecorder) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &logRecorder{store: h.store, prefix: h.prefix + name + ".", attrs: h.attrs}
}

// Records returns a copy of what was logged so far.
func (h *logRecorder) Records() []logRecord {
	h.store.mu.Lock()
	defer h.store.mu.Unlock()
	return append([]logRecord(nil), h.store.recs...)
}

// Await returns the first record that satisfies match, waiting up to d for it.
func (h *logRecorder) Await(d time.Duration, match func(logRecord) bool) (logRecord, bool) {
	var found logRecord
	seen := 0
	ok := untilPinged(h.store.wake, d, func() bool {
		recs := h.Records()
		for _, r := range recs[seen:] {
			if match(r) {
				found = r
				return true
			}
		}
		seen = len(recs)
		return false
	})
	return found, ok
}

// Tail formats the last n records, for failure messages.
func (h *logRecorder) Tail(n int) string {
	recs := h.Records()
	if len(recs) > n {
		recs = recs[len(recs)-n:]
	}
	var b strings.Builder
	for _, r := range recs {
		b.WriteString("\n  ")
		b.WriteString(r.String())
	}
	return b.String()
}

// Dump formats every record, for failure messages.
func (h *logRecorder) Dump() string { return h.Tail(len(h.Records())) }
