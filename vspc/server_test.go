package vspc_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vspc-bridge/vspc-bridge/bridge"
	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/telnet"
	"github.com/vspc-bridge/vspc-bridge/vspc"
	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
)

// testLogger sends server logs to t.Log (shown on failure or with -v).
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// recBridger accepts every VM and records what it sends.
type recBridger struct {
	mu    sync.Mutex
	reqs  []vspc.Request
	data  bytes.Buffer
	sinks []vspc.Sink
	err   error
}

func (b *recBridger) Open(ctx context.Context, req vspc.Request, vm vspc.Sink) (vspc.Backend, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return nil, b.err
	}
	b.reqs = append(b.reqs, req)
	b.sinks = append(b.sinks, vm)
	return recBackend{b}, nil
}

type recBackend struct{ b *recBridger }

func (r recBackend) Write(p []byte) (int, error) {
	r.b.mu.Lock()
	defer r.b.mu.Unlock()
	return r.b.data.Write(p)
}
func (recBackend) Close() error { return nil }

func (b *recBridger) received() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.data.Bytes()...)
}

// env is a running server with the real bridge on loopback.
type env struct {
	t      *testing.T
	srv    *vspc.Server
	br     *bridge.Bridge
	addr   string
	cancel context.CancelFunc
}

func newEnv(t *testing.T, toml string, mod func(*vspc.Config)) *env {
	t.Helper()
	cfg, err := configs.Parse("test.toml", []byte(toml))
	if err != nil {
		t.Fatal(err)
	}
	log := testLogger(t)
	br := bridge.New(cfg, log)
	vc := vspc.Config{Bridger: br, Logger: log, HandshakeTimeout: 5 * time.Second}
	if mod != nil {
		mod(&vc)
	}
	srv := vspc.NewServer(vc)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ctx, ln) }()
	e := &env{t: t, srv: srv, br: br, addr: ln.Addr().String(), cancel: cancel}
	t.Cleanup(func() {
		cancel()
		<-done
		srv.Close()
		br.Close()
	})
	return e
}

const allowLoopback = `
[vspc]
listen = "127.0.0.1:0"
[policy]
connect_allow = ["127.0.0.0/8"]
reconnect_min = "20ms"
reconnect_max = "200ms"
`

func vmNamed(i int, dir vspc.Direction, service string) vspctest.VM {
	return vspctest.VM{
		Name:       fmt.Sprintf("vm-%05d", i),
		VCUUID:     fmt.Sprintf("50%06x-0000-4000-8000-%012x", i, i),
		BIOSUUID:   fmt.Sprintf("42%06x-0000-4000-8000-%012x", i, i),
		LocUUID:    fmt.Sprintf("56%06x-0000-4000-8000-%012x", i, i),
		Direction:  dir,
		ServiceURI: service,
	}
}

// randomData returns n bytes with many 255s (and NUL, CR, XON).
func randomData(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	b := make([]byte, n)
	for i := range b {
		switch rng.IntN(8) {
		case 0, 1:
			b[i] = 0xff
		case 2:
			b[i] = []byte{0, '\r', 0x11, 0x13}[rng.IntN(4)]
		default:
			b[i] = byte(rng.IntN(256))
		}
	}
	return b
}

// rawRemote is a raw TCP remote system that accepts one connection.
func rawRemote(t *testing.T) (addr string, conns <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(ch)
				return
			}
			ch <- c
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String(), ch
}

func accept(t *testing.T, ch <-chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c := <-ch:
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("remote: no connection from the bridge")
	}
	return nil
}

