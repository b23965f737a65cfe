//go:build linux

package main

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestKeepaliveInherited checks what listen relies on: Linux gives every
// accepted socket the listener's keepalive settings.
func TestKeepaliveInherited(t *testing.T) {
	for _, tc := range []struct {
		k               time.Duration
		on, idle, intvl int
	}{
		{30 * time.Second, 1, 30, 6},
		{2 * time.Second, 1, 2, 1},
		{0, 0, -1, -1},
	} {
		lc := keepaliveListenConfig(tc.k)
		ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		a, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		rc, err := a.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		get := func(level, name int) int {
			var v int
			var gerr error
			if err := rc.Control(func(fd uintptr) { v, gerr = syscall.GetsockoptInt(int(fd), level, name) }); err != nil {
				t.Fatal(err)
			}
			if gerr != nil {
				t.Fatal(gerr)
			}
			return v
		}
		if on := get(syscall.SOL_SOCKET, syscall.SO_KEEPALIVE); on != tc.on {
			t.Errorf("keepalive %v: accepted socket SO_KEEPALIVE = %d, want %d", tc.k, on, tc.on)
		}
		if tc.on == 1 {
			if v := get(syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE); v != tc.idle {
				t.Errorf("keepalive %v: TCP_KEEPIDLE = %d, want %d", tc.k, v, tc.idle)
			}
			if v := get(syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL); v != tc.intvl {
				t.Errorf("keepalive %v: TCP_KEEPINTVL = %d, want %d", tc.k, v, tc.intvl)
			}
			if v := get(syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT); v != 5 {
				t.Errorf("keepalive %v: TCP_KEEPCNT = %d, want 5", tc.k, v)
			}
		}
		if nd := get(syscall.IPPROTO_TCP, syscall.TCP_NODELAY); nd != 1 {
			t.Errorf("keepalive %v: TCP_NODELAY = %d, want 1", tc.k, nd)
		}
		a.Close()
		c.Close()
		ln.Close()
	}
}
