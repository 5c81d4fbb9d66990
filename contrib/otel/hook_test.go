package mdotel_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/mdclient/mdclient"
	mdotel "github.com/mdclient/mdclient/contrib/otel"
	"github.com/mdclient/mdclient/internal/mqttsub"
	"github.com/mdclient/mdclient/mdtest"
)

// embedded starts an embedded broker with a subscriber on feed/#, which it returns;
// denied/# is refused with 0x87, quota/# with 0x97, and lost/# is never acknowledged.
func embedded(t *testing.T) (*mdtest.Server, *mdtest.Subscription) {
	t.Helper()
	srv, err := mdtest.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	sub, err := srv.Subscribe("feed/#")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	srv.SetReasonCode("denied/#", 0x87)
	srv.SetReasonCode("quota/#", 0x97)
	srv.DropAcks("lost/#", true)
	return srv, sub
}

// received waits for the subscription's next message.
func received(t *testing.T, sub *mdtest.Subscription) mdtest.Received {
	t.Helper()
	select {
	case m, ok := <-sub.Messages():
		if !ok {
			t.Fatal("subscription closed")
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10 s")
	}
	panic("unreachable")
}

// outcome is a publish and what its span and metrics must say of it.
type outcome struct {
	subject string
	size    int
	timeout time.Duration // of the publish's context
	status  mdclient.Status
	errType string // "" for a success
}

// outcomes reach every status on the embedded broker of embedded.
var outcomes = []outcome{
	{subject: "feed/ok", size: 3, timeout: 10 * time.Second, status: mdclient.NotifyPublishOK},
	{subject: "nobody/listens", size: 0, timeout: 10 * time.Second, status: mdclient.NotifyPublishNoSubscriber},
	{subject: "denied/x", size: 5, timeout: 10 * time.Second, status: mdclient.NotifyPublishDenied, errType: "denied"},
	{subject: "quota/x", size: 7, timeout: 10 * time.Second, status: mdclient.NotifyPublishFailed, errType: "rejected"},
	{subject: "lost/x", size: 11, timeout: 300 * time.Millisecond, status: mdclient.NotifyPublishTimeout, errType: "timeout"},
}

// publishOutcome publishes o and checks its status.
func publishOutcome(t *testing.T, c *mdclient.Client, o outcome) {
	t.Helper()
	st, err := c.Publish(ctxTimeout(t, o.timeout), mdclient.Message{Subject: o.subject, Content: make([]byte, o.size)})
	if st != o.status {
		t.Fatalf("publish to %s: %s (%v), want %s", o.subject, st, err, o.status)
	}
}

// checkSpan checks the span of a publish of o answered by server (a URL, "" for none).
func checkSpan(t *testing.T, s tracetest.SpanStub, o outcome, server string) {
	t.Helper()
	if s.Name != "publish" || s.SpanKind != trace.SpanKindProducer {
		t.Errorf("%s: want a producer span named publish", describe(s))
	}
	want := map[attribute.Key]attribute.Value{
		"messaging.system":            attribute.StringValue("mqtt"),
		"messaging.operation.name":    attribute.StringValue("publish"),
		"messaging.operation.type":    attribute.StringValue("send"),
		"messaging.destination.name":  attribute.StringValue(o.subject),
		"messaging.message.body.size": attribute.IntValue(o.size),
		mdotel.OutcomeKey:             attribute.StringValue(string(o.status)),
	}
	if o.errType != "" {
		want["error.type"] = attribute.StringValue(o.errType)
	}
	if server != "" {
		host, port, _ := splitHostPort(t, server)
		want["server.address"] = attribute.StringValue(host)
		want["server.port"] = attribute.IntValue(port)
	}
	for k, v := range want {
		if got, ok := attr(s.Attributes, k); !ok || got != v {
			t.Errorf("%s: %s = %v (set: %v), want %v", o.subject, k, got.Emit(), ok, v.Emit())
		}
	}
	for _, k := range []attribute.Key{"error.type", "server.address", "server.port"} {
		if _, ok := attr(s.Attributes, k); ok && want[k].Type() == attribute.INVALID {
			t.Errorf("%s: %s set, want none", o.subject, k)
		}
	}
	if len(s.Attributes) != len(want) {
		t.Errorf("%s: attributes %v, want %d", o.subject, s.Attributes, len(want))
	}
	wantCode := codes.Unset
	if o.errType != "" {
		wantCode = codes.Error
	}
	if s.Status.Code != wantCode || (wantCode == codes.Error) != (s.Status.Description != "") {
		t.Errorf("%s: status %v %q, want %v with the error's text", o.subject, s.Status.Code, s.Status.Description, wantCode)
	}
	if !s.EndTime.After(s.StartTime) {
		t.Errorf("%s: span from %v to %v", o.subject, s.StartTime, s.EndTime)
	}
}

func splitHostPort(t *testing.T, server string) (string, int, string) {
	t.Helper()
	hp, _, _ := strings.Cut(hostPort(server), "/")
	i := len(hp) - 1
	for i >= 0 && hp[i] != ':' {
		i--
	}
	port, err := strconv.Atoi(hp[i+1:])
	if err != nil {
		t.Fatalf("server %q: %v", server, err)
	}
	return hp[:i], port, hp
}

// TestSpanPerOutcome: one producer span per publish, with the messaging attributes, the
// outcome as attribute, error.type and status Error for DENIED, FAILED and TIMEOUT, the
// status unset for OK and NO_SUBSCRIBER; over TCP and WebSocket.
func TestSpanPerOutcome(t *testing.T) {
	srv, sub := embedded(t)
	for _, addr := range []string{srv.TCPAddr(), srv.WSAddr()} {
		t.Run(addr[:2], func(t *testing.T) {
			tel := newTelemetry(t)
			c := newClient(t, addr, tel.hook())
			for _, o := range outcomes {
				publishOutcome(t, c, o)
				checkSpan(t, tel.span(t, o.subject), o, addr)
			}
			received(t, sub) // feed/ok
			if n := len(tel.spans.GetSpans()); n != len(outcomes) {
				t.Errorf("%d spans, want %d", n, len(outcomes))
			}
		})
	}
}

// TestSpanWithoutServer: FAILED before anything was written, answered by no server —
// while none was connected (no_servers), and at Close (closed).
func TestSpanWithoutServer(t *testing.T) {
	srv, err := mdtest.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	srv.Pause() // connections get no CONNACK
	tel := newTelemetry(t)
	c := newClient(t, srv.TCPAddr(), tel.hook(), mdclient.WithDrainTimeout(100*time.Millisecond))

	o := outcome{subject: "never/connected", size: 1, timeout: 200 * time.Millisecond, status: mdclient.NotifyPublishFailed, errType: "no_servers"}
	publishOutcome(t, c, o)
	checkSpan(t, tel.span(t, o.subject), o, "")

	queued := c.PublishAsync(ctxTimeout(t, time.Minute), mdclient.PublishRequest{Message: mdclient.Message{Subject: "closing/now"}})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if r := <-queued; r.Status != mdclient.NotifyPublishFailed || !errors.Is(r.Err, mdclient.ErrClosed) {
		t.Fatalf("at Close: %s %v", r.Status, r.Err)
	}
	checkSpan(t, tel.span(t, "closing/now"), outcome{subject: "closing/now", status: mdclient.NotifyPublishFailed, errType: "closed"}, "")
}

// TestParentFromCallerContext: the span is the child of the span in the caller's context.
func TestParentFromCallerContext(t *testing.T) {
	srv, sub := embedded(t)
	tel := newTelemetry(t)
	c := newClient(t, srv.TCPAddr(), tel.hook())
	ctx, parent := tel.tp.Tracer("test").Start(ctxTimeout(t, 10*time.Second), "checkout")
	if st, err := c.Publish(ctx, mdclient.Message{Subject: "feed/child"}); st != mdclient.NotifyPublishOK {
		t.Fatal(st, err)
	}
	parent.End()
	s := tel.span(t, "feed/child")
	if !s.Parent.Equal(parent.SpanContext()) || s.SpanContext.TraceID() != parent.SpanContext().TraceID() {
		t.Errorf("parent %v trace %v, want %v", s.Parent.SpanID(), s.SpanContext.TraceID(), parent.SpanContext())
	}
	received(t, sub)

	// Without one, the span is a root.
	if st, err := c.Publish(ctxTimeout(t, 10*time.Second), mdclient.Message{Subject: "feed/root"}); st != mdclient.NotifyPublishOK {
		t.Fatal(st, err)
	}
	if s := tel.span(t, "feed/root"); s.Parent.IsValid() {
		t.Errorf("parent %v, want none", s.Parent)
	}
	received(t, sub)
}

// TestTraceparentReachesSubscribers: an independent MQTT 5 subscriber (mqttsub, a second
// implementation of the protocol) and the embedded broker's own read the traceparent and
// tracestate back from the user properties, after the caller's properties, and they
// carry the span's trace id, span id and trace state.
func TestTraceparentReachesSubscribers(t *testing.T) {
	srv, sub := embedded(t)
	netSub, err := mqttsub.Dial(hostPort(srv.TCPAddr()), "otel-sub", "", "", "feed/#")
	if err != nil {
		t.Fatal(err)
	}
	defer netSub.Close()
	tel := newTelemetry(t)
	c := newClient(t, srv.TCPAddr(), tel.hook())

	// A remote parent with a trace state, as a service that received a request would have.
	ts, err := trace.ParseTraceState("vendor=abc,other=1")
	if err != nil {
		t.Fatal(err)
	}
	remote := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80, 0x31, 0x9c},
		SpanID:     trace.SpanID{0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31},
		TraceFlags: trace.FlagsSampled, TraceState: ts, Remote: true,
	})
	ctx := trace.ContextWithRemoteSpanContext(ctxTimeout(t, 10*time.Second), remote)
	caller := []mdclient.UserProperty{{Key: "order", Value: "42"}, {Key: "order", Value: "43"}}
	if st, err := c.Publish(ctx, mdclient.Message{Subject: "feed/traced", Content: []byte("x"), UserProperties: caller}); st != mdclient.NotifyPublishOK {
		t.Fatal(st, err)
	}
	s := tel.span(t, "feed/traced")
	if !s.Parent.Equal(remote) {
		t.Errorf("parent %v, want the remote %v", s.Parent, remote)
	}
	wantTP := fmt.Sprintf("00-%s-%s-01", s.SpanContext.TraceID(), s.SpanContext.SpanID())
	check := func(who string, props []mdclient.UserProperty) {
		t.Helper()
		// The caller's first, in order; then the propagator's, in its order.
		injected := []mdclient.UserProperty{{Key: "traceparent", Value: wantTP}, {Key: "tracestate", Value: "vendor=abc,other=1"}}
		if len(props) != len(caller)+len(injected) || !slices.Equal(props[:len(caller)], caller) ||
			!slices.Contains(props[len(caller):], injected[0]) || !slices.Contains(props[len(caller):], injected[1]) {
			t.Errorf("%s received %v, want %v then %v", who, props, caller, injected)
		}
		tps := propValues(props, "traceparent")
		if len(tps) != 1 {
			t.Fatalf("%s: traceparents %q", who, tps)
		}
		traceID, spanID, flags := traceparent(t, tps[0])
		if traceID != remote.TraceID().String() || traceID != s.SpanContext.TraceID().String() ||
			spanID != s.SpanContext.SpanID().String() || flags != "01" {
			t.Errorf("%s: traceparent %s, want trace %s span %s sampled", who, tps[0], s.SpanContext.TraceID(), s.SpanContext.SpanID())
		}
	}
	check("the embedded subscription", received(t, sub).UserProperties)
	if !netSub.Wait(10*time.Second, func(msgs []mqttsub.Msg) bool { return len(msgs) >= 1 }) {
		t.Fatal("the network subscriber received nothing")
	}
	got := netSub.Messages()[0]
	props := make([]mdclient.UserProperty, len(got.UserProperties))
	for i, p := range got.UserProperties {
		props[i] = mdclient.UserProperty{Key: p.Key, Value: p.Value}
	}
	check("mqttsub", props)
}

