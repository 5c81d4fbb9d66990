package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mdclient/mdclient"
)

// ANSI codes, written only to a terminal.
const (
	clearLine = "\r\x1b[2K"
	green     = "\x1b[32m"
	red       = "\x1b[31m"
	bold      = "\x1b[1m"
	reset     = "\x1b[0m"
)

// How often progress is shown.
const (
	barEvery  = 100 * time.Millisecond // redrawn in place on a terminal
	lineEvery = time.Second            // a plain line elsewhere
)

// reporter writes the banner, the progress and the summary.
type reporter struct {
	w      io.Writer // progress and the human summary
	errw   io.Writer // standard error
	tty    bool      // w is a terminal: the progress bar is redrawn in place
	colour bool      // colour the outcome counts
	every  time.Duration
	json   io.Writer // the JSON summary goes here instead of the human one; nil: human
	cfg    config

	drawn    bool          // a progress bar is on the line
	lastAt   time.Duration // of the previous progress
	lastDone uint64        // results by then
}

func newReporter(cfg config, e env) *reporter {
	r := &reporter{cfg: cfg, errw: e.stderr}
	dataOnStdout := cfg.stdin || cfg.json
	if e.stdoutTTY && !dataOnStdout {
		r.w, r.tty = e.stdout, true
	} else {
		r.w, r.tty = e.stderr, e.stderrTTY
	}
	if cfg.json {
		r.json = e.stdout
	}
	getenv := e.getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	r.colour = r.tty && getenv("NO_COLOR") == "" && getenv("TERM") != "dumb"
	switch {
	case cfg.quiet:
	case r.tty && cfg.stdin && e.stdoutTTY:
		// The JSON lines scroll on the same terminal: they are the progress.
	case r.tty:
		r.every = barEvery
	default:
		r.every = lineEvery
	}
	return r
}

// paint wraps s in an ANSI colour when colour is on.
func (r *reporter) paint(code, s string) string {
	if !r.colour {
		return s
	}
	return code + s + reset
}

// begin says what is about to be published, and where; metrics is the URL of --metrics.
func (r *reporter) begin(servers []string, embedded, metrics string) {
	what := fmt.Sprintf("%d-byte messages", r.cfg.size)
	if r.cfg.stdin {
		what = "lines of standard input"
	}
	limit := ""
	switch {
	case r.cfg.count > 0 && r.cfg.duration > 0:
		limit = fmt.Sprintf(" (%d messages or %v)", r.cfg.count, r.cfg.duration)
	case r.cfg.count > 0:
		limit = fmt.Sprintf(" (%d messages)", r.cfg.count)
	case r.cfg.duration > 0:
		limit = fmt.Sprintf(" (%v)", r.cfg.duration)
	}
	fmt.Fprintf(r.w, "mdpub: publishing %s%s to %q on %s\n", what, limit, r.cfg.subject, joinServers(servers))
	if embedded != "" {
		fmt.Fprintf(r.w, "mdpub: %s\n", embedded)
	}
	loop := "closed loop: latency from each publish call"
	if r.cfg.rate > 0 {
		loop = fmt.Sprintf("open loop at %s messages/s: latency from each message's due time", grouped(uint64(r.cfg.rate)))
	}
	fmt.Fprintf(r.w, "mdpub: %s × %s, %s\n", plural(r.cfg.clients, "client"), plural(r.cfg.connections, "connection"), loop)
	if metrics != "" {
		fmt.Fprintf(r.w, "mdpub: metrics on %s\n", metrics)
	}
}

