package mdotel_test

import (
	"context"
	"fmt"
	"strings"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/mdclient/mdclient"
	mdotel "github.com/mdclient/mdclient/contrib/otel"
	"github.com/mdclient/mdclient/mdtest"
)

// A traced publish: the span of the caller's context is the parent of the publish's
// producer span, whose context travels in the message's traceparent user property.
func ExampleHook() {
	ctx := context.Background()
	// In production: sdktrace.WithBatcher(an OTLP exporter), and a periodic reader. The
	// example exports each span as it ends, to memory, and reads metrics by hand.
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	defer tp.Shutdown(ctx)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(ctx)

	broker, err := mdtest.NewServer()
	if err != nil {
		panic(err)
	}
	defer broker.Close()
	sub, err := broker.Subscribe("orders/#")
	if err != nil {
		panic(err)
	}
	defer sub.Close()

	c := mdclient.NewClient(mdclient.WithHook(mdotel.Hook(
		mdotel.WithTracerProvider(tp), mdotel.WithMeterProvider(mp))))
	defer c.Close()
	reg, err := mdotel.ObserveStats(c, mdotel.WithMeterProvider(mp))
	if err != nil {
		panic(err)
	}
	defer reg.Unregister()
	if err := c.SetServers([]string{broker.TCPAddr()}); err != nil {
		panic(err)
	}

	ctx, checkout := tp.Tracer("shop").Start(ctx, "checkout")
	status, _ := c.Publish(ctx, mdclient.Message{Subject: "orders/new", Content: []byte(`{"id":42}`)})
	checkout.End()
	fmt.Println("publish:", status)

	span := spans.GetSpans()[0]
	fmt.Println("span:", span.Name, span.SpanKind, "child of checkout:", span.Parent.SpanID() == checkout.SpanContext().SpanID())
	for _, kv := range span.Attributes {
		if kv.Key == "server.port" { // the broker's, chosen by the system
			fmt.Printf("  %s = %v\n", kv.Key, strings.HasSuffix(broker.TCPAddr(), ":"+kv.Value.Emit()))
			continue
		}
		fmt.Printf("  %s = %s\n", kv.Key, kv.Value.Emit())
	}
	for _, p := range (<-sub.Messages()).UserProperties {
		want := "00-" + span.SpanContext.TraceID().String() + "-" + span.SpanContext.SpanID().String() + "-01"
		fmt.Printf("received %s, the span's: %v\n", p.Key, p.Value == want)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		panic(err)
	}
	for _, m := range rm.ScopeMetrics[0].Metrics {
		if strings.HasPrefix(m.Name, "messaging.") {
			fmt.Println("metric:", m.Name)
		}
	}
	// Output:
	// publish: NOTIFY_PUBLISH_OK
	// span: publish producer child of checkout: true
	//   messaging.system = mqtt
	//   messaging.operation.name = publish
	//   messaging.operation.type = send
	//   messaging.destination.name = orders/new
	//   messaging.message.body.size = 9
	//   mdclient.outcome = NOTIFY_PUBLISH_OK
	//   server.address = 127.0.0.1
	//   server.port = true
	// received traceparent, the span's: true
	// metric: messaging.client.operation.duration
	// metric: messaging.client.sent.messages
}
