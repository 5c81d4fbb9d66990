//go:build unix

// Package mosquittotest starts and controls real mosquitto MQTT brokers from
// Go tests.
//
// [Start] writes a throw-away mosquitto configuration (plus password and ACL
// files) into t.TempDir(), starts /usr/sbin/mosquitto with one plain MQTT
// listener and one WebSocket listener, both bound to 127.0.0.1 on free ports
// (plus, when [Config].TLS names certificate files, one MQTT-over-TLS and one
// secure WebSocket listener), and waits until every listener accepts TCP
// connections. The broker is killed by t.Cleanup. The returned [Broker] can be
// killed, restarted on the same ports, and frozen/unfrozen with SIGSTOP/SIGCONT
// to simulate an unresponsive server.
//
// [Broker.Subscribe] runs mosquitto_sub as an independent MQTT 5 subscriber
// and parses what it receives into [Msg] values; [Broker.Publish] runs
// mosquitto_pub.
//
// If the mosquitto binaries are missing the calling test is skipped, unless
// the environment variable CI is non-empty, in which case it fails.
//
// Notes on Debian's mosquitto 2.0.11 that shaped this package:
//
//   - A "protocol websockets" listener ignores its bind address unless the
//     listener also says "socket_domain ipv4"; the generated configuration
//     does so, keeping the WebSocket listener on loopback.
//   - Started as root, mosquitto switches to user "mosquitto" before reading
//     password_file and acl_file, which live in a root-only temp directory; the
//     generated configuration therefore says "user root" (which is ignored when
//     the test does not run as root).
//   - mosquitto_sub block-buffers its standard output when it is a pipe, so it
//     is run under stdbuf(1) -o0 (GNU coreutils), which is required.
package mosquittotest

import (
	"bytes"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mdclient/mdclient/internal/testproc"
)

// readyTimeout bounds every wait in this package: broker readiness, subscriber
// readiness, process state changes and [Sub.Next].
const readyTimeout = 10 * time.Second

// pollInterval is the pause before [Broker.Restart] tries again.
const pollInterval = 10 * time.Millisecond

// Config describes the broker started by [Start]. The zero value is a broker
// that accepts anonymous clients and has no ACL.
type Config struct {
	// Users maps user names to passwords. They are written to a
	// password_file in mosquitto's own PBKDF2-SHA512 format. User names must
	// not contain ':' or line breaks.
	Users map[string]string

	// ACL is the contents of the acl_file, in mosquitto's acl_file syntax
	// ("user NAME", "topic read|write|readwrite FILTER", "pattern ...").
	// The empty string means no acl_file, i.e. every authenticated client
	// may publish and subscribe to everything.
	ACL string

	// MaxInflight sets max_inflight_messages, which mosquitto also announces
	// as Receive Maximum in MQTT 5 CONNACKs. 0 keeps mosquitto's default (20).
	MaxInflight int

	// AllowAnonymous lets clients connect without a user name. It is implied
	// when Users is empty, because such a broker could not be used otherwise.
	AllowAnonymous bool

	// Extra is appended verbatim to the general section of the
	// configuration, before the listener lines; for example
	// "log_type all\n" or "max_packet_size 1000\n".
	Extra string

	// TLS, when non-nil, adds two listeners on free ports of 127.0.0.1
	// secured with its certificate: MQTT over TLS ([Broker.TLSAddr]) and
	// MQTT over secure WebSocket ([Broker.WSSAddr]).
	TLS *TLSFiles
}

// TLSFiles names the PEM files of a TLS listener. mosquitto reads them when
// it starts (as root in the tests: see the package documentation), so they
// must stay in place until the broker is killed; t.TempDir() is a good home.
type TLSFiles struct {
	CAFile   string // the CA certificate(s): mosquitto's cafile
	CertFile string // the server's certificate (chain): certfile
	KeyFile  string // the server's private key, unencrypted: keyfile
}

// Broker is a running (or killed) mosquitto process started by [Start].
// Its methods are safe for concurrent use.
type Broker struct {
	bin      string // path of the mosquitto executable
	dir      string // temp directory holding the configuration files
	confPath string
	logPath  string

	tls *TLSFiles // nil: no TLS listeners

	mu      sync.Mutex
	tcpPort int
	wsPort  int
	tlsPort int               // 0 without TLS
	wssPort int               // 0 without TLS
	proc    *testproc.Process // nil before the first start
}

// kill sends SIGKILL (which also ends a stopped process) and waits until the
// process has been reaped.
func kill(p *testproc.Process) {
	p.Kill()
	<-p.Done()
}

