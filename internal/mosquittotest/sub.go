//go:build unix

package mosquittotest

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Msg is one message received by a [Sub].
type Msg struct {
	// Topic is the topic name the message was published to.
	Topic string
	// Payload is the application message, byte for byte (mosquitto_sub
	// prints it in hex, so binary payloads survive).
	Payload []byte
	// ResponseTopic is the MQTT 5 Response Topic property ("" if absent).
	ResponseTopic string
	// CorrelationData is the MQTT 5 Correlation Data property (nil if
	// absent or empty).
	CorrelationData []byte
	// Retain is the RETAIN flag as delivered: true for retained messages
	// sent because of the subscription, false for live messages.
	Retain bool
	// QoS is the delivery QoS (the subscription asks for at most 1).
	QoS byte
}

// Sub is a mosquitto_sub process subscribed to one topic filter, created by
// [Broker.Subscribe].
type Sub struct {
	cmd        *exec.Cmd
	msgs       chan Msg
	done       chan struct{} // closed by Close
	readerDone chan struct{} // closed when the reader goroutine returns
	stderr     lockedBuffer
	closeOnce  sync.Once

	mu    sync.Mutex
	lines []string // mosquitto_sub's non-message output (debug log)
	rerr  error    // why the reader stopped
	ready chan struct{}
	codes []int         // reason codes of the first SUBACK, valid once ready is closed
	acks  int           // SUBACKs received so far
	ackCh chan struct{} // closed and replaced at every SUBACK
}

// Record framing of mosquitto_sub's -F output. Each message is printed as
//
//	\0 recordMarker \0 retain \0 qos \0 payloadlen \0 topic \0 responsetopic \0 hexpayload \0 D \0 D recordEnd
//
// where D is the raw correlation data, printed twice. Topic and response topic
// are UTF-8 strings, which MQTT forbids to contain U+0000, and the payload is
// hex, so the NUL separators are unambiguous up to the correlation data. That
// one is binary and of unknown length; printing it twice lets the parser
// accept a recordEnd only where the bytes before it form "D\0D" — a false match
// would need correlation data that itself contains such a self-similar prefix
// followed by recordEnd. Lines of the -d debug log never start with NUL.
const (
	recordMarker = "mosquittotest-msg"
	recordEnd    = "\x00mosquittotest-end\n"
	subFormat    = `\0` + recordMarker + `\0%r\0%q\0%l\0%t\0%R\0%x\0%D\0%D\0mosquittotest-end\n`
)

// Subscribe runs
//
//	stdbuf -o0 mosquitto_sub -V mqttv5 -d -N -h 127.0.0.1 -p PORT -u USER -P PASS -t TOPIC -q 1 -F FORMAT
//
// (without -u/-P when user is "") and returns once the broker has
// acknowledged the subscription, so any message published after Subscribe
// returns is delivered to it. Readiness signal: with -d, mosquitto_sub's
// subscribe callback prints "Subscribed (mid: N): CODE" after it has received
// the SUBACK; mosquitto adds the subscription before sending the SUBACK (and
// then sends retained messages). stdbuf -o0 makes that line arrive without
// waiting for a buffer to fill. The test fails if mosquitto_sub exits first
// (e.g. CONNACK 0x87 for a wrong password), if the SUBACK carries a failure
// code (>= 0x80), or after 10 s.
//
// The process is killed, and its reader goroutine awaited, by t.Cleanup or
// an earlier [Sub.Close]. If mosquitto_sub or stdbuf is not installed, the
// test is skipped (failed when CI is set). mosquitto_sub reconnects and
// resubscribes by itself if the broker restarts; see [Sub.WaitSubscriptions].
func (b *Broker) Subscribe(t testing.TB, user, pass, topic string) *Sub {
	t.Helper()
	stdbuf := lookTool(t, "stdbuf")
	subBin := lookTool(t, "mosquitto_sub")
	args := []string{"-o0", subBin, "-V", "mqttv5", "-d", "-N",
		"-h", "127.0.0.1", "-p", strconv.Itoa(b.TCPPort())}
	if user != "" {
		args = append(args, "-u", user, "-P", pass)
	}
	args = append(args, "-t", topic, "-q", "1", "-F", subFormat)

	s := &Sub{
		cmd:        exec.Command(stdbuf, args...),
		msgs:       make(chan Msg, 1024),
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
		ready:      make(chan struct{}),
		ackCh:      make(chan struct{}),
	}
	s.cmd.Stderr = &s.stderr
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("mosquittotest: %v", err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("mosquittotest: starting mosquitto_sub: %v", err)
	}
	go s.read(stdout)
	t.Cleanup(s.Close)

	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	select {
	case <-s.ready:
		s.mu.Lock()
		codes := s.codes
		s.mu.Unlock()
		for _, c := range codes {
			if c >= 0x80 {
				s.Close()
				t.Fatalf("mosquittotest: subscription to %q refused, SUBACK reason code 0x%02x\n%s", topic, c, s.output())
			}
		}
		return s
	case <-s.readerDone:
		s.Close()
		t.Fatalf("mosquittotest: mosquitto_sub (user %q, topic %q) ended before subscribing: %v\n%s", user, topic, s.Err(), s.output())
	case <-timer.C:
		s.Close()
		t.Fatalf("mosquittotest: mosquitto_sub (user %q, topic %q) got no SUBACK within %v\n%s", user, topic, readyTimeout, s.output())
	}
	return nil
}

