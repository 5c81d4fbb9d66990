//go:build unix

// Package ejabberdtest starts a real cluster of ejabberd nodes, serving MQTT 5, on
// loopback for Go tests, and lets a test kill and restart its nodes and subscribe on any
// one of them.
//
// [Start] writes everything into t.TempDir(): a copy of Debian's ejabberdctl that runs as
// the current user, and per node an ejabberd.yml, an ejabberdctl.cfg, an inetrc, the
// Mnesia spool and the logs. It starts a private epmd on a free port, starts every node
// ("ejabberdctl foreground") with an MQTT listener and a WebSocket listener (ws://…/mqtt)
// on free ports of 127.0.0.1, registers the configured users on the first node, joins the
// other nodes to it and waits until every node is a running member of the cluster. A
// t.Cleanup kills every process it started (nodes, their process trees and epmd) and
// waits until they are gone, so nothing survives the test.
//
// If ejabberd is not installed the calling test is skipped, unless the environment
// variable CI is non-empty, in which case it fails.
//
// Facts about Debian's ejabberd 23.01 that shaped this package:
//
//   - ejabberdctl runs itself as user "ejabberd" when started as root (INSTALLUSER);
//     the copy has INSTALLUSER emptied so that the nodes run as the test's user and can
//     use files in the test's temp folder.
//   - Every erl started by ejabberdctl (the nodes and every ctl command) would start a
//     daemonised epmd on the shared port 4369 that outlives the test. Instead, each
//     cluster has its own epmd, a child of the test on a free port (ERL_EPMD_PORT), and
//     every VM runs with -start_epmd false. Several clusters (of other packages or other
//     people) thus never see each other.
//   - "ejabberdctl start" daemonises the node, which hides its process from the test.
//     The copy runs "foreground" and, told so by EJABBERDTEST_EXEC, execs the VM
//     (beam.smp) instead of forking it: the node is then a child of the test, which can
//     SIGKILL it by pid and reap it, and which the kernel kills if the test process dies
//     (Pdeathsig, Linux) — a test binary killed by its timeout leaves no node behind.
//   - A VM's helpers (erl_child_setup and its port programs such as inet_gethost, eimp,
//     memsup) exit by themselves once the VM is gone, but then are zombies until init
//     reaps them; Close kills them leaves first so that their own parents reap them.
//   - "ejabberdctl started" sleeps 2 s before its first probe; polling the listeners is
//     faster. Each ctl command boots a hidden Erlang VM (about 0.5–1 s).
//   - A node restarted with the same spool after SIGKILL rejoins the cluster by itself.
//   - Only one cluster runs at a time on a machine: Start takes an exclusive lock on
//     $TMPDIR/ejabberdtest.lock (waiting up to LockTimeout) and Close releases it, so that
//     two test binaries (go test ./... runs packages in parallel) never load a small
//     machine with six Erlang VMs at once, which would distort timing assertions.
package ejabberdtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mdclient/mdclient/internal/testproc"
)

// Timeouts. Ejabberd is slow to boot on a loaded two-core machine (three nodes in
// parallel take about 5 s here), so the bounds are generous.
const (
	// ReadyTimeout bounds the start (or restart) of one node and every other wait.
	ReadyTimeout = 60 * time.Second
	// CtlTimeout bounds one ejabberdctl command.
	CtlTimeout = 60 * time.Second
	// LockTimeout bounds the wait for another cluster on this machine to finish.
	LockTimeout = 5 * time.Minute
)

// pollInterval is the pause between two readiness probes.
const pollInterval = 20 * time.Millisecond

// Domain is the ejabberd host; user names without a domain are taken as USER@Domain.
const Domain = "localhost"

// Config describes the cluster started by [Start].
type Config struct {
	// Nodes is the number of nodes; 0 means 3.
	Nodes int
	// Users maps user names (without domain) to passwords; each is registered as
	// USER@localhost. Passwords are stored in plain (auth_password_format: plain).
	Users map[string]string
	// AccessPublish maps MQTT topic filters to whether publishing to matching topics is
	// allowed (mod_mqtt's access_publish). Once it is non-empty, ejabberd denies every
	// topic that matches none of the filters, so list the allowed filters too. A denied
	// publish is answered with PUBACK 0x90 and the reason string "Publishing to this
	// topic is forbidden by service policy". Empty means every topic is allowed.
	AccessPublish map[string]bool
}

