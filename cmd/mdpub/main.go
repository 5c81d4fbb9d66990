// Command mdpub publishes a stream of messages with mdclient and reports what became of
// every one of them: the count per outcome, messages per second, latency percentiles and
// the failovers seen.
//
// With no flags it starts an embedded broker with a subscriber, publishes to it for ten
// seconds with a live progress bar, and prints a summary:
//
//	go run ./cmd/mdpub
//
// Against real servers (entries as mdclient.Client.SetServers takes them, comma-separated):
//
//	MDCLIENT_TOKEN=secret mdpub --servers "tcp://broker1:1883,50 ws://broker2:8080" --count 1000000
//
// One message per line of standard input, one JSON line per outcome on standard output:
//
//	printf 'a\nb\n' | mdpub --servers tcp://broker1:1883 --subject orders --stdin
//	{"closure":"line-1","status":"NOTIFY_PUBLISH_OK","server":"tcp://broker1:1883","error":""}
//	...
//
// A load test as emqtt-bench runs one: 4 independent clients of 2 connections each, a
// subject per client and message, an open-loop schedule of 20,000 messages a second,
// a header in each message for subscribers to check, Prometheus metrics while it runs:
//
//	mdpub --clients 4 --connections 2 --subject 'load/%i/%n' --rate 20000 --payload-header --metrics 127.0.0.1:9100
//
// With --rate, message i of the run is due at start + i/rate and its latency counts from
// then, so the time a message waited to be sent is latency too (no coordinated
// omission); without it (closed loop) a message goes as soon as the window has room and
// its latency counts from the publish call. --help describes the templates (%i, %c, %n),
// the 24-byte header and the metrics.
//
// The embedded broker alone, until SIGINT or SIGTERM:
//
//	mdpub serve --allow-token secret
//
// Where things are written: progress and the summary go to standard output when it is a
// terminal and to standard error when it is not, or when standard output carries data
// (--stdin's JSON lines, --json's summary). On a terminal the progress is a bar redrawn in
// place ten times a second; elsewhere it is a plain line at most once a second (--quiet
// turns it off). ANSI codes (cursor, colour) are written only to a terminal, and colour
// not when NO_COLOR is set.
//
// On SIGINT or SIGTERM mdpub stops sending and says at once, on standard error, how many
// results it still waits for and for how long at most: the client's drain timeout, after
// which the client ends the rest wrapping ErrClosed (TIMEOUT if written, else FAILED). Then it prints the summary. A
// second signal ends the process at once.
//
// Exit codes: 0 when every message got NOTIFY_PUBLISH_OK (or there was none), 1 when some
// did not, 2 for a usage error (a --size no MQTT packet can hold among them), a bad server
// entry, no server reachable within the connect timeout before the stream, or a first
// result saying the messages exceed the server's Maximum Packet Size (the run stops there;
// not with --stdin, where each line is a message of its own: a line too large gets
// NOTIFY_PUBLISH_FAILED and the run goes on),
// and 130 (128 + SIGINT) when SIGINT or SIGTERM interrupted the run, whatever the outcomes
// and even before a server was reached. mdpub serve exits 0 when a signal stops it, its
// only way to stop.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mdclient/mdclient"
	"github.com/mdclient/mdclient/codec"
)

// Exit codes.
const (
	exitOK          = 0   // every message published
	exitNotOK       = 1   // some message got another outcome
	exitUsage       = 2   // bad flag, bad server entry, no server reachable, messages too large for the server
	exitInterrupted = 130 // SIGINT or SIGTERM (128 + SIGINT), whatever the outcomes
)

// defaultDuration is the length of the stream when neither --count nor --duration is given.
const defaultDuration = 10 * time.Second

// tokenEnv names the environment variable that supplies the token when --token is absent.
const tokenEnv = "MDCLIENT_TOKEN"

// env is what the command reads from and writes to; main passes the process's, tests
// their own.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	stdoutTTY      bool // stdout is a terminal
	stderrTTY      bool // stderr is a terminal
	getenv         func(string) string
}

