package faultproxy_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mdclient/mdclient/internal/faultproxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echo is a target that writes back what it reads, and lets the test close its side.
type echo struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
	got   chan net.Conn // every accepted connection, for the test to act on
}

func newEcho(t *testing.T) *echo {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echo{ln: ln, got: make(chan net.Conn, 16)}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.mu.Lock()
			e.conns = append(e.conns, c)
			e.mu.Unlock()
			select {
			case e.got <- c:
			default:
			}
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		e.mu.Lock()
		for _, c := range e.conns {
			c.Close()
		}
		e.mu.Unlock()
		e.wg.Wait()
	})
	return e
}

func newProxy(t *testing.T, target string) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readFull reads len(want) bytes within d and compares them.
func readFull(t *testing.T, c net.Conn, want []byte, d time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("reading %d bytes: %v", len(want), err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %q, want %q", got, want)
	}
}

// silent asserts that nothing arrives on c for d.
func silent(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	var b [1]byte
	n, err := c.Read(b[:])
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %d bytes, %v while stalled; want nothing", n, err)
	}
}

// ended asserts that c is closed by the other side within d.
func ended(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	_, err := io.Copy(io.Discard, c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection still open after %v", d)
	}
}

func TestForwards(t *testing.T) {
	e := newEcho(t)
	p := newProxy(t, e.ln.Addr().String())
	if p.Target() != e.ln.Addr().String() {
		t.Errorf("Target() = %q", p.Target())
	}
	c := dial(t, p.Addr())
	msg := bytes.Repeat([]byte("0123456789"), 10000) // larger than one read
	go c.Write(msg)
	readFull(t, c, msg, 5*time.Second)
	// A write is counted once it returns, by which time its peer may have read it: the
	// last write of each direction (at most 32 KiB) may not be counted yet.
	if up, down := p.Forwarded(); up > int64(len(msg)) || up < int64(len(msg)-32<<10) ||
		down > int64(len(msg)) || down < int64(len(msg)-32<<10) {
		t.Errorf("Forwarded() = %d, %d, want about %d both ways", up, down, len(msg))
	}
	if p.Accepted() != 1 || p.Conns() != 1 {
		t.Errorf("Accepted() = %d, Conns() = %d, want 1, 1", p.Accepted(), p.Conns())
	}
}

func TestStallHoldsDataAndEnd(t *testing.T) {
	e := newEcho(t)
	p := newProxy(t, e.ln.Addr().String())
	c := dial(t, p.Addr())
	c.Write([]byte("before"))
	readFull(t, c, []byte("before"), 5*time.Second)
	srv := <-e.got

	p.Stall()
	if _, err := c.Write([]byte("during")); err != nil {
		t.Fatal(err)
	}
	silent(t, c, 200*time.Millisecond)
	if up, _ := p.Forwarded(); up > int64(len("before")) {
		t.Fatalf("%d bytes forwarded up, more than the %d before the stall", up, len("before"))
	}
	// A connection made while stalled is accepted but carries nothing either.
	c2 := dial(t, p.Addr())
	c2.Write([]byte("new"))
	silent(t, c2, 100*time.Millisecond)

	p.Resume()
	readFull(t, c, []byte("during"), 5*time.Second)
	readFull(t, c2, []byte("new"), 5*time.Second)

	// The end of a connection waits during a stall too.
	p.Stall()
	srv.Close()
	silent(t, c, 200*time.Millisecond)
	if p.Conns() != 2 {
		t.Errorf("Conns() = %d while stalled, want 2", p.Conns())
	}
	p.Resume()
	ended(t, c, 5*time.Second)
}

func TestThrottle(t *testing.T) {
	e := newEcho(t)
	p := newProxy(t, e.ln.Addr().String())
	c := dial(t, p.Addr())
	const rate = 10000
	p.Throttle(rate)
	msg := bytes.Repeat([]byte("x"), rate/2)
	start := time.Now()
	go c.Write(msg)
	readFull(t, c, msg, 10*time.Second)
	// Half a second's worth each way, pipelined: at least ~0.5 s in all.
	if d := time.Since(start); d < 400*time.Millisecond || d > 5*time.Second {
		t.Errorf("%d bytes at %d B/s took %v, want about 0.5 s", len(msg), rate, d)
	}

	// Resume lifts the throttle, also for data already waiting.
	big := bytes.Repeat([]byte("y"), 200<<10)
	go c.Write(big)
	p.Throttle(1000) // 200 s at this rate
	p.Resume()
	start = time.Now()
	readFull(t, c, big, 10*time.Second)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("unthrottled 200 KiB took %v", d)
	}
}

func TestCut(t *testing.T) {
	e := newEcho(t)
	p := newProxy(t, e.ln.Addr().String())
	c1, c2 := dial(t, p.Addr()), dial(t, p.Addr())
	for _, c := range []net.Conn{c1, c2} {
		c.Write([]byte("hi"))
		readFull(t, c, []byte("hi"), 5*time.Second)
	}
	p.Cut()
	if n := p.Conns(); n != 0 {
		t.Errorf("Conns() = %d after Cut", n)
	}
	ended(t, c1, 5*time.Second)
	ended(t, c2, 5*time.Second)
	// The proxy still accepts and forwards.
	c3 := dial(t, p.Addr())
	c3.Write([]byte("again"))
	readFull(t, c3, []byte("again"), 5*time.Second)
	if p.Accepted() != 3 {
		t.Errorf("Accepted() = %d, want 3", p.Accepted())
	}
}

// TestCutWhileStalled: a cut connection ends at once even though the path is stalled.
func TestCutWhileStalled(t *testing.T) {
	e := newEcho(t)
	p := newProxy(t, e.ln.Addr().String())
	c := dial(t, p.Addr())
	c.Write([]byte("hi"))
	readFull(t, c, []byte("hi"), 5*time.Second)
	p.Stall()
	c.Write([]byte("held"))
	p.Cut()
	ended(t, c, 5*time.Second)
}

func TestUnreachableTarget(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := ln.Addr().String()
	ln.Close()
	p := newProxy(t, target)
	c := dial(t, p.Addr())
	ended(t, c, 5*time.Second)
}

// TestCloseStalled: Close ends everything, also connections stalled with data waiting
// and a throttled write in progress; goleak in TestMain checks that no goroutine is left.
func TestCloseStalled(t *testing.T) {
	e := newEcho(t)
	p, err := faultproxy.New(e.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c1, c2 := dial(t, p.Addr()), dial(t, p.Addr())
	c1.Write([]byte("hi"))
	readFull(t, c1, []byte("hi"), 5*time.Second)
	p.Throttle(10)
	c2.Write(bytes.Repeat([]byte("z"), 1000))
	p.Stall()
	c1.Write([]byte("held"))
	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	ended(t, c1, 5*time.Second)
	ended(t, c2, 5*time.Second)
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Error("the proxy still accepts after Close")
	}
}