// Cluster is a running ejabberd cluster started by [Start]. Its methods are safe for
// concurrent use.
type Cluster struct {
	t        testing.TB
	dir      string
	ctl      string // path of the ejabberdctl copy
	id       string // random, part of every node name
	cookie   string
	nodes    []*Node
	epmd     *testproc.Process
	epmdPort int
	lock     *os.File

	closeOnce sync.Once
}

// Node is one ejabberd node of a [Cluster].
type Node struct {
	c        *Cluster
	index    int // 0-based
	name     string
	dir      string
	tcpPort  int
	httpPort int

	mu   sync.Mutex
	proc *testproc.Process // the node's VM ("ejabberdctl foreground", exec'd); nil before the first start
	beam int               // its pid
}

// killGroup sends SIGKILL to the process group of p and waits until p is reaped.
func killGroup(p *testproc.Process) error {
	p.Kill()
	select {
	case <-p.Done():
		return nil
	case <-time.After(ReadyTimeout):
		return fmt.Errorf("process %d did not exit after SIGKILL", p.Pid())
	}
}

// Start starts a cluster configured by cfg and returns once every node serves MQTT and
// is a running member of the cluster. A t.Cleanup stops it (see [Cluster.Close]). If
// ejabberd is not installed, the test is skipped, or failed when the environment
// variable CI is non-empty.
func Start(t testing.TB, cfg Config) *Cluster {
	t.Helper()
	orig := lookTool(t, "ejabberdctl")
	epmdBin := lookTool(t, "epmd")
	lookTool(t, "erl")
	if cfg.Nodes == 0 {
		cfg.Nodes = 3
	}
	if cfg.Nodes < 1 {
		t.Fatalf("ejabberdtest: %d nodes", cfg.Nodes)
	}
	begin := time.Now()
	c := &Cluster{t: t, dir: t.TempDir(), id: randomHex(4), cookie: randomHex(16)}
	t.Cleanup(c.Close) // after TempDir's cleanup is registered: runs before the removal

	lock, err := acquireLock(t)
	if err != nil {
		t.Fatalf("ejabberdtest: %v", err)
	}
	c.lock = lock
	locked := time.Now()

	c.ctl = filepath.Join(c.dir, "ejabberdctl")
	if err := copyCtl(orig, c.ctl); err != nil {
		t.Fatalf("ejabberdtest: %v", err)
	}
	if err := c.startEpmd(epmdBin); err != nil {
		t.Fatalf("ejabberdtest: starting epmd: %v", err)
	}

	ports, err := testproc.FreePorts(2 * cfg.Nodes)
	if err != nil {
		t.Fatalf("ejabberdtest: picking ports: %v", err)
	}
	for i := range cfg.Nodes {
		n := &Node{
			c:        c,
			index:    i,
			name:     fmt.Sprintf("ejt%s_%d@localhost", c.id, i+1),
			dir:      filepath.Join(c.dir, fmt.Sprintf("node%d", i+1)),
			tcpPort:  ports[2*i],
			httpPort: ports[2*i+1],
		}
		for _, d := range []string{n.dir, n.spool(), n.logs()} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				t.Fatalf("ejabberdtest: %v", err)
			}
		}
		if err := n.writeConfig(cfg); err != nil {
			t.Fatalf("ejabberdtest: %v", err)
		}
		c.nodes = append(c.nodes, n)
	}

	// Boot every node at once; a node whose port was taken meanwhile gets new ports.
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		wg.Go(func() { errs[i] = n.bootFresh(cfg) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("ejabberdtest: %v", err)
	}
	booted := time.Now()

	// Register the users on the first node, then join the others to it: joining copies
	// the first node's tables, the users included.
	first := c.nodes[0]
	users := slices.Sorted(maps.Keys(cfg.Users))
	errs = make([]error, len(users))
	for i, u := range users {
		wg.Go(func() { errs[i] = first.register(u, cfg.Users[u], time.Now().Add(ReadyTimeout)) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("ejabberdtest: registering users: %v", err)
	}
	registered := time.Now()
	for _, n := range c.nodes[1:] {
		if _, err := n.ctlRun("join_cluster", first.name); err != nil {
			t.Fatalf("ejabberdtest: %s joining %s: %v", n.name, first.name, err)
		}
	}
	if err := c.waitMembers(first, c.names(), time.Now().Add(ReadyTimeout)); err != nil {
		t.Fatalf("ejabberdtest: %v", err)
	}
	for _, n := range c.nodes { // joining restarts the node's listeners
		if err := n.waitListening(time.Now().Add(ReadyTimeout)); err != nil {
			t.Fatalf("ejabberdtest: %v", err)
		}
	}
	t.Logf("ejabberdtest: %d-node cluster ready in %v (lock %v, boot %v, users %v, join %v)",
		len(c.nodes), time.Since(begin).Round(time.Millisecond), locked.Sub(begin).Round(time.Millisecond),
		booted.Sub(locked).Round(time.Millisecond), registered.Sub(booted).Round(time.Millisecond),
		time.Since(registered).Round(time.Millisecond))
	return c
}

// Nodes returns the nodes in order.
func (c *Cluster) Nodes() []*Node { return slices.Clone(c.nodes) }

// Node returns node i, counted from 0.
func (c *Cluster) Node(i int) *Node { return c.nodes[i] }

// NodeByAddr returns the node serving addr (as returned by [Node.TCPAddr] or
// [Node.WSAddr], or a bare host:port of either listener), or nil.
func (c *Cluster) NodeByAddr(addr string) *Node {
	for _, n := range c.nodes {
		if addr == n.TCPAddr() || addr == n.WSAddr() || addr == n.TCPHostPort() || addr == n.WSHostPort() ||
			addr == "mqtt://"+n.TCPHostPort() || addr == "ws://"+n.WSHostPort() {
			return n
		}
	}
	return nil
}

// Dir returns the temp folder holding the configuration, spools and logs.
func (c *Cluster) Dir() string { return c.dir }

// EpmdPID returns the pid of the cluster's epmd.
func (c *Cluster) EpmdPID() int { return c.epmd.Pid() }

func (c *Cluster) names() []string {
	var names []string
	for _, n := range c.nodes {
		names = append(names, n.name)
	}
	return names
}

// RunningMembers returns the running nodes of the cluster as node via sees them
// ("ejabberdctl list_cluster").
func (c *Cluster) RunningMembers(via *Node) ([]string, error) {
	out, err := via.ctlRun("list_cluster")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, l := range strings.Fields(out) {
		if strings.Contains(l, "@") {
			names = append(names, l)
		}
	}
	sort.Strings(names)
	return names, nil
}

// waitMembers polls via until it sees exactly want as running members.
func (c *Cluster) waitMembers(via *Node, want []string, deadline time.Time) error {
	want = slices.Sorted(slices.Values(want))
	var got []string
	var err error
	for {
		got, err = c.RunningMembers(via)
		if err == nil && slices.Equal(got, want) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s sees running members %v (err %v), want %v", via.name, got, err, want)
		}
		time.Sleep(pollInterval) // polling the cluster state
	}
}

// Close kills every node and epmd, waits until they and the nodes' helper processes are
// gone, and releases the machine-wide lock. If the test failed, it logs the end of every
// node's logs first. Start registers it with t.Cleanup; calling it again does nothing.
func (c *Cluster) Close() {
	c.closeOnce.Do(func() {
		if c.t.Failed() {
			for _, n := range c.nodes {
				c.t.Logf("ejabberdtest: %s log (%s):\n%s", n.name, n.logs(), tail(n.Log(), 40))
			}
		}
		var errs []error
		for _, n := range c.nodes {
			errs = append(errs, n.stop())
		}
		if c.epmd != nil {
			errs = append(errs, killGroup(c.epmd))
		}
		if c.lock != nil {
			c.lock.Close() // releases the flock
		}
		if err := errors.Join(errs...); err != nil {
			c.t.Errorf("ejabberdtest: stopping the cluster: %v", err)
		}
	})
}

// startEpmd starts the cluster's own epmd on a free port of 127.0.0.1.
func (c *Cluster) startEpmd(bin string) error {
	for attempt := 1; ; attempt++ {
		ports, err := testproc.FreePorts(1)
		if err != nil {
			return err
		}
		port := ports[0]
		f, err := os.Create(filepath.Join(c.dir, "epmd.log"))
		if err != nil {
			return err
		}
		cmd := exec.Command(bin, "-port", strconv.Itoa(port), "-address", "127.0.0.1")
		cmd.Stdout, cmd.Stderr, cmd.Dir = f, f, c.dir
		p, err := testproc.StartGroup(cmd)
		f.Close()
		if err != nil {
			return err
		}
		c.epmd, c.epmdPort = p, port
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if p.WaitAccepting(time.Now().Add(ReadyTimeout), addr) == nil {
			return nil
		}
		killGroup(p)
		if attempt == 5 || !p.Exited() {
			return fmt.Errorf("epmd on port %d not ready: %v", port, p.Err())
		}
	}
}

// env is the environment of every ejabberdctl command.
func (c *Cluster) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "HOME", "ERL_EPMD_PORT", "ERL_EPMD_ADDRESS", "ERL_FLAGS", "ERL_AFLAGS", "ERL_ZFLAGS", "ERL_LIBS":
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"HOME="+c.dir,
		"ERL_EPMD_PORT="+strconv.Itoa(c.epmdPort),
		"ERL_EPMD_ADDRESS=127.0.0.1",
	)
}

