//go:build unix

package ejabberdtest

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mdclient/mdclient/internal/testproc"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	pubPassword = "pub-secret"
	subPassword = "sub-secret"
)

// TestCluster drives a two-node cluster (two are enough to show routing between nodes and
// keep this test lean) through the answers mdclient relies on, a SIGKILL and a restart,
// and checks that Close leaves no process behind.
func TestCluster(t *testing.T) {
	c := Start(t, Config{
		Nodes:         2,
		Users:         map[string]string{"pub": pubPassword, "sub": subPassword},
		AccessPublish: map[string]bool{"allowed/#": true, "denied/#": false},
	})
	n1, n2 := c.Node(0), c.Node(1)
	if len(c.Nodes()) != 2 {
		t.Fatalf("%d nodes, want 2", len(c.Nodes()))
	}
	for _, n := range c.Nodes() {
		if got, want := n.TCPAddr(), "tcp://"+n.TCPHostPort(); got != want {
			t.Errorf("TCPAddr() = %q, want %q", got, want)
		}
		if got, want := n.WSAddr(), "ws://"+n.WSHostPort()+"/mqtt"; got != want {
			t.Errorf("WSAddr() = %q, want %q", got, want)
		}
		for _, a := range []string{n.TCPAddr(), n.WSAddr(), n.TCPHostPort()} {
			if c.NodeByAddr(a) != n {
				t.Errorf("NodeByAddr(%q) is not %s", a, n.Name())
			}
		}
		if !n.Running() || n.BeamPID() == 0 {
			t.Errorf("%s not running after Start", n.Name())
		}
	}
	if got, err := c.RunningMembers(n2); err != nil || len(got) != 2 {
		t.Fatalf("RunningMembers(%s) = %v, %v; want both nodes", n2.Name(), got, err)
	}

	sub := n2.Subscribe(t, "sub", subPassword, "allowed/sub/#")
	publish := func(n *Node, user, password, topic string) Ack {
		t.Helper()
		ack, err := n.Publish(user, password, topic, []byte(topic))
		if err != nil {
			t.Fatalf("publishing %s on %s: %v", topic, n.Name(), err)
		}
		return ack
	}
	received := func(topic string) {
		t.Helper()
		if !sub.Wait(10*time.Second, func(msgs []Msg) bool {
			for _, m := range msgs {
				if m.Topic == topic && string(m.Payload) == topic {
					return true
				}
			}
			return false
		}) {
			t.Fatalf("the subscriber on %s did not receive %s (err %v)", n2.Name(), topic, sub.Err())
		}
	}

	// A subscriber on another node: 0x00, and the message crosses the cluster.
	if ack := publish(n1, "pub", pubPassword, "allowed/sub/1"); ack != (Ack{}) {
		t.Fatalf("publish with a subscriber on the other node: %+v, want all zero", ack)
	}
	received("allowed/sub/1")
	// Nobody subscribed anywhere: 0x10.
	if ack := publish(n1, "pub", pubPassword, "allowed/nobody"); ack.Connack != 0 || ack.Puback != 0x10 {
		t.Errorf("publish without subscriber: %+v, want PUBACK 0x10", ack)
	}
	// A denied topic, and one that matches no filter of access_publish: 0x90.
	for _, topic := range []string{"denied/x", "elsewhere/x"} {
		ack := publish(n1, "pub", pubPassword, topic)
		if ack.Connack != 0 || ack.Puback != 0x90 || !strings.Contains(ack.Reason, "forbidden by service policy") {
			t.Errorf("publish to %s: %+v, want PUBACK 0x90 forbidden by service policy", topic, ack)
		}
	}
	// Bad credentials on either node: CONNACK 0x87.
	for _, n := range c.Nodes() {
		for _, cred := range [][2]string{{"pub", "wrong"}, {"nobody", pubPassword}, {"", ""}} {
			if ack := publish(n, cred[0], cred[1], "allowed/x"); ack.Connack != 0x87 {
				t.Errorf("%s with user %q password %q: %+v, want CONNACK 0x87", n.Name(), cred[0], cred[1], ack)
			}
		}
	}

	// SIGKILL of node 1: its port refuses, node 2 keeps serving alone.
	beam := n1.BeamPID()
	before := time.Now()
	at, err := n1.Kill()
	if err != nil {
		t.Fatal(err)
	}
	if at.Before(before) || at.After(time.Now()) {
		t.Errorf("Kill returned %v, not a moment during the call", at)
	}
	if n1.Running() || n1.BeamPID() != 0 || testproc.Alive(beam) {
		t.Fatalf("%s still running after Kill", n1.Name())
	}
	if testproc.Accepts(n1.TCPHostPort()) || testproc.Accepts(n1.WSHostPort()) {
		t.Fatalf("%s still accepts connections after Kill", n1.Name())
	}
	if ack := publish(n2, "pub", pubPassword, "allowed/sub/2"); ack != (Ack{}) {
		t.Fatalf("publish on the survivor: %+v", ack)
	}
	received("allowed/sub/2")
	if err := c.waitMembers(n2, []string{n2.Name()}, time.Now().Add(ReadyTimeout)); err != nil {
		t.Fatal(err)
	}

	// Restarted with the same spool, node 1 rejoins and routes to node 2 again.
	n1.Restart(t)
	if !n1.Running() || n1.BeamPID() == beam {
		t.Fatalf("%s: running %v, beam pid %d (was %d)", n1.Name(), n1.Running(), n1.BeamPID(), beam)
	}
	if ack := publish(n1, "pub", pubPassword, "allowed/sub/3"); ack != (Ack{}) {
		t.Fatalf("publish on the restarted node: %+v", ack)
	}
	received("allowed/sub/3")

	// Close leaves nothing behind: no VM, no ctl shell, no epmd, no listener.
	var pids []int
	for _, n := range c.Nodes() {
		pids = append(pids, n.BeamPID())
		pids = append(pids, slices.Concat(testproc.Descendants(n.BeamPID())...)...)
	}
	pids = append(pids, c.EpmdPID())
	sub.Close()
	c.Close()
	for _, p := range pids {
		if testproc.Alive(p) {
			t.Errorf("process %d survived Close", p)
		}
	}
	if left := processesMentioning(c.Dir()); len(left) > 0 {
		t.Errorf("processes survived Close: %v", left)
	}
	for _, n := range c.Nodes() {
		if testproc.Accepts(n.TCPHostPort()) || testproc.Accepts(n.WSHostPort()) {
			t.Errorf("%s still accepts connections after Close", n.Name())
		}
	}
	if testproc.Accepts("127.0.0.1:" + strconv.Itoa(c.epmdPort)) {
		t.Errorf("epmd still accepts connections after Close")
	}
	c.Close() // again: nothing happens
}

