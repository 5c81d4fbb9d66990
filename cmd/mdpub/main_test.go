package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mdclient/mdclient"
	"github.com/mdclient/mdclient/codec"
	"github.com/mdclient/mdclient/mdtest"
)

func TestMain(m *testing.M) {
	if os.Getenv("MDPUB_TEST_MAIN") == "1" { // this binary, re-run as the command itself
		main()
		return
	}
	goleak.VerifyTestMain(m)
}

// syncBuffer is a bytes.Buffer safe for the writers of one run.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// invocation is one in-process run of the command.
type invocation struct {
	stdin   io.Reader
	environ map[string]string
	tty     bool      // stdout and stderr are terminals
	stdout  io.Writer // also gets what is written to stdout
	stderr  io.Writer // also gets what is written to stderr
}

func (inv invocation) run(t *testing.T, ctx context.Context, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut syncBuffer
	e := env{
		stdin:     inv.stdin,
		stdout:    &out,
		stderr:    &errOut,
		stdoutTTY: inv.tty,
		stderrTTY: inv.tty,
		getenv:    func(k string) string { return inv.environ[k] },
	}
	if e.stdin == nil {
		e.stdin = strings.NewReader("")
	}
	if inv.stdout != nil {
		e.stdout = io.MultiWriter(&out, inv.stdout)
	}
	if inv.stderr != nil {
		e.stderr = io.MultiWriter(&errOut, inv.stderr)
	}
	code = run(ctx, args, e)
	return code, out.String(), errOut.String()
}

// row is a line of the summary's outcome table.
func row(status, count, share string) string {
	return strings.TrimRight(fmt.Sprintf("%-30s %14s %8s", status, count, share), " ")
}

func mdpub(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return invocation{}.run(t, t.Context(), args...)
}

// broker starts an embedded broker whose allow-token is token.
func broker(t *testing.T, token string) *mdtest.Server {
	t.Helper()
	srv, err := mdtest.NewServer(mdtest.WithAllowToken(token))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

func TestUsageErrorsExit2WithOneLine(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"--qos", "exactly-once"}, "want guaranteed or standard"},
		{[]string{"--count", "0"}, "--count must be at least 1"},
		{[]string{"--count", "-3"}, "--count must be at least 1"},
		{[]string{"--count", "many"}, `invalid value "many" for flag -count`},
		{[]string{"--duration", "0s"}, "--duration must be positive"},
		{[]string{"--duration", "ten"}, `invalid value "ten" for flag -duration`},
		{[]string{"--size", "-1"}, "--size must be from 0"},
		{[]string{"--size", "300000000"}, "--size must be from 0"},
		// MQTT's largest packet is 268,435,460 bytes; with the default subject it holds
		// 268,435,438 bytes of content, with a longer subject less.
		{[]string{"--size", "268435439", "--count", "1"}, "--size must be from 0 to 268435438"},
		{[]string{"--size", "268435456", "--count", "1"}, "--size must be from 0 to 268435438"},
		{[]string{"--subject", strings.Repeat("s", 1000), "--size", "268434451", "--count", "1"}, "--size must be from 0 to 268434450"},
		{[]string{"--stdin", "--size", "10"}, "--size does not go with --stdin"},
		{[]string{"--rate", "-1"}, "--rate must not be negative"},
		{[]string{"--inflight", "-1"}, "--inflight must not be negative"},
		{[]string{"--window", "0"}, "--window must be from 1"},
		{[]string{"--timeout", "0s"}, "--timeout must be positive"},
		{[]string{"--connect-timeout", "-1s"}, "--connect-timeout must be positive"},
		{[]string{"--subject", "a/+/b"}, "not a valid topic name"},
		{[]string{"--subject", ""}, "not a valid topic name"},
		{[]string{"--subject", "a/#"}, "not a valid topic name"},
		{[]string{"--subject", "a/%x"}, "unknown placeholder %x"},
		{[]string{"--subject", "a/%"}, "a lone % ends it"},
		{[]string{"--subject", "+/%i"}, "not a valid topic name"},
		{[]string{"--clients", "0"}, "--clients must be from 1 to 100000"},
		{[]string{"--clients", "100001"}, "--clients must be from 1 to 100000"},
		{[]string{"--connections", "0"}, "--connections must be from 1 to 1024"},
		{[]string{"--stdin", "--clients", "2"}, "--clients does not go with --stdin"},
		{[]string{"--stdin", "--payload-header"}, "--payload-header does not go with --stdin"},
		{[]string{"--payload-header", "--size", "23"}, "--size must be at least 24 with --payload-header"},
		{[]string{"--metrics", "nonsense", "--count", "1"}, "--metrics: "},
		// A message number takes up to 20 digits: "s/%n" counts as a 22-byte subject, 10
		// bytes longer than the default's.
		{[]string{"--subject", "s/%n", "--size", "268435429", "--count", "1"}, "--size must be from 0 to 268435428"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--servers", " , "}, "--servers names no server"},
		{[]string{"--servers", "tcp://127.0.0.1:1883,bogus"}, `invalid server "bogus"`},
		{[]string{"--servers", "101 tcp://127.0.0.1:1883"}, "weight must be an integer from 0 to 100"},
		{[]string{"--servers", "ftp://h:21"}, `unknown scheme "ftp"`},
		{[]string{"serve", "--receive-maximum", "0"}, "--receive-maximum must be from 1 to 65535"},
		{[]string{"serve", "--nope"}, "flag provided but not defined: -nope"},
		{[]string{"serve", "extra"}, `unexpected argument "extra"`},
	}
	for _, tc := range cases {
		code, stdout, stderr := mdpub(t, tc.args...)
		if code != exitUsage {
			t.Errorf("%q: exit %d, want 2", tc.args, code)
		}
		if stdout != "" {
			t.Errorf("%q: wrote to stdout: %q", tc.args, stdout)
		}
		if strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") || !strings.HasPrefix(stderr, "mdpub") {
			t.Errorf("%q: stderr is not one line: %q", tc.args, stderr)
		}
		if !strings.Contains(stderr, tc.want) {
			t.Errorf("%q: stderr %q does not say %q", tc.args, stderr, tc.want)
		}
	}
}

