package remote_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/remote"
	"github.com/vspc-bridge/vspc-bridge/remote/remotetest"
)

// dialSmall connects with a 4 KiB receive buffer, so that a client that
// stops reading is full soon.
func dialSmall(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// readAllOf reads exactly n bytes from r on a goroutine; the result
// arrives on the channel (short on error).
func readAllOf(r io.Reader, n int) <-chan []byte {
	out := make(chan []byte, 1)
	go func() {
		b := make([]byte, n)
		k, _ := io.ReadFull(r, b)
		out <- b[:k]
	}()
	return out
}

func receive(t *testing.T, what string, c <-chan []byte, want []byte) {
	t.Helper()
	select {
	case got := <-c:
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: got %d bytes, want %d; they differ", what, len(got), len(want))
		}
	case <-time.After(testwait.Timeout):
		t.Fatalf("%s: not everything arrived", what)
	}
}

// TestPauseOneMiBEachWay: with every key at its default (client_queue
// 256KiB, client_overflow "pause"), one client reading as fast as it can
// gets 1 MiB from the VM byte for byte while it sends the VM 1 MiB: the
// console waits for it instead of dropping it.
func TestPauseOneMiBEachWay(t *testing.T) {
	h := newHarness(t, "open = true\nescape = \"\"")
	port := freePort(t)
	vm := h.vm("web-20", "42100000-0000-0000-0000-00000000a020", fmt.Sprintf("tcp://127.0.0.1:%d", port))
	h.console("web-20")
	nc, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	h.waitClients("web-20", 1)

	down, up := allBytes(4096), allBytes(4096) // 1 MiB each way, every byte value
	got := readAllOf(nc, len(down))
	toVM := readAllOf(vm, len(up))
	go nc.Write(up)
	go vm.Write(down)
	receive(t, "client", got, down)
	receive(t, "VM", toVM, up)
	if n := h.hub.Counters().ClientsDropped; n != 0 {
		t.Fatalf("%d clients dropped", n)
	}
	if ci := h.console("web-20"); len(ci.Clients) != 1 || ci.Stalled != 0 {
		t.Fatalf("console %+v", ci)
	}
}