// Name returns the Erlang node name, "ejtID_N@localhost".
func (n *Node) Name() string { return n.name }

// Index returns the node's position in the cluster, counted from 0.
func (n *Node) Index() int { return n.index }

// TCPAddr returns the URL of the MQTT listener, "tcp://127.0.0.1:PORT".
func (n *Node) TCPAddr() string { return "tcp://" + n.TCPHostPort() }

// WSAddr returns the URL of the MQTT-over-WebSocket listener, "ws://127.0.0.1:PORT/mqtt".
func (n *Node) WSAddr() string { return "ws://" + n.WSHostPort() + "/mqtt" }

// TCPHostPort returns "127.0.0.1:PORT" of the MQTT listener.
func (n *Node) TCPHostPort() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.tcpPort))
}

// WSHostPort returns "127.0.0.1:PORT" of the HTTP listener serving /mqtt.
func (n *Node) WSHostPort() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.httpPort))
}

func (n *Node) spool() string { return filepath.Join(n.dir, "spool") }
func (n *Node) logs() string  { return filepath.Join(n.dir, "logs") }

// BeamPID returns the pid of the node's Erlang VM (beam.smp), or 0 when it is not running.
func (n *Node) BeamPID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc == nil || n.proc.Exited() {
		return 0
	}
	return n.beam
}