// Start starts a mosquitto broker configured by cfg, with an MQTT listener
// and a WebSocket listener on free ports of 127.0.0.1 (and, with cfg.TLS, an
// MQTT-over-TLS and a secure WebSocket listener too). It returns once every
// listener accepts TCP connections, and registers a t.Cleanup that kills the
// broker and waits for it to exit (logging the broker's output if the test
// failed). If mosquitto is not installed, the test is skipped, or failed when
// the environment variable CI is non-empty.
func Start(t testing.TB, cfg Config) *Broker {
	t.Helper()
	bin := lookTool(t, "mosquitto")
	dir := t.TempDir()
	b := &Broker{
		bin:      bin,
		dir:      dir,
		confPath: filepath.Join(dir, "mosquitto.conf"),
		logPath:  filepath.Join(dir, "mosquitto.log"),
		tls:      cfg.TLS,
	}
	if cfg.TLS != nil && (cfg.TLS.CAFile == "" || cfg.TLS.CertFile == "" || cfg.TLS.KeyFile == "") {
		t.Fatalf("mosquittotest: Config.TLS needs CAFile, CertFile and KeyFile: %+v", *cfg.TLS)
	}
	general, err := writeAuthFiles(dir, cfg)
	if err != nil {
		t.Fatalf("mosquittotest: %v", err)
	}
	t.Cleanup(func() {
		b.Kill()
		if t.Failed() {
			t.Logf("mosquittotest: broker log (%s):\n%s", b.logPath, b.Log())
		}
	})

	// A port picked by listening on :0 may be taken by someone else before
	// mosquitto binds it; in that case mosquitto exits and we try new ports.
	const attempts = 5
	for i := 1; ; i++ {
		n := 2
		if b.tls != nil {
			n = 4
		}
		ports, err := testproc.FreePorts(n)
		if err != nil {
			t.Fatalf("mosquittotest: picking ports: %v", err)
		}
		b.mu.Lock()
		b.tcpPort, b.wsPort = ports[0], ports[1]
		if b.tls != nil {
			b.tlsPort, b.wssPort = ports[2], ports[3]
		}
		err = b.writeConfig(general)
		if err == nil {
			err = b.startLocked(time.Now().Add(readyTimeout))
		}
		b.mu.Unlock()
		if err == nil {
			return b
		}
		if i == attempts || !errors.Is(err, errExited) {
			t.Fatalf("mosquittotest: starting mosquitto: %v\nlog:\n%s", err, b.Log())
		}
		t.Logf("mosquittotest: attempt %d: %v; retrying on other ports", i, err)
	}
}

// SetPasswords rewrites the password file with users (the ACL stays); mosquitto reads it
// when it restarts (see Restart), so that a test can change a password while clients run.
func (b *Broker) SetPasswords(t testing.TB, users map[string]string) {
	t.Helper()
	var pw bytes.Buffer
	for user, pass := range users {
		line, err := passwordLine(user, pass)
		if err != nil {
			t.Fatalf("mosquittotest: %v", err)
		}
		pw.WriteString(line)
	}
	path := filepath.Join(b.dir, "passwd")
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("mosquittotest: the broker has no password file (Config.Users was empty): %v", err)
	}
	if err := os.WriteFile(path, pw.Bytes(), 0o600); err != nil {
		t.Fatalf("mosquittotest: %v", err)
	}
}

// errExited reports that mosquitto exited before its listeners were ready,
// typically because a port was already in use.
var errExited = errors.New("mosquitto exited before becoming ready")

// writeAuthFiles writes the password and ACL files and returns the general
// configuration lines referring to them.
func writeAuthFiles(dir string, cfg Config) (string, error) {
	var conf strings.Builder
	// Read password_file and acl_file as root instead of switching to the
	// "mosquitto" user first; ignored when not running as root.
	conf.WriteString("user root\n")
	conf.WriteString("persistence false\n")
	conf.WriteString("log_dest stderr\n")
	conf.WriteString("log_timestamp_format %Y-%m-%dT%H:%M:%S\n")
	conf.WriteString("connection_messages true\n")
	anon := cfg.AllowAnonymous || len(cfg.Users) == 0
	fmt.Fprintf(&conf, "allow_anonymous %t\n", anon)
	if len(cfg.Users) > 0 {
		var pw bytes.Buffer
		for user, pass := range cfg.Users {
			if user == "" || strings.ContainsAny(user, ":\r\n") {
				return "", fmt.Errorf("invalid user name %q for a mosquitto password file", user)
			}
			line, err := passwordLine(user, pass)
			if err != nil {
				return "", err
			}
			pw.WriteString(line)
		}
		path := filepath.Join(dir, "passwd")
		if err := os.WriteFile(path, pw.Bytes(), 0o600); err != nil {
			return "", err
		}
		fmt.Fprintf(&conf, "password_file %s\n", path)
	}
	if cfg.ACL != "" {
		path := filepath.Join(dir, "acl")
		acl := cfg.ACL
		if !strings.HasSuffix(acl, "\n") {
			acl += "\n"
		}
		if err := os.WriteFile(path, []byte(acl), 0o600); err != nil {
			return "", err
		}
		fmt.Fprintf(&conf, "acl_file %s\n", path)
	}
	if cfg.MaxInflight < 0 {
		return "", fmt.Errorf("negative MaxInflight %d", cfg.MaxInflight)
	}
	if cfg.MaxInflight > 0 {
		fmt.Fprintf(&conf, "max_inflight_messages %d\n", cfg.MaxInflight)
	}
	if cfg.Extra != "" {
		conf.WriteString(cfg.Extra)
		if !strings.HasSuffix(cfg.Extra, "\n") {
			conf.WriteString("\n")
		}
	}
	return conf.String(), nil
}

