package remote_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/remote/remotetest"
)

// TestSlowClientDropped: with client_overflow = "drop", a client that
// never reads falls behind by more
// than client_queue and is told and dropped, while the VM keeps sending
// at full pace and another client gets every byte.
func TestSlowClientDropped(t *testing.T) {
	h := newHarness(t, `client_queue = "128KiB"
client_overflow = "drop"`)
	port := freePort(t)
	vm := h.vm("web-5", "42100000-0000-0000-0000-00000000a005", fmt.Sprintf("telnet://127.0.0.1:%d", port))
	h.console("web-5")

	// The slow client: a small receive buffer, logs in, then stops reading.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	nc, err := d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	slow := &lineClient{t: t, nc: nc, r: newReader(nc)}
	slow.login("alice", alicePW)
	slow.expect("attached to web-5")

	// A slow SSH client: ssh runs, but nobody reads its stdout.
	h.ssh(t, "alice+web-5")
	witness := h.ssh(t, "dave+web-5")
	h.waitClients("web-5", 3)

	start := time.Now()
	streamWithWitness(t, vm, witness, bytes.Repeat([]byte("0123456789abcdef"), 8<<20/16), nil)
	t.Logf("VM sent 8 MiB in %v", time.Since(start))

	ci := h.waitClients("web-5", 1)
	if ci.Clients[0].User != "dave" {
		t.Fatalf("the wrong client was dropped: %+v", ci.Clients)
	}
	// (The slow ssh itself cannot exit before it has written what it
	// buffered to its stdout, which nobody reads; the hub has closed its
	// connection, and the test's cleanup kills it.)
	if n := h.hub.Counters().ClientsDropped; n != 2 {
		t.Fatalf("ClientsDropped %d", n)
	}
	// The slow client now reads: old output, the notice, then EOF.
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	rest, err := io.ReadAll(slow.r)
	if err != nil {
		t.Fatalf("slow client: %v", err)
	}
	if !strings.Contains(string(rest), "you fell more than 128KiB behind the console of web-5; disconnecting") {
		t.Fatalf("slow client was not told; last bytes %q", remotetest.Tail(rest))
	}
}

// streamWithWitness has the VM send want in 16 KiB writes, never more
// than 32 KiB ahead of what the witness has read (a fast console the
// witness keeps up with even on a loaded machine), calling during before
// each write, and checks that the witness got exactly want.
func streamWithWitness(t *testing.T, vm io.Writer, witness *sshClient, want []byte, during func(off int)) {
	t.Helper()
	var read atomic.Int64
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, 0, len(want))
		buf := make([]byte, 32<<10)
		for len(b) < len(want) {
			n, err := witness.stdout.Read(buf)
			b = append(b, buf[:n]...)
			read.Store(int64(len(b)))
			if err != nil {
				break
			}
		}
		got <- b
	}()
	for off := 0; off < len(want); off += 16 << 10 {
		if !testwait.Until(t, testwait.Timeout, func() bool { return read.Load() >= int64(off-32<<10) }) {
			t.Fatalf("witness stuck at %d bytes", read.Load())
		}
		if during != nil {
			during(off)
		}
		if _, err := vm.Write(want[off:min(off+16<<10, len(want))]); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case b := <-got:
		if !bytes.Equal(b, want) {
			t.Fatalf("witness got %d bytes, not the %d the VM sent", len(b), len(want))
		}
	case <-time.After(testwait.Timeout):
		t.Fatal("witness did not get everything")
	}
}
