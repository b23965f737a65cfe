//go:build linux

package bridge

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/internal/keepalive"
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
		got, err := keepalive.Read(c.(*net.TCPConn))
		if err != nil {
			t.Fatal(err)
		}
		if w := (net.KeepAliveConfig{Enable: true, Idle: time.Duration(want) * time.Second, Interval: 15 * time.Second, Count: 9}); got != w {
			t.Errorf("device connection %d: keepalive %+v, want %+v", i, got, w)
		}
	}
}