// TestLargestSizeFillsMQTTsLargestPacket checks the bound of --size against the codec: the
// largest size accepted makes a PUBLISH (QoS 1, as the client sends it, no properties) of
// exactly codec.MaxPacketSize bytes.
func TestLargestSizeFillsMQTTsLargestPacket(t *testing.T) {
	content := make([]byte, 268435438) // untouched: the pages are never written
	for _, subject := range []string{"mdpub/stream", strings.Repeat("s", 1000)} {
		largest := len(content) - (len(subject) - len("mdpub/stream"))
		cfg, err := parseFlags([]string{"--subject", subject, "--size", strconv.Itoa(largest)}, nil)
		if err != nil || cfg.size != largest {
			t.Errorf("subject of %d bytes: --size %d: %v", len(subject), largest, err)
		}
		if _, err := parseFlags([]string{"--subject", subject, "--size", strconv.Itoa(largest + 1)}, nil); err == nil {
			t.Errorf("subject of %d bytes: --size %d accepted", len(subject), largest+1)
		}
		p := codec.Publish{Topic: subject, QoS: 1, PacketID: 1, Payload: content[:largest]}
		if n := codec.PublishLen(&p); n != codec.MaxPacketSize {
			t.Errorf("subject of %d bytes: --size %d makes a %d-byte packet, want %d", len(subject), largest, n, codec.MaxPacketSize)
		}
	}
}