// TestPauseHoldsTheVM: a client that stops reading (and is never stalled
// long enough to be dropped) holds the VM: the console stops reading it,
// nothing is dropped, and once the client reads again it gets every byte.
func TestPauseHoldsTheVM(t *testing.T) {
	h := newHarness(t, "open = true\nclient_stall = \"1h\"")
	port := freePort(t)
	vm := h.vm("web-21", "42100000-0000-0000-0000-00000000a021", fmt.Sprintf("tcp://127.0.0.1:%d", port))
	h.console("web-21")
	nc := dialSmall(t, fmt.Sprintf("127.0.0.1:%d", port))
	h.waitClients("web-21", 1)

	// The VM writes until the console pauses (the sockets between hold
	// some MiB first), then stops: it has sent total bytes.
	stream := allBytes(64 << 10) // 16 MiB, more than enough
	var (
		stop  atomic.Bool
		total atomic.Int64
	)
	sent := make(chan error, 1)
	go func() {
		for off := 0; off < len(stream) && !stop.Load(); off += 64 << 10 {
			n, err := vm.Write(stream[off : off+64<<10])
			total.Add(int64(n))
			if err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	testwait.For(t, "the console to pause", func() bool { return h.console("web-21").Paused })
	stop.Store(true)
	before := total.Load()
	var (
		mu  sync.Mutex
		got []byte
	)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := nc.Read(buf)
			mu.Lock()
			got = append(got, buf[:n]...)
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	select {
	case err := <-sent:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(testwait.Timeout):
		t.Fatal("the VM is still held after the client read")
	}
	testwait.For(t, "the client to get everything", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return int64(len(got)) >= total.Load()
	})
	mu.Lock()
	defer mu.Unlock()
	if int64(len(got)) != total.Load() || !bytes.Equal(got, stream[:len(got)]) {
		t.Fatalf("client got %d bytes, the VM sent %d; they differ", len(got), total.Load())
	}
	t.Logf("the console paused after %d bytes; %d in all", before, total.Load())
	ci := h.console("web-21")
	if ci.Pauses == 0 || ci.Stalled != 0 || len(ci.Clients) != 1 || h.hub.Counters().ClientsDropped != 0 {
		t.Fatalf("console %+v, counters %+v", ci, h.hub.Counters())
	}
}

// TestStalledClientDropped: a client that takes no output for
// client_stall while the console waits for it is told and dropped; the
// console resumes, and another client gets every byte.
func TestStalledClientDropped(t *testing.T) {
	h := newHarness(t, `client_queue = "64KiB"
client_stall = "300ms"`)
	port := freePort(t)
	vm := h.vm("web-22", "42100000-0000-0000-0000-00000000a022", fmt.Sprintf("telnet://127.0.0.1:%d", port))
	h.console("web-22")
	nc := dialSmall(t, fmt.Sprintf("127.0.0.1:%d", port))
	slow := &lineClient{t: t, nc: nc, r: newReader(nc)}
	slow.login("alice", alicePW)
	slow.expect("attached to web-22")
	witness := h.ssh(t, "dave+web-22")
	h.waitClients("web-22", 2)

	streamWithWitness(t, vm, witness, bytes.Repeat([]byte("0123456789abcdef"), 4<<20/16), nil)
	ci := h.waitClients("web-22", 1)
	if ci.Clients[0].User != "dave" || ci.Stalled != 1 || ci.Pauses == 0 {
		t.Fatalf("console %+v", ci)
	}
	if n := h.hub.Counters().ClientsDropped; n != 1 {
		t.Fatalf("ClientsDropped %d", n)
	}
	nc.SetReadDeadline(time.Now().Add(testwait.Timeout))
	rest, err := io.ReadAll(slow.r)
	if err != nil {
		t.Fatalf("slow client: %v", err)
	}
	if !strings.Contains(string(rest), "you took no console output for 300ms while the console of web-22 waited for you; disconnecting") {
		t.Fatalf("slow client was not told; last bytes %q", remotetest.Tail(rest))
	}
}

// TestIdleClientParks: an attached per-VM client that types nothing is
// parked (its connection waits without a goroutine); output still
// reaches it, its typing wakes it and reaches the VM, and it parks again;
// closing the console or the client ends a parked session as any other.
// The per-VM listener parks too while nobody connects, and still accepts.
func TestIdleClientParks(t *testing.T) {
	h := newHarnessGrace(t, "open = true\nescape = \"\"", 300*time.Millisecond, remote.WithParkIdle(50*time.Millisecond))
	port := freePort(t)
	vm := h.vm("web-23", "42100000-0000-0000-0000-00000000a023", fmt.Sprintf("telnet://127.0.0.1:%d", port))
	h.console("web-23")
	c := dialLine(t, fmt.Sprintf("127.0.0.1:%d", port))
	c.expect("attached to web-23")
	testwait.For(t, "the client to park", func() bool { return h.hub.Counters().Parked == 1 })
	vm.Write([]byte("output while parked\r\n"))
	c.expect("output while parked")
	c.send("typed while parked")
	readVM(t, vm, []byte("typed while parked\r\n"))
	testwait.For(t, "the client to park again", func() bool { return h.hub.Counters().Parked == 1 })
	testwait.For(t, "the per-VM listener to park", func() bool { return h.hub.Counters().ParkedPorts == 1 })

	d := dialLine(t, fmt.Sprintf("127.0.0.1:%d", port)) // the parked listener wakes and accepts
	d.expect("attached to web-23")
	testwait.For(t, "both clients to park", func() bool { return h.hub.Counters().Parked == 2 })
	d.nc.Close() // a parked client that goes: its session ends
	h.waitClients("web-23", 1)
	testwait.For(t, "one parked client", func() bool { return h.hub.Counters().Parked == 1 })

	vm.Close() // the console goes after the grace period; the parked client is told
	c.expect("the serial port of web-23 is gone")
	if !c.closed() {
		t.Fatal("client still connected")
	}
	testwait.For(t, "no parked client or listener", func() bool {
		c := h.hub.Counters()
		return c.Parked == 0 && c.ParkedPorts == 0 && c.Sessions == 0
	})
}
