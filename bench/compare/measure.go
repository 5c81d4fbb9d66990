package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// epoch is the origin of nanos: one monotonic clock for every goroutine.
var epoch = time.Now()

// nanos returns monotonic nanoseconds since epoch.
func nanos() int64 { return int64(time.Since(epoch)) }

// spec is one measurement: a client, a transport, how many messages and how fast.
type spec struct {
	transport  string  // "tcp" or "ws"
	tcpAddr    string  // 127.0.0.1:port of the TCP listener
	wsURL      string  // ws://127.0.0.1:port/mqtt
	n          int     // messages
	size       int     // payload bytes
	window     int     // raw and mdclient: most messages in flight
	goroutines int     // callers of a blocking Publish
	tokens     int     // paho.mqtt.golang: most outstanding tokens
	rate       float64 // messages/s offered; 0 means as fast as the client goes
	topic      string
	topics     []string        // when set, message i goes to topics[i%len(topics)] (mdclient and raw); topic is topics[0]
	tcpAddrs   []string        // every server's TCP listener: mdclient lists them all (the pool mode)
	conns      int             // mdclient: WithConnections; raw: parallel connections, one per server
	connected  func()          // raw in a pool: called once connected, before waiting for gate
	gate       chan struct{}   // raw in a pool: closed when every connection may start
	latEvery   int             // the latency of every latEvery-th message is taken (mdclient, paho): fewer clock reads
	pubCtx     context.Context // what the clients' publish calls get: context.Background() unless -cancel-ctx
}

// topicOf is the topic of message i.
func (s *spec) topicOf(i int) string {
	if len(s.topics) > 1 {
		return s.topics[i%len(s.topics)]
	}
	return s.topic
}

// outcome is what a client run returns: per-message latencies (publish call → ack, in
// nanoseconds, any order), the failures, and the time from the first publish to the last
// acknowledgement.
type outcome struct {
	lat     []int64
	failed  int
	elapsed time.Duration
	cpu     time.Duration // this process's CPU time (user+system) from the first publish to the last acknowledgement
	bytes   uint64        // bytes the client wrote while publishing, when it can tell (mdclient's Stats.BytesWritten)
	start   int64         // raw: nanos() at the first publish and at the last acknowledgement
	end     int64
	detail  string // e.g. the window the broker granted
}

// runner runs one measurement; it connects before the clock starts and disconnects after.
type runner func(ctx context.Context, s spec) (outcome, error)

// pacer releases messages [0,n) at s.rate: release(lo, hi) is called with the messages
// due so far. Go's timers sleep about a millisecond here, so messages go out in bursts of
// about rate/1000; every client is offered the same bursts.
func pacer(ctx context.Context, n int, rate float64, release func(lo, hi int)) {
	start := nanos()
	sent := 0
	for sent < n && ctx.Err() == nil {
		due := min(n, int(float64(nanos()-start)*rate/1e9)+1)
		if due > sent {
			release(sent, due)
			sent = due
			continue
		}
		next := start + int64(float64(sent)*1e9/rate)
		time.Sleep(time.Duration(next - nanos()))
	}
}

// syncWorkers runs s.goroutines goroutines that each call publish (which blocks until
// the acknowledgement) until n messages are done. Free-running, each worker takes the
// next message; paced, a pacer hands out messages and latency counts from the release,
// so time spent waiting for a free worker is counted too.
func syncWorkers(ctx context.Context, s spec, publish func(i int) error) outcome {
	every := max(1, s.latEvery)
	lat := make([]int64, s.n)
	var failed atomic.Int64
	var wg sync.WaitGroup
	cpu0 := selfCPU()
	start := nanos()
	if s.rate <= 0 {
		var next atomic.Int64
		for range s.goroutines {
			wg.Go(func() {
				for {
					i := int(next.Add(1) - 1)
					if i >= s.n {
						return
					}
					if i%every != 0 {
						if err := publish(i); err != nil {
							failed.Add(1)
						}
						continue
					}
					t := nanos()
					if err := publish(i); err != nil {
						failed.Add(1)
					}
					lat[i] = nanos() - t
				}
			})
		}
	} else {
		type job struct {
			i int
			t int64
		}
		jobs := make(chan job, s.n)
		for range s.goroutines {
			wg.Go(func() {
				for j := range jobs {
					if err := publish(j.i); err != nil {
						failed.Add(1)
					}
					lat[j.i] = nanos() - j.t
				}
			})
		}
		pacer(ctx, s.n, s.rate, func(lo, hi int) {
			t := nanos()
			for i := lo; i < hi; i++ {
				jobs <- job{i, t}
			}
		})
		close(jobs)
	}
	wg.Wait()
	end := nanos()
	cpu := selfCPU() - cpu0
	if every > 1 && s.rate <= 0 {
		kept := lat[:0]
		for i := 0; i < len(lat); i += every {
			kept = append(kept, lat[i])
		}
		lat = kept
	}
	return outcome{lat: lat, failed: int(failed.Load()), elapsed: time.Duration(end - start), cpu: cpu}
}