// TestCallerPropertiesNotWritten: the hook gives the message a new slice; the caller's,
// spare capacity included, is left as it was, and its properties arrive first, in order.
func TestCallerPropertiesNotWritten(t *testing.T) {
	srv, sub := embedded(t)
	tel := newTelemetry(t)
	c := newClient(t, srv.TCPAddr(), tel.hook())
	backing := make([]mdclient.UserProperty, 8)
	for i := range backing {
		backing[i] = mdclient.UserProperty{Key: "spare", Value: strconv.Itoa(i)}
	}
	backing[0] = mdclient.UserProperty{Key: "a", Value: "1"}
	backing[1] = mdclient.UserProperty{Key: "b", Value: "2"}
	before := slices.Clone(backing)
	caller := backing[:2] // room for six more: an append in place would write the spares
	if st, err := c.Publish(ctxTimeout(t, 10*time.Second), mdclient.Message{Subject: "feed/props", UserProperties: caller}); st != mdclient.NotifyPublishOK {
		t.Fatal(st, err)
	}
	if !slices.Equal(backing, before) {
		t.Errorf("the caller's array is now %v, was %v", backing, before)
	}
	got := received(t, sub).UserProperties
	if len(got) != 3 || got[0] != caller[0] || got[1] != caller[1] || got[2].Key != "traceparent" {
		t.Errorf("received %v, want a, b, traceparent", got)
	}
}

