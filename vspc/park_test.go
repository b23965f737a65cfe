package vspc_test

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/internal/park"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/vspc"
	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
)

// parkAfter is the idle period in these tests: short, so that
// connections park quickly; the tests wait on the Parker's count, never
// on the period itself.
const parkAfter = 30 * time.Millisecond

// parkingEnv is newEnv with one Parker for VM and device connections, as
// the daemon has. The Parker is closed after the server and the bridge.
func parkingEnv(t *testing.T, mod func(*vspc.Config)) (*env, *park.Parker) {
	t.Helper()
	pk, err := park.New(park.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pk.Close() }) // runs after newEnv's cleanup
	e := newEnv(t, strings.Replace(allowLoopback, "[vspc]\n", "[vspc]\npark_after = \"30ms\"\n", 1), func(c *vspc.Config) {
		c.Parker, c.ParkAfter = pk, parkAfter
		if mod != nil {
			mod(c)
		}
	})
	e.br.SetParker(pk)
	return e, pk
}

func waitParked(t *testing.T, pk *park.Parker, n int) {
	t.Helper()
	testwait.For(t, "connections to park", func() bool { return pk.Parked() == n })
}

func readFull(t *testing.T, r io.Reader, want string) {
	t.Helper()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(r, got); err != nil {
		t.Fatalf("reading %q: %v", want, err)
	}
	if string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// joined dials a VM whose remote is a fresh listener and returns both ends.
func joined(t *testing.T, e *env, i int) (*vspctest.Conn, net.Conn, vspctest.VM, net.Listener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	vm := vmNamed(i, vspc.DirClient, "tcp://"+ln.Addr().String())
	c, err := vspctest.Dial(t.Context(), e.addr, vm)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	remote, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { remote.Close() })
	return c, remote, vm, ln
}

// A parked VM connection and a parked device connection wake up for data
// in either direction, and park again when it stops: the port carries
// everything, in order.
func TestParkedPortCarriesData(t *testing.T) {
	e, pk := parkingEnv(t, nil)
	vm, remote, _, _ := joined(t, e, 1)
	for round := range 3 {
		waitParked(t, pk, 2) // the VM's connection and the device's
		msg := string(rune('a'+round)) + " from the device\r\n"
		remote.Write([]byte(msg))
		readFull(t, vm, msg)
		waitParked(t, pk, 2)
		back := string(rune('a'+round)) + " from the VM \xff\r\n"
		vm.Write([]byte(back))
		remote.SetReadDeadline(time.Now().Add(testwait.Timeout))
		readFull(t, remote, back)
	}
}

// A VM connection past its handshake and a device connection just opened
// park at once, without waiting out the park period (here an hour): a
// burst of VMs leaves no goroutine per port behind. Both wake for data.
func TestJoinedPortParksAtOnce(t *testing.T) {
	pk, err := park.New(park.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pk.Close() })
	e := newEnv(t, strings.Replace(allowLoopback, "[vspc]\n", "[vspc]\npark_after = \"1h\"\n", 1), func(c *vspc.Config) {
		c.Parker, c.ParkAfter = pk, time.Hour
	})
	e.br.SetParker(pk)
	vm, remote, _, _ := joined(t, e, 1)
	waitParked(t, pk, 2) // the VM's connection and the device's
	remote.Write([]byte("from the device\r\n"))
	readFull(t, vm, "from the device\r\n")
	vm.Write([]byte("from the VM\r\n"))
	remote.SetReadDeadline(time.Now().Add(testwait.Timeout))
	readFull(t, remote, "from the VM\r\n")
}