// Messages returns the channel of received messages, in arrival order. It
// buffers up to 1024 messages and is closed when mosquitto_sub ends or the Sub
// is closed.
func (s *Sub) Messages() <-chan Msg { return s.msgs }

// WaitSubscriptions waits until mosquitto_sub has received n SUBACKs in
// total, failing the test after 10 s or if mosquitto_sub ends. Subscribe
// returns after the first; mosquitto_sub reconnects by itself (about once a
// second) when the connection is lost and subscribes again, so after
// [Broker.Kill] and [Broker.Restart] WaitSubscriptions(t, 2) returns once the
// Sub receives messages again.
func (s *Sub) WaitSubscriptions(t testing.TB, n int) {
	t.Helper()
	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	for {
		s.mu.Lock()
		acks, ch := s.acks, s.ackCh
		s.mu.Unlock()
		if acks >= n {
			return
		}
		select {
		case <-ch:
		case <-s.readerDone:
			t.Fatalf("mosquittotest: subscriber ended after %d of %d SUBACKs: %v\n%s", acks, n, s.Err(), s.output())
		case <-timer.C:
			t.Fatalf("mosquittotest: %d of %d SUBACKs after %v\n%s", acks, n, readyTimeout, s.output())
		}
	}
}

// Next returns the next message, failing the test if none arrives within 10 s
// or the subscriber ends.
func (s *Sub) Next(t testing.TB) Msg {
	t.Helper()
	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	select {
	case m, ok := <-s.msgs:
		if !ok {
			t.Fatalf("mosquittotest: subscriber ended: %v\n%s", s.Err(), s.output())
		}
		return m
	case <-timer.C:
		t.Fatalf("mosquittotest: no message within %v\n%s", readyTimeout, s.output())
	}
	return Msg{}
}

// Close kills mosquitto_sub and waits for it and for the reader goroutine.
// It is idempotent and also runs from t.Cleanup.
func (s *Sub) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		_ = s.cmd.Process.Signal(syscall.SIGKILL)
		<-s.readerDone // the reader also reaps the process
	})
}

// Stderr returns what mosquitto_sub wrote to its standard error.
func (s *Sub) Stderr() string { return s.stderr.String() }

// Log returns mosquitto_sub's debug output (-d) seen so far, one line per
// element, without the message records.
func (s *Sub) Log() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...)
}

// Err returns why the subscriber stopped reading: nil while it runs, an
// error wrapping io.EOF and naming the exit status once mosquitto_sub has
// exited or been closed, or an output parse error.
func (s *Sub) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rerr
}

func (s *Sub) output() string {
	return "mosquitto_sub stdout:\n  " + strings.Join(s.Log(), "\n  ") + "\nstderr:\n" + s.Stderr()
}

// read parses mosquitto_sub's standard output until EOF, then reaps the
// process.
func (s *Sub) read(stdout io.Reader) {
	defer close(s.readerDone)
	br := bufio.NewReader(stdout)
	err := parseOutput(br, s.line, func(m Msg) bool {
		select {
		case s.msgs <- m:
			return true
		case <-s.done:
			return false
		}
	})
	close(s.msgs)
	// After a parse error or Close, drain until mosquitto_sub exits so it
	// never blocks on a full pipe; all reads must end before Wait.
	_, _ = io.Copy(io.Discard, br)
	_ = s.cmd.Wait()
	s.mu.Lock()
	if err == nil {
		err = fmt.Errorf("%w: mosquitto_sub %v", io.EOF, s.cmd.ProcessState)
	}
	s.rerr = err
	s.mu.Unlock()
}

