//go:build linux

package testproc

import "syscall"

// groupAttr puts a child in its own process group and has the kernel SIGKILL
// it when the parent dies. (Pdeathsig fires when the thread that started the
// child ends; the Go runtime ends threads only for goroutines that exit while
// locked to theirs, which callers of this package do not do.)
func groupAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
