//go:build unix

package mosquittotest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testACL = `user pub
topic write allowed/#

user sub
topic read #
`

func testConfig() Config {
	return Config{
		Users: map[string]string{"pub": "secret", "sub": "subpw"},
		ACL:   testACL,
	}
}

// startTest starts the broker used by most tests.
func startTest(t *testing.T) *Broker {
	t.Helper()
	return Start(t, testConfig())
}

func TestAddresses(t *testing.T) {
	b := startTest(t)
	if got, want := b.TCPAddr(), fmt.Sprintf("tcp://127.0.0.1:%d", b.TCPPort()); got != want {
		t.Errorf("TCPAddr() = %q, want %q", got, want)
	}
	if got, want := b.WSAddr(), fmt.Sprintf("ws://127.0.0.1:%d/mqtt", b.WSPort()); got != want {
		t.Errorf("WSAddr() = %q, want %q", got, want)
	}
	if b.TCPPort() == b.WSPort() {
		t.Errorf("both listeners on port %d", b.TCPPort())
	}
	if !b.Running() {
		t.Error("Running() = false after Start")
	}
}

func TestTCPListenerAuth(t *testing.T) {
	b := startTest(t)

	ca := mqttConnect(t, dial(t, b.TCPHostPort()), "pub", "secret")
	if ca.reason != 0 {
		t.Fatalf("CONNACK reason 0x%02x for valid credentials, want 0", ca.reason)
	}
	if ca.recvMax != 20 {
		t.Errorf("Receive Maximum = %d, want mosquitto's default 20", ca.recvMax)
	}
	if ca.aliasMax != 10 {
		t.Errorf("Topic Alias Maximum = %d, want 10", ca.aliasMax)
	}
	if ca.assignedID == "" {
		t.Error("no Assigned Client Identifier for an empty client id")
	}

	if ca := mqttConnect(t, dial(t, b.TCPHostPort()), "sub", "wrong"); ca.reason != 0x87 {
		t.Errorf("CONNACK reason 0x%02x for a wrong password, want 0x87", ca.reason)
	}
	if ca := mqttConnect(t, dial(t, b.TCPHostPort()), "", ""); ca.reason != 0x87 {
		t.Errorf("CONNACK reason 0x%02x for an anonymous client, want 0x87", ca.reason)
	}
}

func TestWebSocketListener(t *testing.T) {
	b := startTest(t)
	for _, path := range []string{"/mqtt", "/"} {
		u := strings.TrimSuffix(b.WSAddr(), "/mqtt") + path
		ca := mqttConnect(t, dialWS(t, u), "sub", "subpw")
		if ca.reason != 0 {
			t.Errorf("%s: CONNACK reason 0x%02x, want 0", u, ca.reason)
		}
	}
}

// TestWebSocketLoopbackOnly checks in /proc/net that both listening sockets
// are bound to 127.0.0.1 only.
func TestWebSocketLoopbackOnly(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc/net/tcp")
	}
	b := startTest(t)
	for _, port := range []int{b.TCPPort(), b.WSPort()} {
		var locals []string
		for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
			data, err := os.ReadFile(file)
			if err != nil {
				if errors.Is(err, os.ErrNotExist) {
					continue
				}
				t.Fatal(err)
			}
			for _, line := range strings.Split(string(data), "\n")[1:] {
				f := strings.Fields(line)
				if len(f) < 4 || f[3] != "0A" { // 0A = LISTEN
					continue
				}
				addr, hexPort, ok := strings.Cut(f[1], ":")
				if p, err := strconv.ParseUint(hexPort, 16, 16); ok && err == nil && int(p) == port {
					locals = append(locals, addr)
				}
			}
		}
		// 0100007F is 127.0.0.1 in /proc/net/tcp's little-endian hex.
		if len(locals) != 1 || locals[0] != "0100007F" {
			t.Errorf("port %d: listening local addresses %q, want only 0100007F (127.0.0.1)", port, locals)
		}
	}
}

func TestMaxInflightIsReceiveMaximum(t *testing.T) {
	cfg := testConfig()
	cfg.MaxInflight = 7
	b := Start(t, cfg)
	ca := mqttConnect(t, dial(t, b.TCPHostPort()), "sub", "subpw")
	if ca.reason != 0 || ca.recvMax != 7 {
		t.Errorf("CONNACK reason 0x%02x, Receive Maximum %d; want 0, 7", ca.reason, ca.recvMax)
	}
}