func TestParseFlags(t *testing.T) {
	env := map[string]string{tokenEnv: "from-env"}
	getenv := func(k string) string { return env[k] }

	cfg, err := parseFlags(nil, getenv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.duration != defaultDuration || cfg.count != 0 || cfg.size != 64 || cfg.window != defaultWindow ||
		cfg.qos != mdclient.QoSGuaranteed || cfg.token != "from-env" || cfg.servers != nil || cfg.stdin || cfg.json ||
		cfg.clients != 1 || cfg.connections != 1 || cfg.payloadHeader || cfg.metrics != "" || cfg.rate != 0 {
		t.Errorf("defaults: %+v", cfg)
	}

	cfg, err = parseFlags([]string{"--count", "5"}, getenv)
	if err != nil || cfg.count != 5 || cfg.duration != 0 {
		t.Errorf("--count alone should not limit the time: %+v, %v", cfg, err)
	}
	cfg, err = parseFlags([]string{"--inflight", "4000"}, getenv)
	if err != nil || cfg.window != 8000 {
		t.Errorf("--inflight 4000 should widen the default window to 8000: %+v, %v", cfg, err)
	}
	cfg, err = parseFlags([]string{"--stdin"}, getenv)
	if err != nil || cfg.duration != 0 || !cfg.stdin {
		t.Errorf("--stdin should read to the end: %+v, %v", cfg, err)
	}
	cfg, err = parseFlags([]string{
		"--servers", "tcp://a:1883, 50 ws://b:8080/mqtt ,,https://c:443", "--token", "flag-token", "-qos=STANDARD",
		"--count=7", "--duration", "250ms", "--size", "30", "--rate", "100", "--inflight", "8", "--window", "16",
		"--subject", "/sport/%i/%n", "--retained", "--json", "--quiet", "--timeout", "2s", "--connect-timeout", "1s",
		"--clients", "3", "--connections", "2", "--payload-header", "--metrics", "127.0.0.1:9100",
	}, getenv)
	if err != nil {
		t.Fatal(err)
	}
	tpl, err := parseTemplate("/sport/%i/%n")
	if err != nil {
		t.Fatal(err)
	}
	want := config{
		servers: []string{"tcp://a:1883", "50 ws://b:8080/mqtt", "https://c:443"}, token: "flag-token",
		subject: "/sport/%i/%n", tpl: tpl, count: 7, duration: 250 * time.Millisecond, size: 30, rate: 100, inflight: 8,
		window: 16, qos: mdclient.QoSStandard, retained: true, json: true, quiet: true, timeout: 2 * time.Second,
		connectTimeout: time.Second, clients: 3, connections: 2, payloadHeader: true, metrics: "127.0.0.1:9100",
	}
	cfg.getenv = nil
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got  %+v\nwant %+v", cfg, want)
	}
}

func TestHelpNeverShowsTheToken(t *testing.T) {
	inv := invocation{environ: map[string]string{tokenEnv: "s3cret-from-env"}}
	for _, args := range [][]string{{"-h"}, {"--help"}, {"serve", "-h"}} {
		code, stdout, stderr := inv.run(t, t.Context(), args...)
		if code != exitOK || stdout != "" || !strings.Contains(stderr, "Usage") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
		if strings.Contains(stderr, "s3cret") {
			t.Errorf("%q: help shows the token", args)
		}
	}
}

func TestNoServerReachableExits2(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	for _, clients := range []string{"1", "3"} {
		code, stdout, stderr := mdpub(t, "--servers", "tcp://"+addr, "--connect-timeout", "300ms", "--token", "hidden-token", "--clients", clients, "--connections", "2")
		if code != exitUsage || stdout != "" {
			t.Fatalf("--clients %s: exit %d, stdout %q", clients, code, stdout)
		}
		if strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "no server reachable within 300ms") {
			t.Fatalf("--clients %s: stderr %q", clients, stderr)
		}
		if strings.Contains(stderr, "hidden-token") {
			t.Fatal("the token was printed")
		}
	}
}