// exchange sends a to the VM side and b to the remote side concurrently
// and checks both arrive exactly (SHA-256).
func exchange(t *testing.T, vm io.ReadWriter, remote io.ReadWriter, toVM, toRemote []byte) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	readAll := func(name string, r io.Reader, want []byte) {
		defer wg.Done()
		got := make([]byte, len(want))
		if _, err := io.ReadFull(r, got); err != nil {
			errs <- fmt.Errorf("%s: read: %w", name, err)
			return
		}
		if sha256.Sum256(got) != sha256.Sum256(want) {
			i := 0
			for i < len(got) && got[i] == want[i] {
				i++
			}
			errs <- fmt.Errorf("%s: data differs at byte %d of %d", name, i, len(want))
		}
	}
	writeAll := func(name string, w io.Writer, b []byte) {
		defer wg.Done()
		for len(b) > 0 {
			n := min(len(b), 1+rand.IntN(8192))
			if _, err := w.Write(b[:n]); err != nil {
				errs <- fmt.Errorf("%s: write: %w", name, err)
				return
			}
			b = b[n:]
		}
	}
	wg.Add(4)
	go readAll("VM", vm, toVM)
	go readAll("remote", remote, toRemote)
	go writeAll("remote", remote, toVM)
	go writeAll("VM", vm, toRemote)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("exchange did not finish within 60s: data lost or stuck")
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestClientDirectionRawTCP(t *testing.T) {
	e := newEnv(t, allowLoopback, nil)
	raddr, conns := rawRemote(t)
	ctx := t.Context()
	vm, err := vspctest.Dial(ctx, e.addr, vmNamed(1, vspc.DirClient, "tcp://"+raddr))
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	remote := accept(t, conns)
	exchange(t, vm, remote, randomData(1, 1<<20), randomData(2, 1<<20))
	ports := e.srv.Ports()
	if len(ports) != 1 || ports[0].VMName != "vm-00001" || ports[0].Direction != "client" || ports[0].State != "attached" {
		t.Fatalf("ports: %+v", ports)
	}
}

// telnetRemote is a telnet server that asks for options the bridge must
// refuse and escapes 255 in its data.
func telnetRemote(t *testing.T) (addr string, conns <-chan *telnetPeer) {
	t.Helper()
	raddr, raw := rawRemote(t)
	ch := make(chan *telnetPeer, 1)
	go func() {
		for c := range raw {
			p := &telnetPeer{c: c}
			pr, pw := io.Pipe()
			p.pr = pr
			// Ask for things a telnet server usually asks for.
			c.Write([]byte{0xff, 0xfd, 0x18, 0xff, 0xfd, 0x1f, 0xff, 0xfb, 0x01, 0xff, 0xfb, 0x03})
			go func() {
				var d telnet.Decoder // NVT text mode: nobody agreed to BINARY
				buf := make([]byte, 32<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						d.Decode(buf[:n], func(ev telnet.Event) error {
							switch ev.Kind {
							case telnet.EventData:
								pw.Write(ev.Data)
							case telnet.EventNegotiation:
								p.mu.Lock()
								p.negs = append(p.negs, fmt.Sprintf("%v %v", ev.Command, ev.Option))
								p.mu.Unlock()
								if ev.Option == telnet.Binary && (ev.Command == telnet.WILL || ev.Command == telnet.DO) {
									// An NVT-only server: refuse BINARY both ways.
									c.Write(telnet.AppendNegotiation(nil, map[telnet.Command]telnet.Command{telnet.WILL: telnet.DONT, telnet.DO: telnet.WONT}[ev.Command], ev.Option))
								}
							}
							return nil
						})
					}
					if err != nil {
						pw.CloseWithError(err)
						return
					}
				}
			}()
			ch <- p
		}
	}()
	return raddr, ch
}

type telnetPeer struct {
	c    net.Conn
	pr   *io.PipeReader
	mu   sync.Mutex
	negs []string
}

func (p *telnetPeer) Read(b []byte) (int, error) { return p.pr.Read(b) }
func (p *telnetPeer) Write(b []byte) (int, error) {
	if _, err := p.c.Write(telnet.AppendText(nil, b)); err != nil {
		return 0, err
	}
	return len(b), nil
}

func TestClientDirectionTelnet(t *testing.T) {
	e := newEnv(t, allowLoopback, nil)
	raddr, conns := telnetRemote(t)
	vm, err := vspctest.Dial(t.Context(), e.addr, vmNamed(2, vspc.DirClient, "telnet://"+raddr))
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	var remote *telnetPeer
	select {
	case remote = <-conns:
	case <-time.After(10 * time.Second):
		t.Fatal("no telnet connection")
	}
	defer remote.c.Close()
	exchange(t, vm, remote, randomData(3, 1<<20), randomData(4, 1<<20))
	remote.mu.Lock()
	negs := fmt.Sprint(remote.negs)
	remote.mu.Unlock()
	// The device refuses what it does not support and offers (and so
	// accepts) SGA and BINARY.
	for _, want := range []string{"WONT TERMINAL-TYPE", "WONT NAWS", "DONT ECHO", "DO SGA", "WILL BINARY"} {
		if !strings.Contains(negs, want) {
			t.Errorf("telnet remote got %s; want it to include %q", negs, want)
		}
	}
}

