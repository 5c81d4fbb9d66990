package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// ---- -sink: every client's own cost against the FAKE sink ----

// sinkLatEvery is -lat-every's default in the CPU modes: against the FAKE sink two clock
// reads per message would be a tenth of mdclient's CPU per message.
const sinkLatEvery = 16

// pahoClient reports whether c is one of the slow peers, which get -sink-paho-n messages.
func pahoClient(c string) bool { return strings.HasPrefix(c, "paho") }

// sinkCompare measures every client over TCP against a FAKE sink in its own process,
// runs interleaved, and prints each client's CPU per message and its ratio to raw's.
func sinkCompare(ctx context.Context, cfg config) ([]sample, error) {
	if cfg.latEvery == 0 {
		cfg.latEvery = sinkLatEvery
	}
	sk, err := startSink()
	if err != nil {
		return nil, err
	}
	defer sk.close()
	fmt.Fprintf(os.Stderr, "sink mode: FAKE sink (mdtest.NewSink) in process %d at %s\n", sk.proc.Pid(), sk.addr)
	var samples []sample
	for run := 1; run <= cfg.runs; run++ {
		for _, c := range cfg.clients {
			n := cfg.sinkN
			if pahoClient(c) {
				n = cfg.sinkPahoN
			}
			sm, err := measure(ctx, cfg, sk.target(), "sink", c, cfg.spec("tcp", n, cfg.window), run)
			if err != nil {
				return samples, err
			}
			samples = append(samples, sm)
		}
	}
	fmt.Printf("\n## The client's own cost: FAKE sink (mdtest.NewSink, its own process, acknowledges every PUBLISH at once, routes nothing), TCP, payload %d B, QoS 1, %d runs\n\n",
		cfg.size, cfg.runs)
	fmt.Printf("%d messages per run (paho clients %d), raw/mdclient window %d, %d goroutines for Publish, %d paho.mqtt.golang tokens; cpu/msg: this process, first publish to last acknowledgement; latency of every %d-th message\n\n",
		cfg.sinkN, cfg.sinkPahoN, cfg.window, cfg.goroutines, cfg.tokens, cfg.latEvery)
	cpuTable(samples, cfg.clients, nil, "")
	return samples, nil
}

// ---- tables of CPU per message ----

// point is one setting of a growth dimension (or, with an empty label, the only one).
type point struct {
	dim, label string
	apply      func(*spec)
	clients    []string
}

func (p point) matches(s sample) bool { return p.dim == s.Dimension && p.label == s.Point }

// cpuTable prints one line per point and client: medians over the runs of msgs/s, CPU
// per message and latency, and the median over the runs of the client's CPU per
// message divided by raw's at the same point in the same run.
func cpuTable(samples []sample, clients []string, points []point, header string) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	if len(points) == 0 {
		points = []point{{}}
	}
	cols := "client\tn\tmsgs/s\tspread\tcpu/msg\tcpu ×raw\t×raw range\tp50\tp99\tbytes/msg\tserver cpu/msg\tfailed\t"
	if header != "" {
		cols = header + "\t" + cols
	}
	fmt.Fprintln(tw, cols)
	for _, p := range points {
		cs := clients
		if len(p.clients) > 0 {
			cs = p.clients
		}
		for _, c := range cs {
			var rates, cpus, ratios, p50, p99, bpm, scpu []float64
			n, failed := 0, 0
			for _, s := range samples {
				if s.Client != c || !p.matches(s) {
					continue
				}
				n = s.N
				rates, cpus = append(rates, s.MsgsPerSec), append(cpus, s.ClientCPU)
				p50, p99 = append(p50, s.P50us), append(p99, s.P99us)
				bpm, scpu = append(bpm, s.BytesPerMsg), append(scpu, s.BrokerCPU)
				failed += s.Failed
				for _, r := range samples {
					if r.Client == "raw" && r.Run == s.Run && p.matches(r) && r.ClientCPU > 0 {
						ratios = append(ratios, s.ClientCPU/r.ClientCPU)
					}
				}
			}
			if len(rates) == 0 {
				continue
			}
			m := median(rates)
			ratio, span := "-", "-"
			if len(ratios) > 0 {
				ratio = fmt.Sprintf("%.1f×", median(ratios))
				span = fmt.Sprintf("%.1f–%.1f", minOf(ratios), maxOf(ratios))
			}
			bytes := "-"
			if b := median(bpm); b > 0 {
				bytes = fmt.Sprintf("%.0f", b)
			}
			line := fmt.Sprintf("%s\t%d\t%s\t±%.0f%%\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t", c, n, fmtRate(m), (maxOf(rates)-minOf(rates))/m*50,
				fmtCPU(median(cpus)), ratio, span, fmtLat(median(p50)), fmtLat(median(p99)), bytes, fmtCPU(median(scpu)), failed)
			if header != "" {
				line = p.label + "\t" + line
			}
			fmt.Fprintln(tw, line)
		}
	}
	tw.Flush()
}