// sample is one measurement's result; -json writes them all.
type sample struct {
	Phase       string  `json:"phase"`  // "compare", "sweep", "latency", "sink", "pool" or "growth"
	Server      string  `json:"server"` // "mosquitto" or "FAKE sink"
	Client      string  `json:"client"`
	Transport   string  `json:"transport"`
	Run         int     `json:"run"`
	Window      int     `json:"window"`                // in-flight window asked for (raw, mdclient); in the sweep also the broker's max_inflight_messages
	MaxInflight int     `json:"max_inflight,omitzero"` // the broker's max_inflight_messages (pool mode)
	Rate        float64 `json:"offered_rate"`          // 0: as fast as possible
	N           int     `json:"messages"`              // published
	Size        int     `json:"size"`                  // payload bytes
	Subjects    int     `json:"subjects"`              // distinct topics
	Goroutines  int     `json:"goroutines"`            // callers of a blocking Publish
	Conns       int     `json:"connections"`           // connections of the client
	Dimension   string  `json:"dimension,omitzero"`    // growth mode: what varies ("size", "subjects", "goroutines", "window")
	Point       string  `json:"point,omitzero"`        // growth mode: its setting, as printed
	Failed      int     `json:"failed"`                // not acknowledged with a reason code below 0x80
	Seconds     float64 `json:"seconds"`               // first publish to last acknowledgement
	MsgsPerSec  float64 `json:"msgs_per_sec"`          // N / Seconds
	P50us       float64 `json:"p50_us"`                // publish call → acknowledgement
	P99us       float64 `json:"p99_us"`                //
	P999us      float64 `json:"p999_us"`               //
	ClientCPU   float64 `json:"client_cpu_us_per_msg"` // this process's CPU time (user+system) per message, first publish to last acknowledgement
	BrokerCPU   float64 `json:"broker_cpu_us_per_msg"` // the server processes' CPU time per message, the whole measurement (connecting included)
	BytesPerMsg float64 `json:"bytes_per_msg,omitzero"`
	Detail      string  `json:"detail,omitzero"` //
}

func newSample(client string, s spec, run int, o outcome, brokerCPU time.Duration) sample {
	slices.Sort(o.lat)
	q := func(p float64) float64 {
		if len(o.lat) == 0 {
			return 0
		}
		i := min(len(o.lat)-1, int(p*float64(len(o.lat))))
		return float64(o.lat[i]) / 1e3
	}
	secs := o.elapsed.Seconds()
	return sample{
		Client: client, Transport: s.transport, Run: run, Window: s.window, Rate: s.rate,
		N: s.n, Size: s.size, Subjects: max(1, len(s.topics)), Goroutines: s.goroutines, Conns: max(1, s.conns),
		Failed: o.failed, Seconds: secs, MsgsPerSec: float64(s.n) / secs,
		P50us: q(0.50), P99us: q(0.99), P999us: q(0.999), Detail: o.detail,
		ClientCPU: float64(o.cpu) / 1e3 / float64(s.n), BrokerCPU: float64(brokerCPU) / 1e3 / float64(s.n),
		BytesPerMsg: float64(o.bytes) / float64(s.n),
	}
}

// median returns the median of xs (the mean of the middle two for an even count).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// fmtRate prints msgs/s as e.g. "187.3k".
func fmtRate(x float64) string { return fmt.Sprintf("%.1fk", x/1e3) }

// fmtLat prints microseconds as µs below 10 ms, else ms.
func fmtLat(us float64) string {
	if us < 10_000 {
		return fmt.Sprintf("%.0fµs", us)
	}
	return fmt.Sprintf("%.1fms", us/1e3)
}

// selfCPU returns the CPU time (user+system) this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU returns the CPU time process pid has used: the sum of its threads' run time
// from /proc/PID/task/*/schedstat (nanoseconds; threads that have exited are missing),
// else user+system time from /proc/PID/stat (clock ticks of 10 ms); 0 when it cannot tell.
func procCPU(pid int) time.Duration {
	if tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task"); err == nil {
		var sum time.Duration
		ok := false
		for _, t := range tasks {
			data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + t.Name() + "/schedstat")
			if err != nil {
				continue
			}
			f := strings.Fields(string(data))
			if len(f) == 0 {
				continue
			}
			if ns, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				sum, ok = sum+time.Duration(ns), true
			}
		}
		if ok {
			return sum
		}
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// "pid (comm) state ppid ... utime stime": utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

// saturated reports whether a client fell short of the offered rate in the paced runs ss:
// its messages queued, and its latency is no longer that of the offered load. A client that
// keeps up gets its last acknowledgement one latency after the last release; one that does
// not falls behind in proportion to the run's length. So: the median over the runs of that
// lag beyond the schedule is more than 3 % of the schedule and more than 100 ms (which
// leaves room for a tail stall and for Nagle holding back the last PUBACK).
func saturated(ss []sample) bool {
	var lags []float64
	var sched float64
	for _, s := range ss {
		if s.Rate <= 0 {
			return false
		}
		sched = float64(s.N-1) / s.Rate
		lags = append(lags, s.Seconds-sched)
	}
	lag := median(lags)
	return len(lags) > 0 && lag > 0.1 && lag > 0.03*sched
}