// rawConn opens a plain TCP connection to the server for negative tests.
func rawConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// readUntil reads from c until the stream contains want or c closes.
func readUntil(c net.Conn, want []byte, d time.Duration) ([]byte, bool) {
	c.SetReadDeadline(time.Now().Add(d))
	var got []byte
	buf := make([]byte, 1024)
	for !bytes.Contains(got, want) {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return got, bytes.Contains(got, want)
		}
	}
	return got, true
}

// closedByPeer reports whether the server closed c within d.
func closedByPeer(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 1024)
	for {
		_, err := c.Read(buf)
		if err != nil {
			var ne net.Error
			return !(errors.As(err, &ne) && ne.Timeout())
		}
	}
}

func ext(cmd vspc.Subopt, parts ...[]byte) []byte { return vspc.AppendExt(nil, cmd, parts...) }

func TestNegative(t *testing.T) {
	e := newEnv(t, allowLoopback, func(c *vspc.Config) {
		c.HandshakeTimeout = 500 * time.Millisecond
		c.IdentifyTimeout = 200 * time.Millisecond
		c.MaxSubnegotiation = 256
	})
	hello := append([]byte{0xff, 0xfb, 0x25, 0xff, 0xfb, 0xe8}, ext(vspc.KnownSuboptions1, []byte{0, 1, 2, 3, 0x46, 0x47, 0x49, 0x50, 0x51, 0x52, 0x53})...)
	wont := ext(vspc.WontProxy)

	t.Run("unknown suboption", func(t *testing.T) {
		c := rawConn(t, e.addr)
		c.Write(append(hello, ext(0x99, []byte("x"))...))
		if _, ok := readUntil(c, ext(vspc.UnknownSuboptionRcvd2, []byte{0x99}), 2*time.Second); !ok {
			t.Fatal("no UNKNOWN-SUBOPTION-RCVD-2 99")
		}
	})
	refused := func(t *testing.T, doProxy []byte) {
		t.Helper()
		c := rawConn(t, e.addr)
		c.Write(append(hello, doProxy...))
		if got, ok := readUntil(c, wont, 3*time.Second); !ok {
			t.Fatalf("no WONT-PROXY; got % x", got)
		}
		if !closedByPeer(c, 2*time.Second) {
			t.Fatal("connection not closed after WONT-PROXY")
		}
	}
	t.Run("DO-PROXY outside connect_allow", func(t *testing.T) {
		refused(t, ext(vspc.DoProxy, []byte("Ctcp://192.0.2.1:4001")))
	})
	t.Run("DO-PROXY missing direction", func(t *testing.T) {
		refused(t, ext(vspc.DoProxy))
	})
	t.Run("DO-PROXY bad direction", func(t *testing.T) {
		refused(t, ext(vspc.DoProxy, []byte("Xtcp://127.0.0.1:1")))
	})
	t.Run("DO-PROXY empty URI", func(t *testing.T) {
		refused(t, ext(vspc.DoProxy, []byte("C")))
	})
	t.Run("DO-PROXY bad scheme", func(t *testing.T) {
		refused(t, ext(vspc.DoProxy, []byte("Cgopher://127.0.0.1:70")))
	})
	t.Run("direction server without route", func(t *testing.T) {
		refused(t, ext(vspc.DoProxy, []byte("SvSPC.py")))
	})
	t.Run("oversized SB", func(t *testing.T) {
		c := rawConn(t, e.addr)
		big := append([]byte{0xff, 0xfa, 0xe8, 0x46}, bytes.Repeat([]byte{'a'}, 300)...)
		c.Write(append(hello, big...))
		if !closedByPeer(c, 2*time.Second) {
			t.Fatal("oversized SB did not close the connection")
		}
	})
	t.Run("malformed SB", func(t *testing.T) {
		c := rawConn(t, e.addr)
		c.Write(append(hello, 0xff, 0xfa, 0xe8, 0x46, 0xff, 0xfb, 0x01))
		if !closedByPeer(c, 2*time.Second) {
			t.Fatal("IAC WILL inside SB did not close the connection")
		}
	})
	t.Run("truncated SB then close", func(t *testing.T) {
		c := rawConn(t, e.addr)
		c.Write(append(hello, 0xff, 0xfa, 0xe8, 0x46, 'C'))
		c.Close()
	})
	t.Run("garbage", func(t *testing.T) {
		c := rawConn(t, e.addr)
		c.Write(randomData(9, 64<<10))
		if !closedByPeer(c, 3*time.Second) {
			t.Fatal("garbage connection not closed")
		}
	})
	t.Run("idle past handshake timeout", func(t *testing.T) {
		// Closed, over real TCP; that it is closed exactly at the
		// handshake timeout, not before, is TestHandshakeTimeouts'.
		c := rawConn(t, e.addr)
		if !closedByPeer(c, 3*time.Second) {
			t.Fatal("idle connection not closed")
		}
	})
	// After all that, the server still serves a good VM.
	raddr, conns := rawRemote(t)
	vm, err := vspctest.Dial(t.Context(), e.addr, vmNamed(3, vspc.DirClient, "tcp://"+raddr))
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	remote := accept(t, conns)
	exchange(t, vm, remote, []byte("still alive \xff"), []byte("and well \xff\x00"))
}

