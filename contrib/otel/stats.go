package mdotel

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/mdclient/mdclient"
)

// The names of the instruments ObserveStats registers.
const (
	InFlightMetric    = "mdclient.publish.in_flight" // {message}: written, not yet acknowledged (Stats.InFlight)
	QueuedMetric      = "mdclient.publish.queued"    // {message}: accepted, not yet written (Stats.Queued)
	ConnectionsMetric = "mdclient.connections"       // {connection}: live connections (len(Stats.Servers))
	ReconnectsMetric  = "mdclient.reconnects"        // {connection}: connections made after the first (Stats.Reconnects)
)

// ObserveStats reports c's state as asynchronous instruments, read from one c.Stats()
// snapshot per collection (one round trip to the client's engine goroutine; it works
// before SetServers and after Close and does not block):
//
//	mdclient.publish.in_flight  up-down counter  {message}     written, not yet acknowledged
//	mdclient.publish.queued     up-down counter  {message}     accepted, not yet written (resends included)
//	mdclient.connections        up-down counter  {connection}  live connections
//	mdclient.reconnects         counter          {connection}  connections made after the first
//
// The counts of messages and connections are up-down counters rather than gauges, as
// OpenTelemetry advises for additive values (the in-flight messages of several clients
// add up), and reconnects, which only grow, a counter. Every point carries the
// attributes of WithAttributes, which tell several clients apart. Of the options only
// WithMeterProvider and WithAttributes apply.
//
// It is separate from Hook because a hook never sees its client. Call the returned
// registration's Unregister when the client is done with; until then the meter keeps c.
func ObserveStats(c *mdclient.Client, opts ...Option) (metric.Registration, error) {
	if c == nil {
		return nil, errors.New("mdotel: ObserveStats of a nil client")
	}
	cfg := newConfig(opts)
	meter := cfg.meterProvider.Meter(ScopeName, metric.WithSchemaURL(semconv.SchemaURL))
	inFlight, err1 := meter.Int64ObservableUpDownCounter(InFlightMetric, metric.WithUnit("{message}"),
		metric.WithDescription("Messages written and not yet acknowledged."))
	queued, err2 := meter.Int64ObservableUpDownCounter(QueuedMetric, metric.WithUnit("{message}"),
		metric.WithDescription("Messages accepted and not yet written, resends after a failover included."))
	conns, err3 := meter.Int64ObservableUpDownCounter(ConnectionsMetric, metric.WithUnit("{connection}"),
		metric.WithDescription("Connections to servers that are up."))
	reconnects, err4 := meter.Int64ObservableCounter(ReconnectsMetric, metric.WithUnit("{connection}"),
		metric.WithDescription("Connections made after the first one (failovers)."))
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return nil, err
	}
	opt := metric.WithAttributeSet(attribute.NewSet(cfg.attrs...))
	return meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		st := c.Stats()
		o.ObserveInt64(inFlight, int64(st.InFlight), opt)
		o.ObserveInt64(queued, int64(st.Queued), opt)
		o.ObserveInt64(conns, int64(len(st.Servers)), opt)
		o.ObserveInt64(reconnects, int64(st.Reconnects), opt)
		return nil
	}, inFlight, queued, conns, reconnects)
}