// Running reports whether the node's VM is alive.
func (n *Node) Running() bool { return n.BeamPID() != 0 }

// Log returns the node's ejabberd.log and what the VM printed.
func (n *Node) Log() string {
	var b strings.Builder
	for _, f := range []string{filepath.Join(n.logs(), "ejabberd.log"), filepath.Join(n.dir, "console.log")} {
		data, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintf(&b, "(%v)\n", err)
			continue
		}
		fmt.Fprintf(&b, "--- %s\n%s", f, data)
	}
	return b.String()
}

// writeConfig writes the node's ejabberd.yml, ejabberdctl.cfg and inetrc for its
// current ports.
func (n *Node) writeConfig(cfg Config) error {
	var y strings.Builder
	y.WriteString("# generated by ejabberdtest\n")
	fmt.Fprintf(&y, "hosts: [%s]\n", Domain)
	y.WriteString("loglevel: info\nlog_rotate_count: 0\n")
	y.WriteString("auth_method: internal\nauth_password_format: plain\n")
	y.WriteString("access_rules:\n  ejabberdtest_allow:\n    allow: all\n  ejabberdtest_deny:\n    deny: all\n")
	y.WriteString("listen:\n")
	fmt.Fprintf(&y, "  -\n    port: %d\n    ip: \"127.0.0.1\"\n    module: mod_mqtt\n", n.tcpPort)
	fmt.Fprintf(&y, "  -\n    port: %d\n    ip: \"127.0.0.1\"\n    module: ejabberd_http\n    request_handlers:\n      /mqtt: mod_mqtt\n", n.httpPort)
	y.WriteString("modules:\n  mod_mqtt:\n    max_queue: unlimited\n")
	if len(cfg.AccessPublish) > 0 {
		y.WriteString("    access_publish:\n")
		filters := make([]string, 0, len(cfg.AccessPublish))
		for f := range cfg.AccessPublish {
			filters = append(filters, f)
		}
		sort.Strings(filters)
		for _, f := range filters {
			rule := "ejabberdtest_deny"
			if cfg.AccessPublish[f] {
				rule = "ejabberdtest_allow"
			}
			fmt.Fprintf(&y, "      %s: %s\n", strconv.Quote(f), rule)
		}
	}
	ctlCfg := fmt.Sprintf(`# generated by ejabberdtest
ERLANG_NODE=%s
ERL_OPTIONS="-setcookie %s -start_epmd false -kernel inet_dist_use_interface {127,0,0,1}"
ERL_EPMD_ADDRESS=127.0.0.1
EJABBERD_PID_PATH=%s
EJABBERD_BYPASS_WARNINGS=true
`, n.name, n.c.cookie, filepath.Join(n.dir, "ejabberd.pid"))
	inetrc := "{lookup,[\"file\",\"native\"]}.\n{host,{127,0,0,1}, [\"localhost\"]}.\n"
	for name, data := range map[string]string{"ejabberd.yml": y.String(), "ejabberdctl.cfg": ctlCfg, "inetrc": inetrc} {
		if err := os.WriteFile(filepath.Join(n.dir, name), []byte(data), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// ctlArgs are the options that point ejabberdctl at this node.
func (n *Node) ctlArgs(args ...string) []string {
	return append([]string{
		"--config-dir", n.dir,
		"--config", filepath.Join(n.dir, "ejabberd.yml"),
		"--ctl-config", filepath.Join(n.dir, "ejabberdctl.cfg"),
		"--spool", n.spool(),
		"--logs", n.logs(),
	}, args...)
}

// ctlRun runs "ejabberdctl ARGS" against the node and returns its output.
func (n *Node) ctlRun(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), CtlTimeout)
	defer cancel()
	// Output goes to a file, not a pipe: a helper process of the ctl VM could hold a
	// pipe open after the command ended.
	f, err := os.CreateTemp(n.dir, "ctl-*.out")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	cmd := exec.CommandContext(ctx, n.c.ctl, n.ctlArgs(args...)...)
	cmd.Env, cmd.Dir, cmd.Stdout, cmd.Stderr = n.c.env(), n.dir, f, f
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	p, err := testproc.StartGroup(cmd)
	if err != nil {
		return "", err
	}
	<-p.Done()
	data, _ := os.ReadFile(f.Name())
	out := cleanOutput(data)
	if p.Err() != nil {
		return out, fmt.Errorf("ejabberdctl %s: %v: %s", strings.Join(args, " "), p.Err(), out)
	}
	return out, nil
}

// register registers user on the node. Just after a boot the node can serve and yet not
// have loaded its passwd table (the command then fails with no_exists): that is retried.
func (n *Node) register(user, password string, deadline time.Time) error {
	for {
		out, err := n.ctlRun("register", user, Domain, password)
		if err == nil || !strings.Contains(out, "no_exists") || time.Now().After(deadline) {
			return err
		}
		time.Sleep(pollInterval) // readiness polling
	}
}

// Ctl runs "ejabberdctl ARGS" against the node, fails the test if the command fails and
// returns its output.
func (n *Node) Ctl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.ctlRun(args...)
	if err != nil {
		t.Fatalf("ejabberdtest: %s: %v", n.name, err)
	}
	return out
}

