// Package mdotel traces and measures mdclient publishes with OpenTelemetry.
//
// It lives in a module of its own (github.com/mdclient/mdclient/contrib/otel) so that
// mdclient itself does not depend on OpenTelemetry. Import it under its package name:
//
//	import mdotel "github.com/mdclient/mdclient/contrib/otel"
//
//	c := mdclient.NewClient(mdclient.WithHook(mdotel.Hook()))
//	reg, err := mdotel.ObserveStats(c) // the client's gauges; reg.Unregister() when done
//
// # Spans
//
// [Hook] starts a span for every publish the client accepts, following the OpenTelemetry
// messaging conventions (semantic conventions v1.43.0, whose messaging part is still in
// development): kind Producer, parent the span of the caller's context, and the
// attributes
//
//	messaging.system             "mqtt" (the conventions register no value for MQTT)
//	messaging.operation.name     "publish" (the MQTT packet)
//	messaging.operation.type     "send"
//	messaging.destination.name   the Subject
//	messaging.message.body.size  len(Content)
//	mdclient.outcome             the result's status, e.g. "NOTIFY_PUBLISH_OK"
//	error.type                   for a failed publish only: see below
//	server.address, server.port  the server that answered, when one did
//
// The span is named "publish", without the subject: the conventions put the destination
// in the name only when it is of low cardinality, and MQTT subjects often are not (one
// per device, order or user); the subject is in messaging.destination.name. The span
// starts when the client accepts the request and ends when its result is known, just
// before the result is delivered.
//
// Its status follows the conventions' rule for errors: left unset when the publish
// succeeded, Error (with the result's error text as description) when it did not.
// NOTIFY_PUBLISH_OK and NOTIFY_PUBLISH_NO_SUBSCRIBER are successes — the server took the
// message, and MQTT 5 makes every reason code below 0x80, 0x10 "no matching subscribers"
// included, a success; NOTIFY_PUBLISH_DENIED, _FAILED and _TIMEOUT are errors (a TIMEOUT
// may have been published, but the publish did not complete). error.type says which:
//
//	denied             NOTIFY_PUBLISH_DENIED: the server or the token refused it
//	timeout            NOTIFY_PUBLISH_TIMEOUT: written, no acknowledgement in time
//	closed             FAILED: Close came before it was written
//	invalid_message    FAILED: the message (with the hook's properties) is invalid
//	message_too_large  FAILED: over the server's Maximum Packet Size
//	no_servers         FAILED: its context ended while no server was connected
//	expired            FAILED: its context ended before it was written
//	rejected           FAILED: any other reason; in practice a PUBACK failure code
//	                   (0x97 quota exceeded, 0x95 too large for the broker, ...)
//
// Requests the client refuses before accepting them — an invalid subject, a call
// before SetServers or after Close, a context already done — get no span: the hook is
// not called for them.
//
// # Trace context in the message
//
// The span's context is injected into the message's MQTT 5 user properties, as the W3C
// "Trace Context: MQTT protocol" draft says: keys "traceparent" and "tracestate" (the
// latter only when the trace state is not empty), appended after the caller's
// properties. The hook replaces Message.UserProperties with a new slice and never writes
// the caller's. A message whose properties already carry a valid trace context (a
// relayed message, say) keeps it unchanged, as the conventions ask of a creation context
// the user supplied, and the span links to it. The default propagator is W3C Trace
// Context, not the global one (which is a no-op until set); see [WithPropagator].
//
// # Metrics
//
// The hook records, per result:
//
//	messaging.client.operation.duration  histogram, s, from acceptance to result (the span's duration)
//	messaging.client.sent.messages       counter, {message}, one per accepted publish
//
// both with messaging.system, messaging.operation.name, messaging.operation.type,
// mdclient.outcome, error.type (failures only) and server.address/server.port (when a
// server answered), but not the subject: the conventions leave the destination out of
// metrics unless it is of low cardinality. Counting sent.messages by mdclient.outcome
// gives the publishes by outcome. The histogram has the conventions' buckets (5 ms to
// 10 s). [ObserveStats] adds the client's in-flight, queued, connection and reconnect
// counts from Client.Stats.
//
// # Cost
//
// The hook and its done function run on mdclient's paths: the hook on the caller's
// goroutine, the done function on the client's engine goroutine, which every other
// result waits on. Span.End runs there: configure the tracer provider with a batching
// span processor (sdktrace.WithBatcher, which never blocks), not a synchronous one in
// front of a network exporter.
package mdotel

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/semconv/v1.43.0/messagingconv"
	"go.opentelemetry.io/otel/trace"

	"github.com/mdclient/mdclient"
)

