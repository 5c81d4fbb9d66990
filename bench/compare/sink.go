package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/mdclient/mdclient/internal/testproc"
	"github.com/mdclient/mdclient/mdtest"
)

// The FAKE sink: mdtest.NewSink, a fake MQTT 5 server that answers every QoS 1 PUBLISH
// with PUBACK 0x00 at once and routes nothing (Receive Maximum 65535, no Topic Alias
// Maximum). It runs in a process of its own — this program re-executed with -serve-sink —
// so that the CPU time of the publishing process is the client's alone.

// serveSink is the -serve-sink process: it prints the sink's tcp:// address on a line of
// its own and serves until it is signalled (or, started by sinkProcess, its parent dies).
func serveSink() error {
	s, err := mdtest.NewSink()
	if err != nil {
		return err
	}
	fmt.Println(s.TCPAddr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	return s.Close()
}

// sinkProc is a FAKE sink process started by startSink.
type sinkProc struct {
	proc *testproc.Process
	addr string // host:port
}

// startSink starts this program again with -serve-sink and waits for the address it prints.
func startSink() (*sinkProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	cmd := exec.Command(exe, "-serve-sink")
	cmd.Stdout, cmd.Stderr = w, os.Stderr
	p, err := testproc.StartGroup(cmd) // the kernel kills it should this process die first
	w.Close()
	if err != nil {
		return nil, err
	}
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(r).ReadString('\n')
		line <- strings.TrimSpace(l)
	}()
	select {
	case l := <-line:
		addr, ok := strings.CutPrefix(l, "tcp://")
		if !ok {
			p.Kill()
			<-p.Done()
			return nil, fmt.Errorf("FAKE sink process printed %q, not its address", l)
		}
		return &sinkProc{proc: p, addr: addr}, nil
	case <-time.After(10 * time.Second):
		p.Kill()
		<-p.Done()
		return nil, errors.New("FAKE sink process: no address after 10s")
	}
}

func (s *sinkProc) target() target {
	return target{name: "FAKE sink", tcpAddrs: []string{s.addr}, pids: []int{s.proc.Pid()}}
}

func (s *sinkProc) close() {
	s.proc.Kill()
	<-s.proc.Done()
}