// passwordLine returns "user:$7$101$salt$hash\n", the PBKDF2-SHA512 entry
// that mosquitto_passwd 2.x writes by default.
func passwordLine(user, pass string) (string, error) {
	const iterations = 101
	salt := make([]byte, 12)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key, err := pbkdf2.Key(sha512.New, pass, salt, iterations, sha512.Size)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s:$7$%d$%s$%s\n", user, iterations,
		base64.StdEncoding.EncodeToString(salt),
		base64.StdEncoding.EncodeToString(key)), nil
}

// writeConfig writes mosquitto.conf for the current ports. b.mu is held.
func (b *Broker) writeConfig(general string) error {
	var conf strings.Builder
	conf.WriteString("# generated by mosquittotest\n")
	conf.WriteString(general)
	fmt.Fprintf(&conf, "\nlistener %d 127.0.0.1\n", b.tcpPort)
	// Without socket_domain ipv4 a websockets listener binds every
	// interface regardless of the address given here.
	fmt.Fprintf(&conf, "\nlistener %d 127.0.0.1\nprotocol websockets\nsocket_domain ipv4\n", b.wsPort)
	if b.tls != nil {
		files := fmt.Sprintf("cafile %s\ncertfile %s\nkeyfile %s\n", b.tls.CAFile, b.tls.CertFile, b.tls.KeyFile)
		fmt.Fprintf(&conf, "\nlistener %d 127.0.0.1\n%s", b.tlsPort, files)
		fmt.Fprintf(&conf, "\nlistener %d 127.0.0.1\nprotocol websockets\nsocket_domain ipv4\n%s", b.wssPort, files)
	}
	return os.WriteFile(b.confPath, []byte(conf.String()), 0o600)
}

// startLocked starts mosquitto with the current configuration and waits
// until both listeners accept connections or deadline passes. b.mu is held.
func (b *Broker) startLocked(deadline time.Time) error {
	logFile, err := os.OpenFile(b.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	tlsPorts := ""
	if b.tls != nil {
		tlsPorts = fmt.Sprintf(", tls %d, wss %d", b.tlsPort, b.wssPort)
	}
	fmt.Fprintf(logFile, "--- mosquittotest: starting %s -c %s (mqtt %d, websockets %d%s)\n",
		b.bin, b.confPath, b.tcpPort, b.wsPort, tlsPorts)
	cmd := exec.Command(b.bin, "-c", b.confPath)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	p, err := testproc.Start(cmd)
	logFile.Close() // the child holds its own descriptor
	if err != nil {
		return err
	}
	b.proc = p

	addrs := []string{b.tcpHostPort(), b.wsHostPort()}
	if b.tls != nil {
		addrs = append(addrs, b.tlsHostPort(), b.wssHostPort())
	}
	// WaitAccepting fails once mosquitto has exited: connections must have
	// reached our mosquitto, not a stranger that grabbed a port ours failed
	// to bind.
	err = p.WaitAccepting(deadline, addrs...)
	if errors.Is(err, testproc.ErrExited) {
		return fmt.Errorf("%w (%v)", errExited, p.Err())
	}
	if err != nil {
		kill(p)
		return fmt.Errorf("listeners %v not accepting connections after %v", addrs, readyTimeout)
	}
	return nil
}

func (b *Broker) tcpHostPort() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(b.tcpPort)) }
func (b *Broker) wsHostPort() string  { return net.JoinHostPort("127.0.0.1", strconv.Itoa(b.wsPort)) }
func (b *Broker) tlsHostPort() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(b.tlsPort)) }
func (b *Broker) wssHostPort() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(b.wssPort)) }

