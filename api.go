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
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

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
	// acknowledgement makes it FAILED.
	QoSStandard
)

// Message is what to publish.
type Message struct {
	Subject      string // e.g. "/sport/football/scores"; sent as the MQTT topic name
	Content      []byte // read, never written, until the result is delivered; do not modify it before then
	Closure      string // the caller's tag, handed back in the PublishResult
	Retained     bool   // the server keeps it as the subject's last message
	QoS          QoS
	ReplySubject string // MQTT 5 Response Topic; Closure then travels as Correlation Data
}

// PublishRequest is a message and where its result goes.
type PublishRequest struct {
	Message Message
	// Result, when non-nil, receives the outcome, and PublishAsync returns it: one channel
	// may collect the results of a whole stream. When nil, PublishAsync makes a channel with
	// room for one result. A full Result channel delays only the results bound for it;
	// other callers' results are never held up by it.
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

	// mu is held shared by every PublishAsync while it hands a request to the engine, and
	// exclusively by Close to wait those out before sealing the engine's input.
	mu         sync.RWMutex
	closed     atomic.Bool
	hasServers atomic.Bool

	startMu sync.Mutex // guards started and the start of the actors
	started bool
	engine  *engine.Engine
	cluster *cluster.Cluster
	stop    context.CancelFunc
	group   *errgroup.Group

	deliver *deliverer
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
		opts:     o,
		clientID: o.clientID,
		deliver:  newDeliverer(),
		events:   make(chan Event, o.eventBuffer),
	}
	if c.clientID == "" {
		var b [8]byte
		rand.Read(b[:])
		c.clientID = "mdclient-" + hex.EncodeToString(b[:])
	}
	c.engine = engine.New(engine.Config{MaxQueued: o.maxQueued, MaxInflight: o.maxInflight, Logger: o.logger})
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
// https://, tcp://, mqtt://, tls://, mqtts://. A WebSocket URL without a path gets /mqtt.
// A server is chosen at random by weight at start and on every failover.
//
// An entry that does not parse makes it return an error wrapping ErrInvalidServer and
// naming the entry, and nothing changes. Calling it again replaces the list: a live
// connection to a server still listed is kept; one to a server no longer listed is closed
// gracefully and what it had not acknowledged goes out again on a server of the new list.
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
		NotifyAfter: c.opts.notifyAfter,
		Conn:        c.connConfig,
		Events:      c.engine.Events(),
		Quit:        c.engine.Quit(),
		Notify:      c.notify,
		Logger:      c.opts.logger,
	})
	ctx, cancel := context.WithCancel(context.Background())
	c.stop = cancel
	c.group = new(errgroup.Group)
	c.group.Go(c.engine.Run)
	c.group.Go(func() error { return c.cluster.Run(ctx) })
}

// connConfig is read by the cluster actor before each connection attempt.
func (c *Client) connConfig() *conn.Config {
	cfg := &conn.Config{
		ClientID:       c.clientID,
		Username:       c.opts.username,
		KeepAlive:      c.opts.keepAlive,
		ConnectTimeout: c.opts.connectTimeout,
		TLS:            c.opts.tls,
		Logger:         c.opts.logger,
	}
	if t := c.token.Load(); t != nil && *t != "" {
		if c.opts.tokenInUsername {
			cfg.Username = *t
		} else {
			cfg.Password, cfg.HasPassword = []byte(*t), true
		}
	}
	return cfg
}

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
// buffered (WithEventBuffer); when full, the oldest event is dropped. Close closes it.
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
// as soon as the request is queued; only while WithMaxQueued requests already wait does it
// block, until there is room or ctx ends. The result is delivered without blocking the
// client: a full channel delays only the results bound for it.
func (c *Client) PublishAsync(ctx context.Context, r PublishRequest) <-chan PublishResult {
	ch := r.Result
	if ch == nil {
		ch = make(chan PublishResult, 1)
	}
	if ctx == nil {
		ctx = context.Background()
	}
	req := &request{client: c, result: ch, closure: r.Message.Closure}
	req.Owner = req
	req.Ctx = ctx
	if err := req.fill(&r.Message); err != nil {
		engine.Fail(&req.Request, engine.Closed, err) // the outcome is not read: req.invalid decides
		return ch
	}
	if _, ok := ctx.Deadline(); !ok {
		req.Deadline = time.Now().Add(c.opts.publishTimeout)
	}
	c.mu.RLock()
	switch {
	case c.closed.Load():
		c.mu.RUnlock()
		engine.Fail(&req.Request, engine.Closed, nil)
	case !c.hasServers.Load():
		c.mu.RUnlock()
		req.NoConnection = true
		engine.Fail(&req.Request, engine.Expired, ErrNoServers)
	default:
		ok := c.engine.Submit(&req.Request)
		c.mu.RUnlock()
		if !ok {
			o := engine.Expired
			if c.closed.Load() {
				o = engine.Closed
			}
			engine.Fail(&req.Request, o, context.Cause(ctx))
		}
	}
	return ch
}