// fmtCPU prints microseconds per message with two decimals below 10.
func fmtCPU(us float64) string {
	if us < 10 {
		return fmt.Sprintf("%.2fµs", us)
	}
	return fmt.Sprintf("%.1fµs", us)
}

// ---- -growth: how cost grows ----

// growthPoints are the settings of the dimensions in cfg.growthDims.
func growthPoints(cfg config) ([]point, error) {
	three := []string{"raw", "mdclient-async", "mdclient-sync"}
	var pts []point
	maxSubjects := slices.Max(append([]int{1}, cfg.subjects...))
	topics := make([]string, maxSubjects)
	for i := range topics {
		topics[i] = "bench/compare/subject/" + strconv.Itoa(i)
	}
	for _, d := range cfg.growthDims {
		switch d {
		case "size":
			for _, size := range cfg.sizes {
				n := min(cfg.growthN, max(cfg.growthMinN, int(cfg.growthBytes/int64(max(size, 1)))))
				pts = append(pts, point{dim: d, label: fmtBytes(size), clients: three, apply: func(s *spec) { s.size, s.n = size, n }})
			}
		case "subjects":
			for _, k := range cfg.subjects {
				// One subject too is one of these, so that every point's topics are as long.
				pts = append(pts, point{dim: d, label: strconv.Itoa(k), clients: three, apply: func(s *spec) { s.topics = topics[:k] }})
			}
		case "goroutines":
			for _, g := range cfg.goroutineCounts {
				// One goroutine waits a round trip per message: fewer messages.
				n := min(cfg.growthN, 20000*g)
				pts = append(pts, point{dim: d, label: strconv.Itoa(g), clients: []string{"raw", "mdclient-sync"}, apply: func(s *spec) { s.goroutines, s.n = g, n }})
			}
		case "window":
			for _, w := range cfg.growthWindows {
				pts = append(pts, point{dim: d, label: strconv.Itoa(w), clients: three, apply: func(s *spec) { s.window = w }})
			}
		default:
			return nil, fmt.Errorf("unknown growth dimension %q (size, subjects, goroutines, window)", d)
		}
	}
	return pts, nil
}

