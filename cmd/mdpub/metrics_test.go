package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// exposition is a parsed Prometheus text exposition: each sample's value by its name
// and labels as written ("name{labels}"), and each family's type.
type exposition struct {
	samples map[string]float64
	types   map[string]string
}

var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$`)

// parseExposition checks the text format as Prometheus reads it: # HELP and # TYPE
// before a family's samples, every sample of a declared family (histograms and
// summaries with their _bucket, _sum and _count), label values quoted, values floats.
func parseExposition(t *testing.T, text string) exposition {
	t.Helper()
	x := exposition{samples: map[string]float64{}, types: map[string]string{}}
	helped := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if f, ok := strings.CutPrefix(line, "# HELP "); ok {
			name, help, _ := strings.Cut(f, " ")
			if help == "" {
				t.Errorf("family %s has no help", name)
			}
			helped[name] = true
			continue
		}
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, typ, _ := strings.Cut(f, " ")
			if !helped[name] || x.types[name] != "" {
				t.Errorf("TYPE line %q without its HELP, or twice", line)
			}
			switch typ {
			case "counter", "gauge", "histogram", "summary":
			default:
				t.Errorf("family %s: type %q", name, typ)
			}
			x.types[name] = typ
			continue
		}
		m := sampleLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("not a sample line: %q", line)
		}
		name, labels, value := m[1], m[2], m[3]
		family := name
		if x.types[family] == "" {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(name, suffix); ok && (x.types[base] == "histogram" || x.types[base] == "summary") {
					family = base
				}
			}
		}
		if x.types[family] == "" {
			t.Errorf("sample %q of no declared family", line)
		}
		if x.types[family] == "counter" && !strings.HasSuffix(name, "_total") {
			t.Errorf("counter %s does not end in _total", name)
		}
		if labels != "" && !regexp.MustCompile(`^\{([a-z_]+="[^"\\]*")(,[a-z_]+="[^"\\]*")*\}$`).MatchString(labels) {
			t.Errorf("labels %q", labels)
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil || math.IsNaN(v) {
			t.Errorf("sample %q: value %v", line, err)
		}
		if _, dup := x.samples[name+labels]; dup {
			t.Errorf("sample %s%s twice", name, labels)
		}
		x.samples[name+labels] = v
	}
	return x
}

func (x exposition) get(t *testing.T, key string) float64 {
	t.Helper()
	v, ok := x.samples[key]
	if !ok {
		t.Fatalf("no sample %s", key)
	}
	return v
}

// TestMetricsWhileRunning scrapes --metrics during a run: the exposition parses, the
// counters grow between scrapes, the histogram's buckets add up, and the server is gone
// when mdpub is.
func TestMetricsWhileRunning(t *testing.T) {
	said := newSayWriter("/metrics\n")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	type ran struct {
		code           int
		stdout, stderr string
	}
	exit := make(chan ran, 1)
	go func() {
		code, stdout, stderr := invocation{stderr: said}.run(t, ctx, "--metrics", "127.0.0.1:0", "--rate", "2000", "--duration", "1h",
			"--clients", "2", "--connections", "2", "--subject", "m/%i", "--quiet")
		exit <- ran{code, stdout, stderr}
	}()
	select {
	case <-said.seen:
	case r := <-exit:
		t.Fatalf("mdpub ended: exit %d; stderr:\n%s", r.code, r.stderr)
	case <-time.After(deadline):
		t.Fatal("mdpub never said where its metrics are")
	}
	said.mu.Lock()
	url := regexp.MustCompile(`metrics on (http://\S+/metrics)`).FindStringSubmatch(said.b.String())
	said.mu.Unlock()
	if url == nil {
		t.Fatalf("no metrics URL in %q", said.b.String())
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: deadline}
	scrape := func() (exposition, error) {
		resp, err := hc.Get(url[1])
		if err != nil {
			return exposition{}, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return exposition{}, err
		}
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/plain; version=0.0.4; charset=utf-8" {
			return exposition{}, fmt.Errorf("%s, %q: %s", resp.Status, resp.Header.Get("Content-Type"), body)
		}
		return parseExposition(t, string(body)), nil
	}
	first, err := scrape()
	if err != nil {
		t.Fatal(err)
	}
	const ok = `mdpub_results_total{outcome="NOTIFY_PUBLISH_OK"}`
	// Scrape again until the results have grown by 100: at 2000 messages a second, some
	// 50 ms of scrapes, each a round trip to the result loop; the deadline bounds it.
	var second exposition
	until := time.Now().Add(deadline)
	for {
		if second, err = scrape(); err != nil {
			t.Fatal(err)
		}
		if second.get(t, ok) >= first.get(t, ok)+100 {
			break
		}
		if time.Now().After(until) {
			t.Fatalf("results did not grow: %v then %v", first.get(t, ok), second.get(t, ok))
		}
	}
	cancel()
	r := <-exit
	if r.code != exitInterrupted {
		t.Fatalf("exit %d, want 130; stderr:\n%s", r.code, r.stderr)
	}

	for _, x := range []exposition{first, second} {
		for family, typ := range map[string]string{
			"mdpub_messages_sent_total": "counter", "mdpub_results_total": "counter", "mdpub_in_flight": "gauge",
			"mdpub_queued": "gauge", "mdpub_awaiting_results": "gauge", "mdpub_connections_up": "gauge", "mdpub_clients": "gauge",
			"mdpub_bytes_written_total": "counter", "mdpub_latency_seconds": "histogram", "mdpub_latency_summary_seconds": "summary",
		} {
			if x.types[family] != typ {
				t.Errorf("family %s: type %q, want %q", family, x.types[family], typ)
			}
		}
		if x.get(t, "mdpub_clients") != 2 || x.get(t, "mdpub_connections_up") > 4 {
			t.Errorf("clients %v, connections up %v; want 2 and at most 4", x.get(t, "mdpub_clients"), x.get(t, "mdpub_connections_up"))
		}
		var results float64
		for _, st := range statuses {
			results += x.get(t, `mdpub_results_total{outcome="`+string(st)+`"}`)
		}
		sent := x.get(t, "mdpub_messages_sent_total")
		if results > sent || x.get(t, "mdpub_awaiting_results") != sent-results {
			t.Errorf("sent %v, results %v, awaiting %v", sent, results, x.get(t, "mdpub_awaiting_results"))
		}
		// Buckets are cumulative and end with every latency recorded.
		prev := 0.0
		for _, b := range promBounds {
			v := x.get(t, `mdpub_latency_seconds_bucket{le="`+strconv.FormatFloat(float64(b)/1e9, 'g', -1, 64)+`"}`)
			if v < prev {
				t.Errorf("bucket le=%v holds %v, less than the one below (%v)", b, v, prev)
			}
			prev = v
		}
		count := x.get(t, "mdpub_latency_seconds_count")
		if inf := x.get(t, `mdpub_latency_seconds_bucket{le="+Inf"}`); inf != count || inf < prev || count != results {
			t.Errorf("+Inf bucket %v, count %v, results %v", inf, count, results)
		}
		p50, p999 := x.get(t, `mdpub_latency_summary_seconds{quantile="0.5"}`), x.get(t, `mdpub_latency_summary_seconds{quantile="0.999"}`)
		if results > 0 && (p50 <= 0 || p50 > p999 || x.get(t, "mdpub_latency_seconds_sum") <= 0) {
			t.Errorf("quantiles p50 %v, p99.9 %v, sum %v", p50, p999, x.get(t, "mdpub_latency_seconds_sum"))
		}
	}
	for _, key := range []string{"mdpub_messages_sent_total", ok, "mdpub_bytes_written_total", "mdpub_latency_seconds_count"} {
		if second.get(t, key) < first.get(t, key) {
			t.Errorf("%s went down: %v then %v", key, first.get(t, key), second.get(t, key))
		}
	}
	if second.get(t, ok) <= first.get(t, ok) {
		t.Errorf("%s did not grow", ok)
	}
	// A client reports NOTIFY_SERVER_UP a moment before its Stats count the connection:
	// by the second scrape, a hundred results later, they do.
	if up := second.get(t, "mdpub_connections_up"); up != 4 {
		t.Errorf("connections up %v, want 4", up)
	}
	tr.CloseIdleConnections()
	if _, err := scrape(); err == nil {
		t.Error("the metrics are still served after mdpub ended")
	}
}