// Close stops accepting requests (later calls get NotifyPublishFailed wrapping ErrClosed),
// waits up to the drain timeout (WithDrainTimeout) for the results of accepted ones, gives
// the rest NotifyPublishFailed wrapping ErrClosed, sends DISCONNECT and returns once no
// goroutine of the client is left. Calling it again does nothing.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	c.startMu.Lock()
	started := c.started
	c.startMu.Unlock()
	var err error
	if started {
		deadline := time.Now().Add(c.opts.drainTimeout)
		c.engine.BeginClose(deadline)
		c.mu.Lock() // wait out the calls that are handing a request to the engine
		c.mu.Unlock()
		c.engine.Seal()
		<-c.engine.Quit()
		c.stop()
		err = c.group.Wait()
		c.deliver.close(deadline)
	}
	close(c.events)
	return err
}

// request is a PublishAsync call in flight: the engine's request and where its result goes.
type request struct {
	engine.Request
	client  *Client
	result  chan PublishResult
	closure string
	invalid error // why the message can never be sent; nil when it can
}

// fill validates m and copies it into the engine's request.
func (r *request) fill(m *Message) error {
	switch {
	case !codec.ValidTopicName(m.Subject):
		r.invalid = fmt.Errorf("%w: subject %q is not a valid topic name (empty, '+', '#', NUL or invalid UTF-8)", ErrInvalidMessage, m.Subject)
	case m.ReplySubject != "" && !codec.ValidTopicName(m.ReplySubject):
		r.invalid = fmt.Errorf("%w: reply subject %q is not a valid topic name", ErrInvalidMessage, m.ReplySubject)
	case m.ReplySubject != "" && (len(m.Closure) > 65535 || !utf8.ValidString(m.Closure)):
		r.invalid = fmt.Errorf("%w: a closure sent as correlation data must be at most 65535 bytes", ErrInvalidMessage)
	case m.QoS != QoSGuaranteed && m.QoS != QoSStandard:
		r.invalid = fmt.Errorf("%w: unknown QoS %d", ErrInvalidMessage, m.QoS)
	case len(m.Content) > codec.MaxPacketSize:
		r.invalid = fmt.Errorf("%w: %d bytes of content exceed MQTT's largest packet", ErrMessageTooLarge, len(m.Content))
	}
	if r.invalid != nil {
		return r.invalid
	}
	r.Topic = m.Subject
	r.Payload = m.Content
	r.Retain = m.Retained
	r.AtMostOnce = m.QoS == QoSStandard
	if m.ReplySubject != "" {
		r.ResponseTopic = m.ReplySubject
		r.CorrelationData = engine.StringBytes(m.Closure)
	}
	return nil
}

