// Package mdclient publishes real-time messages to a cluster of servers and tells the
// caller, for every message, what became of it: published, failed, denied, no subscriber
// or timed out.
//
// Its API follows the publish side of the MigratoryData Client API (NewClient,
// SetEntitlementToken, SetServers, Publish and the NOTIFY_PUBLISH_* outcomes); on the wire
// it speaks MQTT 5 over WebSocket, TCP or TLS, whose QoS 1 acknowledgement carries exactly
// these outcomes. Any MQTT 5 broker cluster serves it.
//
// A Client is safe for concurrent use. Publish waits for one outcome; PublishAsync returns
// at once with the channel the outcome will arrive on, and many requests may share one
// channel. Every accepted request gets exactly one result, also across reconnects,
// failover, timeouts and Close.
package mdclient

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/mdclient/mdclient/cluster"
	"github.com/mdclient/mdclient/codec"
	"github.com/mdclient/mdclient/conn"
	"github.com/mdclient/mdclient/engine"
)

// Status is the outcome of a publish, or the kind of an Event. Its values are the
// MigratoryData constants' names.
type Status string

// The statuses.
const (
	NotifyPublishOK           Status = "NOTIFY_PUBLISH_OK"            // the server acknowledged the message
	NotifyPublishFailed       Status = "NOTIFY_PUBLISH_FAILED"        // it was not published; Err says why
	NotifyPublishDenied       Status = "NOTIFY_PUBLISH_DENIED"        // the entitlement token may not publish it
	NotifyPublishNoSubscriber Status = "NOTIFY_PUBLISH_NO_SUBSCRIBER" // no client is subscribed to the subject
	NotifyPublishTimeout      Status = "NOTIFY_PUBLISH_TIMEOUT"       // written, but no answer in time: it may or may not be published
	NotifyServerUp            Status = "NOTIFY_SERVER_UP"             // Event: connected to a server
	NotifyServerDown          Status = "NOTIFY_SERVER_DOWN"           // Event: a server was lost or could not be reached
)

// QoS is a message's delivery guarantee.
type QoS uint8

const (
	// QoSGuaranteed (the zero value, as in MigratoryData) is at-least-once: a message not
	// yet acknowledged when a connection is lost is sent again (DUP) on the next one, to
	// whichever server that is, until its context ends.
	QoSGuaranteed QoS = iota
	// QoSStandard is at-most-once: never sent twice; a connection lost before the
	// acknowledgement makes it TIMEOUT (it may have arrived).
	QoSStandard
)

// Message is what to publish. A message that can never be sent gets
// NotifyPublishFailed wrapping ErrInvalidMessage before anything is written: an empty
// Subject; a Subject or ReplySubject longer than 65535 bytes, or holding '+', '#', U+0000,
// a control character (U+0001–U+001F, U+007F–U+009F), a Unicode noncharacter (such as
// U+FFFF) or invalid UTF-8 (MQTT 5 §1.5.4); a Closure over 65535 bytes with a
// ReplySubject; a user property key or value, or a ContentType, that is not valid UTF-8,
// is over 65535 bytes or holds U+0000, a control character or a noncharacter (strict
// brokers such as mosquitto drop the connection over them); a negative Expiry or one over 2³²−1 seconds; UTF8
// with Content that is not UTF-8; an unknown QoS. So does a retained message, or any
// message, that the server's CONNACK says it cannot take (Retain Available 0, Maximum
// QoS 0). One larger than the server's Maximum Packet Size, properties included, gets
// ErrMessageTooLarge.
//
// The client reads Content and UserProperties until the request's result is delivered
// and never writes them; the caller must not modify them before then.
type Message struct {
	Subject      string // e.g. "/sport/football/scores"; sent as the MQTT topic name
	Content      []byte // read, never written, until the result is delivered; do not modify it before then
	Closure      string // the caller's tag, handed back in the PublishResult
	Retained     bool   // the server keeps it as the subject's last message
	QoS          QoS
	ReplySubject string // MQTT 5 Response Topic; Closure then travels as Correlation Data

	UserProperties []UserProperty // MQTT 5 User Properties, in order; a key may repeat
	ContentType    string         // MQTT 5 Content Type, e.g. "application/json"
	Expiry         time.Duration  // MQTT 5 Message Expiry Interval, rounded up to whole seconds; 0: none
	UTF8           bool           // MQTT 5 Payload Format Indicator 1: Content is UTF-8 text
}

// UserProperty is an MQTT 5 User Property: a key and a value, UTF-8 strings.
type UserProperty = codec.UserProperty

