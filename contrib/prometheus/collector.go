// Package mdprometheus exports an mdclient.Client's Stats as Prometheus metrics.
//
// It lives in a module of its own so that mdclient itself does not depend on the
// Prometheus client library. Import it under a short name:
//
//	import mdprom "github.com/mdclient/mdclient/contrib/prometheus"
//
//	c := mdclient.NewClient()
//	prometheus.MustRegister(mdprom.NewCollector(c))
//
// Every scrape takes one snapshot with Client.Stats (one round trip to the client's
// engine goroutine), so the metrics of one scrape are consistent with each other and
// nothing is counted twice. The exported metrics, with the default namespace "mdclient":
//
//	mdclient_publish_results_total{status}   counter  results delivered, by NOTIFY_PUBLISH_* status (bad input counts as FAILED)
//	mdclient_publish_accepted_total          counter  requests taken in for publishing
//	mdclient_written_bytes_total             counter  bytes written to servers
//	mdclient_reconnects_total                counter  connections made after the first (failovers)
//	mdclient_publish_in_flight               gauge    written and not yet acknowledged
//	mdclient_publish_queued                  gauge    accepted and waiting to be written
//	mdclient_connected                       gauge    1 while a server is connected, else 0
//	mdclient_server_info{server}             gauge    1, labelled with the server in use; absent while none is
//
// The entitlement token is never part of a metric.
package mdprometheus

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mdclient/mdclient"
)

// Option configures a Collector in NewCollector.
type Option func(*config)

type config struct {
	namespace   string
	constLabels prometheus.Labels
}

// WithNamespace sets the prefix of the metric names. Default "mdclient".
func WithNamespace(ns string) Option { return func(c *config) { c.namespace = ns } }

// WithConstLabels adds labels to every metric, to tell several clients in one process
// apart (for example {"client": "orders"}). Default: none.
func WithConstLabels(l prometheus.Labels) Option {
	return func(c *config) { c.constLabels = l }
}

// Collector is a prometheus.Collector over one client's Stats. It is safe for concurrent
// scrapes, before SetServers and after Close.
type Collector struct {
	client *mdclient.Client

	results    *prometheus.Desc
	accepted   *prometheus.Desc
	written    *prometheus.Desc
	reconnects *prometheus.Desc
	inFlight   *prometheus.Desc
	queued     *prometheus.Desc
	connected  *prometheus.Desc
	server     *prometheus.Desc
}

// NewCollector returns a collector of c's statistics; register it with a
// prometheus.Registerer.
func NewCollector(c *mdclient.Client, opts ...Option) *Collector {
	cfg := config{namespace: "mdclient"}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(cfg.namespace, "", name), help, labels, cfg.constLabels)
	}
	return &Collector{
		client:     c,
		results:    desc("publish_results_total", "Publish results delivered, by status (NOTIFY_PUBLISH_OK, _NO_SUBSCRIBER, _DENIED, _FAILED, _TIMEOUT).", "status"),
		accepted:   desc("publish_accepted_total", "Publish requests taken in for publishing (bad input and refusals excluded)."),
		written:    desc("written_bytes_total", "Bytes written to servers."),
		reconnects: desc("reconnects_total", "Connections made after the first one."),
		inFlight:   desc("publish_in_flight", "Messages written and not yet acknowledged."),
		queued:     desc("publish_queued", "Messages accepted and waiting to be written, resends after a failover included."),
		connected:  desc("connected", "1 while a server is connected, else 0."),
		server:     desc("server_info", "The server in use, as its label; absent while none is connected.", "server"),
	}
}

// Describe sends the descriptors of every metric the collector may export.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.results, c.accepted, c.written, c.reconnects, c.inFlight, c.queued, c.connected, c.server} {
		ch <- d
	}
}

// Collect takes one snapshot of the client's Stats and sends it as metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.client.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter(c.results, st.OK, string(mdclient.NotifyPublishOK))
	counter(c.results, st.NoSubscriber, string(mdclient.NotifyPublishNoSubscriber))
	counter(c.results, st.Denied, string(mdclient.NotifyPublishDenied))
	counter(c.results, st.Failed, string(mdclient.NotifyPublishFailed))
	counter(c.results, st.Timeout, string(mdclient.NotifyPublishTimeout))
	counter(c.accepted, st.Accepted)
	counter(c.written, st.BytesWritten)
	counter(c.reconnects, st.Reconnects)
	gauge(c.inFlight, float64(st.InFlight))
	gauge(c.queued, float64(st.Queued))
	if st.Server == "" {
		gauge(c.connected, 0)
		return
	}
	gauge(c.connected, 1)
	gauge(c.server, 1, st.Server)
}