func TestRemoteDownKeepsVMAndReconnects(t *testing.T) {
	e := newEnv(t, allowLoopback, nil)
	// The remote is not there yet: the VM is accepted anyway, and what it
	// sends meanwhile is kept for the remote.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	raddr := ln.Addr().String()
	ln.Close()
	vm, err := vspctest.Dial(t.Context(), e.addr, vmNamed(4, vspc.DirClient, "tcp://"+raddr))
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	vm.Write([]byte("while away \xff"))
	testwait.For(t, "a failed connection attempt to the absent remote", func() bool {
		d := e.br.Devices()
		return len(d) == 1 && d[0].State != "up" && d[0].LastErr != ""
	})
	ln, err = net.Listen("tcp", raddr)
	if err != nil {
		t.Skipf("port %s taken meanwhile: %v", raddr, err)
	}
	conns := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
		}
	}()
	t.Cleanup(func() { ln.Close() })
	r1 := accept(t, conns)
	got := make([]byte, len("while away \xff"))
	r1.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(r1, got); err != nil || string(got) != "while away \xff" {
		t.Fatalf("remote got %q, %v", got, err)
	}
	exchange(t, vm, r1, []byte("one"), []byte("two"))
	// The remote drops: the VM stays connected and the bridge reconnects.
	r1.Close()
	r2 := accept(t, conns)
	exchange(t, vm, r2, randomData(5, 64<<10), randomData(6, 64<<10))
	if vm.WaitClosed(0) {
		t.Fatal("VM connection was closed")
	}
}

// TestWontExtensionAndRenegotiation: the VM turns option 232 off (WONT);
// data keeps flowing; it turns it on again and gets DO 232 and
// KNOWN-SUBOPTIONS-2 again.
func TestWontExtensionAndRenegotiation(t *testing.T) {
	e := newEnv(t, allowLoopback, nil)
	raddr, conns := rawRemote(t)
	c := rawConn(t, e.addr)
	var hello []byte
	hello = append(hello, 0xff, 0xfb, 0x25, 0xff, 0xfb, 0xe8)
	hello = append(hello, ext(vspc.KnownSuboptions1, []byte{0, 1, 2, 3, 0x46, 0x47, 0x49, 0x50, 0x51, 0x52, 0x53})...)
	hello = append(hello, ext(vspc.DoProxy, []byte("Ctcp://"+raddr))...)
	hello = append(hello, ext(vspc.VMVCUUID, []byte("50 11 22 33 44 55 66 77-88 99 aa bb cc dd ee ff"))...)
	hello = append(hello, ext(vspc.VMName, []byte("renego"))...)
	c.Write(hello)
	if got, ok := readUntil(c, ext(vspc.WillProxy), 3*time.Second); !ok {
		t.Fatalf("no WILL-PROXY: % x", got)
	}
	remote := accept(t, conns)
	c.Write([]byte{0xff, 0xfc, 0xe8}) // WONT 232
	if got, ok := readUntil(c, []byte{0xff, 0xfe, 0xe8}, 3*time.Second); !ok {
		t.Fatalf("no DONT 232: % x", got)
	}
	c.Write([]byte("data \xff\xff after WONT"))
	got := make([]byte, len("data \xff after WONT"))
	remote.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(remote, got); err != nil || string(got) != "data \xff after WONT" {
		t.Fatalf("remote got %q %v", got, err)
	}
	c.Write([]byte{0xff, 0xfb, 0xe8}) // WILL 232 again
	want := append([]byte{0xff, 0xfd, 0xe8}, vspc.AppendKnownSuboptions2(nil)...)
	if got, ok := readUntil(c, want, 3*time.Second); !ok {
		t.Fatalf("no DO 232 + KNOWN-SUBOPTIONS-2 after renegotiation: % x", got)
	}
}

