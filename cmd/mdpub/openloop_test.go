package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// stall is how long the server holds its acknowledgements in TestOpenLoopCountsTheWait.
const stall = 200 * time.Millisecond

// stalledRun runs mdpub with args through a proxy that holds the broker's
// acknowledgements for stall once the broker has received window messages (the window is
// full then: nothing more goes out until the acknowledgements come), and returns the
// summary.
func stalledRun(t *testing.T, window int, args ...string) summary {
	t.Helper()
	srv := broker(t, "tok")
	sub, err := srv.Subscribe("mdpub/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	hold := make(chan struct{})
	addr := newProxy(t, srv, 0, hold)
	armed := make(chan struct{})
	go func() {
		defer close(armed)
		timeout := time.NewTimer(deadline)
		defer timeout.Stop()
		for range window {
			select {
			case <-sub.Messages():
			case <-timeout.C:
				t.Error("the broker never got a full window")
				close(hold)
				return
			}
		}
		// The fault injected: a server that answers nothing for a while. Only its
		// length is a timer's; nothing waits on it to synchronise.
		time.AfterFunc(stall, func() { close(hold) })
	}()
	code, stdout, stderr := mdpub(t, append([]string{"--servers", addr, "--token", "tok", "--json", "--window", "10"}, args...)...)
	<-armed
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	var s summary
	if err := json.Unmarshal([]byte(stdout), &s); err != nil {
		t.Fatalf("%v: %s", err, stdout)
	}
	return s
}

// TestOpenLoopCountsTheWait: a server that stalls for 200 ms holds up the messages due
// meanwhile. With --rate (open loop) their latency counts from when they were due, so the
// stall shows in most of them: no coordinated omission. Without --rate (closed loop) the
// messages not yet sent were never due, and only the window's worth held by the server
// waited: the median stays low.
func TestOpenLoopCountsTheWait(t *testing.T) {
	const window = 10
	open := stalledRun(t, window, "--rate", "1000", "--count", "300")
	// Messages 10 to 209 come due during the stall, every millisecond, and wait for its
	// end: about a third of all 300 wait 100 ms or more.
	if open.LatencyFrom != "due" || open.LatencyUS.P90 < 100e3 || open.LatencyUS.Max < float64(stall/time.Microsecond) {
		t.Errorf("open loop: latency %+v from %q; want p90 ≥ 100ms, max ≥ %v", open.LatencyUS, open.LatencyFrom, stall)
	}
	t.Logf("open loop: %+v", open.LatencyUS)
	closed := stalledRun(t, window, "--count", "300")
	t.Logf("closed loop: %+v", closed.LatencyUS)
	if closed.LatencyFrom != "call" || closed.LatencyUS.P50 >= 100e3 || closed.LatencyUS.Max < float64(stall/time.Microsecond) {
		t.Errorf("closed loop: latency %+v from %q; want p50 < 100ms, max ≥ %v", closed.LatencyUS, closed.LatencyFrom, stall)
	}
	if !strings.Contains(usage(), "no\ncoordinated omission") && !strings.Contains(usage(), "no coordinated omission") {
		t.Error("--help does not say that the open loop avoids coordinated omission")
	}
}