// PublishRequest is a message and where its result goes.
type PublishRequest struct {
	Message Message
	// Result, when non-nil, receives the outcome, and PublishAsync returns it: one channel
	// may collect the results of a whole stream. When nil, PublishAsync makes a channel with
	// room for one result. A full Result channel delays only the results bound for it;
	// other callers' results are never held up by it. Never close a Result channel while
	// results may still be due to it: they would be dropped.
	Result chan PublishResult
}

// PublishResult is the one outcome of a request.
type PublishResult struct {
	Status  Status
	Closure string // the Message's Closure
	Server  string // address of the server that answered, when one did
	Err     error  // nil for NotifyPublishOK; otherwise wraps one of the sentinel errors
}

// Event reports a server going up or down.
type Event struct {
	Type   Status // NotifyServerUp or NotifyServerDown
	Server string // the server's address
	Err    error  // why it went down; nil for NotifyServerUp
}

// Client publishes to a cluster of servers. Create it with NewClient, give it servers
// with SetServers, and Close it when done.
type Client struct {
	opts     options
	clientID string
	token    atomic.Pointer[string]

	closed     atomic.Bool
	closeBy    atomic.Int64  // Close's own bound (unix ns): calls made while it runs wait until then at most
	closeDone  chan struct{} // closed when the first Close returns
	inDone     atomic.Bool   // the engine's goroutine runs a hook's done function
	hasServers atomic.Bool
	closeOnce  sync.Once
	closeErr   error

	startMu sync.Mutex // guards started and the start of the actors
	started bool
	engine  *engine.Engine
	cluster *cluster.Cluster
	stop    context.CancelFunc
	group   *errgroup.Group

	deliver *deliverer
	out     []delivery       // the engine goroutine's: results of one batch, reused
	events  chan Event       // the cluster actor is its only writer
	results [5]atomic.Uint64 // results delivered, indexed by statusIndex
}

// NewClient returns a client configured by opts. It connects nowhere until SetServers.
func NewClient(opts ...Option) *Client {
	o := defaults()
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	c := &Client{
		opts:      o,
		clientID:  o.clientID,
		deliver:   newDeliverer(o.maxQueued, o.logger),
		events:    make(chan Event, o.eventBuffer),
		closeDone: make(chan struct{}),
	}
	if c.clientID == "" {
		var b [8]byte
		rand.Read(b[:])
		c.clientID = "mdclient-" + hex.EncodeToString(b[:])
	}
	c.engine = engine.New(engine.Config{
		Lanes:          o.connections,
		MaxQueued:      o.maxQueued,
		MaxInflight:    o.maxInflight,
		PublishTimeout: o.publishTimeout,
		Complete:       c.complete,
		Release:        release,
		Logger:         o.logger,
		Rate:           o.rate,
		Burst:          o.burst,
	})
	return c
}

// SetEntitlementToken sets the token that authorises this client to publish. It travels
// as the MQTT password (or user name, see WithTokenInUsername) and applies from the next
// connection on. It is never logged.
func (c *Client) SetEntitlementToken(token string) {
	c.token.Store(&token)
}

// SetServers sets the servers of the cluster and starts connecting. Each entry is
// "[weight ]address": weight 0–100 (default 100; 0 makes a standby, chosen only when no
// other server is left), address one of host:port (WebSocket), ws://, wss://, http://,
// https://, tcp://, mqtt://, tls://, mqtts://. A URL without a port gets its scheme's
// (80, 443, 1883, 8883); a WebSocket URL without a path gets /mqtt.
// A server is chosen at random by weight at start and on every failover.
//
// An entry that does not parse makes it return an error wrapping ErrInvalidServer and
// naming the entry, and nothing changes. Calling it again replaces the list at once: an
// attempt still dialing a server is abandoned and the next one goes to the new list; a
// live connection to a server still listed is kept; one to a server no longer listed is
// closed gracefully and what it had not acknowledged goes out again on a server of the
// new list. After Close it returns ErrClosed.
func (c *Client) SetServers(servers []string) error {
	list, err := cluster.ParseList(servers)
	if err != nil {
		return err
	}
	if len(list) == 0 {
		return fmt.Errorf("%w: the list is empty", ErrNoServers)
	}
	c.startMu.Lock()
	defer c.startMu.Unlock()
	if c.closed.Load() {
		return ErrClosed
	}
	if !c.started {
		c.start()
	}
	c.cluster.SetServers(list)
	c.hasServers.Store(true)
	return nil
}

