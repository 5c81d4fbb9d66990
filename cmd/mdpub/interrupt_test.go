package main

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
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

// text is what was written so far.
func (w *sayWriter) text() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

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
	if !strings.Contains(stderr, row("NOTIFY_PUBLISH_OK", "3", "100.00%")) || code != exitInterrupted {
		t.Errorf("exit %d, want 130; summary:\n%s", code, stderr)
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
	if len(lines) != 2 || code != exitInterrupted {
		t.Fatalf("exit %d (want 130), %d outcomes (want 2):\n%s\nstderr:\n%s", code, len(lines), stdout, stderr)
	}
	for _, l := range lines {
		// Written and unacknowledged when the drain ended: unknown, so TIMEOUT.
		if l.Status != "NOTIFY_PUBLISH_TIMEOUT" || !strings.Contains(l.Error, "client closed") {
			t.Errorf("outcome %+v, want NOTIFY_PUBLISH_TIMEOUT (client closed)", l)
		}
	}
}

func TestInterruptExits130WhateverTheOutcomes(t *testing.T) {
	if !strings.Contains(usage(), "\n  130  interrupted by SIGINT or SIGTERM, whatever the outcomes") {
		t.Errorf("--help does not document exit code 130:\n%s", usage())
	}
	srv := broker(t, "tok")
	for _, tc := range []struct {
		name   string
		args   []string
		status string
	}{
		{"ok", nil, "NOTIFY_PUBLISH_OK"}, // the embedded broker, with its subscriber
		{"no subscriber", []string{"--servers", srv.TCPAddr(), "--token", "tok"}, "NOTIFY_PUBLISH_NO_SUBSCRIBER"},
		{"denied", []string{"--servers", srv.TCPAddr(), "--token", "wrong"}, "NOTIFY_PUBLISH_DENIED"},
	} {
		pr, pw := io.Pipe()
		ctx, cancel := context.WithCancel(t.Context())
		sw := &signalWriter{first: make(chan struct{})}
		fed := make(chan struct{})
		go func() {
			defer close(fed)
			defer cancel()
			pw.Write([]byte("first\n"))
			<-sw.first // the first outcome is out: interrupt, as SIGINT would
		}()
		inv := invocation{stdin: pr, stdout: sw}
		code, stdout, stderr := inv.run(t, ctx, append([]string{"--stdin", "--json"}, tc.args...)...)
		pw.Close()
		<-fed
		lines, sum := jsonLines(t, stdout)
		if len(lines) != 1 || lines[0].Status != tc.status || sum["interrupted"] != true {
			t.Errorf("%s: stdout:\n%s", tc.name, stdout)
		}
		if code != exitInterrupted {
			t.Errorf("%s: exit %d, want 130; stderr:\n%s", tc.name, code, stderr)
		}
	}
}

func TestInterruptBeforeAServerIsReachedExits130(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	ctx, cancel := context.WithCancel(t.Context())
	cancel() // SIGINT came before any server answered
	code, stdout, stderr := invocation{}.run(t, ctx, "--servers", "tcp://"+addr, "--connect-timeout", "1h")
	if code != exitInterrupted || stdout != "" || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "interrupted before a server was reached") {
		t.Errorf("exit %d, want 130; stdout %q; stderr %q", code, stdout, stderr)
	}
}

// TestSecondSignalQuitsAlsoWhenStartedIgnoringSIGINT: mdpub started with SIGINT ignored
// (as a script's background job is) still stops on the first SIGINT and quits at once,
// with 130 and no summary, on the second — it used to leave the second to the default
// action, which was "ignore", and waited out the drain timeout (an outside tester's
// finding).
func TestSecondSignalQuitsAlsoWhenStartedIgnoringSIGINT(t *testing.T) {
	srv := broker(t, "tok")
	srv.DropAcks("mdpub/#", true) // no acknowledgement: results stay awaited
	cmd := exec.Command(os.Args[0], "--servers", srv.TCPAddr(), "--token", "tok", "--rate", "1000", "--duration", "30s")
	cmd.Env = append(os.Environ(), "MDPUB_TEST_MAIN=1")
	streaming, stopping := newSayWriter("open loop at"), newSayWriter("stopping")
	cmd.Stderr = io.MultiWriter(streaming, stopping)
	cmd.Stdout = io.Discard     // a pipe, not /dev/null (a character device: mdpub would take it for a terminal)
	signal.Ignore(os.Interrupt) // inherited by the child as ignored
	err := cmd.Start()
	signal.Reset(os.Interrupt)
	if err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for _, step := range []struct {
		said *sayWriter
		what string
	}{{streaming, "start streaming"}, {stopping, "say it stops"}} {
		select {
		case <-step.said.seen:
		case err := <-exited:
			t.Fatalf("mdpub ended (%v) before it did %s:\n%s", err, step.what, stopping.text())
		case <-time.After(deadline):
			cmd.Process.Kill()
			t.Fatalf("mdpub did not %s:\n%s", step.what, stopping.text())
		}
		if err := cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
	}
	var err2 error
	select {
	case err2 = <-exited:
	case <-time.After(deadline):
		cmd.Process.Kill()
		t.Fatal("mdpub did not end after the second SIGINT")
	}
	var ee *exec.ExitError
	if !errors.As(err2, &ee) || ee.ExitCode() != exitInterrupted {
		t.Errorf("mdpub ended with %v, want exit status %d", err2, exitInterrupted)
	}
	if out := stopping.text(); strings.Contains(out, "outcome") {
		t.Errorf("mdpub printed its summary, so it waited for the drain:\n%s", out)
	}
}
