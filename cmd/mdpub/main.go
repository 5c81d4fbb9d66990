// Command mdpub publishes a stream of messages with mdclient and reports what became of
// them: the count per outcome, messages per second and latency percentiles.
//
// With no flags it starts an embedded broker and a subscriber and publishes to them:
//
//	go run ./cmd/mdpub
//
// Against real servers:
//
//	go run ./cmd/mdpub --servers "tcp://broker1:1883,tcp://broker2:1883" --token SECRET --count 1000000
//
// A bad flag or server entry prints one line and exits with code 2.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mdclient/mdclient"
	"github.com/mdclient/mdclient/mdtest"
)

// embeddedToken is the allow-token of the embedded broker started when --servers is absent.
const embeddedToken = "mdpub-allow"

type config struct {
	servers []string
	token   string
	subject string
	count   int
	size    int
	rate    int
	timeout time.Duration
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mdpub:", err)
		os.Exit(2)
	}
	code, err := run(cfg, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mdpub:", err)
	}
	os.Exit(code)
}

func parseFlags(args []string) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("mdpub", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	servers := fs.String("servers", "", `comma-separated server entries, e.g. "tcp://h1:1883,50 ws://h2:8080"; default: an embedded broker`)
	fs.StringVar(&cfg.token, "token", os.Getenv("MDCLIENT_TOKEN"), "entitlement token (default $MDCLIENT_TOKEN)")
	fs.StringVar(&cfg.subject, "subject", "mdpub/stream", "subject (MQTT topic) to publish to")
	fs.IntVar(&cfg.count, "count", 100000, "messages to publish")
	fs.IntVar(&cfg.size, "size", 64, "content bytes per message")
	fs.IntVar(&cfg.rate, "rate", 0, "messages per second; 0 publishes as fast as the servers acknowledge")
	fs.DurationVar(&cfg.timeout, "timeout", 10*time.Second, "publish timeout of each message")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stderr)
			fs.PrintDefaults()
		}
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	switch {
	case cfg.count < 1:
		return cfg, fmt.Errorf("--count must be at least 1")
	case cfg.size < 0:
		return cfg, fmt.Errorf("--size must not be negative")
	case cfg.rate < 0:
		return cfg, fmt.Errorf("--rate must not be negative")
	case cfg.timeout <= 0:
		return cfg, fmt.Errorf("--timeout must be positive")
	}
	for _, s := range strings.Split(*servers, ",") {
		if s = strings.TrimSpace(s); s != "" {
			cfg.servers = append(cfg.servers, s)
		}
	}
	return cfg, nil
}

// run publishes the stream and prints the report. The exit code is 0 when every message
// was published, 1 when some were not, 2 when the setup failed.
func run(cfg config, out io.Writer) (int, error) {
	if len(cfg.servers) == 0 {
		srv, err := mdtest.NewServer(mdtest.WithAllowToken(embeddedToken))
		if err != nil {
			return 2, err
		}
		defer srv.Close()
		sub, err := srv.Subscribe(cfg.subject)
		if err != nil {
			return 2, err
		}
		defer sub.Close()
		go func() {
			for range sub.Messages() {
			}
		}()
		cfg.servers, cfg.token = []string{srv.WSAddr()}, embeddedToken
		fmt.Fprintf(out, "embedded broker at %s and %s, with a subscriber to %q\n", srv.WSAddr(), srv.TCPAddr(), cfg.subject)
	}

	c := mdclient.NewClient(mdclient.WithPublishTimeout(cfg.timeout))
	defer c.Close()
	c.SetEntitlementToken(cfg.token)
	if err := c.SetServers(cfg.servers); err != nil {
		return 2, err
	}

	content := make([]byte, cfg.size)
	for i := range content {
		content[i] = 'a' + byte(i%26)
	}
	// Closures index the send times; made before the clock starts.
	closures := make([]string, cfg.count)
	for i := range closures {
		closures[i] = strconv.Itoa(i)
	}
	sentAt := make([]time.Time, cfg.count)
	latencies := make([]time.Duration, 0, cfg.count)
	counts := map[mdclient.Status]int{}
	var firstErr = map[mdclient.Status]error{}

	results := make(chan mdclient.PublishResult, 1024)
	ctx := context.Background()
	start := time.Now()
	go func() {
		for i := range cfg.count {
			if cfg.rate > 0 {
				if wait := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(cfg.rate))); wait > time.Millisecond {
					time.Sleep(wait)
				}
			}
			sentAt[i] = time.Now()
			c.PublishAsync(ctx, mdclient.PublishRequest{
				Message: mdclient.Message{Subject: cfg.subject, Content: content, Closure: closures[i]},
				Result:  results,
			})
		}
	}()
	for range cfg.count {
		r := <-results
		i, _ := strconv.Atoi(r.Closure)
		latencies = append(latencies, time.Since(sentAt[i]))
		counts[r.Status]++
		if r.Err != nil && firstErr[r.Status] == nil {
			firstErr[r.Status] = r.Err
		}
	}
	elapsed := time.Since(start)

	fmt.Fprintf(out, "published %d messages of %d bytes to %s in %v\n", cfg.count, cfg.size, strings.Join(cfg.servers, ", "), elapsed.Round(time.Millisecond))
	for _, st := range []mdclient.Status{mdclient.NotifyPublishOK, mdclient.NotifyPublishNoSubscriber,
		mdclient.NotifyPublishDenied, mdclient.NotifyPublishFailed, mdclient.NotifyPublishTimeout} {
		if counts[st] == 0 {
			continue
		}
		fmt.Fprintf(out, "  %-30s %9d", st, counts[st])
		if err := firstErr[st]; err != nil {
			fmt.Fprintf(out, "   first error: %v", err)
		}
		fmt.Fprintln(out)
	}
	fmt.Fprintf(out, "throughput  %.0f messages/s\n", float64(cfg.count)/elapsed.Seconds())
	slices.Sort(latencies)
	pct := func(p float64) time.Duration { return latencies[min(len(latencies)-1, int(p*float64(len(latencies))))] }
	fmt.Fprintf(out, "latency     p50 %v  p90 %v  p99 %v  p99.9 %v  max %v\n",
		pct(0.50).Round(time.Microsecond), pct(0.90).Round(time.Microsecond), pct(0.99).Round(time.Microsecond),
		pct(0.999).Round(time.Microsecond), latencies[len(latencies)-1].Round(time.Microsecond))
	if counts[mdclient.NotifyPublishOK] != cfg.count {
		return 1, nil
	}
	return 0, nil
}
