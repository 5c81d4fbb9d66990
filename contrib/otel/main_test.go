package mdotel_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/goleak"

	"github.com/mdclient/mdclient"
	mdotel "github.com/mdclient/mdclient/contrib/otel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// telemetry is an SDK tracer provider exporting to memory at every span's end, and an
// SDK meter provider read by hand.
type telemetry struct {
	spans  *tracetest.InMemoryExporter
	tp     *sdktrace.TracerProvider
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider
}

func newTelemetry(t testing.TB) *telemetry {
	t.Helper()
	tel := &telemetry{spans: tracetest.NewInMemoryExporter(), reader: sdkmetric.NewManualReader()}
	// A synchronous processor: a span is exported when it ends, which is before its
	// publish's result is delivered; so a test that has the result has the span.
	tel.tp = sdktrace.NewTracerProvider(sdktrace.WithSyncer(tel.spans))
	tel.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(tel.reader))
	t.Cleanup(func() {
		ctx := context.Background()
		if err := tel.tp.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		if err := tel.mp.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	return tel
}

// hook is an mdotel.Hook recording into tel.
func (tel *telemetry) hook(opts ...mdotel.Option) mdclient.Option {
	return mdclient.WithHook(mdotel.Hook(append([]mdotel.Option{
		mdotel.WithTracerProvider(tel.tp), mdotel.WithMeterProvider(tel.mp)}, opts...)...))
}

// span returns the one span published to subject.
func (tel *telemetry) span(t testing.TB, subject string) tracetest.SpanStub {
	t.Helper()
	var found []tracetest.SpanStub
	for _, s := range tel.spans.GetSpans() {
		if v, ok := attr(s.Attributes, "messaging.destination.name"); ok && v.AsString() == subject {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d spans for %q, want 1", len(found), subject)
	}
	return found[0]
}

// collect reads every metric.
func (tel *telemetry) collect(t testing.TB) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := tel.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

func attr(kvs []attribute.KeyValue, key attribute.Key) (attribute.Value, bool) {
	for _, kv := range kvs {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// newClient returns a client of addr with opts, closed at the test's end.
func newClient(t testing.TB, addr string, opts ...mdclient.Option) *mdclient.Client {
	t.Helper()
	c := mdclient.NewClient(opts...)
	t.Cleanup(func() { c.Close() })
	if err := c.SetServers([]string{addr}); err != nil {
		t.Fatal(err)
	}
	return c
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// traceparent splits a W3C traceparent value into its trace id, span id and flags,
// without the propagator under test.
func traceparent(t testing.TB, v string) (traceID, spanID, flags string) {
	t.Helper()
	parts := strings.Split(v, "-")
	if len(parts) != 4 || parts[0] != "00" || len(parts[1]) != 32 || len(parts[2]) != 16 || len(parts[3]) != 2 {
		t.Fatalf("traceparent %q is not version-00-traceid-spanid-flags", v)
	}
	return parts[1], parts[2], parts[3]
}

// propValues returns the values of key in props, in order.
func propValues[P ~struct{ Key, Value string }](props []P, key string) []string {
	var vs []string
	for _, p := range props {
		if kv := struct{ Key, Value string }(p); kv.Key == key {
			vs = append(vs, kv.Value)
		}
	}
	return vs
}

// hostPort strips the scheme of "tcp://host:port".
func hostPort(addr string) string {
	_, hp, _ := strings.Cut(addr, "://")
	return hp
}

func describe(s tracetest.SpanStub) string {
	return fmt.Sprintf("span %q kind %s status %v attrs %v", s.Name, s.SpanKind, s.Status, s.Attributes)
}

// setGlobals makes tel's providers the global ones; restore sets no-op providers back.
func setGlobals(tel *telemetry) (restore func()) {
	otel.SetTracerProvider(tel.tp)
	otel.SetMeterProvider(tel.mp)
	return func() {
		otel.SetTracerProvider(tracenoop.NewTracerProvider())
		otel.SetMeterProvider(metricnoop.NewMeterProvider())
	}
}