// TestClientsShareTheStream: --count is the run's, over all clients; each client has its
// connections, and the summary says how the messages spread: in the closed loop in equal
// shares (an outside tester found one of three clients with none of 3 000 messages: the
// first client had taken a window's worth).
func TestClientsShareTheStream(t *testing.T) {
	for _, args := range [][]string{
		{"--count", "1003"},                    // closed loop
		{"--count", "1003", "--rate", "20000"}, // open loop
	} {
		code, stdout, stderr := mdpub(t, append([]string{"--clients", "5", "--connections", "3", "--subject", "c/%c", "--json"}, args...)...)
		if code != exitOK {
			t.Fatalf("%q: exit %d; stderr:\n%s", args, code, stderr)
		}
		var s summary
		if err := json.Unmarshal([]byte(stdout), &s); err != nil {
			t.Fatal(err)
		}
		if s.Messages != 1003 || s.Outcomes.OK != 1003 || s.Clients != 5 || s.Connections != 3 || s.ConnectionsUp != 15 ||
			s.PerClient.Min > s.PerClient.Max || s.PerClient.Max > 1003 || 5*s.PerClient.Min > 1003 || 5*s.PerClient.Max < 1003 {
			t.Errorf("%q: summary %+v", args, s)
		}
		if len(args) == 2 && (s.PerClient.Min != 200 || s.PerClient.Max != 201) {
			t.Errorf("%q: messages per client from %d to %d, want 200 to 201", args, s.PerClient.Min, s.PerClient.Max)
		}
		if !strings.Contains(stderr, "mdpub: 5 clients × 3 connections, ") || !strings.Contains(stderr, `subscriber on "c/+"`) {
			t.Errorf("%q: banner:\n%s", args, stderr)
		}
	}
}

// jsonLines decodes stdout's JSON lines of outcomes (and a summary line, if any).
func jsonLines(t *testing.T, stdout string) (lines []outcomeLine, summaryLine map[string]any) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(stdout))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not a JSON line: %q: %v", sc.Text(), err)
		}
		if _, ok := m["outcomes"]; ok {
			summaryLine = m
			continue
		}
		keys := slices.Sorted(func(yield func(string) bool) {
			for k := range m {
				if !yield(k) {
					return
				}
			}
		})
		if !slices.Equal(keys, []string{"closure", "error", "server", "status"}) {
			t.Fatalf("line %q has keys %q", sc.Text(), keys)
		}
		var l outcomeLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, l)
	}
	return lines, summaryLine
}

func TestStdinEmbeddedBroker(t *testing.T) {
	inv := invocation{stdin: strings.NewReader("one\ntwo\r\n\nfour")}
	code, stdout, stderr := inv.run(t, t.Context(), "--stdin")
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	lines, _ := jsonLines(t, stdout)
	var closures []string
	for _, l := range lines {
		closures = append(closures, l.Closure)
		if l.Status != string(mdclient.NotifyPublishOK) || l.Error != "" || !strings.HasPrefix(l.Server, "ws://127.0.0.1:") {
			t.Errorf("line %+v", l)
		}
	}
	slices.Sort(closures)
	if !slices.Equal(closures, []string{"line-1", "line-2", "line-3", "line-4"}) {
		t.Errorf("closures %q", closures)
	}
	// stdout carries data, so the report goes to stderr, without ANSI codes.
	if !strings.Contains(stderr, row("NOTIFY_PUBLISH_OK", "4", "100.00%")) || strings.Contains(stderr, "\x1b") {
		t.Errorf("stderr:\n%s", stderr)
	}
}

