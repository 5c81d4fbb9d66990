//go:build linux

package testproc

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testTimeout bounds every wait of these tests; none should come near it.
const testTimeout = 10 * time.Second

// startT starts cmd with start (Start or StartGroup) and kills it, and waits
// for it, when the test ends.
func startT(t *testing.T, start func(*exec.Cmd) (*Process, error), cmd *exec.Cmd) *Process {
	t.Helper()
	p, err := start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Kill()
		<-p.Done()
	})
	return p
}

// waitDone fails the test unless p exits within testTimeout.
func waitDone(t *testing.T, p *Process) {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(testTimeout):
		t.Fatalf("process %d has not exited after %v", p.Pid(), testTimeout)
	}
}

// pidPipe gives cmd a pipe as its standard output and returns a function that
// reads the next line from it as a process id (what `echo $!` prints).
func pidPipe(t *testing.T, cmd *exec.Cmd) func() int {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	cmd.Stdout = w
	// The child holds its own copy: once every writer is gone, reads see EOF.
	t.Cleanup(func() { w.Close() })
	br := bufio.NewReader(r)
	return func() int {
		t.Helper()
		w.Close()
		if err := r.SetReadDeadline(time.Now().Add(testTimeout)); err != nil {
			t.Fatal(err)
		}
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading a pid: %v (read %q)", err, line)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(line))
		if err != nil {
			t.Fatal(err)
		}
		return pid
	}
}

func TestExitStatus(t *testing.T) {
	p := startT(t, Start, exec.Command("sh", "-c", "exit 3"))
	waitDone(t, p)
	if !p.Exited() {
		t.Error("Exited() = false after Done")
	}
	var ee *exec.ExitError
	if !errors.As(p.Err(), &ee) || ee.ExitCode() != 3 {
		t.Errorf("Err() = %v, want exit status 3", p.Err())
	}
	p.Kill() // does nothing to an exited process
}

func TestKill(t *testing.T) {
	p := startT(t, Start, exec.Command("sleep", "60"))
	if p.Exited() || p.Err() != nil {
		t.Fatalf("Exited() = %v, Err() = %v for a running process", p.Exited(), p.Err())
	}
	if !Alive(p.Pid()) {
		t.Fatalf("Alive(%d) = false for a running process", p.Pid())
	}
	p.Kill()
	waitDone(t, p)
	var ee *exec.ExitError
	if !errors.As(p.Err(), &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("Err() = %v, want killed by SIGKILL", p.Err())
	}
	if Alive(p.Pid()) {
		t.Errorf("Alive(%d) = true after it was reaped", p.Pid())
	}
	if left := WaitReaped([]int{p.Pid()}, time.Now().Add(testTimeout)); len(left) > 0 {
		t.Errorf("WaitReaped = %v for a reaped child", left)
	}
}

// TestKillGroup shows the difference between Start and StartGroup: only the
// latter's Kill ends the background job of a shell too.
func TestKillGroup(t *testing.T) {
	for _, tc := range []struct {
		name     string
		start    func(*exec.Cmd) (*Process, error)
		survives bool
	}{
		{"Start", Start, true},
		{"StartGroup", StartGroup, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command("sh", "-c", "sleep 60 & echo $!; wait")
			nextPid := pidPipe(t, cmd)
			p := startT(t, tc.start, cmd)
			job := nextPid()
			t.Cleanup(func() { _ = syscall.Kill(job, syscall.SIGKILL) })
			if st, ok := ReadStat(job); !ok || st.PPid != p.Pid() {
				t.Fatalf("ReadStat(%d) = %+v, %v; want the shell %d as parent", job, st, ok, p.Pid())
			}
			p.Kill()
			waitDone(t, p)
			if tc.survives {
				if !Alive(job) {
					t.Errorf("the job %d died with the shell", job)
				}
				return
			}
			if left := WaitGone([]int{job}, time.Now().Add(testTimeout)); len(left) > 0 {
				t.Errorf("the job %d survived Kill of its group", job)
			}
		})
	}
}

// TestGroupDiesWithParent kills a program (this test binary, run again) that
// started a process with StartGroup: the kernel kills that process too.
func TestGroupDiesWithParent(t *testing.T) {
	cmd := helper("groupchild")
	nextPid := pidPipe(t, cmd)
	stdin, err := cmd.StdinPipe() // the helper blocks reading it
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	parent := startT(t, Start, cmd)
	child := nextPid()
	if st, ok := ReadStat(child); !ok || st.PPid != parent.Pid() {
		t.Fatalf("ReadStat(%d) = %+v, %v; want the helper %d as parent", child, st, ok, parent.Pid())
	}
	parent.Kill()
	waitDone(t, parent)
	if left := WaitGone([]int{child}, time.Now().Add(testTimeout)); len(left) > 0 {
		_ = syscall.Kill(child, syscall.SIGKILL)
		t.Errorf("process %d outlived the program that started it", child)
	}
}

