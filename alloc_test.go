package mdclient_test

import (
	"context"
	"testing"

	"github.com/mdclient/mdclient"
	"github.com/mdclient/mdclient/mdtest"
)

// TestAllocationBudget: at steady state, with results going to a shared channel, the whole
// publish path — caller, engine, connection reader and writer — allocates nothing per
// message. The server is a fake sink that allocates nothing itself, so every
// allocation counted is the client's.
func TestAllocationBudget(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates; run without -race (as .ci/run does)")
	}
	t.Run("plain", func(t *testing.T) { allocationBudget(t) })
	// A hook costs what it allocates itself, nothing more.
	t.Run("hook", func(t *testing.T) {
		allocationBudget(t, mdclient.WithHook(func(context.Context, *mdclient.Message) func(mdclient.PublishResult) { return nil }))
	})
}

func allocationBudget(t *testing.T, opts ...mdclient.Option) {
	sink, err := mdtest.NewSink()
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	c := newClient(t, "", []string{sink.TCPAddr()}, opts...)
	ctx := context.Background()
	const batch = 1000
	results := make(chan mdclient.PublishResult, batch) // room for a whole batch: no backlog
	msg := mdclient.Message{Subject: "alloc/budget", Content: make([]byte, 64)}
	run := func() {
		for range batch {
			c.PublishAsync(ctx, mdclient.PublishRequest{Message: msg, Result: results})
		}
		for range batch {
			if r := <-results; r.Status != mdclient.NotifyPublishOK {
				t.Fatal(r.Status, r.Err)
			}
		}
	}
	run() // warm up: the connection, buffers and pools reach their steady size
	perRun := testing.AllocsPerRun(20, run)
	// The contract allows one; the client needs none (a sync.Pool emptied by a GC may
	// cost a few per run), and a regression to one would pass a budget of one unseen.
	if perMessage := perRun / batch; perMessage > 0.05 {
		t.Errorf("%.3f allocations per message, budget 0.05", perMessage)
	} else {
		t.Logf("%.3f allocations per message", perMessage)
	}
}