// Complete is called once with the engine's outcome; it must not block.
func (r *request) Complete(*engine.Request) {
	res := r.outcome()
	r.client.results[statusIndex(res.Status)].Add(1)
	r.client.deliver.send(r.result, res)
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
	Accepted     uint64 // requests taken in for publishing (bad input and refusals excluded)
	OK           uint64 // results with NotifyPublishOK
	NoSubscriber uint64 // results with NotifyPublishNoSubscriber
	Denied       uint64 // results with NotifyPublishDenied
	Timeout      uint64 // results with NotifyPublishTimeout
	Failed       uint64 // results with NotifyPublishFailed, bad input included
	InFlight     int    // written and not yet acknowledged
	Queued       int    // accepted and waiting to be written (including resends after failover)
	Reconnects   uint64 // connections made after the first
	Server       string // the server in use; "" while none is connected
	BytesWritten uint64 // bytes written to servers
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
	}
	c.startMu.Lock()
	started := c.started
	c.startMu.Unlock()
	if !started {
		return st
	}
	e := c.engine.Stats()
	st.Accepted, st.InFlight, st.Queued, st.Server, st.BytesWritten = e.Admitted, e.InFlight, e.Queued, e.Server, e.BytesWritten
	if e.Connections > 0 {
		st.Reconnects = e.Connections - 1
	}
	return st
}

// outcome turns the engine's outcome into the caller's result.
func (r *request) outcome() PublishResult {
	res := PublishResult{Closure: r.closure, Server: r.Server}
	if r.invalid != nil {
		res.Status, res.Err, res.Server = NotifyPublishFailed, fmt.Errorf("%w: %w", ErrFailed, r.invalid), ""
		return res
	}
	reason := func(sentinel error) error {
		if r.ReasonString == "" {
			return sentinel
		}
		return fmt.Errorf("%w: %s", sentinel, r.ReasonString)
	}
	switch r.Outcome {
	case engine.OK:
		res.Status = NotifyPublishOK
	case engine.NoSubscriber:
		res.Status, res.Err = NotifyPublishNoSubscriber, reason(ErrNoSubscriber)
	case engine.Denied:
		res.Status, res.Err = NotifyPublishDenied, reason(ErrDenied)
		if r.Cause != nil {
			res.Err = fmt.Errorf("%w: %w", ErrDenied, r.Cause)
		}
	case engine.Rejected:
		if r.client.opts.deniedReasonCode[r.Reason] {
			res.Status, res.Err = NotifyPublishDenied, fmt.Errorf("%w: reason code 0x%02x %s", ErrDenied, r.Reason, r.ReasonString)
			break
		}
		res.Status, res.Err = NotifyPublishFailed, fmt.Errorf("%w: reason code 0x%02x %s", ErrFailed, r.Reason, r.ReasonString)
	case engine.Timeout:
		res.Status, res.Err = NotifyPublishTimeout, ErrTimeout
		if r.Cause != nil {
			res.Err = fmt.Errorf("%w: %w", ErrTimeout, r.Cause)
		}
	case engine.Expired:
		res.Status, res.Server = NotifyPublishFailed, ""
		switch {
		case r.Cause == ErrNoServers:
			res.Err = fmt.Errorf("%w: %w", ErrFailed, ErrNoServers)
		case r.NoConnection && r.Cause != nil:
			res.Err = fmt.Errorf("%w: %w: %w: %w", ErrFailed, ErrTimeout, ErrNoServers, r.Cause)
		case r.NoConnection:
			res.Err = fmt.Errorf("%w: %w: %w", ErrFailed, ErrTimeout, ErrNoServers)
		case r.Cause != nil:
			res.Err = fmt.Errorf("%w: %w: %w", ErrFailed, ErrTimeout, r.Cause)
		default:
			res.Err = fmt.Errorf("%w: %w", ErrFailed, ErrTimeout)
		}
	case engine.Closed:
		res.Status, res.Err = NotifyPublishFailed, fmt.Errorf("%w: %w", ErrFailed, ErrClosed)
	case engine.TooLarge:
		res.Status, res.Err = NotifyPublishFailed, fmt.Errorf("%w: %w: %w", ErrFailed, ErrMessageTooLarge, r.Cause)
		res.Server = ""
	case engine.Lost:
		res.Status, res.Err = NotifyPublishFailed, fmt.Errorf("%w: connection lost before the acknowledgement: %w", ErrFailed, r.Cause)
	}
	return res
}
