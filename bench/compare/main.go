// Command compare measures mdclient side by side with a raw pipelined MQTT 5 writer (the
// ceiling), paho.golang and paho.mqtt.golang, all publishing QoS 1 to one mosquitto that
// it starts itself, over TCP and WebSocket. See docs/benchmarks.md.
//
//	go run -C bench/compare .                    # the comparison table
//	go run -C bench/compare . -compare=false -window-sweep   # window sweep, latency at equal load, charts
//	go run -C bench/compare . -sink              # every client's own cost, against a FAKE sink process
//	go run -C bench/compare . -pool              # 1 to N connections over N mosquitto nodes, and its chart
//	go run -C bench/compare . -growth            # CPU and latency against size, subjects, goroutines, window
//
// It lives in its own module so that the peers add nothing to mdclient's go.mod.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

var clientRunners = []struct {
	name string
	run  runner
}{
	{"raw", runRawPool},
	{"mdclient-async", runMdAsync},
	{"mdclient-sync", runMdSync},
	{"paho.golang", runPaho},
	{"paho.mqtt.golang", runPahoMQTT},
}

type config struct {
	n, size, runs, goroutines, window, maxInflight, tokens int
	clients, transports                                    []string
	compare, sweep, cancelCtx, nodelay                     bool
	windows                                                []int
	rate                                                   float64
	rateDur, timeout                                       time.Duration
	docs, jsonPath, cpuProfile, plotFrom                   string

	latEvery             int
	sink                 bool // -sink: every client against the FAKE sink
	sinkN, sinkPahoN     int
	growth, growthBroker bool // -growth: cost against size, subjects, goroutines, window
	growthN, growthMinN  int
	growthBytes          int64
	growthDims           []string
	sizes, subjects      []int
	goroutineCounts      []int
	growthWindows        []int
	pool                 bool // -pool: 1 to N connections over N mosquitto nodes
	poolConns            []int
	poolMaxInflight      []int
	poolSubjects         int
	poolClients          []string
	poolChart            string
}