// progress shows the state of the stream at elapsed.
func (r *reporter) progress(elapsed time.Duration, st mdclient.Stats) {
	done := st.OK + st.NoSubscriber + st.Denied + st.Failed + st.Timeout
	var rate float64
	if dt := elapsed - r.lastAt; dt > 0 && done >= r.lastDone {
		rate = float64(done-r.lastDone) / dt.Seconds()
	}
	r.lastAt, r.lastDone = elapsed, done
	notOK := done - st.OK
	if !r.tty {
		fmt.Fprintf(r.w, "mdpub: %.1fs  %.0f msg/s  ok %d  no subscriber %d  denied %d  failed %d  timeout %d  in flight %d  queued %d\n",
			elapsed.Seconds(), rate, st.OK, st.NoSubscriber, st.Denied, st.Failed, st.Timeout, st.InFlight, st.Queued)
		return
	}
	var b strings.Builder
	b.WriteString(clearLine)
	if f, ok := r.fraction(elapsed, done); ok {
		const width = 10
		n := min(int(f*width), width)
		b.WriteString("[" + strings.Repeat("#", n) + strings.Repeat("-", width-n) + "] ")
	}
	fmt.Fprintf(&b, "%.1fs", elapsed.Seconds())
	if r.cfg.duration > 0 {
		fmt.Fprintf(&b, "/%v", r.cfg.duration)
	}
	fmt.Fprintf(&b, "  %s/s  ok %s  not ok %s  inflight %s  queued %s",
		compact(rate), r.paint(green, compact(float64(st.OK))), r.notOK(notOK),
		compact(float64(st.InFlight)), compact(float64(st.Queued)))
	fmt.Fprint(r.w, b.String())
	r.drawn = true
}

func (r *reporter) notOK(n uint64) string {
	if n == 0 {
		return "0"
	}
	return r.paint(red, compact(float64(n)))
}

// fraction is how far the stream is, when it has a known end.
func (r *reporter) fraction(elapsed time.Duration, done uint64) (float64, bool) {
	f, ok := 0.0, false
	if r.cfg.duration > 0 {
		f, ok = elapsed.Seconds()/r.cfg.duration.Seconds(), true
	}
	if r.cfg.count > 0 {
		f, ok = max(f, float64(done)/float64(r.cfg.count)), true
	}
	return min(f, 1), ok
}

// compact writes n with three significant digits and a k or M suffix.
func compact(n float64) string {
	switch {
	case n < 1000:
		return strconv.FormatFloat(n, 'f', 0, 64)
	case n < 1e6:
		return strconv.FormatFloat(n/1e3, 'g', 3, 64) + "k"
	case n < 1e9:
		return strconv.FormatFloat(n/1e6, 'g', 3, 64) + "M"
	}
	return strconv.FormatFloat(n/1e9, 'g', 3, 64) + "G"
}