// processesMentioning lists the live processes whose command line contains s.
func processesMentioning(s string) []string {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() || !testproc.Alive(pid) {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && bytes.Contains(cmdline, []byte(s)) {
			out = append(out, fmt.Sprintf("%d %s", pid, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
		}
	}
	return out
}

func TestConfigFiles(t *testing.T) {
	n := &Node{c: &Cluster{cookie: "abc"}, name: "ejtX_1@localhost", dir: t.TempDir(), tcpPort: 1111, httpPort: 2222}
	if err := n.writeConfig(Config{AccessPublish: map[string]bool{"b/#": false, "a/#": true}}); err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(n.dir + "/ejabberd.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"port: 1111\n    ip: \"127.0.0.1\"\n    module: mod_mqtt\n",
		"port: 2222\n    ip: \"127.0.0.1\"\n    module: ejabberd_http\n    request_handlers:\n      /mqtt: mod_mqtt\n",
		"max_queue: unlimited\n    access_publish:\n      \"a/#\": ejabberdtest_allow\n      \"b/#\": ejabberdtest_deny\n",
		"auth_password_format: plain\n",
	} {
		if !strings.Contains(string(y), want) {
			t.Errorf("ejabberd.yml lacks %q:\n%s", want, y)
		}
	}
	cfg, err := os.ReadFile(n.dir + "/ejabberdctl.cfg")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ERLANG_NODE=ejtX_1@localhost\n", "-setcookie abc -start_epmd false", "EJABBERD_BYPASS_WARNINGS=true\n"} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("ejabberdctl.cfg lacks %q:\n%s", want, cfg)
		}
	}
}

func TestCopyCtl(t *testing.T) {
	dir := t.TempDir()
	orig := dir + "/orig"
	const script = "#!/bin/bash\nINSTALLUSER=ejabberd\nexec_erl()\n{\n    NODE=$1; shift\n" +
		"    exec_cmd \"$ERL\" ${S:--}name \"$NODE\" $ERLANG_OPTS \"$@\"\n}\n"
	if err := os.WriteFile(orig, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := copyCtl(orig, dir+"/copy"); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(dir + "/copy")
	want := "#!/bin/bash\nINSTALLUSER=\nexec_erl()\n{\n    NODE=$1; shift\n" +
		"    [ -n \"$EJABBERDTEST_EXEC\" ] && exec \"$ERL\" ${S:--}name \"$NODE\" $ERLANG_OPTS \"$@\"\n" +
		"    exec_cmd \"$ERL\" ${S:--}name \"$NODE\" $ERLANG_OPTS \"$@\"\n}\n"
	if string(got) != want {
		t.Errorf("copy = %q, want %q", got, want)
	}
	if err := os.WriteFile(orig, []byte("#!/bin/bash\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := copyCtl(orig, dir+"/copy"); err == nil {
		t.Error("copyCtl accepted a script without the lines it patches")
	}
}