// TestSuppliedCreationContextKept: a message that already carries a valid trace context
// keeps it unchanged (the conventions' custom creation context) and the span links to it.
func TestSuppliedCreationContextKept(t *testing.T) {
	srv, sub := embedded(t)
	tel := newTelemetry(t)
	c := newClient(t, srv.TCPAddr(), tel.hook())
	const supplied = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	caller := []mdclient.UserProperty{{Key: "traceparent", Value: supplied}, {Key: "k", Value: "v"}}
	ctx, parent := tel.tp.Tracer("test").Start(ctxTimeout(t, 10*time.Second), "relay")
	if st, err := c.Publish(ctx, mdclient.Message{Subject: "feed/relayed", UserProperties: caller}); st != mdclient.NotifyPublishOK {
		t.Fatal(st, err)
	}
	parent.End()
	if got := received(t, sub).UserProperties; !slices.Equal(got, caller) {
		t.Errorf("received %v, want the caller's %v unchanged", got, caller)
	}
	s := tel.span(t, "feed/relayed")
	if !s.Parent.Equal(parent.SpanContext()) {
		t.Errorf("parent %v, want the caller's span", s.Parent)
	}
	if len(s.Links) != 1 || s.Links[0].SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" ||
		s.Links[0].SpanContext.SpanID().String() != "00f067aa0ba902b7" {
		t.Errorf("links %v, want one to the supplied context", s.Links)
	}

	// An invalid one is no creation context: it is replaced, not repeated.
	bad := []mdclient.UserProperty{{Key: "traceparent", Value: "garbage"}}
	if st, err := c.Publish(ctxTimeout(t, 10*time.Second), mdclient.Message{Subject: "feed/bad", UserProperties: bad}); st != mdclient.NotifyPublishOK {
		t.Fatal(st, err)
	}
	s = tel.span(t, "feed/bad")
	got := received(t, sub).UserProperties
	want := []mdclient.UserProperty{{Key: "traceparent", Value: fmt.Sprintf("00-%s-%s-01", s.SpanContext.TraceID(), s.SpanContext.SpanID())}}
	if !slices.Equal(got, want) || len(s.Links) != 0 {
		t.Errorf("received %v links %v, want %v and no link", got, s.Links, want)
	}
	if bad[0].Value != "garbage" {
		t.Errorf("the caller's property is now %v", bad[0])
	}
}

