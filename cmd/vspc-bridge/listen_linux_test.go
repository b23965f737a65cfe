//go:build linux

package main

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/internal/keepalive"
)

// TestKeepaliveInherited checks what listen relies on: Linux gives every
// accepted socket the listener's keepalive settings.
func TestKeepaliveInherited(t *testing.T) {
	for _, tc := range []struct {
		k    time.Duration
		want net.KeepAliveConfig // Idle, Interval and Count only when enabled
	}{
		{30 * time.Second, net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second, Interval: 6 * time.Second, Count: 5}},
		{2 * time.Second, net.KeepAliveConfig{Enable: true, Idle: 2 * time.Second, Interval: time.Second, Count: 5}},
		{0, net.KeepAliveConfig{}},
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
		got, err := keepalive.Read(a.(*net.TCPConn))
		if err != nil {
			t.Fatal(err)
		}
		if !got.Enable {
			got = net.KeepAliveConfig{} // the kernel's defaults stay, unused
		}
		if got != tc.want {
			t.Errorf("keepalive %v: accepted socket %+v, want %+v", tc.k, got, tc.want)
		}
		if nd := sockopt(t, a.(*net.TCPConn), syscall.IPPROTO_TCP, syscall.TCP_NODELAY); nd != 1 {
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
		got, err := keepalive.Read(tc)
		if err != nil {
			t.Fatal(err)
		}
		if want := (net.KeepAliveConfig{Enable: true, Idle: time.Duration(w) * time.Second, Interval: 6 * time.Second, Count: 5}); got != want {
			t.Errorf("connection %d: keepalive %+v, want %+v", i, got, want)
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