func main() {
	// The first SIGINT or SIGTERM stops the stream; a second ends the process at once. The
	// second is caught too, not left to the default action: a process started with SIGINT
	// ignored (in the background of a script) would otherwise ignore it.
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		cancel()
		<-sigs
		os.Exit(exitInterrupted)
	}()
	os.Exit(run(ctx, os.Args[1:], env{
		stdin:     os.Stdin,
		stdout:    os.Stdout,
		stderr:    os.Stderr,
		stdoutTTY: isTerminal(os.Stdout),
		stderrTTY: isTerminal(os.Stderr),
		getenv:    os.Getenv,
	}))
}

// isTerminal reports whether f is a character device, which is what a terminal is to a
// program that does not ask the kernel more.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// run is the whole command: it returns the exit code. ctx ending (SIGINT, SIGTERM) stops
// the stream early and makes the exit code exitInterrupted; the summary still covers
// every message sent.
func run(ctx context.Context, args []string, e env) int {
	if len(args) > 0 && args[0] == "serve" {
		return serve(ctx, args[1:], e)
	}
	cfg, err := parseFlags(args, e.getenv)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(e.stderr, usage())
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "mdpub: %v (mdpub -h for help)\n", err)
		return exitUsage
	}
	return publish(ctx, cfg, e)
}

// qos is the --qos flag.
type qos mdclient.QoS

func (q *qos) String() string {
	if q != nil && mdclient.QoS(*q) == mdclient.QoSStandard {
		return "standard"
	}
	return "guaranteed"
}

func (q *qos) Set(s string) error {
	switch strings.ToLower(s) {
	case "guaranteed":
		*q = qos(mdclient.QoSGuaranteed)
	case "standard":
		*q = qos(mdclient.QoSStandard)
	default:
		return errors.New("want guaranteed or standard")
	}
	return nil
}

// config is what the flags ask for.
type config struct {
	servers        []string        // empty: start an embedded broker
	token          string          // a secret: never printed
	subject        string          // a template (see template.go)
	tpl            subjectTemplate // subject, parsed
	count          int             // 0: no limit by count
	duration       time.Duration   // 0: no limit by time
	size           int
	rate           int // messages per second over all clients, open loop; 0: closed loop, as fast as the servers acknowledge
	inflight       int // mdclient.WithMaxInflight; 0: the server's Receive Maximum
	window         int // most messages awaiting their result at once, per client
	clients        int // independent mdclient.Clients
	connections    int // mdclient.WithConnections of each
	payloadHeader  bool
	metrics        string // address to serve Prometheus metrics on; "": none
	qos            mdclient.QoS
	retained       bool
	stdin          bool
	json           bool
	quiet          bool
	timeout        time.Duration // publish timeout of each message
	connectTimeout time.Duration
	getenv         func(string) string
	properties     properties // --property, in order
	contentType    string
	expiry         time.Duration
}

// maxSize bounds --size: the most content a PUBLISH of the configured subject (its
// longest expansion) and properties can carry in MQTT's largest packet
// (codec.MaxPacketSize). The client sends every message at QoS 1, with a packet
// identifier, and at best without a topic alias; the remaining length must not exceed
// codec.MaxRemainingLength.
func maxSize(cfg *config) int {
	p := cfg.publish()
	return codec.MaxRemainingLength - codec.PublishRemLen(&p)
}

// longestSubject is the longest subject the template makes.
func (cfg *config) longestSubject() string {
	return cfg.tpl.longest(max(cfg.clients, 1), clientIDLen(max(cfg.clients, 1)))
}

// publish is the PUBLISH of a message of cfg without content, as the client sends it.
func (cfg *config) publish() codec.Publish {
	p := codec.Publish{Topic: cfg.longestSubject(), QoS: 1, PacketID: 1, ContentType: cfg.contentType, UserProperties: cfg.properties}
	if cfg.expiry > 0 {
		p.MessageExpiry, p.HasMessageExpiry = 1, true
	}
	return p
}

// message is the Message of cfg with content, without its subject.
func (cfg *config) message(content []byte, closure string) mdclient.Message {
	return mdclient.Message{Content: content, Closure: closure, QoS: cfg.qos, Retained: cfg.retained,
		UserProperties: cfg.properties, ContentType: cfg.contentType, Expiry: cfg.expiry}
}

// properties is the repeatable --property flag: user properties, in order.
type properties []mdclient.UserProperty