// line handles one debug line of mosquitto_sub.
func (s *Sub) line(l string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lines = append(s.lines, l)
	codes, ok := parseSubscribed(l)
	if !ok {
		return
	}
	s.acks++
	close(s.ackCh)
	s.ackCh = make(chan struct{})
	if s.acks == 1 {
		s.codes = codes
		close(s.ready)
	}
}

// parseSubscribed parses mosquitto_sub's "Subscribed (mid: 1): 1" (or
// "...: 1, 135" for several filters) line into the SUBACK codes.
func parseSubscribed(l string) ([]int, bool) {
	rest, ok := strings.CutPrefix(l, "Subscribed (mid: ")
	if !ok {
		return nil, false
	}
	_, list, ok := strings.Cut(rest, "): ")
	if !ok {
		return nil, false
	}
	var codes []int
	for _, f := range strings.Split(list, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, false
		}
		codes = append(codes, c)
	}
	return codes, true
}

// parseOutput splits mosquitto_sub output into debug lines (passed to line,
// without the newline) and message records (passed to msg; parsing stops when
// msg returns false). It returns nil at EOF.
func parseOutput(r *bufio.Reader, line func(string), msg func(Msg) bool) error {
	for {
		c, err := r.ReadByte()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if c != 0 {
			if err := r.UnreadByte(); err != nil {
				return err
			}
			l, err := r.ReadString('\n')
			if err != nil && err != io.EOF {
				return err
			}
			line(strings.TrimSuffix(l, "\n"))
			if err == io.EOF {
				return nil
			}
			continue
		}
		m, err := parseRecord(r)
		if err != nil {
			return err
		}
		if !msg(m) {
			return nil
		}
	}
}

// parseRecord parses one record after its leading NUL.
func parseRecord(r *bufio.Reader) (Msg, error) {
	var fields [7]string
	for i := range fields {
		f, err := r.ReadString(0)
		if err != nil {
			return Msg{}, fmt.Errorf("truncated message record: %w", unexpectedEOF(err))
		}
		fields[i] = f[:len(f)-1]
	}
	if fields[0] != recordMarker {
		return Msg{}, fmt.Errorf("unexpected message record marker %q", fields[0])
	}
	var m Msg
	switch fields[1] {
	case "0":
	case "1":
		m.Retain = true
	default:
		return Msg{}, fmt.Errorf("bad retain flag %q", fields[1])
	}
	qos, err := strconv.ParseUint(fields[2], 10, 8)
	if err != nil || qos > 2 {
		return Msg{}, fmt.Errorf("bad qos %q", fields[2])
	}
	m.QoS = byte(qos)
	n, err := strconv.Atoi(fields[3])
	if err != nil || n < 0 {
		return Msg{}, fmt.Errorf("bad payload length %q", fields[3])
	}
	m.Topic = fields[4]
	m.ResponseTopic = fields[5]
	if len(fields[6]) != 2*n {
		return Msg{}, fmt.Errorf("hex payload has %d digits for %d bytes", len(fields[6]), n)
	}
	m.Payload, err = hex.DecodeString(fields[6])
	if err != nil {
		return Msg{}, fmt.Errorf("bad hex payload: %w", err)
	}
	// Correlation data region "D\0D" followed by recordEnd.
	var buf []byte
	for {
		c, err := r.ReadByte()
		if err != nil {
			return Msg{}, fmt.Errorf("truncated correlation data: %w", unexpectedEOF(err))
		}
		buf = append(buf, c)
		if !bytes.HasSuffix(buf, []byte(recordEnd)) {
			continue
		}
		region := buf[:len(buf)-len(recordEnd)]
		if len(region)%2 == 0 {
			continue
		}
		h := len(region) / 2
		if region[h] == 0 && bytes.Equal(region[:h], region[h+1:]) {
			if h > 0 {
				m.CorrelationData = bytes.Clone(region[:h])
			}
			return m, nil
		}
	}
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// lockedBuffer is a bytes.Buffer safe for a writer and concurrent readers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
