package mdotel_test

import (
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/mdclient/mdclient"
	mdotel "github.com/mdclient/mdclient/contrib/otel"
	"github.com/mdclient/mdclient/mdtest"
)

// statsPoint is what ObserveStats reported for one instrument: its value, whether it is
// monotonic, and whether it was reported at all.
type statsPoint struct {
	value     int64
	monotonic bool
}

// observed reads the instruments of ObserveStats, checking their attributes are want.
func observed(t *testing.T, tel *telemetry, want attribute.Set) map[string]statsPoint {
	t.Helper()
	out := map[string]statsPoint{}
	for name, m := range tel.collect(t) {
		switch name {
		case mdotel.InFlightMetric, mdotel.QueuedMetric, mdotel.ConnectionsMetric, mdotel.ReconnectsMetric:
		default:
			continue
		}
		sum, ok := m.Data.(metricdata.Sum[int64])
		if !ok || len(sum.DataPoints) != 1 {
			t.Fatalf("%s: %T %+v, want one int64 sum point", name, m.Data, m.Data)
		}
		if p := sum.DataPoints[0]; !p.Attributes.Equals(&want) {
			t.Errorf("%s: attributes %v, want %v", name, p.Attributes.ToSlice(), want.ToSlice())
		}
		out[name] = statsPoint{sum.DataPoints[0].Value, sum.IsMonotonic}
	}
	return out
}

// checkObserved checks the instruments against Stats, which the caller has seen settle.
func checkObserved(t *testing.T, tel *telemetry, want attribute.Set, st mdclient.Stats) {
	t.Helper()
	got := observed(t, tel, want)
	for name, w := range map[string]statsPoint{
		mdotel.InFlightMetric:    {int64(st.InFlight), false},
		mdotel.QueuedMetric:      {int64(st.Queued), false},
		mdotel.ConnectionsMetric: {int64(len(st.Servers)), false},
		mdotel.ReconnectsMetric:  {int64(st.Reconnects), true},
	} {
		if g, ok := got[name]; !ok || g != w {
			t.Errorf("%s = %+v (reported: %v), want %+v (Stats %+v)", name, g, ok, w, st)
		}
	}
}

// settle calls Stats until cond holds, for at most 10 s: the engine takes a request in
// on its own goroutine, so a snapshot right after PublishAsync may not have it yet.
func settle(t *testing.T, c *mdclient.Client, what string, cond func(mdclient.Stats) bool) mdclient.Stats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := c.Stats()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("Stats never showed %s: %+v", what, st)
		}
	}
}

// TestObserveStats: the in-flight, queued, connection and reconnect counts follow
// Stats, as up-down counters and a counter, with WithAttributes' attributes; after
// Unregister nothing is reported.
func TestObserveStats(t *testing.T) {
	srv, _ := embedded(t)
	tel := newTelemetry(t)
	c := newClient(t, srv.TCPAddr())
	labels := attribute.NewSet(attribute.String("client", "orders"))
	reg, err := mdotel.ObserveStats(c, mdotel.WithMeterProvider(tel.mp), mdotel.WithAttributes(attribute.String("client", "orders")))
	if err != nil {
		t.Fatal(err)
	}
	publishOutcome(t, c, outcomes[0]) // connected
	checkObserved(t, tel, labels, settle(t, c, "one connection", func(st mdclient.Stats) bool { return len(st.Servers) == 1 }))

	// A TIMEOUT keeps its packet identifier: in flight until its connection goes.
	publishOutcome(t, c, outcome{subject: "lost/held", timeout: 200 * time.Millisecond, status: mdclient.NotifyPublishTimeout})
	st := settle(t, c, "one in flight", func(st mdclient.Stats) bool { return st.InFlight == 1 })
	checkObserved(t, tel, labels, st)

	// A cut connection: the client reconnects; the held one is gone with it.
	srv.CutConnections()
	publishOutcome(t, c, outcome{subject: "feed/again", timeout: 10 * time.Second, status: mdclient.NotifyPublishOK})
	st = settle(t, c, "a reconnect", func(st mdclient.Stats) bool { return st.Reconnects == 1 && st.InFlight == 0 })
	checkObserved(t, tel, labels, st)

	if err := reg.Unregister(); err != nil {
		t.Fatal(err)
	}
	if got := observed(t, tel, labels); len(got) != 0 {
		t.Errorf("after Unregister: %v", got)
	}
}

// TestObserveStatsQueuedAndClosed: requests waiting for a connection are queued; after
// Close the instruments still report (zero) without blocking.
func TestObserveStatsQueuedAndClosed(t *testing.T) {
	srv, err := mdtest.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	srv.Pause() // connections get no CONNACK: what is published waits
	tel := newTelemetry(t)
	c := newClient(t, srv.TCPAddr(), mdclient.WithDrainTimeout(100*time.Millisecond))
	reg, err := mdotel.ObserveStats(c, mdotel.WithMeterProvider(tel.mp))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Unregister()
	none := attribute.NewSet()
	results := make(chan mdclient.PublishResult, 3)
	ctx := ctxTimeout(t, time.Minute)
	for range 3 {
		c.PublishAsync(ctx, mdclient.PublishRequest{Message: mdclient.Message{Subject: "feed/waiting"}, Result: results})
	}
	checkObserved(t, tel, none, settle(t, c, "three queued", func(st mdclient.Stats) bool { return st.Queued == 3 }))

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if r := <-results; r.Status != mdclient.NotifyPublishFailed {
			t.Fatal(r.Status, r.Err)
		}
	}
	checkObserved(t, tel, none, mdclient.Stats{})
}

func TestObserveStatsNilClient(t *testing.T) {
	if _, err := mdotel.ObserveStats(nil); err == nil {
		t.Error("no error for a nil client")
	}
}