func TestAnonymousZeroConfig(t *testing.T) {
	b := Start(t, Config{Extra: "log_type all"})
	ca := mqttConnect(t, dial(t, b.TCPHostPort()), "", "")
	if ca.reason != 0 {
		t.Fatalf("anonymous CONNACK reason 0x%02x, want 0", ca.reason)
	}
	s := b.Subscribe(t, "", "", "anon/#")
	b.Publish(t, "", "", "anon/x", []byte("hello"))
	if m := s.Next(t); m.Topic != "anon/x" || string(m.Payload) != "hello" {
		t.Errorf("got %+v", m)
	}
	// log_type all from Extra makes mosquitto log subscriptions.
	if log := b.Log(); !strings.Contains(log, " 1 anon/#") {
		t.Errorf("Extra not applied, broker log lacks the subscription:\n%s", log)
	}
}

func TestAnonymousWithUsers(t *testing.T) {
	cfg := testConfig()
	cfg.ACL = ""
	cfg.AllowAnonymous = true
	b := Start(t, cfg)
	if ca := mqttConnect(t, dial(t, b.TCPHostPort()), "", ""); ca.reason != 0 {
		t.Errorf("anonymous CONNACK reason 0x%02x, want 0", ca.reason)
	}
	if ca := mqttConnect(t, dial(t, b.TCPHostPort()), "pub", "nope"); ca.reason != 0x87 {
		t.Errorf("wrong password CONNACK reason 0x%02x, want 0x87", ca.reason)
	}
}

// allBytes is a payload containing every byte value, NUL and newline
// included.
func allBytes() []byte {
	p := make([]byte, 256)
	for i := range p {
		p[i] = byte(i)
	}
	return p
}

func TestSubscribeBinaryPayloadAndProperties(t *testing.T) {
	b := startTest(t)
	s := b.Subscribe(t, "sub", "subpw", "allowed/#")

	payload := append(allBytes(), "\x00mosquittotest-end\n"...)
	file := filepath.Join(t.TempDir(), "payload")
	if err := os.WriteFile(file, payload, 0o600); err != nil {
		t.Fatal(err)
	}
	corr := "c\x01\n\xff\x00x" // argv cannot carry the NUL: mosquitto_pub sends "c\x01\n\xff"
	cmd := exec.Command(lookTool(t, "mosquitto_pub"), "-V", "mqttv5",
		"-h", "127.0.0.1", "-p", strconv.Itoa(b.TCPPort()), "-u", "pub", "-P", "secret",
		"-t", "allowed/bin", "-q", "1", "-f", file,
		"-D", "publish", "response-topic", "reply/to me",
		"-D", "publish", "correlation-data", corr[:4]+"mosquittotest-end")
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}

	m := s.Next(t)
	if m.Topic != "allowed/bin" {
		t.Errorf("Topic = %q", m.Topic)
	}
	if !bytes.Equal(m.Payload, payload) {
		t.Errorf("Payload = %x\nwant      %x", m.Payload, payload)
	}
	if m.ResponseTopic != "reply/to me" {
		t.Errorf("ResponseTopic = %q", m.ResponseTopic)
	}
	if want := corr[:4] + "mosquittotest-end"; string(m.CorrelationData) != want {
		t.Errorf("CorrelationData = %q, want %q", m.CorrelationData, want)
	}
	if m.Retain || m.QoS != 1 {
		t.Errorf("Retain = %v, QoS = %d; want false, 1", m.Retain, m.QoS)
	}

	// Publish (stdin, -s) must be binary-safe too, and an empty payload and
	// absent properties must come through as such.
	b.Publish(t, "pub", "secret", "allowed/stdin", payload)
	if m := s.Next(t); m.Topic != "allowed/stdin" || !bytes.Equal(m.Payload, payload) {
		t.Errorf("via Publish: got topic %q payload %x", m.Topic, m.Payload)
	}
	b.Publish(t, "pub", "secret", "allowed/empty", nil)
	m = s.Next(t)
	if m.Topic != "allowed/empty" || len(m.Payload) != 0 || m.ResponseTopic != "" || m.CorrelationData != nil {
		t.Errorf("empty message: got %+v", m)
	}
}

