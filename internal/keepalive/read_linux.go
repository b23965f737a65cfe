//go:build linux

package keepalive

import (
	"net"
	"syscall"
	"time"
)

// Read returns the keepalive settings of a connection as the kernel
// holds them (SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT):
// what a listener handed to the sockets it accepted, or a dialer set.
func Read(c *net.TCPConn) (net.KeepAliveConfig, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return net.KeepAliveConfig{}, err
	}
	var v [4]int
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		for i, o := range [...]struct{ level, name int }{
			{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE},
			{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE},
			{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL},
			{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT},
		} {
			if v[i], gerr = syscall.GetsockoptInt(int(fd), o.level, o.name); gerr != nil {
				return
			}
		}
	}); err != nil {
		return net.KeepAliveConfig{}, err
	}
	if gerr != nil {
		return net.KeepAliveConfig{}, gerr
	}
	return net.KeepAliveConfig{
		Enable:   v[0] != 0,
		Idle:     time.Duration(v[1]) * time.Second,
		Interval: time.Duration(v[2]) * time.Second,
		Count:    v[3],
	}, nil
}
