//go:build unix

package mosquittotest

import (
	"bytes"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// Publish runs
//
//	mosquitto_pub -V mqttv5 -h 127.0.0.1 -p PORT -u USER -P PASS -t TOPIC -q 1 -s [extra...]
//
// (without -u/-P when user is "") with payload on standard input, so any
// bytes are sent unchanged; an empty payload is sent with -n instead of -s,
// which rejects empty input. extra is appended to the arguments, e.g.
// "-r" to retain, or "-D", "publish", "response-topic", "a/b". mosquitto_pub
// returns after the PUBACK, so the broker has routed the message when
// Publish returns.
//
// The test fails if mosquitto_pub exits non-zero or reports a failed
// publish: mosquitto_pub exits 0 even when the PUBACK carries an error such as
// 0x87 (not authorized), so its standard error is checked as well. Use
// [Broker.PublishCmd] to inspect failures instead.
func (b *Broker) Publish(t testing.TB, user, pass, topic string, payload []byte, extra ...string) {
	t.Helper()
	cmd := b.PublishCmd(t, user, pass, topic, payload, extra...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if msg := strings.ToLower(stderr.String()); err != nil || strings.Contains(msg, "failed") || strings.Contains(msg, "error") {
		t.Fatalf("mosquittotest: %v: %v\nstdout: %s\nstderr: %s", cmd.Args, err, out, stderr.String())
	}
}

// PublishCmd returns, unstarted, the mosquitto_pub command that
// [Broker.Publish] runs, for tests that need to look at its exit status or
// output themselves. If mosquitto_pub is not installed the test is skipped
// (failed when CI is set).
func (b *Broker) PublishCmd(t testing.TB, user, pass, topic string, payload []byte, extra ...string) *exec.Cmd {
	t.Helper()
	bin := lookTool(t, "mosquitto_pub")
	args := []string{"-V", "mqttv5", "-h", "127.0.0.1", "-p", strconv.Itoa(b.TCPPort())}
	if user != "" {
		args = append(args, "-u", user, "-P", pass)
	}
	args = append(args, "-t", topic, "-q", "1")
	if len(payload) == 0 {
		// -s refuses empty input ("Error: Zero length input.").
		args = append(args, "-n")
	} else {
		args = append(args, "-s")
	}
	args = append(args, extra...)
	cmd := exec.Command(bin, args...)
	if len(payload) > 0 {
		cmd.Stdin = bytes.NewReader(payload)
	}
	return cmd
}