func main() {
	var cfg config
	var clients, transports, windows string
	flag.IntVar(&cfg.n, "n", 200000, "messages per measurement")
	flag.IntVar(&cfg.size, "size", 64, "payload bytes")
	flag.IntVar(&cfg.runs, "runs", 3, "measurements per client and transport, interleaved; the median is reported")
	flag.IntVar(&cfg.goroutines, "goroutines", 256, "goroutines calling a blocking Publish (mdclient-sync, paho.golang)")
	flag.IntVar(&cfg.window, "window", 65535, "most messages in flight for raw and mdclient (WithMaxInflight); the broker's Receive Maximum caps it")
	flag.IntVar(&cfg.maxInflight, "max-inflight", 65535, "mosquitto's max_inflight_messages (its Receive Maximum) for the comparison and the latency runs")
	flag.BoolVar(&cfg.nodelay, "tcp-nodelay", false, "mosquitto's set_tcp_nodelay (its default, false, lets Nagle delay PUBACKs over TCP)")
	flag.IntVar(&cfg.tokens, "tokens", 1000, "paho.mqtt.golang: most outstanding publish tokens")
	flag.StringVar(&clients, "clients", "raw,mdclient-async,mdclient-sync,paho.golang,paho.mqtt.golang", "clients to measure, comma-separated")
	flag.StringVar(&transports, "transports", "tcp,ws", "transports, comma-separated: tcp, ws")
	flag.BoolVar(&cfg.compare, "compare", true, "measure every client at full speed and print the comparison table")
	flag.BoolVar(&cfg.sweep, "window-sweep", false, "measure raw and mdclient-async throughput per in-flight window (mosquitto restarted with that max_inflight_messages), every client's latency at -rate, and write the charts")
	flag.StringVar(&windows, "windows", "20,100,1000,10000,65535", "in-flight windows of -window-sweep; empty: only the latency runs")
	flag.Float64Var(&cfg.rate, "rate", 30000, "-window-sweep: messages/s every client is offered for the latency chart")
	flag.DurationVar(&cfg.rateDur, "rate-duration", 3*time.Second, "-window-sweep: how long each latency measurement publishes at -rate")
	flag.IntVar(&rawBatchBytes, "raw-batch", rawBatchBytes, "raw: most bytes written at once (one WebSocket message)")
	flag.IntVar(&rawWSMessage, "raw-ws-message", 0, "raw over WebSocket: most bytes of one WebSocket message, a write split over several (0: one message per write)")
	flag.BoolVar(&cfg.cancelCtx, "cancel-ctx", false, "pass mdclient and paho.golang publish calls a cancelable context (the measurement's) instead of context.Background()")
	flag.DurationVar(&cfg.timeout, "timeout", 2*time.Minute, "bound of one measurement")
	flag.StringVar(&cfg.docs, "docs", "../../docs", "where -window-sweep writes bench-throughput-window.png and bench-latency.png, and -pool its -pool-chart")
	flag.StringVar(&cfg.jsonPath, "json", "", "write every measurement to this JSON file")
	flag.StringVar(&cfg.plotFrom, "plot-from", "", "measure nothing: draw the charts (into -docs) from a file written by -json with -window-sweep or -pool")
	flag.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run (combine with -clients to profile one client)")

	flag.IntVar(&cfg.latEvery, "lat-every", 0, "take the latency of every n-th message only (mdclient, paho; raw takes all): fewer clock reads in the measured span; 0: 1 against mosquitto, 16 in -sink and -growth")
	serve := flag.Bool("serve-sink", false, "be the FAKE sink process of -sink and -growth (started by this program itself)")
	flag.BoolVar(&cfg.sink, "sink", false, "measure -clients over TCP against a FAKE sink (mdtest.NewSink) in its own process: each one's CPU per message and its ratio to raw's")
	flag.IntVar(&cfg.sinkN, "sink-n", 1000000, "-sink: messages per measurement")
	flag.IntVar(&cfg.sinkPahoN, "sink-paho-n", 100000, "-sink: messages per measurement of the paho clients")
	flag.BoolVar(&cfg.growth, "growth", false, "measure CPU per message and latency against payload size, subjects, Publish goroutines and in-flight window, against the FAKE sink")
	flag.BoolVar(&cfg.growthBroker, "growth-broker", false, "-growth against mosquitto instead of the FAKE sink")
	flag.IntVar(&cfg.growthN, "growth-n", 200000, "-growth: messages per measurement, at most")
	flag.IntVar(&cfg.growthMinN, "growth-min-n", 200, "-growth: messages per measurement, at least (large payloads)")
	flag.Int64Var(&cfg.growthBytes, "growth-bytes", 256<<20, "-growth: payload bytes per measurement, at most (unless -growth-min-n)")
	growthDims := flag.String("growth-dims", "size,subjects,goroutines,window", "-growth: dimensions to measure")
	sizes := flag.String("sizes", "16,256,4096,65536,1048576", "-growth: payload sizes")
	subjects := flag.String("subjects", "1,100,10000,100000", "-growth: distinct subjects")
	gcounts := flag.String("goroutine-counts", "1,16,256,1000,10000", "-growth: goroutines calling Publish")
	gwindows := flag.String("growth-windows", "16,256,4096,65535", "-growth: in-flight windows")
	flag.BoolVar(&cfg.pool, "pool", false, "measure 1 to N connections over N mosquitto nodes (WithConnections), for each -pool-max-inflight")
	poolConns := flag.String("pool-conns", "1,2,3,4", "-pool: connections; N, the number of nodes, is the largest")
	poolMI := flag.String("pool-max-inflight", "20,65535", "-pool: the nodes' max_inflight_messages (Receive Maximum), each a set of runs")
	flag.IntVar(&cfg.poolSubjects, "pool-subjects", 1000, "-pool: distinct subjects the messages are spread over")
	poolClients := flag.String("pool-clients", "raw,mdclient-async,mdclient-sync", "-pool: clients (raw: one writer per node)")
	flag.StringVar(&cfg.poolChart, "pool-chart", "bench-pool.svg", "-pool: the chart of msgs/s against connections, in -docs unless absolute; empty: none")
	flag.Parse()
	if *serve {
		if err := serveSink(); err != nil {
			fmt.Fprintln(os.Stderr, "compare -serve-sink:", err)
			os.Exit(1)
		}
		return
	}
	cfg.clients = splitList(clients)
	cfg.transports = splitList(transports)
	cfg.growthDims = splitList(*growthDims)
	cfg.poolClients = splitList(*poolClients)
	parse := func(name, list string, lo, hi int) []int {
		var out []int
		for _, f := range splitList(list) {
			v, e := strconv.Atoi(f)
			if e != nil || v < lo || v > hi {
				fmt.Fprintf(os.Stderr, "bad %s %q: want %d..%d\n", name, f, lo, hi)
				os.Exit(2)
			}
			out = append(out, v)
		}
		return out
	}
	cfg.windows = parse("window", windows, 1, 65535)
	cfg.sizes = parse("size", *sizes, 0, 256<<20)
	cfg.subjects = parse("subject count", *subjects, 1, 10_000_000)
	cfg.goroutineCounts = parse("goroutine count", *gcounts, 1, 1_000_000)
	cfg.growthWindows = parse("window", *gwindows, 1, 65535)
	cfg.poolConns = parse("connection count", *poolConns, 1, 64)
	cfg.poolMaxInflight = parse("max_inflight_messages", *poolMI, 1, 65535)
	// A mode asked for alone replaces the default comparison.
	compareSet := false
	flag.Visit(func(f *flag.Flag) { compareSet = compareSet || f.Name == "compare" })
	if !compareSet && (cfg.sink || cfg.growth || cfg.pool) {
		cfg.compare = false
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func run(cfg config) error {
	for _, c := range append(slices.Clone(cfg.clients), cfg.poolClients...) {
		if findRunner(c) == nil {
			return fmt.Errorf("unknown client %q", c)
		}
	}
	for _, t := range cfg.transports {
		if t != "tcp" && t != "ws" {
			return fmt.Errorf("unknown transport %q", t)
		}
	}
	if cfg.n < 1 || cfg.size < 0 || cfg.runs < 1 || cfg.goroutines < 1 || cfg.tokens < 1 || cfg.window < 1 {
		return errors.New("-n, -runs, -goroutines, -tokens and -window must be positive, -size not negative")
	}
	if cfg.pool && len(cfg.poolConns) == 0 {
		return errors.New("-pool-conns is empty")
	}
	if cfg.sweep || cfg.plotFrom != "" || (cfg.pool && cfg.poolChart != "" && !filepath.IsAbs(cfg.poolChart)) {
		if fi, err := os.Stat(cfg.docs); err != nil || !fi.IsDir() {
			return fmt.Errorf("-docs %s is not a directory (run from bench/compare, or set -docs)", cfg.docs)
		}
	}
	if cfg.plotFrom != "" {
		return plotFrom(cfg)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	mv := mosquittoVersion()
	fmt.Printf("# %s %s/%s, %d CPUs; %s; payload %d B, QoS 1, %d runs (median)\n",
		runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), mv, cfg.size, cfg.runs)
	var all []sample
	if cfg.compare {
		s, err := compare(ctx, cfg)
		all = append(all, s...)
		if err != nil {
			return err
		}
	}
	if cfg.sink {
		s, err := sinkCompare(ctx, cfg)
		all = append(all, s...)
		if err != nil {
			return err
		}
	}
	if cfg.pool {
		s, err := pool(ctx, cfg)
		all = append(all, s...)
		if err != nil {
			return err
		}
	}
	if cfg.growth {
		s, err := growth(ctx, cfg)
		all = append(all, s...)
		if err != nil {
			return err
		}
	}
	if cfg.sweep {
		s, err := sweep(ctx, cfg)
		all = append(all, s...)
		if err != nil {
			return err
		}
		l, err := latencyAtRate(ctx, cfg)
		all = append(all, l...)
		if err != nil {
			return err
		}
		if err := charts(cfg.docs, s, l, cfg.rate); err != nil {
			return err
		}
	}
	if cfg.jsonPath != "" {
		flags := map[string]string{}
		flag.VisitAll(func(f *flag.Flag) { flags[f.Name] = f.Value.String() })
		data, err := json.MarshalIndent(results{runtime.Version(), runtime.NumCPU(), mv, flags, all}, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(cfg.jsonPath, append(data, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// results is what -json writes.
type results struct {
	Go        string            `json:"go"`
	CPUs      int               `json:"cpus"`
	Mosquitto string            `json:"mosquitto"`
	Flags     map[string]string `json:"flags"`
	Samples   []sample          `json:"samples"`
}

// charts writes the throughput chart (when there are sweep samples) and the latency chart
// (when there are latency samples) into dir.
func charts(dir string, sweep, latency []sample, rate float64) error {
	if len(sweep) > 0 {
		path := filepath.Join(dir, "bench-throughput-window.png")
		if err := throughputChart(path, sweep); err != nil {
			return err
		}
		fmt.Printf("\nwrote %s\n", path)
	}
	if len(latency) > 0 {
		path := filepath.Join(dir, "bench-latency.png")
		if err := latencyChart(path, latency, rate); err != nil {
			return err
		}
		fmt.Printf("wrote %s\n", path)
	}
	return nil
}

// plotFrom draws the charts from a -json file.
func plotFrom(cfg config) error {
	data, err := os.ReadFile(cfg.plotFrom)
	if err != nil {
		return err
	}
	var r results
	if err := json.Unmarshal(data, &r); err != nil {
		return fmt.Errorf("%s: %w", cfg.plotFrom, err)
	}
	var sweep, latency, pooled []sample
	rate := 0.0
	for _, s := range r.Samples {
		switch s.Phase {
		case "sweep":
			sweep = append(sweep, s)
		case "latency":
			latency = append(latency, s)
			rate = s.Rate
		case "pool":
			pooled = append(pooled, s)
		}
	}
	if len(sweep)+len(latency)+len(pooled) == 0 {
		return fmt.Errorf("%s has no -window-sweep or -pool measurements", cfg.plotFrom)
	}
	if len(pooled) > 0 && cfg.poolChart != "" {
		path := cfg.poolChart
		if !filepath.IsAbs(path) {
			path = filepath.Join(cfg.docs, path)
		}
		if err := poolChart(path, pooled); err != nil {
			return err
		}
		fmt.Printf("wrote %s\n", path)
	}
	return charts(cfg.docs, sweep, latency, rate)
}

func findRunner(name string) runner {
	for _, c := range clientRunners {
		if c.name == name {
			return c.run
		}
	}
	return nil
}

// target is what a measurement publishes to: its servers' addresses and the processes
// whose CPU time counts as the server's.
type target struct {
	name     string   // "mosquitto" or "FAKE sink"
	tcpAddrs []string // host:port of each server's TCP listener
	wsURL    string   // the first server's WebSocket listener; "" for none
	pids     []int
}

// cpu is the CPU time the target's processes have used (10 ms ticks).
func (t target) cpu() time.Duration {
	var d time.Duration
	for _, pid := range t.pids {
		d += procCPU(pid)
	}
	return d
}

func (b *broker) target() target {
	return target{name: "mosquitto", tcpAddrs: []string{b.tcpAddr()}, wsURL: b.wsURL(), pids: []int{b.pid()}}
}

// spec is a measurement with the flags' payload size, goroutines and tokens.
func (cfg config) spec(transport string, n, window int) spec {
	return spec{transport: transport, n: n, window: window, size: cfg.size, goroutines: cfg.goroutines, tokens: cfg.tokens, latEvery: cfg.latEvery}
}

// measure runs one client once and logs the result to stderr.
func measure(ctx context.Context, cfg config, tg target, phase, client string, s spec, run int) (sample, error) {
	s.tcpAddr, s.tcpAddrs, s.wsURL = tg.tcpAddrs[0], tg.tcpAddrs, tg.wsURL
	if s.topic == "" {
		s.topic = "bench/compare"
	}
	if len(s.topics) > 0 {
		s.topic = s.topics[0]
	}
	runtime.GC() // leave no garbage of the previous measurement to this one
	mctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	s.pubCtx = context.Background()
	if cfg.cancelCtx {
		s.pubCtx = mctx
	}
	bcpu0 := tg.cpu()
	o, err := findRunner(client)(mctx, s)
	if err != nil {
		return sample{}, fmt.Errorf("%s over %s (run %d): %w", client, s.transport, run, err)
	}
	sm := newSample(client, s, run, o, tg.cpu()-bcpu0)
	sm.Phase, sm.Server = phase, tg.name
	fmt.Fprintf(os.Stderr, "  run %d %-4s %-17s n %-7d size %-7d window %-5d conns %d subjects %-6d g %-5d %9s msgs/s  p50 %7s  p99 %7s  cpu/msg %5.2fµs + %s %4.1fµs  failed %d  %s\n",
		run, s.transport, client, s.n, s.size, s.window, sm.Conns, sm.Subjects, s.goroutines, fmtRate(sm.MsgsPerSec), fmtLat(sm.P50us), fmtLat(sm.P99us),
		sm.ClientCPU, tg.name, sm.BrokerCPU, sm.Failed, sm.Detail)
	if sm.Failed > 0 {
		fmt.Fprintf(os.Stderr, "  warning: %d messages of %s over %s were not acknowledged\n", sm.Failed, client, s.transport)
	}
	return sm, nil
}

// compare measures every client at full speed, runs interleaved, and prints the table.
func compare(ctx context.Context, cfg config) ([]sample, error) {
	b, err := startBroker(cfg.maxInflight, cfg.nodelay)
	if err != nil {
		return nil, err
	}
	defer b.close()
	fmt.Fprintf(os.Stderr, "comparison: mosquitto max_inflight_messages %d, tcp %s, ws %s\n", cfg.maxInflight, b.tcpAddr(), b.wsURL())
	var samples []sample
	for run := 1; run <= cfg.runs; run++ {
		for _, tr := range cfg.transports {
			for _, c := range cfg.clients {
				sm, err := measure(ctx, cfg, b.target(), "compare", c, cfg.spec(tr, cfg.n, cfg.window), run)
				if err != nil {
					return samples, err
				}
				samples = append(samples, sm)
			}
		}
	}
	fmt.Printf("\n## Full speed: %d messages per run, mosquitto max_inflight_messages %d, raw/mdclient window %d, %d goroutines for Publish, %d paho.mqtt.golang tokens\n\n",
		cfg.n, cfg.maxInflight, cfg.window, cfg.goroutines, cfg.tokens)
	printTable(samples, cfg, true)
	return samples, nil
}

// printTable prints one line per client and transport: medians over the runs, and the
// median over runs of msgs/s divided by raw's msgs/s in the same run and transport.
func printTable(samples []sample, cfg config, withRatio bool) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	anySaturated := false
	fmt.Fprintln(tw, "client\ttransport\tmsgs/s\tspread\tratio-to-raw\tratio range\tp50\tp99\tp999\tcpu/msg\tbroker cpu/msg\tfailed\t")
	for _, tr := range cfg.transports {
		for _, c := range cfg.clients {
			var rates, ratios, p50, p99, p999, ccpu, bcpu []float64
			var mine []sample
			failed := 0
			for _, s := range samples {
				if s.Client != c || s.Transport != tr {
					continue
				}
				mine = append(mine, s)
				rates = append(rates, s.MsgsPerSec)
				p50, p99, p999 = append(p50, s.P50us), append(p99, s.P99us), append(p999, s.P999us)
				ccpu, bcpu = append(ccpu, s.ClientCPU), append(bcpu, s.BrokerCPU)
				failed += s.Failed
				for _, r := range samples {
					if r.Client == "raw" && r.Transport == tr && r.Run == s.Run && r.Window == s.Window && r.Rate == s.Rate {
						ratios = append(ratios, s.MsgsPerSec/r.MsgsPerSec)
					}
				}
			}
			if len(rates) == 0 {
				continue
			}
			m := median(rates)
			spread := (maxOf(rates) - minOf(rates)) / m
			mark := ""
			if saturated(mine) {
				mark, anySaturated = "*", true
			}
			ratio, span := "-", "-"
			if withRatio && len(ratios) > 0 {
				ratio = fmt.Sprintf("%.2f", median(ratios))
				span = fmt.Sprintf("%.2f–%.2f", minOf(ratios), maxOf(ratios))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t±%.0f%%\t%s\t%s\t%s\t%s\t%s\t%.1fµs\t%.1fµs\t%d\t\n", c, tr, fmtRate(m)+mark, spread*50, ratio, span,
				fmtLat(median(p50)), fmtLat(median(p99)), fmtLat(median(p999)), median(ccpu), median(bcpu), failed)
		}
	}
	tw.Flush()
	if anySaturated {
		fmt.Printf("\n* fell short of the offered %.0f msgs/s (saturated): its latency includes queueing\n", samples[0].Rate)
	}
}

func minOf(xs []float64) float64 {
	m := xs[0]
	for _, x := range xs {
		m = min(m, x)
	}
	return m
}

func maxOf(xs []float64) float64 {
	m := xs[0]
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// sweep measures raw and mdclient-async for each in-flight window, with mosquitto
// restarted with max_inflight_messages = window (its Receive Maximum).
func sweep(ctx context.Context, cfg config) ([]sample, error) {
	var samples []sample
	if len(cfg.windows) == 0 {
		return nil, nil
	}
	clients := []string{"raw", "mdclient-async"}
	for _, w := range cfg.windows {
		b, err := startBroker(w, cfg.nodelay)
		if err != nil {
			return samples, err
		}
		fmt.Fprintf(os.Stderr, "window sweep: mosquitto max_inflight_messages %d\n", w)
		for run := 1; run <= cfg.runs; run++ {
			for _, tr := range cfg.transports {
				for _, c := range clients {
					sm, err := measure(ctx, cfg, b.target(), "sweep", c, cfg.spec(tr, cfg.n, w), run)
					if err != nil {
						b.close()
						return samples, err
					}
					samples = append(samples, sm)
				}
			}
		}
		b.close()
	}
	fmt.Printf("\n## Throughput per in-flight window (mosquitto max_inflight_messages = window), %d messages per run\n\n", cfg.n)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "window\ttransport\traw msgs/s\tmdclient msgs/s\tratio-to-raw\tmdclient p50\tmdclient p99\t")
	for _, w := range cfg.windows {
		for _, tr := range cfg.transports {
			var raw, md, ratios, p50, p99 []float64
			for _, s := range samples {
				if s.Window != w || s.Transport != tr {
					continue
				}
				if s.Client == "raw" {
					raw = append(raw, s.MsgsPerSec)
					continue
				}
				md = append(md, s.MsgsPerSec)
				p50, p99 = append(p50, s.P50us), append(p99, s.P99us)
				for _, r := range samples {
					if r.Client == "raw" && r.Window == w && r.Transport == tr && r.Run == s.Run {
						ratios = append(ratios, s.MsgsPerSec/r.MsgsPerSec)
					}
				}
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%.2f\t%s\t%s\t\n", w, tr, fmtRate(median(raw)), fmtRate(median(md)), median(ratios),
				fmtLat(median(p50)), fmtLat(median(p99)))
		}
	}
	tw.Flush()
	return samples, nil
}

// latencyAtRate offers every client the same load (-rate msgs/s for -rate-duration) and
// prints their latency percentiles.
func latencyAtRate(ctx context.Context, cfg config) ([]sample, error) {
	b, err := startBroker(cfg.maxInflight, cfg.nodelay)
	if err != nil {
		return nil, err
	}
	defer b.close()
	n := max(1, int(cfg.rate*cfg.rateDur.Seconds()))
	fmt.Fprintf(os.Stderr, "latency at %.0f msgs/s: %d messages per run, mosquitto max_inflight_messages %d\n", cfg.rate, n, cfg.maxInflight)
	var samples []sample
	for run := 1; run <= cfg.runs; run++ {
		for _, tr := range cfg.transports {
			for _, c := range cfg.clients {
				sp := cfg.spec(tr, n, cfg.window)
				sp.rate = cfg.rate
				sm, err := measure(ctx, cfg, b.target(), "latency", c, sp, run)
				if err != nil {
					return samples, err
				}
				samples = append(samples, sm)
			}
		}
	}
	fmt.Printf("\n## Latency at equal offered load: %.0f msgs/s for %v (%d messages per run), publish call → PUBACK\n\n", cfg.rate, cfg.rateDur, n)
	printTable(samples, cfg, false)
	return samples, nil
}
