//go:build linux

package bridge

import (
	"context"
	"net"
	"syscall"
	"testing"

	"github.com/vspc-bridge/vspc-bridge/configs"
)

// TestDeviceKeepaliveSpread: device connections dialed one after another
// get keepalive idle times 15 s, 14 s, ... 8 s, then 15 s again, probes
// 15 s apart, 9 of them.
func TestDeviceKeepaliveSpread(t *testing.T) {
	cfg, err := configs.Parse("t.toml", []byte("[vspc]\nlisten = \"127.0.0.1:0\"\n[policy]\nconnect_allow = [\"127.0.0.0/8\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	b := New(cfg, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for i, want := range []int{15, 14, 13, 12, 11, 10, 9, 8, 15} {
		c, err := b.policyDial(context.Background(), "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		a, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		a.Close()
		rc, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range []struct {
			name       string
			level, opt int
			want       int
		}{
			{"SO_KEEPALIVE", syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
			{"TCP_KEEPIDLE", syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, want},
			{"TCP_KEEPINTVL", syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, 15},
			{"TCP_KEEPCNT", syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, 9},
		} {
			var v int
			var gerr error
			if err := rc.Control(func(fd uintptr) { v, gerr = syscall.GetsockoptInt(int(fd), o.level, o.opt) }); err != nil {
				t.Fatal(err)
			}
			if gerr != nil {
				t.Fatal(gerr)
			}
			if v != o.want {
				t.Errorf("device connection %d: %s = %d, want %d", i, o.name, v, o.want)
			}
		}
	}
}