// TestACL publishes a denied message and then an allowed one; the subscriber
// (on "#") receives messages in order, so getting the allowed one first proves
// that the denied one was dropped.
func TestACL(t *testing.T) {
	b := startTest(t)
	s := b.Subscribe(t, "sub", "subpw", "#")

	cmd := b.PublishCmd(t, "pub", "secret", "denied/x", []byte("no"), "-d")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}
	// mosquitto_pub exits 0 even though the PUBACK says 0x87.
	if !strings.Contains(string(out), "RC:135") || !strings.Contains(string(out), "Not authorized") {
		t.Errorf("denied publish: want PUBACK RC:135 and a warning, got\n%s", out)
	}

	b.Publish(t, "pub", "secret", "allowed/x", []byte("yes"))
	if m := s.Next(t); m.Topic != "allowed/x" || string(m.Payload) != "yes" {
		t.Errorf("got %q %q, want allowed/x yes", m.Topic, m.Payload)
	}

	// Publish itself notices the refusal.
	ft := newFakeTB(t)
	ft.run(func() { b.Publish(ft, "pub", "secret", "denied/y", []byte("no")) })
	if !ft.failed || !strings.Contains(ft.msg, "Not authorized") {
		t.Errorf("Publish to a denied topic: failed=%v, message %q", ft.failed, ft.msg)
	}
}

func TestPubackNoMatchingSubscribers(t *testing.T) {
	b := startTest(t)
	out, err := b.PublishCmd(t, "pub", "secret", "allowed/nobody", []byte("x"), "-d").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "RC:16") {
		t.Errorf("want PUBACK RC:16 (no matching subscribers), got %v\n%s", err, out)
	}
}

func TestRetained(t *testing.T) {
	b := startTest(t)
	b.Publish(t, "pub", "secret", "allowed/retained", []byte{0, 1, 2}, "-r")
	s := b.Subscribe(t, "sub", "subpw", "allowed/retained")
	m := s.Next(t)
	if !m.Retain || m.Topic != "allowed/retained" || !bytes.Equal(m.Payload, []byte{0, 1, 2}) {
		t.Errorf("got %+v, want retained allowed/retained 000102", m)
	}
}

func TestSubscribeWrongPasswordFails(t *testing.T) {
	b := startTest(t)
	ft := newFakeTB(t)
	ft.run(func() { b.Subscribe(ft, "sub", "wrong", "#") })
	if !ft.failed {
		t.Fatal("Subscribe with a wrong password did not fail the test")
	}
	if !strings.Contains(ft.msg, "ended before subscribing") || !strings.Contains(ft.msg, "CONNACK (135)") {
		t.Errorf("unexpected failure message:\n%s", ft.msg)
	}
}

func TestSubClose(t *testing.T) {
	b := startTest(t)
	s := b.Subscribe(t, "sub", "subpw", "allowed/#")
	b.Publish(t, "pub", "secret", "allowed/1", []byte("1"))
	s.Close()
	s.Close() // idempotent
	// The buffered message is still there, then the channel is closed.
	if m, ok := <-s.Messages(); ok && string(m.Payload) != "1" {
		t.Errorf("got %+v", m)
	}
	for range s.Messages() {
	}
	if s.Err() == nil {
		t.Error("Err() = nil after Close")
	}
	if !strings.Contains(strings.Join(s.Log(), "\n"), "received SUBACK") {
		t.Errorf("Log() lacks the SUBACK line: %q", s.Log())
	}
}

func TestKillRestart(t *testing.T) {
	b := startTest(t)
	tcp, ws := b.TCPAddr(), b.WSAddr()
	early := b.Subscribe(t, "sub", "subpw", "allowed/#")

	b.Kill()
	b.Kill() // no-op
	if b.Running() {
		t.Error("Running() = true after Kill")
	}
	for _, a := range []string{b.TCPHostPort(), b.WSHostPort()} {
		if c, err := net.Dial("tcp", a); err == nil {
			c.Close()
			t.Errorf("%s accepts connections after Kill", a)
		}
	}

	b.Restart(t)
	if b.TCPAddr() != tcp || b.WSAddr() != ws {
		t.Errorf("addresses changed: %s %s -> %s %s", tcp, ws, b.TCPAddr(), b.WSAddr())
	}
	if ca := mqttConnect(t, dialWS(t, b.WSAddr()), "sub", "subpw"); ca.reason != 0 {
		t.Errorf("WebSocket CONNACK after Restart: 0x%02x", ca.reason)
	}
	s := b.Subscribe(t, "sub", "subpw", "allowed/#")
	// The subscriber started before Kill reconnects and subscribes again.
	early.WaitSubscriptions(t, 2)
	b.Publish(t, "pub", "secret", "allowed/again", []byte("after restart"))
	for _, sub := range []*Sub{s, early} {
		if m := sub.Next(t); string(m.Payload) != "after restart" {
			t.Errorf("got %+v", m)
		}
	}

	// Restart of a running broker kills it first.
	b.Restart(t)
	if ca := mqttConnect(t, dial(t, b.TCPHostPort()), "pub", "secret"); ca.reason != 0 {
		t.Errorf("CONNACK after second Restart: 0x%02x", ca.reason)
	}
	if n := strings.Count(b.Log(), "--- mosquittotest: starting"); n != 3 {
		t.Errorf("log shows %d starts, want 3", n)
	}
}

