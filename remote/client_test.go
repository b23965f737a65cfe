package remote_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/remote"
)

// TestAttachClientConn: a kind of client the hub does not serve itself
// (a web console's WebSocket, here a net.Pipe) attaches by console key
// with a user and a mode: rights are checked, it gets the scrollback and
// the output, its input reaches the VM, and the pause-then-drop rule
// applies to it: while it reads nothing the console waits, and after
// client_stall it is dropped (Done) and the console goes on.
func TestAttachClientConn(t *testing.T) {
	h := newHarness(t, `client_queue = "16KiB"
client_stall = "300ms"`)
	b, sink := openConsole(t, h.hub, "web-30", "42100000-0000-0000-0000-00000000a030", "web-30")
	b.Write([]byte("boot\r\n"))
	key := h.console("web-30").Key

	srv, cli := net.Pipe()
	t.Cleanup(func() { cli.Close() })
	if _, err := h.hub.Attach("nope", srv, remote.AttachOptions{User: "alice"}); !errors.Is(err, remote.ErrNoConsole) {
		t.Fatalf("unknown key: %v", err)
	}
	if _, err := h.hub.Attach(key, srv, remote.AttachOptions{User: "bob", Mode: remote.ModeShared}); !errors.Is(err, remote.ErrNoAccess) {
		t.Fatalf("bob read-write: %v", err)
	}
	if _, err := h.hub.Attach(key, srv, remote.AttachOptions{User: "carol"}); !errors.Is(err, remote.ErrNoAccess) {
		t.Fatalf("carol: %v", err)
	}
	cl, err := h.hub.Attach(key, srv, remote.AttachOptions{User: "alice", Peer: "198.51.100.7:443", Via: "web"})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Detach()
	if cl.Mode() != remote.ModeShared {
		t.Fatalf("mode %v", cl.Mode())
	}
	if ci := h.waitClients("web-30", 1); ci.Clients[0].Via != "web" || ci.Clients[0].User != "alice" {
		t.Fatalf("clients %+v", ci.Clients)
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(cli, buf); err != nil || string(buf) != "boot\r\n" {
		t.Fatalf("scrollback %q, %v", buf, err)
	}
	if err := cl.Input([]byte("typed")); err != nil {
		t.Fatal(err)
	}
	sink.waitData(t, "typed")

	// The client reads nothing now: the VM's writes wait for it, then it
	// is dropped and they go on.
	start := time.Now()
	for range 8 {
		if _, err := b.Write(bytes.Repeat([]byte("x"), 8<<10)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-cl.Done():
	case <-time.After(testwait.Timeout):
		t.Fatal("the stalled client was not dropped")
	}
	if !cl.Dropped() || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("dropped %v after %v", cl.Dropped(), time.Since(start))
	}
	if ci := h.waitClients("web-30", 0); ci.Stalled != 1 || ci.Pauses == 0 {
		t.Fatalf("console %+v", ci)
	}
	if _, err := cli.Read(buf); err == nil {
		// The pipe may still hold the chunk being written; it then ends.
		if _, err := io.Copy(io.Discard, cli); err != nil {
			t.Fatal(err)
		}
	}
}