func TestMaxSessions(t *testing.T) {
	e := newEnv(t, allowLoopback, func(c *vspc.Config) { c.MaxSessions = 2 })
	a, b := rawConn(t, e.addr), rawConn(t, e.addr)
	readUntil(a, []byte{0xff, 0xfd, 0xe8}, 2*time.Second)
	readUntil(b, []byte{0xff, 0xfd, 0xe8}, 2*time.Second)
	c := rawConn(t, e.addr)
	if !closedByPeer(c, 2*time.Second) {
		t.Fatal("third connection over max_sessions not closed")
	}
	if closedByPeer(a, 100*time.Millisecond) {
		t.Fatal("an existing session was closed")
	}
}

// TestShutdownFlushes: data already queued for a VM is delivered before
// the server closes on shutdown.
func TestShutdownFlushes(t *testing.T) {
	br := &recBridger{}
	srv := vspc.NewServer(vspc.Config{Bridger: br, Logger: testLogger(t)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(context.Background(), ln)
	vm, err := vspctest.Dial(t.Context(), ln.Addr().String(), vmNamed(9, vspc.DirServer, "console"))
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	br.mu.Lock()
	sink := br.sinks[0]
	br.mu.Unlock()
	data := randomData(11, 256<<10)
	if err := sink.Send(data); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- srv.Shutdown(ctx)
	}()
	got, err := io.ReadAll(vm)
	if !bytes.Equal(got, data) {
		t.Fatalf("VM got %d of %d bytes before close (%v)", len(got), len(data), err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := sink.Send([]byte("late")); !errors.Is(err, vspc.ErrPortClosed) {
		t.Fatalf("Send after shutdown: %v", err)
	}
}

// TestNoGracePeriod: a negative grace period (config "0s") closes the port
// and its remote as soon as the VM connection drops.
func TestNoGracePeriod(t *testing.T) {
	e := newEnv(t, allowLoopback, func(c *vspc.Config) { c.GracePeriod = -1 })
	raddr, conns := rawRemote(t)
	vm, err := vspctest.Dial(t.Context(), e.addr, vmNamed(12, vspc.DirClient, "tcp://"+raddr))
	if err != nil {
		t.Fatal(err)
	}
	remote := accept(t, conns)
	vm.Close()
	remote.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := remote.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("remote not closed at once: %v", err)
	}
}

// hostEnd collects what the server sends on a connection's host end.
type hostEnd struct {
	nc     net.Conn
	mu     sync.Mutex
	got    []byte
	closed bool // the server closed the connection
}

func collect(nc net.Conn) *hostEnd {
	h := &hostEnd{nc: nc}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := nc.Read(buf)
			h.mu.Lock()
			h.got = append(h.got, buf[:n]...)
			if err != nil {
				h.closed = true
			}
			h.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return h
}

// state is what the server sent so far and whether it closed; call it
// after synctest.Wait.
func (h *hostEnd) state() ([]byte, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]byte(nil), h.got...), h.closed
}

