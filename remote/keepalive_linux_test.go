//go:build linux

package remote

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/internal/keepalive"
)

// TestClientKeepaliveSpread: client connections admitted one after
// another (front doors and per-VM listeners both pass admit) get keepalive
// idle times 15 s, 14 s, ... 8 s, then 15 s again, probes 15 s apart, 9
// of them; a telnets client's TCP connection too.
func TestClientKeepaliveSpread(t *testing.T) {
	h, err := New(configs.Default(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan net.KeepAliveConfig)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	handle := func(_ context.Context, nc net.Conn, _, done func()) {
		defer done()
		defer nc.Close()
		if tc, ok := nc.(*tls.Conn); ok {
			nc = tc.NetConn()
		}
		k, err := keepalive.Read(nc.(*net.TCPConn))
		if err != nil {
			t.Error(err)
		}
		got <- k
	}
	go h.acceptLoop(ctx, ln, "test", handle)
	// The telnets front door: the spread reaches under TLS (no handshake
	// is needed for that; this client never makes one).
	tln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go h.acceptLoop(ctx, tls.NewListener(tln, &tls.Config{}), "test-tls", handle)
	for i, want := range []int{15, 14, 13, 12, 11, 10, 9, 8, 15, 14, 13} {
		addr := ln.Addr().String()
		if i >= 9 {
			addr = tln.Addr().String()
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		k := <-got
		c.Close()
		if w := (net.KeepAliveConfig{Enable: true, Idle: time.Duration(want) * time.Second, Interval: 15 * time.Second, Count: 9}); k != w {
			t.Errorf("client %d (%s): keepalive %+v, want %+v", i, addr, k, w)
		}
	}
}