// ScopeName is the instrumentation scope of the tracer and meter this package uses.
const ScopeName = "github.com/mdclient/mdclient/contrib/otel"

// OutcomeKey is the attribute holding a publish's mdclient status, on spans and metrics.
const OutcomeKey = attribute.Key("mdclient.outcome")

// The values of the messaging attributes this package sets.
const (
	// System is messaging.system: the conventions register no value for MQTT, so the
	// protocol's name stands for it.
	System = "mqtt"
	// OperationName is messaging.operation.name, and the span's name.
	OperationName = "publish"
)

// Option configures Hook and ObserveStats.
type Option func(*config)

type config struct {
	tracerProvider trace.TracerProvider
	meterProvider  metric.MeterProvider
	propagator     propagation.TextMapPropagator
	attrs          []attribute.KeyValue
}

// WithTracerProvider sets the provider of the tracer that makes the spans. Default: the
// global one, otel.GetTracerProvider(), taken when Hook is called (the global provider
// forwards to one set later).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tracerProvider = tp }
}

// WithMeterProvider sets the provider of the meter that records the metrics. Default:
// the global one, otel.GetMeterProvider(), taken when Hook or ObserveStats is called.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.meterProvider = mp }
}

// WithPropagator sets how the span's context is written into the message's user
// properties. Default: propagation.TraceContext{}, the W3C traceparent and tracestate
// that the trace-context-mqtt draft names, rather than the global propagator, which is a
// no-op until the application sets one. Pass otel.GetTextMapPropagator() to use the
// global one (to carry baggage too, say).
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(c *config) { c.propagator = p }
}

// WithAttributes adds attributes to every span and metric point this package records:
// to tell several clients of one process apart, say. Keep them of low cardinality.
// Default: none.
func WithAttributes(kv ...attribute.KeyValue) Option {
	return func(c *config) { c.attrs = append(c.attrs, kv...) }
}

func newConfig(opts []Option) config {
	var c config
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if c.tracerProvider == nil {
		c.tracerProvider = otel.GetTracerProvider()
	}
	if c.meterProvider == nil {
		c.meterProvider = otel.GetMeterProvider()
	}
	if c.propagator == nil {
		c.propagator = propagation.TraceContext{}
	}
	return c
}

// durationBuckets are the bucket boundaries the messaging conventions give for
// messaging.client.operation.duration, in seconds.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// Hook returns an mdclient.Hook that traces and measures every publish the client
// accepts: a producer span, the trace context in the message's user properties, and
// the duration and count of publishes by outcome (see the package documentation). Pass
// it to mdclient.WithHook. One Hook may serve several clients.
//
// An instrument the meter provider refuses is reported to otel.Handle and left out; the
// rest works.
func Hook(opts ...Option) mdclient.Hook {
	cfg := newConfig(opts)
	h := &hook{
		tracer:     cfg.tracerProvider.Tracer(ScopeName, trace.WithSchemaURL(semconv.SchemaURL)),
		propagator: cfg.propagator,
		attrs:      cfg.attrs,
	}
	meter := cfg.meterProvider.Meter(ScopeName, metric.WithSchemaURL(semconv.SchemaURL))
	duration, err := messagingconv.NewClientOperationDuration(meter, metric.WithExplicitBucketBoundaries(durationBuckets...))
	if err != nil {
		otel.Handle(err)
	}
	sent, err := messagingconv.NewClientSentMessages(meter)
	if err != nil {
		otel.Handle(err)
	}
	h.duration, h.sent = duration.Inst(), sent.Inst()
	return h.hook
}

// hook is the state one Hook shares between its publishes; safe for concurrent use.
type hook struct {
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
	attrs      []attribute.KeyValue // WithAttributes'
	duration   metric.Float64Histogram
	sent       metric.Int64Counter
	publishes  sync.Pool // of *publish

	measures sync.Map     // measureKey → *measure: the attribute sets of the metric points
	nMeasure atomic.Int32 // entries in measures, bounded by maxMeasures
	server   atomic.Pointer[serverAttrs]
}

