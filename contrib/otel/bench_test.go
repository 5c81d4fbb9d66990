package mdotel_test

import (
	"context"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/mdclient/mdclient"
	mdotel "github.com/mdclient/mdclient/contrib/otel"
	"github.com/mdclient/mdclient/mdtest"
)

// BenchmarkPublish: what the hook adds to a publish, against a sink that acknowledges
// everything at once (so the client's own cost shows), through PublishAsync with one
// shared result channel:
//
//	go test -run '^$' -bench . -benchmem
//
// without-hook is the client alone; sampled makes, ends and batches a span per publish
// (to an exporter that drops them) and records the metrics; unsampled is the same with a
// sampler that keeps none (the context is still injected, the metrics recorded).
func BenchmarkPublish(b *testing.B) {
	sink, err := mdtest.NewSink()
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	telemetry := func(b *testing.B, sampler sdktrace.Sampler) mdclient.Option {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler), sdktrace.WithBatcher(tracetest.NewNoopExporter()))
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		b.Cleanup(func() {
			tp.Shutdown(context.Background())
			mp.Shutdown(context.Background())
		})
		return mdclient.WithHook(mdotel.Hook(mdotel.WithTracerProvider(tp), mdotel.WithMeterProvider(mp)))
	}
	b.Run("without-hook", func(b *testing.B) { benchPublish(b, sink.TCPAddr()) })
	b.Run("sampled", func(b *testing.B) { benchPublish(b, sink.TCPAddr(), telemetry(b, sdktrace.AlwaysSample())) })
	b.Run("unsampled", func(b *testing.B) { benchPublish(b, sink.TCPAddr(), telemetry(b, sdktrace.NeverSample())) })
}

func benchPublish(b *testing.B, addr string, opts ...mdclient.Option) {
	c := mdclient.NewClient(opts...)
	defer c.Close()
	if err := c.SetServers([]string{addr}); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	msg := mdclient.Message{Subject: "bench/otel", Content: make([]byte, 64)}
	if st, err := c.Publish(ctx, msg); st != mdclient.NotifyPublishOK { // connected before the clock starts
		b.Fatal(st, err)
	}
	const window = 1000
	results := make(chan mdclient.PublishResult, window)
	b.ReportAllocs()
	b.ResetTimer()
	pending := 0
	for range b.N {
		if pending == window {
			if r := <-results; r.Status != mdclient.NotifyPublishOK {
				b.Fatal(r.Status, r.Err)
			}
			pending--
		}
		c.PublishAsync(ctx, mdclient.PublishRequest{Message: msg, Result: results})
		pending++
	}
	for ; pending > 0; pending-- {
		if r := <-results; r.Status != mdclient.NotifyPublishOK {
			b.Fatal(r.Status, r.Err)
		}
	}
}