// fmtBytes prints a size as e.g. "16 B", "4 KiB", "1 MiB".
func fmtBytes(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// growth measures CPU per message and latency against each growth dimension, against the
// FAKE sink (or, with -growth-broker, mosquitto), every point of every dimension once per
// round, rounds interleaved.
func growth(ctx context.Context, cfg config) ([]sample, error) {
	if cfg.latEvery == 0 {
		cfg.latEvery = sinkLatEvery
	}
	pts, err := growthPoints(cfg)
	if err != nil {
		return nil, err
	}
	var tg target
	if cfg.growthBroker {
		b, err := startBroker(cfg.maxInflight, cfg.nodelay)
		if err != nil {
			return nil, err
		}
		defer b.close()
		tg = b.target()
	} else {
		sk, err := startSink()
		if err != nil {
			return nil, err
		}
		defer sk.close()
		tg = sk.target()
	}
	fmt.Fprintf(os.Stderr, "growth: %s at %s\n", tg.name, tg.tcpAddrs[0])
	var samples []sample
	for run := 1; run <= cfg.runs; run++ {
		for _, p := range pts {
			for _, c := range p.clients {
				s := cfg.spec("tcp", cfg.growthN, cfg.window)
				p.apply(&s)
				sm, err := measure(ctx, cfg, tg, "growth", c, s, run)
				if err != nil {
					return samples, err
				}
				sm.Dimension, sm.Point = p.dim, p.label
				samples = append(samples, sm)
			}
		}
	}
	titles := map[string]string{
		"size":       fmt.Sprintf("payload size (messages per run: at most %d and %d MiB, at least %d)", cfg.growthN, cfg.growthBytes>>20, cfg.growthMinN),
		"subjects":   fmt.Sprintf("distinct subjects, message i to subject i mod k (payload %d B)", cfg.size),
		"goroutines": fmt.Sprintf("goroutines calling Publish (payload %d B; 1 goroutine: 20 000 messages per run)", cfg.size),
		"window":     fmt.Sprintf("in-flight window, WithMaxInflight and raw's (payload %d B)", cfg.size),
	}
	for _, d := range cfg.growthDims {
		var dp []point
		for _, p := range pts {
			if p.dim == d {
				dp = append(dp, p)
			}
		}
		fmt.Printf("\n## How cost grows with the %s — %s, TCP, %d runs, medians\n\n", titles[d], tg.name, cfg.runs)
		cpuTable(samples, nil, dp, d)
	}
	return samples, nil
}

// ---- -pool: 1 to N connections over N mosquitto nodes ----

// pool measures, for each max_inflight_messages of -pool-max-inflight, N independent
// mosquitto nodes (N the largest of -pool-conns) and every client with each number of
// connections; mdclient gets every node in its server list and WithConnections(n), and
// spreads its messages over -pool-subjects subjects, so that they hash over the
// connections; raw runs n writers at once, one per node.
func pool(ctx context.Context, cfg config) ([]sample, error) {
	nodes := slices.Max(cfg.poolConns)
	topics := make([]string, max(1, cfg.poolSubjects))
	for i := range topics {
		topics[i] = "bench/pool/" + strconv.Itoa(i)
	}
	var samples []sample
	for _, mi := range cfg.poolMaxInflight {
		var brokers []*broker
		closeAll := func() {
			for _, b := range brokers {
				b.close()
			}
		}
		tg := target{name: "mosquitto"}
		for range nodes {
			b, err := startBroker(mi, cfg.nodelay)
			if err != nil {
				closeAll()
				return samples, err
			}
			brokers = append(brokers, b)
			tg.tcpAddrs = append(tg.tcpAddrs, b.tcpAddr())
			tg.pids = append(tg.pids, b.pid())
		}
		fmt.Fprintf(os.Stderr, "pool: %d mosquitto nodes, max_inflight_messages %d: %s\n", nodes, mi, strings.Join(tg.tcpAddrs, " "))
		for run := 1; run <= cfg.runs; run++ {
			for _, k := range cfg.poolConns {
				for _, c := range cfg.poolClients {
					s := cfg.spec("tcp", cfg.n, cfg.window)
					s.conns, s.topics = k, topics
					sm, err := measure(ctx, cfg, tg, "pool", c, s, run)
					if err != nil {
						closeAll()
						return samples, err
					}
					sm.MaxInflight = mi
					samples = append(samples, sm)
				}
			}
		}
		closeAll()
	}
	fmt.Printf("\n## A pool of connections: %d mosquitto nodes, %d messages per run over %d subjects, payload %d B, TCP, %d runs, medians\n\n",
		nodes, cfg.n, len(topics), cfg.size, cfg.runs)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := "max_inflight\tclient"
	for _, k := range cfg.poolConns {
		head += fmt.Sprintf("\t%d conn", k)
	}
	for _, k := range cfg.poolConns[1:] {
		head += fmt.Sprintf("\t%d/%d", k, cfg.poolConns[0])
	}
	fmt.Fprintln(tw, head+"\tcpu/msg by conns\t")
	for _, mi := range cfg.poolMaxInflight {
		for _, c := range cfg.poolClients {
			line := fmt.Sprintf("%d\t%s", mi, c)
			var meds, cpus []float64
			for _, k := range cfg.poolConns {
				var rates, cpu []float64
				for _, s := range samples {
					if s.MaxInflight == mi && s.Client == c && s.Conns == k {
						rates, cpu = append(rates, s.MsgsPerSec), append(cpu, s.ClientCPU)
					}
				}
				meds, cpus = append(meds, median(rates)), append(cpus, median(cpu))
				line += "\t" + fmtRate(median(rates))
			}
			// Speed-up: the median over runs of n connections' msgs/s over the first
			// setting's in the same run.
			for _, k := range cfg.poolConns[1:] {
				var ups []float64
				for _, s := range samples {
					if s.MaxInflight != mi || s.Client != c || s.Conns != k {
						continue
					}
					for _, r := range samples {
						if r.MaxInflight == mi && r.Client == c && r.Conns == cfg.poolConns[0] && r.Run == s.Run {
							ups = append(ups, s.MsgsPerSec/r.MsgsPerSec)
						}
					}
				}
				line += fmt.Sprintf("\t%.2f×", median(ups))
			}
			var cs []string
			for _, x := range cpus {
				cs = append(cs, fmt.Sprintf("%.1f", x))
			}
			fmt.Fprintln(tw, line+"\t"+strings.Join(cs, " / ")+"µs\t")
		}
	}
	tw.Flush()
	if cfg.poolChart != "" {
		path := cfg.poolChart
		if !filepath.IsAbs(path) {
			path = filepath.Join(cfg.docs, path)
		}
		if err := poolChart(path, samples); err != nil {
			return samples, err
		}
		fmt.Printf("\nwrote %s\n", path)
	}
	return samples, nil
}