// grouped writes n with thousands separators.
func grouped(n uint64) string {
	s := strconv.FormatUint(n, 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// latency formats a latency in nanoseconds with three significant digits.
func latency(ns uint64) string {
	d := float64(ns)
	switch {
	case ns < 1000:
		return fmt.Sprintf("%dns", ns)
	case ns < 1e6:
		return strconv.FormatFloat(d/1e3, 'g', 3, 64) + "µs"
	case ns < 1e9:
		return strconv.FormatFloat(d/1e6, 'g', 3, 64) + "ms"
	}
	return strconv.FormatFloat(d/1e9, 'g', 3, 64) + "s"
}

// summary is the report of a finished stream; its JSON form is what --json prints.
type summary struct {
	Mode              string     `json:"mode"` // "stream" or "stdin"
	Servers           []string   `json:"servers"`
	Embedded          bool       `json:"embedded"`
	Subject           string     `json:"subject"` // the template
	QoS               string     `json:"qos"`
	Size              int        `json:"size"` // content bytes per message; 0 with --stdin
	PayloadHeader     bool       `json:"payload_header"`
	Clients           int        `json:"clients"`
	Connections       int        `json:"connections"`    // per client
	ConnectionsUp     int        `json:"connections_up"` // at the end, over all clients
	PerClient         perClient  `json:"messages_per_client"`
	Rate              int        `json:"rate"`         // messages per second; 0: closed loop
	LatencyFrom       string     `json:"latency_from"` // "due" (open loop) or "call" (closed loop)
	Messages          uint64     `json:"messages"`
	Outcomes          outcomes   `json:"outcomes"`
	ElapsedSeconds    float64    `json:"elapsed_seconds"`
	MessagesPerSecond float64    `json:"messages_per_second"`
	BytesWritten      uint64     `json:"bytes_written"`
	LatencyUS         latencyUS  `json:"latency_us"`
	Reconnects        uint64     `json:"reconnects"`
	ServerDownEvents  int        `json:"server_down_events"`
	Interrupted       bool       `json:"interrupted"`
	FirstErrors       firstError `json:"first_errors"`

	hist *latencies // for the human table
}

// perClient is the spread of the results over the clients.
type perClient struct {
	Min uint64 `json:"min"`
	Max uint64 `json:"max"`
}

// outcomes counts results per status, always all five, in the order reports use.
type outcomes struct {
	OK           uint64 `json:"NOTIFY_PUBLISH_OK"`
	NoSubscriber uint64 `json:"NOTIFY_PUBLISH_NO_SUBSCRIBER"`
	Denied       uint64 `json:"NOTIFY_PUBLISH_DENIED"`
	Failed       uint64 `json:"NOTIFY_PUBLISH_FAILED"`
	Timeout      uint64 `json:"NOTIFY_PUBLISH_TIMEOUT"`
}

// latencyUS is the latency distribution in microseconds, to the result's arrival from
// the message's due time with --rate (open loop), else from the PublishAsync call.
type latencyUS struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99.9"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// firstError is the first error seen for each status that had one.
type firstError map[string]string

// quantiles are the reported ones, as num/den.
var quantiles = [...]struct {
	name     string
	num, den uint64
}{{"p50", 1, 2}, {"p90", 9, 10}, {"p99", 99, 100}, {"p99.9", 999, 1000}}

func summaryOf(cfg config, servers []string, embedded bool, t *tally, elapsed time.Duration, st mdclient.Stats, up, downs int, interrupted bool) summary {
	s := summary{
		Mode:             "stream",
		Servers:          servers,
		Embedded:         embedded,
		Subject:          cfg.subject,
		QoS:              describeQoS(cfg.qos),
		Size:             cfg.size,
		PayloadHeader:    cfg.payloadHeader,
		Clients:          cfg.clients,
		Connections:      cfg.connections,
		ConnectionsUp:    up,
		Rate:             cfg.rate,
		LatencyFrom:      "call",
		Messages:         t.total,
		ElapsedSeconds:   elapsed.Seconds(),
		BytesWritten:     st.BytesWritten,
		Reconnects:       st.Reconnects,
		ServerDownEvents: downs,
		Interrupted:      interrupted,
		FirstErrors:      firstError{},
		Outcomes: outcomes{
			OK: t.counts[0], NoSubscriber: t.counts[1], Denied: t.counts[2], Failed: t.counts[3], Timeout: t.counts[4],
		},
	}
	if cfg.stdin {
		s.Mode, s.Size = "stdin", 0
	}
	if cfg.rate > 0 {
		s.LatencyFrom = "due"
	}
	if len(t.perClient) > 0 {
		s.PerClient = perClient{Min: slices.Min(t.perClient), Max: slices.Max(t.perClient)}
	}
	if elapsed > 0 {
		s.MessagesPerSecond = math.Round(float64(t.total)/elapsed.Seconds()*10) / 10
	}
	us := func(ns uint64) float64 { return float64(ns) / 1e3 }
	s.ElapsedSeconds = math.Round(s.ElapsedSeconds*1e6) / 1e6
	h := t.hist
	s.LatencyUS = latencyUS{
		P50: us(h.quantile(1, 2)), P90: us(h.quantile(9, 10)), P99: us(h.quantile(99, 100)),
		P999: us(h.quantile(999, 1000)), Max: us(h.max), Mean: math.Round(h.mean()) / 1e3,
	}
	for i, e := range t.firstErr {
		if e != "" {
			s.FirstErrors[string(statuses[i])] = e
		}
	}
	s.hist = h
	return s
}

// stopping says, on standard error, that the stream stops on a signal and how many
// results are still awaited, for at most bound.
func (r *reporter) stopping(waiting int, bound time.Duration) {
	r.clear()
	if waiting == 0 {
		fmt.Fprintln(r.errw, "mdpub: interrupted: stopping; no result to wait for")
		return
	}
	results := "results"
	if waiting == 1 {
		results = "result"
	}
	fmt.Fprintf(r.errw, "mdpub: interrupted: stopping; waiting up to %v (the drain timeout) for %d %s (interrupt again to quit at once)\n", bound, waiting, results)
}

// clear erases the progress bar, if one is on the line.
func (r *reporter) clear() {
	if r.drawn {
		fmt.Fprint(r.w, clearLine)
		r.drawn = false
	}
}

// summary prints s: as JSON on standard output with --json, else as a table.
func (r *reporter) summary(s summary) {
	r.clear()
	if r.json != nil {
		b, _ := json.Marshal(s) // one line: with --stdin it follows the outcomes' JSON lines
		r.json.Write(append(b, '\n'))
		return
	}
	w := r.w
	if s.Interrupted {
		fmt.Fprintln(w, "mdpub: interrupted; waited for the results of every message sent")
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, r.paint(bold, fmt.Sprintf("%-30s %14s %8s", "outcome", "count", "share")))
	counts := []uint64{s.Outcomes.OK, s.Outcomes.NoSubscriber, s.Outcomes.Denied, s.Outcomes.Failed, s.Outcomes.Timeout}
	for i, n := range counts {
		share := ""
		if s.Messages > 0 && n > 0 {
			share = fmt.Sprintf("%.2f%%", 100*float64(n)/float64(s.Messages))
		}
		line := strings.TrimRight(fmt.Sprintf("%-30s %14s %8s", statuses[i], grouped(n), share), " ")
		switch {
		case n > 0 && i == 0:
			line = r.paint(green, line)
		case n > 0:
			line = r.paint(red, line)
		}
		fmt.Fprintln(w, line)
	}
	fmt.Fprintf(w, "%-30s %14s\n\n", "total", grouped(s.Messages))
	fmt.Fprintf(w, "%-12s %s messages in %.2fs: %s messages/s, %s written\n", "throughput",
		grouped(s.Messages), s.ElapsedSeconds, grouped(uint64(s.MessagesPerSecond+0.5)), bytesPerSecond(s.BytesWritten, s.ElapsedSeconds))
	if s.Messages > 0 && s.hist != nil {
		var b strings.Builder
		for _, q := range quantiles {
			fmt.Fprintf(&b, "%s %s  ", q.name, latency(s.hist.quantile(q.num, q.den)))
		}
		fmt.Fprintf(&b, "max %s", latency(s.hist.max))
		from := "from the publish call"
		if s.LatencyFrom == "due" {
			from = "from each message's due time"
		}
		fmt.Fprintf(w, "%-12s %s  (%s)\n", "latency", b.String(), from)
	}
	if s.Clients > 1 || s.Connections > 1 {
		each := ""
		if s.Clients > 1 {
			each = fmt.Sprintf(", %s–%s messages each", grouped(s.PerClient.Min), grouped(s.PerClient.Max))
		}
		fmt.Fprintf(w, "%-12s %d × %s, %d up at the end%s\n", "clients", s.Clients, plural(s.Connections, "connection"), s.ConnectionsUp, each)
	}
	fmt.Fprintf(w, "%-12s reconnects %d, server down events %d\n", "failovers", s.Reconnects, s.ServerDownEvents)
	for _, st := range statuses[1:] {
		if e, ok := s.FirstErrors[string(st)]; ok {
			fmt.Fprintf(w, "%-12s %s: %s\n", "first error", st, e)
		}
	}
}

// plural writes n things.
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return grouped(uint64(n)) + " " + thing + "s"
}

// bytesPerSecond formats the bytes written and their rate.
func bytesPerSecond(n uint64, seconds float64) string {
	mb := float64(n) / 1e6
	if seconds <= 0 {
		return fmt.Sprintf("%.1f MB", mb)
	}
	return fmt.Sprintf("%.1f MB (%.1f MB/s)", mb, mb/seconds)
}