// start runs the actors; startMu is held.
func (c *Client) start() {
	c.started = true
	c.cluster = cluster.New(cluster.Config{
		Policy: cluster.Policy{
			QuickMaxRetries: c.opts.quickRetries,
			QuickDelay:      c.opts.quickDelay,
			Backoff:         cluster.Backoff(c.opts.policy),
			Interval:        c.opts.interval,
			MaxDelay:        c.opts.maxDelay,
		},
		NotifyAfter:     c.opts.notifyAfter,
		FollowRedirects: c.opts.followRedirects,
		Slots:           c.opts.connections,
		// The connect timeout bounds an attempt from the inside (conn.Dial, the token
		// function's context); this bounds it from the outside, a little later, for code
		// of the user's that ignores its context.
		AttemptTimeout: c.opts.connectTimeout + attemptGrace,
		Conn:           c.connConfig,
		Events:         c.engine.Events(),
		Quit:           c.engine.Quit(),
		Notify:         c.notify,
		Logger:         c.opts.logger,
	})
	ctx, cancel := context.WithCancel(context.Background())
	c.stop = cancel
	c.group = new(errgroup.Group)
	c.group.Go(c.engine.Run)
	c.group.Go(func() error { return c.cluster.Run(ctx) })
}

// attemptGrace is how much longer than the connect timeout the cluster waits for an
// attempt before giving it up, so that one that honours its context reports its own error.
const attemptGrace = 250 * time.Millisecond

// callTokenFunc calls the WithTokenFunc function; a panic fails the attempt instead of
// the process.
func callTokenFunc(f func(context.Context) (string, error), ctx context.Context) (t string, err error) {
	defer func() {
		if p := recover(); p != nil {
			t, err = "", fmt.Errorf("it panicked: %v", p)
		}
	}()
	return f(ctx)
}

// connConfig is called by the cluster actor before each connection attempt, within its
// context: the token of WithTokenFunc, else SetEntitlementToken's, applies from then on.
func (c *Client) connConfig(ctx context.Context) (*conn.Config, error) {
	cfg := &conn.Config{
		ClientID:       c.clientID,
		Username:       c.opts.username,
		KeepAlive:      c.opts.keepAlive,
		ConnectTimeout: c.opts.connectTimeout,
		TLS:            c.opts.tls,
		Logger:         c.opts.logger,
		Dial:           c.opts.dial,
		HTTPHeader:     c.opts.httpHeader,
	}
	var token string
	if f := c.opts.tokenFunc; f != nil {
		tctx, cancel := context.WithTimeout(ctx, c.opts.connectTimeout)
		t, err := callTokenFunc(f, tctx)
		if err == nil {
			err = tctx.Err() // it returned, but too late
		}
		cancel()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errTokenFunc, err)
		}
		token = t
	} else if t := c.token.Load(); t != nil {
		token = *t
	}
	if token != "" {
		if c.opts.tokenInUsername {
			cfg.Username = token
		} else {
			cfg.Password, cfg.HasPassword = []byte(token), true
		}
	}
	return cfg, nil
}

// errTokenFunc wraps the error of WithTokenFunc's function, which fails the attempt.
var errTokenFunc = errors.New("mdclient: the token function failed")

// notify turns the cluster actor's reports into Events. The buffer drops its oldest event
// rather than wait for a caller who does not read.
func (c *Client) notify(up bool, server string, err error) {
	ev := Event{Type: NotifyServerDown, Server: server, Err: err}
	if up {
		ev = Event{Type: NotifyServerUp, Server: server}
	}
	for {
		select {
		case c.events <- ev:
			return
		default:
		}
		select {
		case <-c.events:
		default:
		}
	}
}

// Events returns the channel of NotifyServerUp and NotifyServerDown events. It is
// buffered (WithEventBuffer); when full, the oldest event is dropped. Close closes it, so
// a select loop should stop reading it once a receive reports it closed.
func (c *Client) Events() <-chan Event { return c.events }

// Publish publishes m and waits for its outcome. It returns (NotifyPublishOK, nil) or
// another status with an error wrapping the matching sentinel. ctx bounds the wait; without
// a deadline the publish timeout (WithPublishTimeout) applies.
func (c *Client) Publish(ctx context.Context, m Message) (Status, error) {
	ch := resultChans.Get().(chan PublishResult)
	res := <-c.PublishAsync(ctx, PublishRequest{Message: m, Result: ch})
	resultChans.Put(ch) // empty again: a request gets exactly one result
	return res.Status, res.Err
}

// resultChans recycles Publish's one-result channels.
var resultChans = sync.Pool{New: func() any { return make(chan PublishResult, 1) }}