func TestStdinReachesTheSubscriberInOrder(t *testing.T) {
	srv := broker(t, "tok-en")
	sub, err := srv.Subscribe("orders/+")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	inv := invocation{stdin: strings.NewReader("alpha\nbeta\ngamma\n"), environ: map[string]string{tokenEnv: "tok-en"}}
	code, stdout, stderr := inv.run(t, t.Context(), "--stdin", "--servers", srv.TCPAddr(), "--subject", "orders/eu", "--inflight", "1")
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	lines, _ := jsonLines(t, stdout)
	if len(lines) != 3 {
		t.Fatalf("%d lines:\n%s", len(lines), stdout)
	}
	for _, l := range lines {
		if l.Status != "NOTIFY_PUBLISH_OK" || l.Server != srv.TCPAddr() {
			t.Errorf("line %+v", l)
		}
	}
	for _, want := range []string{"alpha", "beta", "gamma"} {
		select {
		case m := <-sub.Messages():
			if string(m.Payload) != want || m.Topic != "orders/eu" {
				t.Errorf("received %q on %q, want %q", m.Payload, m.Topic, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%q never arrived", want)
		}
	}
	if strings.Contains(stdout+stderr, "tok-en") {
		t.Error("the token was printed")
	}
}

func TestStdinOutcomesOtherThanOK(t *testing.T) {
	srv := broker(t, "right")
	cases := []struct {
		token, status, errPart string
	}{
		{"right", "NOTIFY_PUBLISH_NO_SUBSCRIBER", "no subscriber"},
		{"wrong-token", "NOTIFY_PUBLISH_DENIED", "publish denied"},
	}
	for _, tc := range cases {
		inv := invocation{stdin: strings.NewReader("x\ny\n")}
		code, stdout, stderr := inv.run(t, t.Context(), "--stdin", "--json", "--servers", srv.WSAddr(), "--token", tc.token, "--subject", "nobody/listens")
		if code != exitNotOK {
			t.Errorf("%s: exit %d, want 1; stderr:\n%s", tc.status, code, stderr)
		}
		lines, sum := jsonLines(t, stdout)
		if len(lines) != 2 {
			t.Fatalf("%s: %d lines:\n%s", tc.status, len(lines), stdout)
		}
		for _, l := range lines {
			if l.Status != tc.status || !strings.Contains(l.Error, tc.errPart) || l.Server != srv.WSAddr() {
				t.Errorf("%s: line %+v", tc.status, l)
			}
		}
		if sum == nil || sum["outcomes"].(map[string]any)[tc.status] != 2.0 || sum["mode"] != "stdin" {
			t.Errorf("%s: summary %v", tc.status, sum)
		}
		if !strings.Contains(sum["first_errors"].(map[string]any)[tc.status].(string), tc.errPart) {
			t.Errorf("%s: first errors %v", tc.status, sum["first_errors"])
		}
		if strings.Contains(stdout+stderr, tc.token) {
			t.Errorf("%s: the token was printed", tc.status)
		}
	}
}

func TestJSONSummaryShape(t *testing.T) {
	code, stdout, stderr := mdpub(t, "--count", "300", "--json", "--size", "10", "--qos", "standard", "--retained", "--inflight", "16", "--window", "32")
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	if strings.Count(stdout, "\n") != 1 {
		t.Fatalf("the summary should be one JSON line:\n%s", stdout)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatal(err)
	}
	keys := func(m map[string]any) []string {
		var k []string
		for key := range m {
			k = append(k, key)
		}
		slices.Sort(k)
		return k
	}
	wantKeys := []string{"bytes_written", "clients", "connections", "connections_up", "elapsed_seconds", "embedded", "first_errors",
		"interrupted", "latency_from", "latency_us", "messages", "messages_per_client", "messages_per_second", "mode", "outcomes",
		"payload_header", "qos", "rate", "reconnects", "server_down_events", "servers", "size", "subject"}
	if !slices.Equal(keys(got), wantKeys) {
		t.Errorf("keys %q\nwant %q", keys(got), wantKeys)
	}
	outcomes := got["outcomes"].(map[string]any)
	if !slices.Equal(keys(outcomes), []string{"NOTIFY_PUBLISH_DENIED", "NOTIFY_PUBLISH_FAILED", "NOTIFY_PUBLISH_NO_SUBSCRIBER", "NOTIFY_PUBLISH_OK", "NOTIFY_PUBLISH_TIMEOUT"}) {
		t.Errorf("outcomes %v", outcomes)
	}
	lat := got["latency_us"].(map[string]any)
	if !slices.Equal(keys(lat), []string{"max", "mean", "p50", "p90", "p99", "p99.9"}) {
		t.Errorf("latency %v", lat)
	}
	if lat["p50"].(float64) <= 0 || lat["p50"].(float64) > lat["p99"].(float64) || lat["p99.9"].(float64) > lat["max"].(float64) {
		t.Errorf("latency quantiles out of order: %v", lat)
	}
	if got["messages"] != 300.0 || outcomes["NOTIFY_PUBLISH_OK"] != 300.0 || got["mode"] != "stream" || got["qos"] != "standard" ||
		got["size"] != 10.0 || got["embedded"] != true || got["interrupted"] != false || got["reconnects"] != 0.0 ||
		got["bytes_written"].(float64) < 300*10 || got["messages_per_second"].(float64) <= 0 || len(got["first_errors"].(map[string]any)) != 0 {
		t.Errorf("summary %v", got)
	}
	if servers := got["servers"].([]any); len(servers) != 1 || !strings.HasPrefix(servers[0].(string), "ws://127.0.0.1:") {
		t.Errorf("servers %v", servers)
	}
	// The human table is not printed with --json; the banner goes to stderr.
	if strings.Contains(stderr, "outcome") || !strings.Contains(stderr, "embedded broker") {
		t.Errorf("stderr:\n%s", stderr)
	}
}

func TestDurationStreamSummary(t *testing.T) {
	code, stdout, stderr := mdpub(t, "--duration", "300ms", "--rate", "2000", "--quiet")
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	if stdout != "" {
		t.Errorf("stdout is not a terminal: the report belongs on stderr, got %q", stdout)
	}
	for _, want := range []string{"(300ms)", "NOTIFY_PUBLISH_OK", row("NOTIFY_PUBLISH_TIMEOUT", "0", ""), "total", "messages/s", "p99.9", "max", "failovers    reconnects 0, server down events 0"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "\x1b") || strings.Contains(stderr, "in flight") {
		t.Errorf("--quiet and no terminal: no progress, no ANSI codes:\n%s", stderr)
	}
}

func TestTerminalGetsTheReportOnStdout(t *testing.T) {
	inv := invocation{tty: true, environ: map[string]string{"NO_COLOR": "1"}}
	code, stdout, stderr := inv.run(t, t.Context(), "--count", "50")
	if code != exitOK || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if !strings.Contains(stdout, row("NOTIFY_PUBLISH_OK", "50", "100.00%")) || strings.Contains(stdout, green) {
		t.Errorf("stdout:\n%q", stdout)
	}
}

func TestProgress(t *testing.T) {
	st := mdclient.Stats{OK: 1500, Failed: 2, InFlight: 1024, Queued: 300}
	var tty, plain, noColour bytes.Buffer
	cfg := config{duration: 10 * time.Second}
	r := newReporter(cfg, env{stdout: &tty, stdoutTTY: true, getenv: func(string) string { return "" }})
	r.progress(2*time.Second, st)
	if got := tty.String(); !strings.HasPrefix(got, clearLine+"[##--------] 2.0s/10s  751/s  ok "+green+"1.5k"+reset+"  not ok "+red+"2"+reset+"  inflight 1.02k  queued 300") {
		t.Errorf("bar %q", got)
	}
	r = newReporter(cfg, env{stdout: &noColour, stdoutTTY: true, getenv: func(k string) string { return map[string]string{"NO_COLOR": "x"}[k] }})
	r.progress(time.Second, st)
	if got := noColour.String(); !strings.HasPrefix(got, clearLine) || strings.Contains(got, green) || strings.Contains(got, red) {
		t.Errorf("NO_COLOR bar %q", got)
	}
	r = newReporter(cfg, env{stderr: &plain, stdout: io.Discard})
	if r.every != lineEvery || r.w != &plain {
		t.Fatalf("no terminal: progress every %v", r.every)
	}
	r.progress(time.Second, st)
	if got := plain.String(); got != "mdpub: 1.0s  1502 msg/s  ok 1500  no subscriber 0  denied 0  failed 2  timeout 0  in flight 1024  queued 300\n" {
		t.Errorf("plain line %q", got)
	}
	if r := newReporter(config{stdin: true}, env{stdout: io.Discard, stderr: io.Discard, stdoutTTY: true, stderrTTY: true}); r.every != 0 {
		t.Error("JSON lines on the terminal: no progress bar over them")
	}
	if r := newReporter(config{quiet: true}, env{stdout: io.Discard, stdoutTTY: true}); r.every != 0 {
		t.Error("--quiet shows progress")
	}
}

func TestFormats(t *testing.T) {
	for n, want := range map[uint64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", 100000: "100,000"} {
		if got := grouped(n); got != want {
			t.Errorf("grouped(%d) = %q, want %q", n, got, want)
		}
	}
	for n, want := range map[float64]string{0: "0", 999: "999", 1024: "1.02k", 16384: "16.4k", 301234: "301k", 1234567: "1.23M", 5e9: "5G"} {
		if got := compact(n); got != want {
			t.Errorf("compact(%v) = %q, want %q", n, got, want)
		}
	}
	for ns, want := range map[uint64]string{999: "999ns", 1500: "1.5µs", 342000000: "342ms", 1234567: "1.23ms", 2500000000: "2.5s"} {
		if got := latency(ns); got != want {
			t.Errorf("latency(%d) = %q, want %q", ns, got, want)
		}
	}
}

// signalWriter closes first on the first write.
type signalWriter struct {
	once  sync.Once
	first chan struct{}
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.first) })
	return len(p), nil
}

