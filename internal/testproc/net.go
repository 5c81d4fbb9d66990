//go:build unix

package testproc

import (
	"net"
	"time"
)

// Accepts reports whether a TCP connection to addr succeeds within a second.
func Accepts(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// FreePorts returns n distinct TCP ports that were free on 127.0.0.1 a
// moment ago. Someone else may take one before the caller binds it, so
// callers retry on new ports when their process fails to bind.
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		// Held until all are picked, so that the kernel hands out n different ones.
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