// PublishAsync hands the request to the client and returns the channel its result will
// arrive on: r.Result when set, else a new channel with room for one result. It returns
// as soon as the request is queued. It blocks, bounded by ctx (or, without a deadline,
// the publish timeout), only while the client holds WithMaxQueued requests not yet
// written, or while WithMaxQueued results wait for r.Result because its reader is slower
// than they come (see WithMaxQueued for what may still join them); a request that found
// no room in time gets NotifyPublishFailed wrapping ErrTimeout. A ctx already done sends
// nothing: the result is NotifyPublishFailed wrapping ErrTimeout (after Close: wrapping
// ErrClosed, whatever ctx — and a call made while Close runs waits for Close to return,
// at most the drain timeout plus one second); a nil ctx is context.Background(). The
// result is delivered without blocking the client: a full channel delays only the
// results bound for it. The one exception to "bounded by ctx": a refused call (an
// invalid message, a ctx already done or ended while waiting, after Close) whose channel
// already has a quarter more than WithMaxQueued results waiting waits, up to the publish
// timeout, for some of them to be read before its own joins them. Its result must go somewhere, so an unread
// channel's backlog still grows past that, but slowly: by at most one result per publish
// timeout per calling goroutine.
func (c *Client) PublishAsync(ctx context.Context, r PublishRequest) <-chan PublishResult {
	ch := r.Result
	if ch == nil {
		ch = make(chan PublishResult, 1)
	}
	if ctx == nil {
		ctx = context.Background()
	}
	req := requests.Get().(*request)
	req.ch, req.closure, req.Ctx = ch, r.Message.Closure, ctx
	switch fact, cause := req.fill(&r.Message); {
	case cause != nil:
		c.refuse(req, fact, cause)
	case c.closed.Load(): // before the context: after Close, the answer is ErrClosed
		c.awaitClose()
		c.refuse(req, engine.Closed, nil)
	case ctx.Err() != nil:
		c.refuse(req, engine.Expired, context.Cause(ctx))
	case !c.hasServers.Load():
		c.refuse(req, engine.NoServers, nil)
	case c.opts.hooks != nil && !c.hook(ctx, req, &r.Message):
		// refused, its done function called
	case r.Result != nil && !c.deliver.waitRoom(ctx, ch, c.opts.publishTimeout, c.deliver.limit):
		c.refuse(req, engine.Expired, context.Cause(ctx))
	default:
		switch err := c.engine.Submit(&req.Request); {
		case err == nil:
		case errors.Is(err, engine.ErrClosed):
			c.refuse(req, engine.Closed, nil)
		default: // the context's cause, or engine.ErrQueueFull
			c.refuse(req, engine.Expired, err)
		}
	}
	return ch
}

// closeGrace is what Close may take beyond the drain timeout: for the DISCONNECT and the
// client's goroutines to end.
const closeGrace = time.Second

// awaitClose waits, while Close runs, until it returns — at most until its own bound —
// except in a hook's done function, which runs on the engine's goroutine that Close
// waits for. Callers that call again as soon as they are refused would otherwise
// take the processors from the goroutines Close waits for: 40 of them on 2 cores made
// Close take 1.4 s with a 200 ms drain.
func (c *Client) awaitClose() {
	if c.inDone.Load() {
		// A done function publishing again, on the engine's goroutine, which Close
		// waits for. (Another caller at that moment skips the wait too: harmless.)
		return
	}
	select {
	case <-c.closeDone:
		return
	default:
	}
	d := time.Until(time.Unix(0, c.closeBy.Load()))
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.closeDone:
	case <-t.C:
	}
}

// refuse gives a request the client did not accept its outcome, on the caller's goroutine.
func (c *Client) refuse(req *request, fact engine.Fact, cause error) {
	req.Outcome = engine.Outcome{Fact: fact, Cause: cause, NoConnection: fact == engine.Expired && !c.engine.Connected()}
	res := c.result(req)
	c.results[statusIndex(res.Status)].Add(1)
	if req.done != nil {
		c.hookDone(req.done, res)
	}
	// Its context cannot bound a wait (it may be done): past a quarter more than the
	// backlog's limit, the publish timeout does, so that a stream of refused calls to an
	// unread channel piles up results only slowly.
	c.deliver.waitRoom(context.Background(), req.ch, c.opts.publishTimeout, c.deliver.refusedLimit())
	c.deliver.send(req.ch, res)
	release(&req.Request)
}

// requests recycles the requests of PublishAsync: the engine hands each back once it
// holds it nowhere (engine.Config.Release), so that a stream allocates nothing per message.
var requests = sync.Pool{New: func() any {
	r := &request{}
	r.Owner = r
	return r
}}