// A busy port keeps streaming while parked ones stay parked; the busy one
// parks once it is quiet.
func TestParkingBusyAndIdle(t *testing.T) {
	e, pk := parkingEnv(t, nil)
	_, _, _, _ = joined(t, e, 1) // stays idle
	vm, remote, _, _ := joined(t, e, 2)
	waitParked(t, pk, 4)
	chunk := randomData(7, 64<<10)
	done := make(chan error, 1)
	go func() {
		for range 32 {
			if _, err := remote.Write(chunk); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	buf := make([]byte, len(chunk))
	for range 32 {
		if _, err := io.ReadFull(vm, buf); err != nil {
			t.Fatal(err)
		}
		if string(buf) != string(chunk) {
			t.Fatal("stream corrupted")
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitParked(t, pk, 4)
}

// The device goes away while its connection is parked: the hang-up wakes
// the pump, the link reconnects with backoff, and data flows again.
func TestParkedDeviceReconnects(t *testing.T) {
	e, pk := parkingEnv(t, nil)
	vm, remote, _, ln := joined(t, e, 3)
	waitParked(t, pk, 2)
	remote.Close()
	r2, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	waitParked(t, pk, 2)
	r2.Write([]byte("back\r\n"))
	readFull(t, vm, "back\r\n")
}

// The VM's host drops a parked connection: the port detaches (grace
// period) and the VM gets it back by reconnecting, with what the device
// sent meanwhile.
func TestParkedVMReconnects(t *testing.T) {
	e, pk := parkingEnv(t, nil)
	vm, remote, ident, _ := joined(t, e, 4)
	waitParked(t, pk, 2)
	vm.Close()
	testwait.For(t, "the port to detach", func() bool {
		ps := e.srv.Ports()
		return len(ps) == 1 && ps[0].State == "detached"
	})
	remote.Write([]byte("while away\r\n"))
	testwait.For(t, "the data to be held", func() bool { return e.srv.Ports()[0].Queued > 0 })
	vm2, err := vspctest.Dial(t.Context(), e.addr, ident)
	if err != nil {
		t.Fatal(err)
	}
	defer vm2.Close()
	readFull(t, vm2, "while away\r\n")
	waitParked(t, pk, 2)
}

// A new connection for the same VM serial port replaces a parked one: the
// old one is closed (which wakes it so that its reader ends).
func TestParkedConnReplaced(t *testing.T) {
	e, pk := parkingEnv(t, nil)
	_, remote, ident, _ := joined(t, e, 5)
	waitParked(t, pk, 2)
	vm2, err := vspctest.Dial(t.Context(), e.addr, ident)
	if err != nil {
		t.Fatal(err)
	}
	defer vm2.Close()
	testwait.For(t, "the old connection to end", func() bool { return e.srv.Sessions() == 1 })
	remote.Write([]byte("to the new one\r\n"))
	readFull(t, vm2, "to the new one\r\n")
	waitParked(t, pk, 2)
}

// vMotion of a parked port: BEGIN wakes the source; the hand-over runs as
// usual and the destination parks once idle.
func TestParkedVMotion(t *testing.T) {
	e, pk := parkingEnv(t, nil)
	src, remote, ident, _ := joined(t, e, 6)
	waitParked(t, pk, 2)
	ctx := t.Context()
	seq := binary.BigEndian.AppendUint32(nil, 0x01ff0203)
	secret, err := src.Begin(ctx, seq)
	if err != nil {
		t.Fatal(err)
	}
	remote.Write([]byte("held during the hand-over\r\n"))
	dst, err := vspctest.DialPeer(ctx, e.addr, ident, seq, secret)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if err := dst.Complete(seq); err != nil {
		t.Fatal(err)
	}
	src.Close()
	readFull(t, dst, "held during the hand-over\r\n")
	waitParked(t, pk, 2)
	remote.Write([]byte("after\r\n"))
	readFull(t, dst, "after\r\n")
	if ps := e.srv.Ports(); len(ps) != 1 || ps[0].VMotions != 1 {
		t.Fatalf("ports after the hand-over: %+v", ps)
	}
}

// A telnets VM connection parks too (only after a read deadline, so no
// decrypted bytes are left inside the tls.Conn) and wakes for a record.
func TestParkedTLS(t *testing.T) {
	pk, err := park.New(park.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer pk.Close()
	br := &recBridger{}
	srv := vspc.NewServer(vspc.Config{Bridger: br, Logger: testLogger(t), Parker: pk, ParkAfter: parkAfter})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ctx, tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, MinVersion: tls.VersionTLS12}))
	}()
	defer func() { cancel(); <-done; srv.Close() }()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(nc, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
	c, err := vspctest.Handshake(t.Context(), tc, vspctest.VM{Name: "tls-vm", VCUUID: "50000000-0000-4000-8000-00000000000b", Direction: vspc.DirServer, ServiceURI: "console"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitParked(t, pk, 1)
	c.Write([]byte("typed while parked"))
	testwait.For(t, "the bytes to reach the backend", func() bool { return string(br.received()) == "typed while parked" })
	waitParked(t, pk, 1)
	br.mu.Lock()
	sink := br.sinks[0]
	br.mu.Unlock()
	if err := sink.Send([]byte("output\r\n")); err != nil {
		t.Fatal(err)
	}
	readFull(t, c, "output\r\n")
}