func TestStopContinue(t *testing.T) {
	p := startT(t, Start, exec.Command("sleep", "60"))
	if err := p.Stop(testTimeout); err != nil {
		t.Fatal(err)
	}
	if st, _ := ReadStat(p.Pid()); st.State != 'T' {
		t.Errorf("state %c after Stop, want T", st.State)
	}
	if err := p.Continue(testTimeout); err != nil {
		t.Fatal(err)
	}
	if st, _ := ReadStat(p.Pid()); st.State == 'T' {
		t.Error("still stopped after Continue")
	}
	if err := p.Stop(testTimeout); err != nil {
		t.Fatal(err)
	}
	p.Kill() // SIGKILL also ends a stopped process
	waitDone(t, p)
	if err := p.Continue(testTimeout); err != nil {
		t.Errorf("Continue of an exited process: %v", err)
	}
}

// TestReadStatOddName runs a program whose name has spaces and parentheses,
// which /proc/PID/stat shows unquoted.
func TestReadStatOddName(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip(err)
	}
	odd := filepath.Join(t.TempDir(), "a) (b c")
	if err := os.Symlink(sleep, odd); err != nil {
		t.Fatal(err)
	}
	p := startT(t, Start, exec.Command(odd, "60"))
	st, ok := ReadStat(p.Pid())
	if !ok || st.PPid != os.Getpid() || st.State == 0 {
		t.Errorf("ReadStat = %+v, %v; want parent %d", st, ok, os.Getpid())
	}
	if st, ok := ReadStat(os.Getpid()); !ok || st.PPid != os.Getppid() || st.State == 0 {
		t.Errorf("ReadStat(self) = %+v, %v; want parent %d", st, ok, os.Getppid())
	}
	p.Kill()
	waitDone(t, p)
	if st, ok := ReadStat(p.Pid()); ok {
		t.Errorf("ReadStat of a reaped process = %+v, true", st)
	}
}

// TestZombie makes a zombie: a child of this test that has exited and that
// the test has not waited for yet.
func TestZombie(t *testing.T) {
	bin, err := exec.LookPath("true")
	if err != nil {
		t.Skip(err)
	}
	proc, err := os.StartProcess(bin, []string{"true"}, &os.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	zombie := proc.Pid
	if left := WaitGone([]int{zombie}, time.Now().Add(testTimeout)); len(left) > 0 {
		t.Fatalf("%d still alive", zombie)
	}
	if st, ok := ReadStat(zombie); !ok || st.State != 'Z' || st.PPid != os.Getpid() {
		t.Errorf("ReadStat(%d) = %+v, %v; want a zombie child of %d", zombie, st, ok, os.Getpid())
	}
	if left := WaitReaped([]int{zombie}, time.Now()); !slices.Equal(left, []int{zombie}) {
		t.Errorf("WaitReaped before the reaping = %v, want [%d]", left, zombie)
	}
	if _, err := proc.Wait(); err != nil {
		t.Fatal(err)
	}
	if left := WaitReaped([]int{zombie}, time.Now().Add(testTimeout)); len(left) > 0 {
		t.Errorf("WaitReaped after the reaping = %v", left)
	}
}

func TestDescendants(t *testing.T) {
	cmd := exec.Command("sh", "-c", `sh -c 'sleep 60 & echo $!; wait' & wait`)
	nextPid := pidPipe(t, cmd)
	p := startT(t, StartGroup, cmd)
	grandchild := nextPid()
	levels := Descendants(p.Pid())
	if len(levels) != 2 || len(levels[0]) != 1 || !slices.Equal(levels[1], []int{grandchild}) {
		t.Fatalf("Descendants(%d) = %v, want [[inner shell] [%d]]", p.Pid(), levels, grandchild)
	}
	if st, _ := ReadStat(grandchild); st.PPid != levels[0][0] {
		t.Errorf("the grandchild's parent is %d, not %d", st.PPid, levels[0][0])
	}
	if d := Descendants(grandchild); d != nil {
		t.Errorf("Descendants of a sleep = %v", d)
	}
	p.Kill()
	waitDone(t, p)
	if left := WaitGone(slices.Concat(levels...), time.Now().Add(testTimeout)); len(left) > 0 {
		t.Errorf("%v survived Kill of their group", left)
	}
}

func TestFreePortsAndAccepts(t *testing.T) {
	ports, err := FreePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) != 3 || ports[0] == ports[1] || ports[1] == ports[2] || ports[0] == ports[2] {
		t.Fatalf("FreePorts(3) = %v, want 3 distinct ports", ports)
	}
	for _, port := range ports {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if Accepts(addr) {
			t.Errorf("%s accepts before anyone listens", addr)
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("port %d is not free: %v", port, err)
		}
		if !Accepts(addr) {
			t.Errorf("%s does not accept while listening", addr)
		}
		l.Close()
	}
}

// listen returns the address of a new loopback listener, closed at the end of
// the test. The kernel completes handshakes without Accept being called.
func listen(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().String()
}

// closedAddr returns a loopback address that nobody listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ports, err := FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
}