// TestHandshakeFailureReasons: each failure is counted under its reason.
func TestHandshakeFailureReasons(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const hsTimeout = 300 * time.Millisecond
		e := newPipeEnv(t, func(c *vspc.Config) { c.HandshakeTimeout = hsTimeout; c.MaxSubnegotiation = 64 })
		idle := collect(e.conn())
		bad := e.conn()
		badEnd := collect(bad)
		bad.Write(append([]byte{0xff, 0xfa, 0xe8, 0x46}, bytes.Repeat([]byte{'a'}, 100)...))
		lost := e.conn()
		lostEnd := collect(lost)
		time.Sleep(50 * time.Millisecond) // the offers come (offerHold)
		synctest.Wait()
		if got, _ := lostEnd.state(); !bytes.Contains(got, []byte{0xff, 0xfd, 0xe8}) {
			t.Fatalf("no DO 232 in % x", got)
		}
		lost.Close()
		time.Sleep(hsTimeout)
		synctest.Wait()
		for name, h := range map[string]*hostEnd{"idle": idle, "oversized SB": badEnd} {
			if _, closed := h.state(); !closed {
				t.Fatalf("%s connection not closed", name)
			}
		}
		k := e.srv.Counters()
		if k.HandshakeTimeouts != 1 || k.HandshakeErrors != 1 || k.HandshakeLost != 1 || k.HandshakeFailures != 3 {
			t.Fatalf("counters %+v", k)
		}
	})
}

