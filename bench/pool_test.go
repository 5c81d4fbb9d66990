//go:build unix

package bench

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/mdclient/mdclient"
	"github.com/mdclient/mdclient/internal/ejabberdtest"
	"github.com/mdclient/mdclient/internal/testproc"
)

// BenchmarkPoolEjabberd publishes over a real 3-node ejabberd cluster with one connection
// and with WithConnections(3), one to each node: PublishAsync, one shared result channel,
// 300 subjects so that they hash over the connections, every message acknowledged. It is
// skipped unless ejabberd is installed; run it with a fixed count, e.g.
//
//	go test -run '^$' -bench PoolEjabberd -benchtime 20000x -count 5 ./bench/
func BenchmarkPoolEjabberd(b *testing.B) {
	if _, err := testproc.LookTool("ejabberdctl"); err != nil && os.Getenv("CI") == "" {
		b.Skip("ejabberd not installed")
	}
	cl := ejabberdtest.Start(b, ejabberdtest.Config{Users: map[string]string{"pub": token}})
	var servers []string
	for _, n := range cl.Nodes() {
		servers = append(servers, n.TCPAddr())
	}
	subjects := make([]string, 300)
	for i := range subjects {
		subjects[i] = fmt.Sprintf("bench/pool/%d", i)
	}
	for _, conns := range []int{1, 3} {
		b.Run(fmt.Sprintf("connections=%d", conns), func(b *testing.B) {
			c := mdclient.NewClient(mdclient.WithUsername("pub"), mdclient.WithConnections(conns))
			defer c.Close()
			c.SetEntitlementToken(token)
			if err := c.SetServers(servers); err != nil {
				b.Fatal(err)
			}
			timeout := time.After(20 * time.Second)
			for up := 0; up < conns; { // each connection's Up, before the clock starts
				select {
				case ev := <-c.Events():
					if ev.Type == mdclient.NotifyServerUp {
						up++
					}
				case <-timeout:
					b.Fatalf("connections %v, want %d", c.Stats().Servers, conns)
				}
			}
			results := make(chan mdclient.PublishResult, 4096)
			content := make([]byte, 64)
			ctx := context.Background()
			b.ResetTimer()
			start := time.Now()
			go func() {
				for i := range b.N {
					c.PublishAsync(ctx, mdclient.PublishRequest{Result: results, Message: mdclient.Message{Subject: subjects[i%len(subjects)], Content: content}})
				}
			}()
			for range b.N {
				if r := <-results; r.Status != mdclient.NotifyPublishOK && r.Status != mdclient.NotifyPublishNoSubscriber {
					b.Fatal(r.Status, r.Err)
				}
			}
			report(b, start, 64)
		})
	}
}