// TestStopContinue connects while the broker is stopped: the kernel completes
// the TCP handshake, but no CONNACK comes until Continue.
func TestStopContinue(t *testing.T) {
	b := startTest(t)
	b.Stop()
	c := dial(t, b.TCPHostPort())
	if _, err := c.Write(connectPacket("pub", "secret")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	if err := c.SetReadDeadline(time.Now().Add(300 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("stopped broker answered")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("read from stopped broker: %v, want a timeout", err)
	}

	b.Continue()
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	h, body, err := readPacket(br)
	if err != nil {
		t.Fatalf("no CONNACK after Continue: %v", err)
	}
	if ca, err := parseConnack(h, body); err != nil || ca.reason != 0 {
		t.Errorf("CONNACK after Continue: %+v, %v", ca, err)
	}
	b.Stop() // cleanup must kill a stopped broker
}

func TestPasswordFileFormat(t *testing.T) {
	line, err := passwordLine("alice", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Split(strings.TrimSuffix(line, "\n"), "$")
	if len(f) != 5 || f[0] != "alice:" || f[1] != "7" || f[2] != "101" || len(f[3]) != 16 || len(f[4]) != 88 {
		t.Errorf("unexpected password line %q", line)
	}
	if other, _ := passwordLine("alice", "s3cret"); other == line {
		t.Error("salt is not random")
	}
}

func TestInvalidUserName(t *testing.T) {
	ft := newFakeTB(t)
	ft.run(func() { Start(ft, Config{Users: map[string]string{"a:b": "x"}}) })
	if !ft.failed || !strings.Contains(ft.msg, "invalid user name") {
		t.Errorf("failed=%v msg=%q", ft.failed, ft.msg)
	}
}

func TestMissingToolSkipsOrFailsUnderCI(t *testing.T) {
	const name = "mosquittotest-no-such-program"
	t.Setenv("CI", "")
	ft := newFakeTB(t)
	ft.runRaw(func() { lookTool(ft, name) })
	if !ft.skipped || ft.failed || !strings.Contains(ft.msg, name+" not installed") {
		t.Errorf("without CI: skipped=%v failed=%v msg=%q, want a skip", ft.skipped, ft.failed, ft.msg)
	}

	t.Setenv("CI", "true")
	ft = newFakeTB(t)
	ft.runRaw(func() { lookTool(ft, name) })
	if ft.skipped || !ft.failed {
		t.Errorf("with CI: skipped=%v failed=%v msg=%q, want a failure", ft.skipped, ft.failed, ft.msg)
	}
}

// fakeTB records Fatal and Skip calls (ending the calling goroutine like
// testing.T does) and runs cleanups when run returns.
type fakeTB struct {
	testing.TB
	mu       sync.Mutex
	failed   bool
	skipped  bool
	msg      string
	cleanups []func()
}

func newFakeTB(t *testing.T) *fakeTB { return &fakeTB{TB: t} }

func (f *fakeTB) Helper() {}

func (f *fakeTB) Cleanup(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleanups = append(f.cleanups, fn)
}

func (f *fakeTB) Failed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.Fatal(fmt.Sprintf(format, args...))
}

func (f *fakeTB) Fatal(args ...any) {
	f.mu.Lock()
	f.failed = true
	f.msg = fmt.Sprint(args...)
	f.mu.Unlock()
	runtime.Goexit()
}

func (f *fakeTB) Skip(args ...any) {
	f.mu.Lock()
	f.skipped = true
	f.msg = fmt.Sprint(args...)
	f.mu.Unlock()
	runtime.Goexit()
}

// run calls fn in its own goroutine, as testing does, then runs the
// registered cleanups in reverse order. A Skip inside fn skips the real test.
func (f *fakeTB) run(fn func()) {
	f.runRaw(fn)
	if f.skipped {
		f.TB.Skip(f.msg) // on the test goroutine, as SkipNow requires
	}
}

// runRaw is run without passing a Skip on to the real test.
func (f *fakeTB) runRaw(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	<-done
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}
