package remote_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
)

// TestListenerSurvivesVMotion: the VM moves to another host (a new
// connection, VMOTION-PEER); the per-VM listener, the console and an
// attached SSH client stay; a new telnet login on the same port works.
func TestListenerSurvivesVMotion(t *testing.T) {
	h := newHarness(t, "")
	port := freePort(t)
	src := h.vm("web-4", "42100000-0000-0000-0000-00000000a004", fmt.Sprintf("telnet://127.0.0.1:%d", port))
	before := h.console("web-4")
	cl := h.ssh(t, "alice+web-4")
	h.waitClients("web-4", 1)

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	dst, err := vspctest.Migrate(ctx, src, h.vspcAddr, []byte("seq-1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dst.Close() })

	after := h.console("web-4")
	if after.Listen != before.Listen || len(after.Clients) != 1 {
		t.Fatalf("after vMotion: %+v, before %+v", after, before)
	}
	out := []byte("output from the destination host\r\n")
	dst.Write(out)
	if got := cl.readN(t, len(out)); !bytes.Equal(got, out) {
		t.Fatalf("got %q", got)
	}
	cl.stdin.Write([]byte("typed after vMotion"))
	readVM(t, dst, []byte("typed after vMotion"))

	c := dialLine(t, fmt.Sprintf("127.0.0.1:%d", port))
	c.login("alice", alicePW)
	c.expect("attached to web-4 (read-write)")
	c.send("via telnet")
	readVM(t, dst, []byte("via telnet\r\n"))
}

// TestListenerClosedAfterGrace: the VM goes away; during the grace period
// the listener and console stay (a reconnect gets them back), after it
// the attached client is told, and the port stops accepting.
func TestListenerClosedAfterGrace(t *testing.T) {
	h := newHarnessGrace(t, "", 700*time.Millisecond)
	port := freePort(t)
	service := fmt.Sprintf("telnet://127.0.0.1:%d", port)
	vm := h.vm("web-13", "42100000-0000-0000-0000-00000000a013", service)
	h.console("web-13")
	c := dialLine(t, fmt.Sprintf("127.0.0.1:%d", port))
	c.login("alice", alicePW)
	c.expect("attached to web-13")

	vm.Close() // host reconnects within the grace period: same console
	vm = h.vm("web-13", "42100000-0000-0000-0000-00000000a013", service)
	vm.Write([]byte("after reconnect"))
	c.expect("after reconnect")

	vm.Close() // gone for good
	c.expect("the serial port of web-13 is gone")
	if !c.closed() {
		t.Fatal("client still connected")
	}
	testwait.For(t, "the console to close", func() bool { return len(h.hub.Consoles()) == 0 })
	if nc, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
		nc.Close()
		t.Fatal("per-VM port still accepts after the grace period")
	}
}