func TestWaitAccepting(t *testing.T) {
	t.Run("ready", func(t *testing.T) {
		p := startT(t, Start, exec.Command("sleep", "60"))
		if err := p.WaitAccepting(time.Now().Add(testTimeout), listen(t), listen(t)); err != nil {
			t.Error(err)
		}
	})
	t.Run("listener comes later", func(t *testing.T) {
		p := startT(t, Start, exec.Command("sleep", "60"))
		addr := closedAddr(t)
		result := make(chan error, 1)
		go func() { result <- p.WaitAccepting(time.Now().Add(testTimeout), addr) }()
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if err := <-result; err != nil {
			t.Error(err)
		}
	})
	t.Run("exited", func(t *testing.T) {
		// Exited before the call: what accepts is not this process.
		p := startT(t, Start, exec.Command("true"))
		waitDone(t, p)
		if err := p.WaitAccepting(time.Now().Add(testTimeout), listen(t)); !errors.Is(err, ErrExited) {
			t.Errorf("got %v, want ErrExited", err)
		}
	})
	t.Run("exits while waiting", func(t *testing.T) {
		cmd := exec.Command("sh", "-c", "read line")
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		p := startT(t, Start, cmd)
		result := make(chan error, 1)
		go func() { result <- p.WaitAccepting(time.Now().Add(time.Hour), closedAddr(t)) }()
		stdin.Close() // read sees EOF: the shell exits 1
		select {
		case err := <-result:
			if !errors.Is(err, ErrExited) || !strings.Contains(err.Error(), "exit status 1") {
				t.Errorf("got %v, want ErrExited with exit status 1", err)
			}
		case <-time.After(testTimeout):
			t.Fatal("WaitAccepting did not notice the exit")
		}
	})
	t.Run("deadline", func(t *testing.T) {
		p := startT(t, Start, exec.Command("sleep", "60"))
		err := p.WaitAccepting(time.Now().Add(50*time.Millisecond), listen(t), closedAddr(t))
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("got %v, want os.ErrDeadlineExceeded", err)
		}
	})
}

func TestLookTool(t *testing.T) {
	if p, err := LookTool("sh"); err != nil || !filepath.IsAbs(p) {
		t.Errorf("LookTool(sh) = %q, %v", p, err)
	}
	if p, err := LookTool("testproc-no-such-program"); !errors.Is(err, exec.ErrNotFound) {
		t.Errorf("LookTool of a missing program = %q, %v; want exec.ErrNotFound", p, err)
	}
	// Outside PATH, in one of the usual directories, as brokers in sbin are.
	var dir string
	for _, d := range toolDirs {
		if _, err := os.Stat(filepath.Join(d, "sh")); err == nil {
			dir = d
			break
		}
	}
	if dir == "" {
		t.Skip("no sh in", toolDirs)
	}
	t.Setenv("PATH", t.TempDir())
	if p, err := LookTool("sh"); err != nil || p != filepath.Join(dir, "sh") {
		t.Errorf("LookTool(sh) without PATH = %q, %v; want %s", p, err, filepath.Join(dir, "sh"))
	}
}

func TestRequireTool(t *testing.T) {
	if p := RequireTool(t, "sh", "no sh"); !filepath.IsAbs(p) {
		t.Errorf("RequireTool(sh) = %q", p)
	}
}

// TestRequireToolMissing runs a test that requires a missing program in a
// test binary of its own: skipped, or failed under CI.
func TestRequireToolMissing(t *testing.T) {
	for _, tc := range []struct{ ci, want string }{
		{"", "--- SKIP: TestHelperProcess"},
		{"true", "--- FAIL: TestHelperProcess"},
	} {
		cmd := helper("requiretool")
		cmd.Args = append(cmd.Args, "-test.v") // to see "--- SKIP"
		cmd.Env = append(cmd.Env, "CI="+tc.ci) // the last one counts
		out, _ := cmd.CombinedOutput()
		if !strings.Contains(string(out), tc.want) || !strings.Contains(string(out), "testproc-no-such-program is missing") {
			t.Errorf("CI=%q: want %q and the message in:\n%s", tc.ci, tc.want, out)
		}
		if strings.Contains(string(out), "RequireTool returned") {
			t.Errorf("CI=%q: RequireTool returned for a missing program:\n%s", tc.ci, out)
		}
	}
}

// helper returns a command that runs this test binary's TestHelperProcess as
// role. Without -test.v, what the helper prints comes first on its output.
func helper(role string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "TESTPROC_HELPER="+role)
	return cmd
}

// TestHelperProcess is not a test of its own: other tests run it in a new
// process, to watch what a program using this package does.
func TestHelperProcess(t *testing.T) {
	switch role := os.Getenv("TESTPROC_HELPER"); role {
	case "":
		t.Skip("run by other tests")
	case "requiretool":
		RequireTool(t, "testproc-no-such-program", "testproc-no-such-program is missing")
		t.Log("RequireTool returned")
	case "groupchild":
		p, err := StartGroup(exec.Command("sleep", "60"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Println(p.Pid())
		_, _ = io.Copy(io.Discard, os.Stdin) // until the parent test kills this process
		p.Kill()
		<-p.Done()
	default:
		t.Fatalf("unknown role %q", role)
	}
}