// TestUnsampledSpanStillPropagates: a span the sampler drops still carries its context
// (sampled flag 0) and records its metrics.
func TestUnsampledSpanStillPropagates(t *testing.T) {
	srv, sub := embedded(t)
	tel := newTelemetry(t)
	c := newClient(t, srv.TCPAddr(), tel.hook())
	remote := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, Remote: true, // not sampled
	})
	ctx := trace.ContextWithRemoteSpanContext(ctxTimeout(t, 10*time.Second), remote)
	if st, err := c.Publish(ctx, mdclient.Message{Subject: "feed/unsampled"}); st != mdclient.NotifyPublishOK {
		t.Fatal(st, err)
	}
	if n := len(tel.spans.GetSpans()); n != 0 {
		t.Errorf("%d spans exported, want none (the parent is not sampled)", n)
	}
	tps := propValues(received(t, sub).UserProperties, "traceparent")
	if len(tps) != 1 {
		t.Fatalf("traceparents %q", tps)
	}
	traceID, spanID, flags := traceparent(t, tps[0])
	if traceID != remote.TraceID().String() || spanID == remote.SpanID().String() || flags != "00" {
		t.Errorf("traceparent %s, want trace %s, a new span id, not sampled", tps[0], remote.TraceID())
	}
	sent := tel.collect(t)["messaging.client.sent.messages"].Data.(metricdata.Sum[int64])
	if len(sent.DataPoints) != 1 || sent.DataPoints[0].Value != 1 {
		t.Errorf("sent messages %+v, want 1", sent.DataPoints)
	}
}

