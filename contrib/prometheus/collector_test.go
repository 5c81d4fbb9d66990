package mdprometheus_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/mdclient/mdclient"
	mdprom "github.com/mdclient/mdclient/contrib/prometheus"
	"github.com/mdclient/mdclient/mdtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const token = "allow-token"

// connected returns a client connected to a fresh embedded broker, which has a subscriber
// on "feed/#".
func connected(t *testing.T) (*mdclient.Client, *mdtest.Server) {
	t.Helper()
	srv, err := mdtest.NewServer(mdtest.WithAllowToken(token))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	sub, err := srv.Subscribe("feed/#")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	c := mdclient.NewClient()
	t.Cleanup(func() { c.Close() })
	c.SetEntitlementToken(token)
	if err := c.SetServers([]string{srv.TCPAddr()}); err != nil {
		t.Fatal(err)
	}
	return c, srv
}

func publish(t *testing.T, c *mdclient.Client, subject string, want mdclient.Status) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if st, err := c.Publish(ctx, mdclient.Message{Subject: subject, Content: []byte("x")}); st != want {
		t.Fatalf("publish to %q: %s (%v), want %s", subject, st, err, want)
	}
}

func TestCollectorReportsStats(t *testing.T) {
	c, srv := connected(t)
	col := mdprom.NewCollector(c)
	for range 3 {
		publish(t, c, "feed/a", mdclient.NotifyPublishOK)
	}
	for range 2 {
		publish(t, c, "nobody/listens", mdclient.NotifyPublishNoSubscriber)
	}
	publish(t, c, "bad/+/subject", mdclient.NotifyPublishFailed) // bad input: never accepted

	want := fmt.Sprintf(`
# HELP mdclient_publish_results_total Publish results delivered, by status (NOTIFY_PUBLISH_OK, _NO_SUBSCRIBER, _DENIED, _FAILED, _TIMEOUT).
# TYPE mdclient_publish_results_total counter
mdclient_publish_results_total{status="NOTIFY_PUBLISH_OK"} 3
mdclient_publish_results_total{status="NOTIFY_PUBLISH_NO_SUBSCRIBER"} 2
mdclient_publish_results_total{status="NOTIFY_PUBLISH_DENIED"} 0
mdclient_publish_results_total{status="NOTIFY_PUBLISH_FAILED"} 1
mdclient_publish_results_total{status="NOTIFY_PUBLISH_TIMEOUT"} 0
# HELP mdclient_publish_accepted_total Publish requests taken in for publishing (bad input and refusals excluded).
# TYPE mdclient_publish_accepted_total counter
mdclient_publish_accepted_total 5
# HELP mdclient_reconnects_total Connections made after the first one.
# TYPE mdclient_reconnects_total counter
mdclient_reconnects_total 0
# HELP mdclient_publish_in_flight Messages written and not yet acknowledged.
# TYPE mdclient_publish_in_flight gauge
mdclient_publish_in_flight 0
# HELP mdclient_publish_queued Messages accepted and waiting to be written, resends after a failover included.
# TYPE mdclient_publish_queued gauge
mdclient_publish_queued 0
# HELP mdclient_connected 1 while a server is connected, else 0.
# TYPE mdclient_connected gauge
mdclient_connected 1
# HELP mdclient_server_info The server in use, as its label; absent while none is connected.
# TYPE mdclient_server_info gauge
mdclient_server_info{server=%q} 1
`, srv.TCPAddr())
	if err := testutil.CollectAndCompare(col, strings.NewReader(want),
		"mdclient_publish_results_total", "mdclient_publish_accepted_total", "mdclient_reconnects_total",
		"mdclient_publish_in_flight", "mdclient_publish_queued", "mdclient_connected", "mdclient_server_info"); err != nil {
		t.Error(err)
	}

	// Bytes written depend on the client id and the packets' encoding: check they cover
	// at least the five publishes' topics and contents.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(col)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var written float64
	for _, f := range families {
		if f.GetName() == "mdclient_written_bytes_total" {
			written = f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if min := float64(3*len("feed/a") + 2*len("nobody/listens") + 5); written < min {
		t.Errorf("mdclient_written_bytes_total = %v, want at least %v", written, min)
	}

	if problems, err := testutil.CollectAndLint(col); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

func TestCollectorBeforeServersAndAfterClose(t *testing.T) {
	c := mdclient.NewClient()
	col := mdprom.NewCollector(c, mdprom.WithNamespace("orders"), mdprom.WithConstLabels(prometheus.Labels{"client": "orders-eu"}))
	want := `
# HELP orders_connected 1 while a server is connected, else 0.
# TYPE orders_connected gauge
orders_connected{client="orders-eu"} 0
`
	if err := testutil.CollectAndCompare(col, strings.NewReader(want), "orders_connected", "orders_server_info"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(col); n != 11 { // 5 results, accepted, bytes, reconnects, in flight, queued, connected: no server_info
		t.Errorf("%d metrics before SetServers, want 11", n)
	}
	c.Close()
	if n := testutil.CollectAndCount(col, "orders_publish_results_total"); n != 5 {
		t.Errorf("%d result series after Close, want 5", n)
	}
}

func TestTwoClientsInOneRegistry(t *testing.T) {
	a, _ := connected(t)
	b, _ := connected(t)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(
		mdprom.NewCollector(a, mdprom.WithConstLabels(prometheus.Labels{"client": "a"})),
		mdprom.NewCollector(b, mdprom.WithConstLabels(prometheus.Labels{"client": "b"})),
	)
	publish(t, a, "feed/x", mdclient.NotifyPublishOK)
	n, err := testutil.GatherAndCount(reg, "mdclient_publish_results_total")
	if err != nil || n != 10 {
		t.Errorf("%d result series (%v), want 10", n, err)
	}
}
