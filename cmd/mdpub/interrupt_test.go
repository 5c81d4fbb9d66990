package main

import (
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mdclient/mdclient/mdtest"
)

// sayWriter closes seen once what was written to it contains want.
type sayWriter struct {
	want string
	seen chan struct{}

	mu   sync.Mutex
	b    strings.Builder
	said bool
}

func newSayWriter(want string) *sayWriter { return &sayWriter{want: want, seen: make(chan struct{})} }

func (w *sayWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	if !w.said && strings.Contains(w.b.String(), w.want) {
		w.said = true
		close(w.seen)
	}
	return len(p), nil
}

// deadline bounds each wait of these tests for something that should come at once.
const deadline = 10 * time.Second

// interruptWithResultsHeld runs mdpub --stdin through a proxy in front of srv that holds
// the broker's acknowledgements until hold is closed. Once the subscriber sub has
// received all of lines, so that their results are all awaited, it interrupts mdpub as
// SIGINT would. It returns what the run returned.
func interruptWithResultsHeld(t *testing.T, srv *mdtest.Server, sub *mdtest.Subscription, hold chan struct{}, stderr io.Writer, lines []string, args ...string) (int, string, string) {
	t.Helper()
	addr := newProxy(t, srv, 0, hold)
	pr, pw := io.Pipe()
	defer pw.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		defer cancel()
		if _, err := pw.Write([]byte(strings.Join(lines, "\n") + "\n")); err != nil {
			t.Error(err)
			return
		}
		timeout := time.NewTimer(deadline)
		defer timeout.Stop()
		for range lines {
			select {
			case <-sub.Messages():
			case <-timeout.C:
				t.Error("the broker did not get every line")
				return
			}
		}
	}()
	inv := invocation{stdin: pr, stderr: stderr}
	code, stdout, errOut := inv.run(t, ctx, append([]string{"--stdin", "--servers", addr, "--token", "tok"}, args...)...)
	pw.Close() // lets the reader, still waiting for a line, finish
	<-fed
	return code, stdout, errOut
}

func TestInterruptSaysAtOnceHowManyResultsItWaitsFor(t *testing.T) {
	srv := broker(t, "tok")
	sub, err := srv.Subscribe("mdpub/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	hold := make(chan struct{})
	said := newSayWriter("stopping")
	released := make(chan struct{})
	go func() {
		defer close(released)
		timeout := time.NewTimer(deadline)
		defer timeout.Stop()
		select {
		case <-said.seen: // the acknowledgements come only once mdpub said it waits for them
		case <-timeout.C:
			t.Error("mdpub did not say it was stopping")
		}
		close(hold)
	}()
	code, stdout, stderr := interruptWithResultsHeld(t, srv, sub, hold, said, []string{"a", "b", "c"})
	<-released
	lines, _ := jsonLines(t, stdout)
	if len(lines) != 3 {
		t.Errorf("%d outcomes, want 3:\n%s", len(lines), stdout)
	}
	want := "mdpub: interrupted: stopping; waiting up to 5s (the drain timeout) for 3 results (interrupt again to quit at once)\n"
	at, table := strings.Index(stderr, want), strings.Index(stderr, "outcome")
	if at < 0 || table < at || strings.Count(stderr, "stopping") != 1 {
		t.Fatalf("exit %d; stderr lacks %q before the summary:\n%s", code, want, stderr)
	}
	if !strings.Contains(stderr, row("NOTIFY_PUBLISH_OK", "3", "100.00%")) {
		t.Errorf("summary:\n%s", stderr)
	}
}

func TestInterruptWaitsNoLongerThanTheDrainTimeout(t *testing.T) {
	defer func(d time.Duration) { drainTimeout = d }(drainTimeout)
	drainTimeout = 200 * time.Millisecond
	srv := broker(t, "tok")
	sub, err := srv.Subscribe("mdpub/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	// The acknowledgements come only after the deadline, long after the drain timeout, and
	// the publish timeout is further still: only the drain timeout ends the wait in time.
	hold := make(chan struct{})
	ran := make(chan struct{})
	released := make(chan struct{})
	go func() {
		defer close(released)
		defer close(hold)
		timeout := time.NewTimer(deadline)
		defer timeout.Stop()
		select {
		case <-ran:
		case <-timeout.C:
			t.Error("mdpub still waits for its results long after the drain timeout")
		}
	}()
	code, stdout, stderr := interruptWithResultsHeld(t, srv, sub, hold, nil, []string{"x", "y"}, "--timeout", "1h")
	close(ran)
	<-released
	if !strings.Contains(stderr, "waiting up to 200ms (the drain timeout) for 2 results") {
		t.Errorf("stderr:\n%s", stderr)
	}
	lines, _ := jsonLines(t, stdout)
	if len(lines) != 2 {
		t.Fatalf("exit %d, %d outcomes, want 2:\n%s\nstderr:\n%s", code, len(lines), stdout, stderr)
	}
	for _, l := range lines {
		if l.Status != "NOTIFY_PUBLISH_FAILED" || !strings.Contains(l.Error, "client closed") {
			t.Errorf("outcome %+v, want NOTIFY_PUBLISH_FAILED (client closed)", l)
		}
	}
}