// cleanOutput drops ejabberdctl's warning about running as root.
func cleanOutput(data []byte) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(string(data), "\n") {
		if strings.HasPrefix(l, "WARNING: It is not recommended to run ejabberd as root") {
			continue
		}
		b.WriteString(l)
	}
	return strings.TrimSpace(b.String())
}

// bootFresh boots a node that has never run, moving it to new ports when one of its
// ports turns out to be taken.
func (n *Node) bootFresh(cfg Config) error {
	for attempt := 1; ; attempt++ {
		err := n.boot(time.Now().Add(ReadyTimeout))
		if err == nil || attempt == 5 || !errors.Is(err, errExited) {
			return err
		}
		ports, perr := testproc.FreePorts(2)
		if perr != nil {
			return perr
		}
		n.mu.Lock()
		n.tcpPort, n.httpPort = ports[0], ports[1]
		n.mu.Unlock()
		if err := n.writeConfig(cfg); err != nil {
			return err
		}
		if err := os.RemoveAll(n.spool()); err != nil {
			return err
		}
	}
}

// errExited reports that a node's VM ended before it served MQTT (a port already in use,
// typically).
var errExited = errors.New("ejabberd exited before its listeners were ready")

// boot starts "ejabberdctl foreground" and waits until both listeners accept
// connections and the VM has written its pid.
func (n *Node) boot(deadline time.Time) error {
	f, err := os.OpenFile(filepath.Join(n.dir, "console.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	pidFile := filepath.Join(n.dir, "ejabberd.pid")
	_ = os.Remove(pidFile)
	fmt.Fprintf(f, "--- ejabberdtest: %s foreground (mqtt %s, ws %s)\n", n.name, n.TCPHostPort(), n.WSHostPort())
	// With EJABBERDTEST_EXEC the ctl script execs the VM: the process started here becomes
	// beam.smp, so the test can SIGKILL it by pid and reap it itself.
	cmd := exec.Command(n.c.ctl, n.ctlArgs("foreground")...)
	cmd.Env, cmd.Dir, cmd.Stdout, cmd.Stderr = append(n.c.env(), "EJABBERDTEST_EXEC=1"), n.dir, f, f
	p, err := testproc.StartGroup(cmd)
	f.Close()
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.proc, n.beam = p, cmd.Process.Pid
	n.mu.Unlock()

	for {
		if p.Exited() {
			return fmt.Errorf("%s: %w (%v); log:\n%s", n.name, errExited, p.Err(), tail(n.Log(), 30))
		}
		if n.listening() {
			// The VM writes its pid once ejabberd runs; it must be the process started.
			if data, err := os.ReadFile(pidFile); err == nil && len(bytes.TrimSpace(data)) > 0 {
				if pid, _ := strconv.Atoi(string(bytes.TrimSpace(data))); pid != cmd.Process.Pid {
					killGroup(p)
					return fmt.Errorf("%s: ejabberd runs as pid %d, not as the started process %d", n.name, pid, cmd.Process.Pid)
				}
				return nil
			}
		}
		if time.Now().After(deadline) {
			killGroup(p)
			return fmt.Errorf("%s: not serving on %s and %s after %v; log:\n%s",
				n.name, n.TCPHostPort(), n.WSHostPort(), ReadyTimeout, tail(n.Log(), 30))
		}
		time.Sleep(pollInterval) // readiness polling
	}
}

func (n *Node) listening() bool {
	return testproc.Accepts(n.TCPHostPort()) && testproc.Accepts(n.WSHostPort())
}

func (n *Node) waitListening(deadline time.Time) error {
	for !n.listening() {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: listeners %s and %s not accepting connections", n.name, n.TCPHostPort(), n.WSHostPort())
		}
		time.Sleep(pollInterval) // readiness polling
	}
	return nil
}

// Kill sends SIGKILL to the node's VM (beam.smp) and returns the moment it did, once the
// VM and its helper processes have exited: the node's ports then refuse connections. The
// other nodes keep serving. Killing a node that is not running does nothing and returns
// the zero time. Kill may be called from any goroutine.
func (n *Node) Kill() (time.Time, error) {
	n.mu.Lock()
	p, beam := n.proc, n.beam
	n.mu.Unlock()
	if p == nil || p.Exited() {
		return time.Time{}, nil
	}
	helpers := slices.Concat(testproc.Descendants(beam)...) // before the kill: then they are orphans
	at := time.Now()
	if err := syscall.Kill(beam, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return at, fmt.Errorf("kill %s (pid %d): %w", n.name, beam, err)
	}
	select {
	case <-p.Done():
	case <-time.After(ReadyTimeout):
		killGroup(p)
		return at, fmt.Errorf("%s: the VM did not exit after SIGKILL", n.name)
	}
	// The helpers (erl_child_setup and its port programs) exit on their own once the
	// VM is gone.
	if left := testproc.WaitGone(helpers, time.Now().Add(ReadyTimeout)); len(left) > 0 {
		for _, h := range left {
			_ = syscall.Kill(h, syscall.SIGKILL)
		}
		return at, fmt.Errorf("helper processes %v still running; killed", left)
	}
	return at, nil
}

// Restart starts a node again with the same configuration, spool and ports, typically
// after [Node.Kill], and returns once it serves MQTT and another running node lists it
// among the cluster's running members again. A running node is killed first.
func (n *Node) Restart(t testing.TB) {
	t.Helper()
	if _, err := n.Kill(); err != nil {
		t.Fatalf("ejabberdtest: %v", err)
	}
	begin := time.Now()
	deadline := begin.Add(ReadyTimeout)
	for {
		err := n.boot(deadline)
		if err == nil {
			break
		}
		if !errors.Is(err, errExited) || time.Now().After(deadline) {
			t.Fatalf("ejabberdtest: restarting: %v", err)
		}
		time.Sleep(pollInterval) // the port may be free again soon
	}
	var running []string
	via := n
	for _, m := range n.c.nodes {
		if m.Running() {
			running = append(running, m.name)
			if m != n && via == n {
				via = m
			}
		}
	}
	if err := n.c.waitMembers(via, running, deadline); err != nil {
		t.Fatalf("ejabberdtest: %s did not rejoin: %v", n.name, err)
	}
	t.Logf("ejabberdtest: %s restarted and rejoined in %v", n.name, time.Since(begin).Round(time.Millisecond))
}

// stop kills the node's processes for good: the VM's helpers from the leaves up, then the
// VM, then whatever is left of its process group.
func (n *Node) stop() error {
	n.mu.Lock()
	beam := n.beam
	n.mu.Unlock()
	if n.Running() {
		// The VM's helpers (erl_child_setup and its port programs) would outlive a
		// killed VM by a moment and be left to init to reap; killed first, from the
		// leaves up, they are reaped by their own parents.
		levels := testproc.Descendants(beam)
		for i := len(levels) - 1; i >= 0; i-- {
			var pids []int
			for _, h := range levels[i] {
				if syscall.Kill(h, syscall.SIGKILL) == nil {
					pids = append(pids, h)
				}
			}
			testproc.WaitReaped(pids, time.Now().Add(2*time.Second))
		}
	}
	_, err := n.Kill()
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p != nil {
		err = errors.Join(err, killGroup(p))
	}
	return err
}

// copyCtl writes a copy of Debian's ejabberdctl that runs as the current user and, when
// EJABBERDTEST_EXEC is set, replaces itself with the Erlang VM (exec) instead of running
// it as a child, so that a node's VM is the very process the test started.
func copyCtl(orig, dst string) error {
	data, err := os.ReadFile(orig)
	if err != nil {
		return err
	}
	for _, r := range [][2]string{
		{"\nINSTALLUSER=ejabberd\n", "\nINSTALLUSER=\n"},
		{"\n    exec_cmd \"$ERL\" ${S:--}name \"$NODE\" $ERLANG_OPTS \"$@\"\n",
			"\n    [ -n \"$EJABBERDTEST_EXEC\" ] && exec \"$ERL\" ${S:--}name \"$NODE\" $ERLANG_OPTS \"$@\"" +
				"\n    exec_cmd \"$ERL\" ${S:--}name \"$NODE\" $ERLANG_OPTS \"$@\"\n"},
	} {
		if !bytes.Contains(data, []byte(r[0])) {
			return fmt.Errorf("%s has no line %q to patch; not Debian's ejabberdctl 23.01?", orig, strings.TrimSpace(r[0]))
		}
		data = bytes.Replace(data, []byte(r[0]), []byte(r[1]), 1)
	}
	return os.WriteFile(dst, data, 0o700)
}

// acquireLock takes the machine-wide lock that lets one cluster run at a time.
func acquireLock(t testing.TB) (*os.File, error) {
	path := filepath.Join(os.TempDir(), "ejabberdtest.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(LockTimeout)
	logged := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("another ejabberd cluster held %s for %v", path, LockTimeout)
		}
		if !logged {
			t.Logf("ejabberdtest: waiting for another ejabberd cluster to finish (%s)", path)
			logged = true
		}
		time.Sleep(50 * time.Millisecond) // polling the lock
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// lookTool returns the path of an installed program, or skips (fails under CI) the test.
func lookTool(t testing.TB, name string) string {
	t.Helper()
	return testproc.RequireTool(t, name, fmt.Sprintf("ejabberdtest: %s not installed (Debian: apt-get install ejabberd)", name))
}
