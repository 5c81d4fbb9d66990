// Package bench holds mdclient's throughput benchmarks:
//
//	go test -run '^$' -bench . -benchmem ./bench/
package bench

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mdclient/mdclient"
	"github.com/mdclient/mdclient/internal/mosquittotest"
	"github.com/mdclient/mdclient/internal/testproc"
	"github.com/mdclient/mdclient/mdtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const token = "bench-token"

// BenchmarkPublish publishes b.N messages over each transport — the embedded broker (with
// a subscriber, so every message is delivered) and, when installed, mosquitto (no
// subscriber: PUBACK 0x10 is its acknowledgement) — through PublishAsync with one shared
// result channel and through Publish from 64 goroutines.
func BenchmarkPublish(b *testing.B) {
	srv, err := mdtest.NewServer(mdtest.WithAllowToken(token))
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	sub, err := srv.Subscribe("bench/#")
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	go func() {
		for range sub.Messages() {
		}
	}()
	// Debian's mosquitto too, when installed, with a Receive Maximum a producer wants.
	transports := []struct{ name, addr string }{{"embedded-tcp", srv.TCPAddr()}, {"embedded-ws", srv.WSAddr()}}
	if _, err := testproc.LookTool("mosquitto"); err == nil || os.Getenv("CI") != "" {
		mq := mosquittotest.Start(b, mosquittotest.Config{AllowAnonymous: true, MaxInflight: 65535})
		transports = append(transports, struct{ name, addr string }{"mosquitto-tcp", mq.TCPAddr()},
			struct{ name, addr string }{"mosquitto-ws", mq.WSAddr()})
	}
	for _, size := range []int{16, 256, 4096} {
		for _, tr := range transports {
			b.Run(fmt.Sprintf("size=%d/transport=%s/api=async", size, tr.name), func(b *testing.B) {
				benchAsync(b, tr.addr, size)
			})
			b.Run(fmt.Sprintf("size=%d/transport=%s/api=sync64", size, tr.name), func(b *testing.B) {
				benchSync(b, tr.addr, size, 64)
			})
		}
	}
}

func connect(b *testing.B, addr string) *mdclient.Client {
	c := mdclient.NewClient()
	c.SetEntitlementToken(token)
	if err := c.SetServers([]string{addr}); err != nil {
		b.Fatal(err)
	}
	// One publish first, so the connection is up before the clock starts.
	if st, err := c.Publish(context.Background(), mdclient.Message{Subject: "bench/warmup"}); st != mdclient.NotifyPublishOK && st != mdclient.NotifyPublishNoSubscriber {
		b.Fatal(st, err)
	}
	return c
}

func report(b *testing.B, start time.Time, size int) {
	secs := time.Since(start).Seconds()
	b.ReportMetric(float64(b.N)/secs, "msgs/s")
	b.SetBytes(int64(size))
}

func benchAsync(b *testing.B, addr string, size int) {
	c := connect(b, addr)
	defer c.Close()
	msg := mdclient.Message{Subject: "bench/async", Content: make([]byte, size)}
	results := make(chan mdclient.PublishResult, 4096)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	go func() {
		for range b.N {
			c.PublishAsync(ctx, mdclient.PublishRequest{Message: msg, Result: results})
		}
	}()
	for range b.N {
		if r := <-results; r.Status != mdclient.NotifyPublishOK && r.Status != mdclient.NotifyPublishNoSubscriber {
			b.Fatal(r.Status, r.Err)
		}
	}
	report(b, start, size)
}

func benchSync(b *testing.B, addr string, size, workers int) {
	c := connect(b, addr)
	defer c.Close()
	msg := mdclient.Message{Subject: "bench/sync", Content: make([]byte, size)}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	// The remainder is spread one each over the first workers: left to one worker, it would
	// be published one at a time, and a small b.N (the benchmark driver starts with 1) all
	// of it — against mosquitto's WebSocket listener, which answers a PUBLISH that did not
	// come in one 4 KiB read only after 100 ms when nothing else arrives (docs/benchmarks.md),
	// that made size=4096 report 100 ms/op.
	per := b.N / workers
	for w := range workers {
		n := per
		if w < b.N%workers {
			n++
		}
		wg.Go(func() {
			for range n {
				if st, err := c.Publish(ctx, msg); st != mdclient.NotifyPublishOK && st != mdclient.NotifyPublishNoSubscriber {
					b.Error(st, err)
					return
				}
			}
		})
	}
	wg.Wait()
	report(b, start, size)
}