// TestConcurrentPublishes: many goroutines publish at once; every message carries the
// context of its own span, and every span is ended once.
func TestConcurrentPublishes(t *testing.T) {
	srv, sub := embedded(t)
	tel := newTelemetry(t)
	c := newClient(t, srv.TCPAddr(), tel.hook())
	const goroutines, each = 8, 50
	results := make(chan mdclient.PublishResult, goroutines*each)
	ctx := ctxTimeout(t, 30*time.Second)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				c.PublishAsync(ctx, mdclient.PublishRequest{Result: results, Message: mdclient.Message{
					Subject: fmt.Sprintf("feed/%d/%d", g, i), Closure: strconv.Itoa(i),
					UserProperties: []mdclient.UserProperty{{Key: "g", Value: strconv.Itoa(g)}},
				}})
			}
		})
	}
	wg.Wait()
	for range goroutines * each {
		if r := <-results; r.Status != mdclient.NotifyPublishOK {
			t.Fatal(r.Status, r.Err)
		}
	}
	spans := map[string]string{} // span id → subject
	for _, s := range tel.spans.GetSpans() {
		dest, _ := attr(s.Attributes, "messaging.destination.name")
		if _, dup := spans[s.SpanContext.SpanID().String()]; dup {
			t.Fatalf("span id %s twice", s.SpanContext.SpanID())
		}
		spans[s.SpanContext.SpanID().String()] = dest.AsString()
	}
	if len(spans) != goroutines*each {
		t.Fatalf("%d spans, want %d", len(spans), goroutines*each)
	}
	for range goroutines * each {
		m := received(t, sub)
		tps := propValues(m.UserProperties, "traceparent")
		if len(tps) != 1 {
			t.Fatalf("%s: traceparents %q", m.Topic, tps)
		}
		_, spanID, _ := traceparent(t, tps[0])
		if spans[spanID] != m.Topic {
			t.Errorf("%s carries span %s, the span of %q", m.Topic, spanID, spans[spanID])
		}
	}
}