// release puts a request back for reuse, cleared of what would keep memory alive.
func release(er *engine.Request) {
	r := er.Owner.(*request)
	*r = request{}
	r.Owner = r
	requests.Put(r)
}

// complete is the engine's Config.Complete: the outcomes of a turn, delivered in one go.
func (c *Client) complete(reqs []*engine.Request) {
	out := c.out[:0]
	for _, r := range reqs {
		req := r.Owner.(*request)
		res := c.result(req)
		c.results[statusIndex(res.Status)].Add(1)
		if req.done != nil {
			c.inDone.Store(true)
			c.hookDone(req.done, res)
			c.inDone.Store(false)
		}
		out = append(out, delivery{req.ch, res})
	}
	c.deliver.sendAll(out)
	clear(out)
	c.out = out[:0]
}

// Close stops accepting requests (later calls get NotifyPublishFailed wrapping
// ErrClosed, delivered like any result; a call made while Close runs gets it once Close
// has returned, so that callers who call again at once do not starve the goroutines
// Close waits for), waits up to the drain timeout
// (WithDrainTimeout) for the results of accepted ones, gives the rest NotifyPublishFailed
// wrapping ErrClosed if they were never written and NotifyPublishTimeout wrapping
// ErrClosed if they were, sends DISCONNECT and returns once the client's actors have
// ended: within the drain timeout plus at most one second (the grace for the DISCONNECT
// and the goroutines to end). A caller who keeps reading its Result channel receives
// every result, also those still waiting for room in it when Close returns; a channel
// that takes no result for a second after Close is given up, its results dropped, and
// then no goroutine of the client is left. Calling Close again, also concurrently, waits
// for the first call and returns its error.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		defer close(c.closeDone)
		c.closeBy.Store(time.Now().Add(c.opts.drainTimeout + closeGrace).UnixNano())
		c.closed.Store(true)
		c.startMu.Lock()
		started := c.started
		c.startMu.Unlock()
		if started {
			c.engine.Close(time.Now().Add(c.opts.drainTimeout))
			c.stop()
			c.closeErr = c.group.Wait()
		}
		c.deliver.close()
		close(c.events)
	})
	return c.closeErr
}

func statusIndex(s Status) int {
	switch s {
	case NotifyPublishOK:
		return 0
	case NotifyPublishNoSubscriber:
		return 1
	case NotifyPublishDenied:
		return 2
	case NotifyPublishTimeout:
		return 3
	}
	return 4
}

// Stats is a snapshot of a client's activity.
type Stats struct {
	Accepted     uint64   // requests taken in for publishing (bad input and refusals excluded)
	OK           uint64   // results with NotifyPublishOK
	NoSubscriber uint64   // results with NotifyPublishNoSubscriber
	Denied       uint64   // results with NotifyPublishDenied
	Timeout      uint64   // results with NotifyPublishTimeout
	Failed       uint64   // results with NotifyPublishFailed, bad input included
	InFlight     int      // written and not yet acknowledged (timed-out ones still holding a packet identifier included)
	Queued       int      // accepted and not yet written (including resends after failover)
	Undelivered  int      // results waiting for room in a full Result channel
	Resent       uint64   // messages sent again after their connection was lost
	Reconnects   uint64   // connections made after the first (of every connection slot: WithConnections)
	Server       string   // the server in use (the first, with WithConnections); "" while none is connected
	Servers      []string // the servers of the connections in use, one per live connection
	BytesWritten uint64   // bytes written to servers
}

// Stats returns a snapshot of the client's counters and state. It is cheap enough to
// call every second: one round trip to the client's engine goroutine.
func (c *Client) Stats() Stats {
	st := Stats{
		OK:           c.results[0].Load(),
		NoSubscriber: c.results[1].Load(),
		Denied:       c.results[2].Load(),
		Timeout:      c.results[3].Load(),
		Failed:       c.results[4].Load(),
		Undelivered:  int(c.deliver.waiting.Load()),
	}
	c.startMu.Lock()
	started := c.started
	c.startMu.Unlock()
	if !started {
		return st
	}
	e := c.engine.Stats()
	st.Accepted, st.InFlight, st.Queued, st.Server, st.BytesWritten = e.Admitted, e.InFlight, e.Queued, e.Server, e.BytesWritten
	st.Resent, st.Servers, st.Reconnects = e.Resent, e.Servers, e.Reconnects
	return st
}

// String names the client by its MQTT client identifier, and nothing else of it: the
// token and the state of its goroutines stay out of logs.
func (c *Client) String() string { return "mdclient.Client(" + c.clientID + ")" }

// GoString is String, for %#v.
func (c *Client) GoString() string { return c.String() }
