//go:build unix

// Package testproc starts and controls the helper processes of tests and
// benchmarks (brokers and their tools): it starts a process and reaps it in
// the background, kills it (with its process group where it has one), freezes
// and thaws it, waits until it accepts TCP connections, reserves loopback
// ports, reads process states from /proc and finds installed tools.
//
// Everything here returns errors, so that programs other than tests can use
// it; only [RequireTool] ends a test, through the [TB] it is given.
package testproc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// pollInterval is the pause between two probes of a state that has no event
// to wait for (a listener, a /proc entry).
const pollInterval = 10 * time.Millisecond

// Process is a started child process, reaped in the background. Its methods
// are safe for concurrent use.
type Process struct {
	cmd   *exec.Cmd
	group bool // started by StartGroup: Kill kills the process group
	done  chan struct{}
	err   error // result of cmd.Wait, set before done is closed
}

// Start starts cmd and reaps it in the background, so that [Process.Done]
// tells when it has exited. cmd is used as given; see [StartGroup] for a
// process that must not outlive its parent.
func Start(cmd *exec.Cmd) (*Process, error) {
	return start(cmd, false)
}

// StartGroup starts cmd like [Start], but in a process group of its own,
// which [Process.Kill] kills as a whole, and (on Linux) with the kernel
// SIGKILLing it should the calling program die first: a test binary killed by
// its timeout leaves nothing behind. It replaces cmd.SysProcAttr.
func StartGroup(cmd *exec.Cmd) (*Process, error) {
	cmd.SysProcAttr = groupAttr()
	return start(cmd, true)
}

func start(cmd *exec.Cmd, group bool) (*Process, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{cmd: cmd, group: group, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Pid returns the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done returns a channel that is closed once the process has exited and been
// reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited and been reaped.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err returns the result of waiting for the process (nil for exit status 0,
// an *exec.ExitError otherwise), or nil while it has not exited.
func (p *Process) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// Kill sends SIGKILL to the process and, if it was started by [StartGroup],
// to its process group. It does not wait: [Process.Done] is closed once the
// process is reaped. Killing a process that has exited does nothing.
func (p *Process) Kill() {
	if p.Exited() {
		return
	}
	if p.group {
		_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
	}
	// Also on its own: a child may have left the group.
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
}

// Stop sends SIGSTOP and returns once /proc shows the process stopped: from
// then on it answers nothing, though the kernel still completes TCP
// handshakes on its listeners. It returns at once if the process has exited
// or there is no /proc to ask, and an error if timeout passes first.
func (p *Process) Stop(timeout time.Duration) error {
	return p.signalAndWait(syscall.SIGSTOP, true, timeout)
}

// Continue sends SIGCONT to a process frozen by [Process.Stop] and returns
// once /proc shows it no longer stopped, like Stop.
func (p *Process) Continue(timeout time.Duration) error {
	return p.signalAndWait(syscall.SIGCONT, false, timeout)
}

// signalAndWait sends sig and polls /proc until the process is (stopped) or
// is no longer (!stopped) in state 'T': the kernel delivers the signal
// asynchronously and has no event for the state change.
func (p *Process) signalAndWait(sig syscall.Signal, stopped bool, timeout time.Duration) error {
	if p.Exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for !p.Exited() {
		st, ok := ReadStat(p.Pid())
		if !ok || (st.State == 'T') == stopped {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d: state %c %v after sending %v", p.Pid(), st.State, timeout, sig)
		}
		time.Sleep(time.Millisecond) // polling the process state
	}
	return nil
}

// ErrExited reports that a process exited before it accepted connections,
// typically because one of its ports was taken.
var ErrExited = errors.New("process exited before accepting connections")

// WaitAccepting waits until every one of addrs accepts TCP connections. It
// returns an error wrapping [ErrExited] once the process has exited, even if
// the addresses accept, because then a stranger that took a port answers,
// and one wrapping os.ErrDeadlineExceeded if deadline passes first. It does
// not kill the process.
func (p *Process) WaitAccepting(deadline time.Time, addrs ...string) error {
	for {
		ready := true
		for _, a := range addrs {
			if !Accepts(a) {
				ready = false
				break
			}
		}
		// Checked after the probes: see above.
		if p.Exited() {
			return fmt.Errorf("%w (%v)", ErrExited, p.err)
		}
		if ready {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%v not accepting connections: %w", addrs, os.ErrDeadlineExceeded)
		}
		timer := time.NewTimer(pollInterval)
		select {
		case <-p.done:
		case <-timer.C:
		}
		timer.Stop()
	}
}
