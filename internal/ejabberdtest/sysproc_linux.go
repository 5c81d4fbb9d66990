//go:build linux

package ejabberdtest

import "syscall"

// sysProcAttr puts a child in its own process group and has the kernel SIGKILL it when
// the test process dies. (Pdeathsig fires when the thread that started the child ends;
// the Go runtime ends threads only for goroutines that exit while locked to theirs,
// which nothing here does.)
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