func (p *properties) String() string {
	var parts []string
	for _, kv := range *p {
		parts = append(parts, kv.Key+"="+kv.Value)
	}
	return strings.Join(parts, ",")
}

func (p *properties) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("want key=value, not %q", s)
	}
	for _, x := range []string{k, v} {
		if err := codec.CheckString(x); err != nil {
			return fmt.Errorf("%q: %w", x, err)
		}
	}
	*p = append(*p, mdclient.UserProperty{Key: k, Value: v})
	return nil
}

// defaultWindow is --window's default: enough to keep a Receive Maximum of 1024 (mochi's,
// EMQX's default is 32, Mosquitto's 20) full while the next acknowledgements travel, and
// little enough that the latency reported without --rate is the servers' and not a queue's
// inside the client (Little's law: latency = outstanding messages / throughput).
const defaultWindow = 2048

// maxWindow bounds --window.
const maxWindow = 1 << 20

// maxClients bounds --clients, maxConnections --connections.
const (
	maxClients     = 100000
	maxConnections = 1024
)

func newFlagSet(cfg *config, servers *string, q *qos) *flag.FlagSet {
	fs := flag.NewFlagSet("mdpub", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported in one line by run; -h by usage
	fs.StringVar(servers, "servers", "", "comma-separated server entries \"[weight ]address\", e.g. \"tcp://h1:1883,50 ws://h2:8080\"; default: an embedded broker")
	fs.StringVar(&cfg.token, "token", "", "entitlement token (default $"+tokenEnv+"); never printed")
	fs.StringVar(&cfg.subject, "subject", "mdpub/stream", "subject (MQTT topic name) to publish to; a `template` with %i (client number), %c (client id), %n (message number): see Subject templates below")
	fs.IntVar(&cfg.count, "count", 0, "messages to publish (default: as many as --duration allows)")
	fs.DurationVar(&cfg.duration, "duration", 0, "how long to publish (default 10s unless --count or --stdin is given)")
	fs.IntVar(&cfg.size, "size", 64, "content bytes per message (not with --stdin)")
	fs.IntVar(&cfg.rate, "rate", 0, "messages per second over all clients, on a fixed schedule (open loop): latency counts from each message's due time, the wait to be sent included (no coordinated omission); 0: closed loop, as fast as the servers acknowledge, latency from the publish call")
	fs.IntVar(&cfg.clients, "clients", 1, "independent clients, each with its own --connections, --window and share of the stream")
	fs.IntVar(&cfg.connections, "connections", 1, "connections per client (mdclient.WithConnections): a subject's messages go over one of them, in order")
	fs.IntVar(&cfg.inflight, "inflight", 0, "most unacknowledged messages per connection (default: the server's Receive Maximum)")
	fs.IntVar(&cfg.window, "window", defaultWindow, "most messages awaiting their result at once per client (in flight, queued in the client, or results not yet read); without --rate, latency is measured at this concurrency")
	fs.BoolVar(&cfg.payloadHeader, "payload-header", false, "start each message's content with a 24-byte header (sequence number, send time, client number) for subscribers to check order, gaps and latency: see Payload header below; --size counts it")
	fs.StringVar(&cfg.metrics, "metrics", "", "serve Prometheus metrics on http://`ADDR`/metrics while running, e.g. 127.0.0.1:9100")
	fs.Var(q, "qos", "delivery `guarantee`: guaranteed (resent after failover) or standard (never resent) (default guaranteed)")
	fs.BoolVar(&cfg.retained, "retained", false, "publish retained messages")
	fs.BoolVar(&cfg.stdin, "stdin", false, "publish one message per line of standard input; one JSON line per outcome on standard output")
	fs.BoolVar(&cfg.json, "json", false, "print the summary as JSON on standard output")
	fs.BoolVar(&cfg.quiet, "quiet", false, "no progress")
	fs.DurationVar(&cfg.timeout, "timeout", mdclient.DefaultPublishTimeout, "publish timeout of each message")
	fs.DurationVar(&cfg.connectTimeout, "connect-timeout", mdclient.DefaultConnectTimeout, "how long to wait for every client's connections before the stream (exit 2 if a client has none by then)")
	fs.Var(&cfg.properties, "property", "MQTT 5 user property `key=value` of every message; repeat it for more, in order (a key may repeat)")
	fs.StringVar(&cfg.contentType, "content-type", "", "MQTT 5 content type of every message, e.g. application/json")
	fs.DurationVar(&cfg.expiry, "expiry", 0, "MQTT 5 message expiry of every message, rounded up to whole seconds; 0: none")
	return fs
}

// usage returns the help text.
func usage() string {
	var b strings.Builder
	b.WriteString(`Usage:
  mdpub [flags]          publish a stream and report every outcome (no flags: embedded broker, 10 s)
  mdpub --stdin [flags]  publish each line of standard input; JSON lines of outcomes on standard output
  mdpub serve [flags]    run the embedded broker alone (mdpub serve -h)

Flags:
`)
	var cfg config
	var servers string
	var q qos
	fs := newFlagSet(&cfg, &servers, &q)
	var flags strings.Builder
	fs.SetOutput(&flags)
	fs.PrintDefaults()
	b.WriteString(doubleDash(flags.String()))
	b.WriteString(`
Clients and connections: --clients N runs N independent clients, each with --connections
connections and its own --window; the stream is spread over them (a --count in equal
shares). The messages of one subject from one client keep their order (they share a
connection): with --subject 'load/%i' every client has a subject of its own, in order.

Open and closed loop: with --rate the schedule is fixed in advance (open loop): message i
of the run is due at start + i/rate, client k sending every --clients-th from k. A
message's latency counts from when it was due, so the time it waited to be sent (a stalled
server, a full window, a slow client) shows as latency instead of being left out: no
coordinated omission. A producer behind schedule catches up at once; one ahead waits
when it is a millisecond early or more (a message sent early counts from the call).
Without --rate (closed loop) a message goes as soon as the window has room and its latency
counts from the publish call.

Subject templates (--subject; placeholders as in emqtt-bench):
  %i     the client's number, from 1 to --clients
  %c     its MQTT client id: mdpub-XXXXXXXX-i (8 hex digits for the run); with
         --connections > 1, connection j (from 0) adds -j
  %n %s  the message's number within its client, from 1 (each message its own subject:
         no order across them)
  %%     a percent sign
The embedded broker's subscriber takes each level with a placeholder as +.

Payload header (--payload-header): the first ` + strconv.Itoa(headerLen) + ` bytes of the content, integers big-endian:
  0-7    sequence number, the message's number within its client, from 1 (%n)
  8-15   send time in Unix nanoseconds: when the message was due (--rate), else when it
         was handed to the client; mdpub's own latency counts from the same instant
  16-19  client number, from 1 (%i)
  20-23  "` + headerMagic + `"
A subscriber checks the order per client and subject (after a failover --qos guaranteed
may repeat a message), gaps per client (a message whose outcome was not NOTIFY_PUBLISH_OK
may be missing), and latency as its clock minus the send time. Each message then has
content of its own: up to --window × --size bytes per client.

Metrics (--metrics ADDR): while mdpub runs, http://ADDR/metrics answers in the Prometheus
text format: mdpub_messages_sent_total, mdpub_results_total{outcome}, mdpub_in_flight,
mdpub_queued, mdpub_awaiting_results, mdpub_connections_up, mdpub_latency_seconds
(histogram) and mdpub_latency_summary_seconds (p50, p90, p99, p99.9), among others.

Output: progress and the summary go to stdout on a terminal (a bar redrawn in place), else
to stderr (a plain progress line once a second); with --stdin or --json, stdout carries only
JSON lines. No ANSI codes unless writing to a terminal; no colour with NO_COLOR set.

On SIGINT or SIGTERM: stops sending, says on stderr how many results it still waits for
and waits for them, at most the client's drain timeout (` + drainTimeout.String() + `); then the summary.
A second signal quits at once.

Exit codes:
  0    every message got NOTIFY_PUBLISH_OK
  1    some message did not
  2    usage error, bad server entry, no server reachable, or messages larger than the
       server's Maximum Packet Size (the run stops at the first result; with --stdin a
       line too large is FAILED, exit 1, and the run goes on)
  130  interrupted by SIGINT or SIGTERM, whatever the outcomes (mdpub serve: 0)
`)
	return b.String()
}

// doubleDash writes the flags of PrintDefaults' output as --name, the form the
// documentation uses (the flag package takes both).
func doubleDash(s string) string { return strings.ReplaceAll("\n"+s, "\n  -", "\n  --")[1:] }

// parseFlags turns the arguments into a config; the error is one line fit for stderr.
func parseFlags(args []string, getenv func(string) string) (config, error) {
	cfg := config{getenv: getenv}
	var servers string
	var q qos
	fs := newFlagSet(&cfg, &servers, &q)
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	cfg.qos = mdclient.QoS(q)
	if !set["token"] && getenv != nil {
		cfg.token = getenv(tokenEnv)
	}
	tpl, tplErr := parseTemplate(cfg.subject)
	cfg.tpl = tpl
	switch {
	case set["count"] && cfg.count < 1:
		return cfg, errors.New("--count must be at least 1")
	case set["duration"] && cfg.duration <= 0:
		return cfg, errors.New("--duration must be positive")
	case cfg.clients < 1 || cfg.clients > maxClients:
		return cfg, fmt.Errorf("--clients must be from 1 to %d", maxClients)
	case cfg.connections < 1 || cfg.connections > maxConnections:
		return cfg, fmt.Errorf("--connections must be from 1 to %d", maxConnections)
	case tplErr != nil:
		return cfg, fmt.Errorf("--subject %q: %v", cfg.subject, tplErr)
	case codec.CheckTopicName(cfg.longestSubject()) != nil:
		return cfg, fmt.Errorf("--subject %q is not a valid topic name: %v", cfg.subject, codec.CheckTopicName(cfg.longestSubject()))
	case cfg.contentType != "" && codec.CheckString(cfg.contentType) != nil:
		return cfg, fmt.Errorf("--content-type %q: %v", cfg.contentType, codec.CheckString(cfg.contentType))
	case cfg.expiry < 0 || cfg.expiry > (1<<32-1)*time.Second:
		return cfg, fmt.Errorf("--expiry must be from 0 to %v", (1<<32-1)*time.Second)
	case maxSize(&cfg) < 0:
		return cfg, fmt.Errorf("the subject and properties leave no room for content in MQTT's largest packet, %d bytes", codec.MaxPacketSize)
	case cfg.size < 0 || cfg.size > maxSize(&cfg):
		return cfg, fmt.Errorf("--size must be from 0 to %d: MQTT's largest packet, %d bytes, holds no more content on subject %q", maxSize(&cfg), codec.MaxPacketSize, cfg.subject)
	case cfg.stdin && set["size"]:
		return cfg, errors.New("--size does not go with --stdin: each line is a message")
	case cfg.stdin && cfg.clients > 1:
		return cfg, errors.New("--clients does not go with --stdin: one client publishes the lines, in order")
	case cfg.stdin && cfg.payloadHeader:
		return cfg, errors.New("--payload-header does not go with --stdin: each line is a message as it is")
	case cfg.payloadHeader && cfg.size < headerLen:
		return cfg, fmt.Errorf("--size must be at least %d with --payload-header: the header is part of the content", headerLen)
	case cfg.rate < 0:
		return cfg, errors.New("--rate must not be negative")
	case cfg.inflight < 0:
		return cfg, errors.New("--inflight must not be negative")
	case cfg.window < 1 || cfg.window > maxWindow:
		return cfg, fmt.Errorf("--window must be from 1 to %d", maxWindow)
	case cfg.timeout <= 0:
		return cfg, errors.New("--timeout must be positive")
	case cfg.connectTimeout <= 0:
		return cfg, errors.New("--connect-timeout must be positive")
	}
	if !set["window"] && cfg.inflight > 0 {
		cfg.window = max(cfg.window, 2*cfg.inflight) // keep a larger window than asked for full
	}
	if !cfg.stdin && !set["count"] && !set["duration"] {
		cfg.duration = defaultDuration
	}
	if set["servers"] {
		for _, s := range strings.Split(servers, ",") {
			if s = strings.TrimSpace(s); s != "" {
				cfg.servers = append(cfg.servers, s)
			}
		}
		if len(cfg.servers) == 0 {
			return cfg, errors.New("--servers names no server")
		}
	}
	return cfg, nil
}