// TLSAddr returns the URL of the MQTT-over-TLS listener,
// "tls://127.0.0.1:PORT", or "" when Config.TLS was nil. Its certificate is
// Config.TLS.CertFile; clients must trust Config.TLS.CAFile.
func (b *Broker) TLSAddr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tls == nil {
		return ""
	}
	return "tls://" + b.tlsHostPort()
}

// WSSAddr returns the URL of the secure WebSocket listener,
// "wss://127.0.0.1:PORT/mqtt", or "" when Config.TLS was nil.
func (b *Broker) WSSAddr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tls == nil {
		return ""
	}
	return "wss://" + b.wssHostPort() + "/mqtt"
}

// TLSHostPort returns "127.0.0.1:PORT" of the MQTT-over-TLS listener, for
// tls.Dial, or "" when Config.TLS was nil.
func (b *Broker) TLSHostPort() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tls == nil {
		return ""
	}
	return b.tlsHostPort()
}

// TCPAddr returns the URL of the plain MQTT listener, "tcp://127.0.0.1:PORT".
func (b *Broker) TCPAddr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return "tcp://" + b.tcpHostPort()
}

// WSAddr returns the URL of the WebSocket listener,
// "ws://127.0.0.1:PORT/mqtt". mosquitto accepts any path; clients must offer
// the WebSocket subprotocol "mqtt".
func (b *Broker) WSAddr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return "ws://" + b.wsHostPort() + "/mqtt"
}

// TCPHostPort returns "127.0.0.1:PORT" of the plain MQTT listener, for
// net.Dial.
func (b *Broker) TCPHostPort() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.tcpHostPort()
}

// WSHostPort returns "127.0.0.1:PORT" of the WebSocket listener, for
// net.Dial.
func (b *Broker) WSHostPort() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.wsHostPort()
}

// TCPPort returns the port of the plain MQTT listener.
func (b *Broker) TCPPort() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.tcpPort
}

// WSPort returns the port of the WebSocket listener.
func (b *Broker) WSPort() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.wsPort
}

// Dir returns the temporary directory holding mosquitto.conf, the password
// and ACL files and mosquitto.log.
func (b *Broker) Dir() string { return b.dir }

// Log returns everything mosquitto has logged so far, across restarts.
func (b *Broker) Log() string {
	data, err := os.ReadFile(b.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", b.logPath, err)
	}
	return string(data)
}

// Running reports whether the mosquitto process is alive (possibly stopped).
func (b *Broker) Running() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.proc != nil && !b.proc.Exited()
}

// Kill sends SIGKILL to mosquitto and waits until it has exited, so its ports
// refuse connections when Kill returns. Killing a dead broker does nothing.
func (b *Broker) Kill() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.proc != nil {
		kill(b.proc)
	}
}

// Terminate sends SIGTERM, mosquitto's orderly shutdown, and returns once the process has
// exited. Restart starts it again.
func (b *Broker) Terminate() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.proc != nil {
		syscall.Kill(b.proc.Pid(), syscall.SIGTERM)
		<-b.proc.Done()
	}
}

// Stop sends SIGSTOP to mosquitto and returns once the process is stopped:
// its sockets stay open and the kernel still completes TCP handshakes, but the
// broker answers nothing until [Broker.Continue].
func (b *Broker) Stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.proc != nil {
		_ = b.proc.Stop(readyTimeout)
	}
}

// Continue sends SIGCONT to a broker frozen by [Broker.Stop] and returns once
// the process is running again.
func (b *Broker) Continue() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.proc != nil {
		_ = b.proc.Continue(readyTimeout)
	}
}

// Restart starts mosquitto again with the same configuration and the same
// ports, typically after [Broker.Kill], and waits until both listeners accept
// connections. A broker that is still running is killed first. If a port
// cannot be bound (for instance because another process took it meanwhile)
// Restart keeps trying until its deadline and then fails the test.
func (b *Broker) Restart(t testing.TB) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.proc != nil {
		kill(b.proc)
	}
	deadline := time.Now().Add(readyTimeout)
	for {
		err := b.startLocked(deadline)
		if err == nil {
			return
		}
		if !errors.Is(err, errExited) || time.Now().After(deadline) {
			t.Fatalf("mosquittotest: restarting mosquitto: %v\nlog:\n%s", err, b.Log())
		}
		time.Sleep(pollInterval) // retry until the ports are free again
	}
}

// lookTool returns the path of an installed program, or skips (fails under
// CI) the test.
func lookTool(t testing.TB, name string) string {
	t.Helper()
	return testproc.RequireTool(t, name,
		fmt.Sprintf("mosquittotest: %s not installed (Debian: apt-get install mosquitto mosquitto-clients)", name))
}