// TestGlobalDefaults: without options the hook uses the global providers as they are
// when Hook is called, and W3C Trace Context rather than the global propagator.
func TestGlobalDefaults(t *testing.T) {
	srv, sub := embedded(t)
	tel := newTelemetry(t)
	restore := setGlobals(tel)
	defer restore()
	c := newClient(t, srv.TCPAddr(), mdclient.WithHook(mdotel.Hook()))
	if st, err := c.Publish(ctxTimeout(t, 10*time.Second), mdclient.Message{Subject: "feed/global"}); st != mdclient.NotifyPublishOK {
		t.Fatal(st, err)
	}
	s := tel.span(t, "feed/global")
	if tps := propValues(received(t, sub).UserProperties, "traceparent"); len(tps) != 1 ||
		tps[0] != fmt.Sprintf("00-%s-%s-01", s.SpanContext.TraceID(), s.SpanContext.SpanID()) {
		t.Errorf("traceparents %q, want the span's", tps)
	}
	if _, ok := tel.collect(t)["messaging.client.operation.duration"]; !ok {
		t.Error("no duration recorded through the global meter provider")
	}
}

// TestWithPropagator: another propagator's fields travel instead (here W3C baggage too).
func TestWithPropagator(t *testing.T) {
	srv, sub := embedded(t)
	tel := newTelemetry(t)
	c := newClient(t, srv.TCPAddr(), tel.hook(mdotel.WithPropagator(
		propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))))
	ctx := ctxTimeout(t, 10*time.Second)
	ctx = propagation.Baggage{}.Extract(ctx, propagation.MapCarrier{"baggage": "tenant=acme"})
	if st, err := c.Publish(ctx, mdclient.Message{Subject: "feed/baggage"}); st != mdclient.NotifyPublishOK {
		t.Fatal(st, err)
	}
	props := received(t, sub).UserProperties
	if len(propValues(props, "traceparent")) != 1 || !slices.Equal(propValues(props, "baggage"), []string{"tenant=acme"}) {
		t.Errorf("received %v, want traceparent and baggage", props)
	}
}

// TestWithAttributes: the attributes of WithAttributes are on spans and metric points.
func TestWithAttributes(t *testing.T) {
	srv, sub := embedded(t)
	tel := newTelemetry(t)
	c := newClient(t, srv.TCPAddr(), tel.hook(mdotel.WithAttributes(attribute.String("client", "orders"))))
	if st, err := c.Publish(ctxTimeout(t, 10*time.Second), mdclient.Message{Subject: "feed/attrs"}); st != mdclient.NotifyPublishOK {
		t.Fatal(st, err)
	}
	received(t, sub)
	if v, ok := attr(tel.span(t, "feed/attrs").Attributes, "client"); !ok || v.AsString() != "orders" {
		t.Errorf("span attribute client = %v", v.Emit())
	}
	sent := tel.collect(t)["messaging.client.sent.messages"].Data.(metricdata.Sum[int64])
	if v, ok := sent.DataPoints[0].Attributes.Value("client"); !ok || v.AsString() != "orders" {
		t.Errorf("metric attribute client = %v", v.Emit())
	}
}