// The span's fixed attributes.
var (
	systemAttr    = semconv.MessagingSystemKey.String(System)
	operationAttr = semconv.MessagingOperationName(OperationName)
	spanKind      = trace.WithSpanKind(trace.SpanKindProducer)
)

// startAttrs is the number of attributes a span starts with, WithAttributes' aside.
const startAttrs = 5

// publish is one publish between the hook and its done function, recycled through
// hook.publishes once done has run: the client calls done exactly once, and nothing of
// a publish is kept by OpenTelemetry past the call it was passed to (the SDK copies
// attributes and options), so the buffers, the options made over them and the done
// function itself are made once per publish value rather than once per message.
type publish struct {
	h       *hook
	ctx     context.Context // the span's
	span    trace.Span
	start   time.Time // taken when the span cannot tell its own times
	carrier carrier

	attrs    []attribute.KeyValue  // the span's start attributes, rewritten per message
	endAttrs [4]attribute.KeyValue // outcome, error.type, server.address, server.port
	opts     [3]trace.SpanStartOption
	done     func(mdclient.PublishResult) // p.finish, made once
}

func (h *hook) newPublish() *publish {
	p := &publish{h: h, attrs: make([]attribute.KeyValue, startAttrs+len(h.attrs))}
	copy(p.attrs[startAttrs:], h.attrs)
	p.opts[0], p.opts[1] = spanKind, trace.WithAttributes(p.attrs...) // p.attrs is rewritten, never moved
	p.done = p.finish
	return p
}

// spanTimes is what the SDK's spans tell of their times (sdktrace.ReadOnlySpan): the
// duration metric then is the span's duration exactly, at no extra clock read.
type spanTimes interface {
	StartTime() time.Time
	EndTime() time.Time
}

// hook is the mdclient.Hook: it runs on the caller's goroutine.
func (h *hook) hook(ctx context.Context, m *mdclient.Message) func(mdclient.PublishResult) {
	p, _ := h.publishes.Get().(*publish)
	if p == nil {
		p = h.newPublish()
	}
	p.attrs[0], p.attrs[1], p.attrs[2] = systemAttr, operationAttr, semconv.MessagingOperationTypeSend
	p.attrs[3] = semconv.MessagingDestinationName(m.Subject)
	p.attrs[4] = semconv.MessagingMessageBodySize(len(m.Content))
	opts := p.opts[:2]

	// A trace context the caller put in the message is a creation context of its own:
	// kept as it is, and linked.
	p.carrier = carrier{props: m.UserProperties}
	var supplied trace.SpanContext
	if len(m.UserProperties) > 0 {
		supplied = trace.SpanContextFromContext(h.propagator.Extract(context.Background(), &p.carrier))
		if supplied.IsValid() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: supplied}))
		}
	}
	p.ctx, p.span = h.tracer.Start(ctx, OperationName, opts...)
	p.opts[2] = nil
	if _, ok := p.span.(spanTimes); !ok || !p.span.IsRecording() {
		p.start = time.Now()
	}
	if !supplied.IsValid() {
		h.propagator.Inject(p.ctx, &p.carrier)
		if p.carrier.owned {
			m.UserProperties = p.carrier.props
		}
	}
	p.carrier = carrier{}
	return p.done
}

// finish is a publish's done function: it ends the span and records the metrics, on a
// client goroutine, without blocking; then p goes back to the pool.
func (p *publish) finish(r mdclient.PublishResult) {
	h, span := p.h, p.span
	errType := errorType(r)
	srv := h.serverAttrs(r.Server)
	if span.IsRecording() {
		attrs := append(p.endAttrs[:0], OutcomeKey.String(string(r.Status)))
		if errType != "" {
			attrs = append(attrs, semconv.ErrorTypeKey.String(errType))
		}
		if srv.ok {
			attrs = append(attrs, srv.address, srv.port)
		}
		span.SetAttributes(attrs...)
		if errType != "" {
			desc := string(r.Status)
			if r.Err != nil {
				desc = r.Err.Error()
			}
			span.SetStatus(codes.Error, desc)
		}
		clear(p.endAttrs[:])
	}
	span.End()
	var d time.Duration
	if t, ok := span.(spanTimes); ok && p.start.IsZero() {
		d = t.EndTime().Sub(t.StartTime())
	} else {
		d = time.Since(p.start)
	}

	ms := h.measure(measureKey{status: r.Status, errType: errType, server: srv.raw}, srv)
	h.duration.Record(p.ctx, d.Seconds(), ms.record...)
	h.sent.Add(p.ctx, 1, ms.add...)

	p.ctx, p.span, p.start = nil, nil, time.Time{}
	p.attrs[3], p.attrs[4] = attribute.KeyValue{}, attribute.KeyValue{} // the subject
	h.publishes.Put(p)
}