func TestInterruptWaitsForEveryResultSent(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	sw := &signalWriter{first: make(chan struct{})}
	go func() {
		pw.Write([]byte("first\n"))
		<-sw.first // the first outcome is out: interrupt, as SIGINT would
		cancel()
	}()
	inv := invocation{stdin: pr, stdout: sw}
	code, stdout, stderr := inv.run(t, ctx, "--stdin", "--json")
	pw.Close() // lets the reader, still waiting for a line, finish
	if code != exitInterrupted {
		t.Fatalf("exit %d, want 130; stderr:\n%s", code, stderr)
	}
	lines, sum := jsonLines(t, stdout)
	if len(lines) != 1 || lines[0].Closure != "line-1" || sum["interrupted"] != true || sum["messages"] != 1.0 {
		t.Fatalf("stdout:\n%s", stdout)
	}
}

func TestServe(t *testing.T) {
	counted := make(chan uint64, 16)
	serveCounted = func(n uint64) { counted <- n }
	defer func() { serveCounted = nil }() // after serve returned: no subscriber reads any more
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pr, pw := io.Pipe()
	exit := make(chan int, 1)
	go func() {
		defer pw.Close()
		exit <- run(ctx, []string{"serve", "--subscribe", "feed/#, other"}, env{
			stdout: pw, stderr: io.Discard,
			getenv: func(k string) string { return map[string]string{tokenEnv: "serve-secret"}[k] },
		})
	}()
	br := bufio.NewReader(pr)
	var head strings.Builder
	var tcp string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("serve ended early: %v\n%s", err, head.String())
		}
		head.WriteString(line)
		if addr, ok := strings.CutPrefix(line, "tcp  "); ok {
			tcp = strings.TrimSpace(addr)
		}
		if strings.HasPrefix(line, "serving until") {
			break
		}
	}
	for _, want := range []string{"entitlement Basic", "ws   ws://127.0.0.1:", "subscribers on feed/#, other", `--token "$MDCLIENT_TOKEN"`} {
		if !strings.Contains(head.String(), want) {
			t.Errorf("serve's banner lacks %q:\n%s", want, head.String())
		}
	}
	for token, want := range map[string]mdclient.Status{"serve-secret": mdclient.NotifyPublishOK, "other": mdclient.NotifyPublishDenied} {
		c := mdclient.NewClient()
		c.SetEntitlementToken(token)
		if err := c.SetServers([]string{tcp}); err != nil {
			t.Fatal(err)
		}
		st, _ := c.Publish(t.Context(), mdclient.Message{Subject: "feed/x", Content: []byte("hi")})
		c.Close()
		if st != want {
			t.Errorf("token %q: %s, want %s", token, st, want)
		}
	}
	// The subscriber gets the published message after its PUBACK: wait until serve has
	// counted it before stopping serve, or the count may miss it.
	select {
	case n := <-counted:
		if n != 1 {
			t.Errorf("serve counted %d messages, want 1", n)
		}
	case <-time.After(deadline):
		t.Fatal("serve's subscriber never counted the message")
	}
	cancel()
	rest, _ := io.ReadAll(pr)
	if code := <-exit; code != exitOK {
		t.Errorf("exit %d", code)
	}
	if !strings.Contains(string(rest), "the subscribers received 1 messages") {
		t.Errorf("serve's last words: %q", rest)
	}
	if strings.Contains(head.String()+string(rest), "serve-secret") {
		t.Error("serve printed the allow-token")
	}
}

