//go:build unix

package testproc

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Stat is what this package reads from /proc/PID/stat.
type Stat struct {
	State byte // 'R' running, 'S' sleeping, 'T' stopped, 'Z' zombie, ...
	PPid  int  // the parent's process id
}

// ReadStat reads /proc/PID/stat (Linux). ok is false when pid does not exist,
// not even as a zombie, or there is no procfs.
func ReadStat(pid int) (st Stat, ok bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, false
	}
	// "PID (comm) S PPID ..."; comm may contain spaces and parentheses.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return Stat{}, false
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 2 || len(f[0]) != 1 {
		return Stat{}, false
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return Stat{}, false
	}
	return Stat{State: f[0][0], PPid: ppid}, true
}

// Alive reports whether pid is a process that has not exited; a zombie has.
// Without procfs it asks the kernel, which counts zombies as alive.
func Alive(pid int) bool {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	st, ok := ReadStat(pid)
	return ok && st.State != 'Z' && st.State != 'X'
}

// Descendants returns the descendants of pid by depth: its children, then
// their children, and so on. It reads /proc; without it there are none.
func Descendants(pid int) [][]int {
	if pid <= 0 {
		return nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := ReadStat(p); ok {
			children[st.PPid] = append(children[st.PPid], p)
		}
	}
	var levels [][]int
	for level := children[pid]; len(level) > 0; {
		levels = append(levels, level)
		var next []int
		for _, p := range level {
			next = append(next, children[p]...)
		}
		level = next
	}
	return levels
}

// WaitGone waits until none of pids is [Alive], and returns those still
// alive when deadline passes. The pids need not be children of this process:
// there is no event to wait for, so it polls.
func WaitGone(pids []int, deadline time.Time) []int {
	for {
		var left []int
		for _, p := range pids {
			if Alive(p) {
				left = append(left, p)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(pollInterval) // polling the process states
	}
}

// WaitReaped waits until none of pids exists any more, not even as a zombie
// (its parent has reaped it), and returns those still there when deadline
// passes.
func WaitReaped(pids []int, deadline time.Time) []int {
	for {
		var left []int
		for _, p := range pids {
			if _, ok := ReadStat(p); ok {
				left = append(left, p)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(time.Millisecond) // polling: a parent reaps its children quickly
	}
}
