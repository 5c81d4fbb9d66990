package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// --metrics serves the run's counters in the Prometheus text exposition format (version
// 0.0.4) on http://ADDR/metrics, written by hand: the format is a few lines of text, and
// the main module takes no Prometheus dependency (contrib/prometheus is its own module).
//
// The result loop owns the tally; a scrape asks it for a snapshot over a channel, so that
// the loop's path per result takes no lock, and reads the clients' Stats itself.

// loopSnapshot is what a scrape takes from the result loop.
type loopSnapshot struct {
	counts    [len(statuses)]uint64
	total     uint64
	buckets   [len(promBounds) + 1]uint64 // not cumulative
	n         uint64                      // latencies recorded
	sum       float64                     // of them, ns
	quantiles [len(quantiles)]uint64      // ns
}

func (t *tally) snapshot() loopSnapshot {
	s := loopSnapshot{counts: t.counts, total: t.total, buckets: t.buckets, n: t.hist.n, sum: t.hist.sum}
	for i, q := range quantiles {
		s.quantiles[i] = t.hist.quantile(q.num, q.den)
	}
	return s
}

// metricsSource is a running stream, as a scrape sees it.
type metricsSource struct {
	clients  fleet
	gate     *gate
	requests chan chan loopSnapshot // the result loop answers each
	done     chan struct{}          // closed by finish, once the loop is over
	final    loopSnapshot           // the loop's last, set before done is closed
}

func newMetricsSource(clients fleet, g *gate) *metricsSource {
	return &metricsSource{clients: clients, gate: g, requests: make(chan chan loopSnapshot), done: make(chan struct{})}
}

// finish is the result loop's last word.
func (s *metricsSource) finish(final loopSnapshot) {
	s.final = final
	close(s.done)
}

// loop returns the result loop's snapshot, or its last once it is over.
func (s *metricsSource) loop() loopSnapshot {
	reply := make(chan loopSnapshot, 1)
	select {
	case s.requests <- reply:
		return <-reply
	case <-s.done:
		return s.final
	}
}

// exposition writes the metrics.
func (s *metricsSource) exposition() []byte {
	ls := s.loop()
	st, up := s.clients.stats()
	sent := uint64(s.gate.admitted())
	var x expo
	x.family("mdpub_messages_sent_total", "counter", "Messages handed to the clients.")
	x.int("mdpub_messages_sent_total", "", sent)
	x.family("mdpub_results_total", "counter", "Results, by outcome.")
	for i, status := range statuses {
		x.int("mdpub_results_total", `outcome="`+string(status)+`"`, ls.counts[i])
	}
	x.family("mdpub_awaiting_results", "gauge", "Messages handed to the clients whose result has not come yet.")
	x.int("mdpub_awaiting_results", "", sent-min(sent, ls.total))
	x.family("mdpub_in_flight", "gauge", "Messages written and not yet acknowledged, over all clients.")
	x.int("mdpub_in_flight", "", uint64(st.InFlight))
	x.family("mdpub_queued", "gauge", "Messages accepted by the clients and not yet written.")
	x.int("mdpub_queued", "", uint64(st.Queued))
	x.family("mdpub_bytes_written_total", "counter", "Bytes written to servers.")
	x.int("mdpub_bytes_written_total", "", st.BytesWritten)
	x.family("mdpub_resent_total", "counter", "Messages sent again after their connection was lost.")
	x.int("mdpub_resent_total", "", st.Resent)
	x.family("mdpub_reconnects_total", "counter", "Connections made after the first of each connection slot.")
	x.int("mdpub_reconnects_total", "", st.Reconnects)
	x.family("mdpub_server_down_events_total", "counter", "NOTIFY_SERVER_DOWN events.")
	x.int("mdpub_server_down_events_total", "", uint64(s.clients.downs()))
	x.family("mdpub_clients", "gauge", "Clients (--clients).")
	x.int("mdpub_clients", "", uint64(len(s.clients)))
	x.family("mdpub_connections_up", "gauge", "Live connections over all clients.")
	x.int("mdpub_connections_up", "", uint64(up))

	const lat = "mdpub_latency_seconds"
	x.family(lat, "histogram", "Publish latency: from the due time with --rate (open loop), else from the publish call, to the result.")
	var cum uint64
	for i, b := range promBounds {
		cum += ls.buckets[i]
		x.int(lat+"_bucket", `le="`+strconv.FormatFloat(float64(b)/1e9, 'g', -1, 64)+`"`, cum)
	}
	cum += ls.buckets[len(promBounds)]
	x.int(lat+"_bucket", `le="+Inf"`, cum)
	x.float(lat+"_sum", "", ls.sum/1e9)
	x.int(lat+"_count", "", ls.n)
	const sum = "mdpub_latency_summary_seconds"
	x.family(sum, "summary", "Publish latency quantiles since the start (HdrHistogram, 3 significant digits).")
	for i, q := range quantiles {
		x.float(sum, `quantile="`+strconv.FormatFloat(float64(q.num)/float64(q.den), 'g', -1, 64)+`"`, float64(ls.quantiles[i])/1e9)
	}
	x.float(sum+"_sum", "", ls.sum/1e9)
	x.int(sum+"_count", "", ls.n)
	return x.b.Bytes()
}

// expo writes the text exposition format.
type expo struct{ b bytes.Buffer }

func (x *expo) family(name, typ, help string) {
	x.b.WriteString("# HELP " + name + " " + strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(help) + "\n")
	x.b.WriteString("# TYPE " + name + " " + typ + "\n")
}

func (x *expo) name(name, labels string) {
	x.b.WriteString(name)
	if labels != "" {
		x.b.WriteString("{" + labels + "}")
	}
	x.b.WriteByte(' ')
}

func (x *expo) int(name, labels string, v uint64) {
	x.name(name, labels)
	x.b.WriteString(strconv.FormatUint(v, 10) + "\n")
}

func (x *expo) float(name, labels string, v float64) {
	x.name(name, labels)
	x.b.WriteString(strconv.FormatFloat(v, 'g', -1, 64) + "\n")
}

// metricsServer serves /metrics from the time mdpub starts until it ends; until the
// stream begins a scrape gets 503.
type metricsServer struct {
	ln     net.Listener
	srv    *http.Server
	src    atomic.Pointer[metricsSource]
	served chan struct{} // closed when Serve returns
}

// listenMetrics listens on addr (host:port) and serves at once.
func listenMetrics(addr string) (*metricsServer, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	m := &metricsServer{ln: ln, served: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		src := m.src.Load()
		if src == nil {
			http.Error(w, "mdpub: not publishing yet", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.Write(src.exposition())
	})
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(m.served)
		m.srv.Serve(ln)
	}()
	return m, nil
}

// serve makes the scrapes read src.
func (m *metricsServer) serve(src *metricsSource) { m.src.Store(src) }

// url is where the metrics are, "" for none.
func (m *metricsServer) url() string {
	if m == nil {
		return ""
	}
	return "http://" + m.ln.Addr().String() + "/metrics"
}

// close stops serving: a scrape under way gets a second to finish.
func (m *metricsServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := m.srv.Shutdown(ctx); errors.Is(err, context.DeadlineExceeded) {
		m.srv.Close()
	}
	<-m.served
}