// errorType classifies a failed publish for error.type; "" for a successful one.
func errorType(r mdclient.PublishResult) string {
	switch r.Status {
	case mdclient.NotifyPublishOK, mdclient.NotifyPublishNoSubscriber:
		return ""
	case mdclient.NotifyPublishDenied:
		return "denied"
	case mdclient.NotifyPublishTimeout:
		return "timeout"
	case mdclient.NotifyPublishFailed:
	default:
		return semconv.ErrorTypeOther.Value.AsString()
	}
	switch err := r.Err; {
	case errors.Is(err, mdclient.ErrClosed):
		return "closed"
	case errors.Is(err, mdclient.ErrInvalidMessage):
		return "invalid_message"
	case errors.Is(err, mdclient.ErrMessageTooLarge):
		return "message_too_large"
	case errors.Is(err, mdclient.ErrNoServers):
		return "no_servers"
	case errors.Is(err, mdclient.ErrTimeout):
		return "expired"
	}
	return "rejected"
}

// serverAttrs is a result's server as server.address and server.port.
type serverAttrs struct {
	raw           string
	ok            bool
	address, port attribute.KeyValue
}

// serverAttrs parses a PublishResult's Server ("tcp://host:port", "ws://host:port/mqtt",
// "host:port"), remembering the last one: results come from few servers.
func (h *hook) serverAttrs(server string) serverAttrs {
	if server == "" {
		return serverAttrs{}
	}
	if s := h.server.Load(); s != nil && s.raw == server {
		return *s
	}
	s := serverAttrs{raw: server}
	hostport := server
	if _, rest, found := strings.Cut(hostport, "://"); found {
		hostport = rest
	}
	hostport, _, _ = strings.Cut(hostport, "/")
	if host, port, err := net.SplitHostPort(hostport); err == nil {
		if p, err := strconv.Atoi(port); err == nil {
			s.ok, s.address, s.port = true, semconv.ServerAddress(host), semconv.ServerPort(p)
		}
	}
	h.server.Store(&s)
	return s
}

// measureKey is what tells the metric points of one Hook apart.
type measureKey struct {
	status  mdclient.Status
	errType string
	server  string // as in the result; "" when none answered
}

// measure is the options of the metric points of one measureKey, made once.
type measure struct {
	record []metric.RecordOption
	add    []metric.AddOption
}

// maxMeasures bounds the attribute sets a Hook keeps; past it (servers come and go
// through redirects, say) they are made per result.
const maxMeasures = 256

// measure returns the metric options of k (whose server srv is), made once and kept
// while there is room.
func (h *hook) measure(k measureKey, srv serverAttrs) *measure {
	if v, ok := h.measures.Load(k); ok {
		return v.(*measure)
	}
	attrs := make([]attribute.KeyValue, 0, 7+len(h.attrs))
	attrs = append(attrs, systemAttr, operationAttr, semconv.MessagingOperationTypeSend, OutcomeKey.String(string(k.status)))
	if k.errType != "" {
		attrs = append(attrs, semconv.ErrorTypeKey.String(k.errType))
	}
	if srv.ok {
		attrs = append(attrs, srv.address, srv.port)
	}
	attrs = append(attrs, h.attrs...)
	opt := metric.WithAttributeSet(attribute.NewSet(attrs...))
	m := &measure{record: []metric.RecordOption{opt}, add: []metric.AddOption{opt}}
	if h.nMeasure.Load() < maxMeasures {
		if v, loaded := h.measures.LoadOrStore(k, m); loaded {
			return v.(*measure)
		}
		h.nMeasure.Add(1)
	}
	return m
}