// TestHandshakeTimeouts: the handshake and identification deadlines fire
// exactly when due, on the bubble's clock.
func TestHandshakeTimeouts(t *testing.T) {
	run := func(name string, f func(t *testing.T)) {
		t.Run(name, func(t *testing.T) { synctest.Test(t, f) })
	}
	hello := append([]byte{0xff, 0xfb, 0x25, 0xff, 0xfb, 0xe8}, ext(vspc.KnownSuboptions1, esxiKS1)...)
	run("a silent host is closed at the handshake timeout", func(t *testing.T) {
		const hsTimeout = 500 * time.Millisecond
		e := newPipeEnv(t, func(c *vspc.Config) { c.HandshakeTimeout = hsTimeout })
		h := collect(e.conn())
		time.Sleep(hsTimeout - time.Millisecond)
		synctest.Wait()
		if got, closed := h.state(); closed || !bytes.Equal(got, openingOffers()) {
			t.Fatalf("before the handshake timeout: closed %v, got % x (want the offers only)", closed, got)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if _, closed := h.state(); !closed {
			t.Fatal("not closed at the handshake timeout")
		}
		if k := e.srv.Counters(); k.HandshakeTimeouts != 1 || k.HandshakeFailures != 1 {
			t.Fatalf("counters %+v", k)
		}
	})
	run("a host that trickles its handshake is closed at the handshake timeout all the same", func(t *testing.T) {
		const hsTimeout = 500 * time.Millisecond
		e := newPipeEnv(t, func(c *vspc.Config) { c.HandshakeTimeout = hsTimeout })
		nc := e.conn()
		h := collect(nc)
		msg := append(hello, ext(vspc.DoProxy, []byte("Ctcp://127.0.0.1:1"))...)
		trickled := make(chan struct{})
		go func() {
			defer close(trickled)
			for i := 0; i < len(msg); i++ { // one byte every 10 ms, never finishing in time
				if _, err := nc.Write(msg[i : i+1]); err != nil {
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
		defer func() { <-trickled }()
		time.Sleep(hsTimeout - time.Millisecond)
		synctest.Wait()
		if _, closed := h.state(); closed {
			t.Fatal("closed before the handshake timeout")
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if _, closed := h.state(); !closed {
			t.Fatal("a trickling host outlived the handshake timeout")
		}
	})
	run("identification timeout: WILL-PROXY with what the VM sent", func(t *testing.T) {
		const identify = 200 * time.Millisecond
		e := newPipeEnv(t, func(c *vspc.Config) { c.IdentifyTimeout = identify })
		nc := e.conn()
		h := collect(nc)
		nc.Write(append(hello, ext(vspc.DoProxy, []byte("SvSPC.py"))...))
		nc.Write(ext(vspc.VMName, []byte("named-only"))) // VM-VC-UUID never comes
		time.Sleep(identify - time.Millisecond)
		synctest.Wait()
		if got, _ := h.state(); bytes.Contains(got, ext(vspc.WillProxy)) {
			t.Fatal("WILL-PROXY before the identification timeout")
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if got, _ := h.state(); !bytes.HasSuffix(got, ext(vspc.WillProxy)) {
			t.Fatalf("no WILL-PROXY at the identification timeout: % x", got)
		}
		if req := e.backend(0).req; req.VMName != "named-only" || req.VCUUID != "" {
			t.Fatalf("request %+v", req)
		}
	})
}

// TestSetConfig: a reload's limits and vMotion settings apply to what
// starts after it, without touching a session already up.
func TestSetConfig(t *testing.T) {
	e := newEnv(t, allowLoopback, nil)
	addr, conns := rawRemote(t)
	ctx := t.Context()
	c, err := vspctest.Dial(ctx, e.addr, vmNamed(1, vspc.DirClient, "tcp://"+addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	remote := accept(t, conns)
	defer remote.Close()

	e.srv.SetConfig(vspc.Config{VMotionDisabled: true, HandshakeTimeout: 200 * time.Millisecond, Directions: []vspc.Direction{vspc.DirClient}})
	if _, err := c.Begin(ctx, []byte{9, 9, 9, 9}); !errors.Is(err, vspctest.ErrNotNow) {
		t.Fatalf("BEGIN after vmotion was disabled: %v, want NOTNOW", err)
	}
	exchange(t, c, remote, []byte("the session"), []byte("is untouched"))
	// The shorter handshake timeout applies to a new connection.
	silent := rawConn(t, e.addr)
	if !closedByPeer(silent, 3*time.Second) {
		t.Fatal("a silent connection outlived the new 200ms handshake timeout")
	}
	// Only client direction now.
	if _, err := vspctest.Dial(ctx, e.addr, vmNamed(2, vspc.DirServer, "svc")); !errors.Is(err, vspctest.ErrWontProxy) {
		t.Fatalf("direction server after the reload: %v, want WONT-PROXY", err)
	}
	// And back: vMotion allowed again, for the same session.
	e.srv.SetConfig(vspc.Config{})
	if _, err := c.Begin(ctx, []byte{9, 9, 9, 8}); err != nil {
		t.Fatalf("BEGIN after vmotion was enabled again: %v", err)
	}
}

// emfileListener fails every Accept with EMFILE (out of file descriptors)
// until it is closed.
type emfileListener struct {
	mu      sync.Mutex
	closed  bool
	accepts int
}

func (l *emfileListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, net.ErrClosed
	}
	l.accepts++
	return nil, fmt.Errorf("accept: %w", syscall.EMFILE)
}

func (l *emfileListener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	return nil
}

func (l *emfileListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

func (l *emfileListener) tries() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.accepts
}

// TestServeBackoff: Accept failing with EMFILE backs off (5 ms doubling
// up to 1 s) instead of spinning, and the backoff ends at once when the
// context is cancelled or the server closed.
func TestServeBackoff(t *testing.T) {
	for _, stop := range []string{"context cancelled", "server closed"} {
		t.Run(stop, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := vspc.NewServer(vspc.Config{Bridger: &recBridger{}, Logger: testLogger(t)})
				defer srv.Close()
				ln := &emfileListener{}
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				done := make(chan error, 1)
				go func() { done <- srv.Serve(ctx, ln) }()
				// Accepts at 0, 5, 15, 35, 75, 155, 315, 635, 1275,
				// 2275 ms (backoff 5 ms doubling to 1 s), the next at 3275.
				time.Sleep(3200 * time.Millisecond)
				synctest.Wait()
				if n := ln.tries(); n != 10 {
					t.Fatalf("%d accepts in 3.2 s of EMFILE, want 10 (backoff 5 ms doubling to 1 s)", n)
				}
				time.Sleep(300 * time.Millisecond) // in the middle of a 1 s backoff
				if stop == "context cancelled" {
					cancel()
				} else {
					srv.Close()
				}
				synctest.Wait()
				select {
				case err := <-done:
					want := error(context.Canceled)
					if stop == "server closed" {
						want = vspc.ErrServerClosed
					}
					if !errors.Is(err, want) {
						t.Fatalf("Serve: %v, want %v", err, want)
					}
				default:
					t.Fatalf("Serve still backing off after the %s", stop)
				}
			})
		})
	}
}
