//go:build linux

package main

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/configs"
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
		get := func(level, name int) int { return sockopt(t, a.(*net.TCPConn), level, name) }
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

// TestKeepaliveSpread checks the listener the daemon binds: connections
// accepted in a burst get idle times k, k-1s, ... k/2, then k again, and
// keep the listener's interval and count.
func TestKeepaliveSpread(t *testing.T) {
	cfg := configs.Default()
	cfg.VSPC.Keepalive.Duration = 30 * time.Second
	ln, err := (&daemon{}).listen(cfg, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	want := []int{30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 30, 29}
	for i, w := range want {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		a, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		tc, ok := a.(*net.TCPConn)
		if !ok {
			t.Fatalf("accepted a %T, want *net.TCPConn", a)
		}
		for _, o := range []struct {
			name       string
			level, opt int
			want       int
		}{
			{"SO_KEEPALIVE", syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
			{"TCP_KEEPIDLE", syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, w},
			{"TCP_KEEPINTVL", syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, 6},
			{"TCP_KEEPCNT", syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, 5},
		} {
			if v := sockopt(t, tc, o.level, o.opt); v != o.want {
				t.Errorf("connection %d: %s = %d, want %d", i, o.name, v, o.want)
			}
		}
	}

	cfg.VSPC.Keepalive.Duration = 0
	ln0, err := (&daemon{}).listen(cfg, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln0.Close()
	if _, ok := ln0.(*net.TCPListener); !ok {
		t.Errorf("keepalive 0: listener is a %T, want the plain *net.TCPListener", ln0)
	}
}

func sockopt(t *testing.T, tc *net.TCPConn, level, name int) int {
	t.Helper()
	rc, err := tc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
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