func TestMessagesTooLargeForTheServerStopTheRun(t *testing.T) {
	srv := broker(t, "tok")
	sub, err := srv.Subscribe("mdpub/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	addr := newProxy(t, srv, 1000, nil) // the broker announces a Maximum Packet Size of 1000 bytes

	// Messages that fit go through the proxy.
	code, _, stderr := mdpub(t, "--servers", addr, "--token", "tok", "--size", "900", "--count", "20", "--quiet")
	if code != exitOK || !strings.Contains(stderr, row("NOTIFY_PUBLISH_OK", "20", "100.00%")) {
		t.Fatalf("--size 900: exit %d; stderr:\n%s", code, stderr)
	}

	// Messages that do not stop the run at the first result, with one line and exit 2.
	code, stdout, stderr := mdpub(t, "--servers", addr, "--token", "tok", "--size", "2000", "--count", "200000", "--quiet")
	if code != exitUsage || stdout != "" {
		t.Fatalf("--size 2000: exit %d, want 2; stdout %q; stderr:\n%s", code, stdout, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	last := lines[len(lines)-1]
	for _, want := range []string{"mdpub: --size 2000 ", "too large", "server allows 1000"} {
		if !strings.Contains(last, want) {
			t.Errorf("last line %q lacks %q", last, want)
		}
	}
	if strings.Contains(stderr, "outcome") {
		t.Errorf("a summary after the early stop:\n%s", stderr)
	}
}

// TestMetadataFlags: --property (repeatable, in order), --content-type and --expiry go
// with every message; a bad one is a usage error.
func TestMetadataFlags(t *testing.T) {
	srv := broker(t, "tok")
	sub, err := srv.Subscribe("meta/+")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	inv := invocation{stdin: strings.NewReader("{}\n"), environ: map[string]string{tokenEnv: "tok"}}
	code, _, stderr := inv.run(t, t.Context(), "--stdin", "--servers", srv.TCPAddr(), "--subject", "meta/x",
		"--property", "trace=abc", "--property", "k=v=w", "--property", "trace=again", "--content-type", "application/json", "--expiry", "90s")
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	select {
	case m := <-sub.Messages():
		want := []mdclient.UserProperty{{Key: "trace", Value: "abc"}, {Key: "k", Value: "v=w"}, {Key: "trace", Value: "again"}}
		if !slices.Equal(m.UserProperties, want) || m.ContentType != "application/json" || m.MessageExpiry != 90 {
			t.Errorf("received %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing arrived")
	}
	for _, args := range [][]string{{"--property", "novalue"}, {"--property", "k=a\tb"}, {"--content-type", "a\x00b"}, {"--expiry", "-1s"}} {
		if code, _, stderr := inv.run(t, t.Context(), args...); code != exitUsage || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%q: exit %d, stderr %q; want a one-line usage error", args, code, stderr)
		}
	}
}

// A --stdin line longer than any MQTT packet is kept only up to one byte more than MQTT
// allows (so that it is still refused as too large), the rest read and dropped, and the
// next line is whole (found by the sixth outside tester: `mdpub --stdin < /dev/zero` ran
// out of memory).
func TestStdinLongLineIsBounded(t *testing.T) {
	defer func(m int) { maxLine = m }(maxLine)
	maxLine = 1000
	br := bufio.NewReaderSize(io.MultiReader(strings.NewReader(strings.Repeat("x", 1<<20)), strings.NewReader("\nnext\nlast")), 4096)
	for _, want := range []struct {
		n   int
		err error
	}{{maxLine, nil}, {len("next\n"), nil}, {len("last"), io.EOF}} {
		line, err := readLine(br)
		if len(line) != want.n || err != want.err {
			t.Fatalf("%d bytes (%.10q…), %v; want %d bytes, %v", len(line), line, err, want.n, want.err)
		}
	}
}