// TestMetricsByOutcome: the duration histogram (with the conventions' buckets, its
// values the spans' durations) and the sent count, by outcome.
func TestMetricsByOutcome(t *testing.T) {
	srv, _ := embedded(t)
	tel := newTelemetry(t)
	c := newClient(t, srv.TCPAddr(), tel.hook())
	counts := map[mdclient.Status]int{}
	for _, o := range outcomes {
		n := 1
		if o.status == mdclient.NotifyPublishOK {
			n = 3
		}
		for range n {
			publishOutcome(t, c, o)
		}
		counts[o.status] += n
	}
	host, port, _ := splitHostPort(t, srv.TCPAddr())
	wantAttrs := func(o outcome) attribute.Set {
		kvs := []attribute.KeyValue{
			attribute.String("messaging.system", "mqtt"), attribute.String("messaging.operation.name", "publish"),
			attribute.String("messaging.operation.type", "send"), mdotel.OutcomeKey.String(string(o.status)),
			attribute.String("server.address", host), attribute.Int("server.port", port),
		}
		if o.errType != "" {
			kvs = append(kvs, attribute.String("error.type", o.errType))
		}
		return attribute.NewSet(kvs...)
	}
	ms := tel.collect(t)

	dur := ms["messaging.client.operation.duration"]
	if dur.Unit != "s" {
		t.Errorf("duration unit %q", dur.Unit)
	}
	hist := dur.Data.(metricdata.Histogram[float64])
	sent := ms["messaging.client.sent.messages"].Data.(metricdata.Sum[int64])
	if !sent.IsMonotonic || len(hist.DataPoints) != len(outcomes) || len(sent.DataPoints) != len(outcomes) {
		t.Fatalf("histogram points %d, sent points %d (monotonic %v), want %d", len(hist.DataPoints), len(sent.DataPoints), sent.IsMonotonic, len(outcomes))
	}
	for _, o := range outcomes {
		want := wantAttrs(o)
		i := slices.IndexFunc(hist.DataPoints, func(p metricdata.HistogramDataPoint[float64]) bool { return p.Attributes.Equals(&want) })
		j := slices.IndexFunc(sent.DataPoints, func(p metricdata.DataPoint[int64]) bool { return p.Attributes.Equals(&want) })
		if i < 0 || j < 0 {
			t.Errorf("%s: no point with %v", o.status, want.ToSlice())
			continue
		}
		p := hist.DataPoints[i]
		if p.Count != uint64(counts[o.status]) || sent.DataPoints[j].Value != int64(counts[o.status]) {
			t.Errorf("%s: histogram count %d, sent %d, want %d", o.status, p.Count, sent.DataPoints[j].Value, counts[o.status])
		}
		if !slices.Equal(p.Bounds, []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}) {
			t.Errorf("bounds %v", p.Bounds)
		}
		if o.status != mdclient.NotifyPublishOK { // one publish: its value is its span's duration
			s := tel.span(t, o.subject)
			if d := s.EndTime.Sub(s.StartTime).Seconds(); p.Sum != d {
				t.Errorf("%s: duration %v, span %v", o.status, p.Sum, d)
			}
		}
	}
	if s := tel.span(t, "lost/x"); s.EndTime.Sub(s.StartTime) < 300*time.Millisecond {
		t.Errorf("the TIMEOUT's span lasted %v, less than its context", s.EndTime.Sub(s.StartTime))
	}
}

// TestNoSpanForRefusedRequests: requests the client refuses before its hook runs (bad
// input, a context already done, after Close) get no span.
func TestNoSpanForRefusedRequests(t *testing.T) {
	srv, _ := embedded(t)
	tel := newTelemetry(t)
	c := newClient(t, srv.TCPAddr(), tel.hook())
	ctx := ctxTimeout(t, 10*time.Second)
	if st, _ := c.Publish(ctx, mdclient.Message{Subject: "bad/+/subject"}); st != mdclient.NotifyPublishFailed {
		t.Fatal(st)
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	if st, _ := c.Publish(done, mdclient.Message{Subject: "feed/late"}); st != mdclient.NotifyPublishFailed {
		t.Fatal(st)
	}
	c.Close()
	if st, _ := c.Publish(ctx, mdclient.Message{Subject: "feed/closed"}); st != mdclient.NotifyPublishFailed {
		t.Fatal(st)
	}
	if n := len(tel.spans.GetSpans()); n != 0 {
		t.Errorf("%d spans for requests the client refused before the hook, want 0", n)
	}
}
