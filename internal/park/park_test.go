package park

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/nettest"

	"github.com/vspc-bridge/vspc-bridge/internal/leaktest"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
)

func TestMain(m *testing.M) { leaktest.Main(m, 5*time.Second) }

// eachBackend runs f against every backend this platform has.
func eachBackend(t *testing.T, f func(t *testing.T, k backendKind)) {
	for _, k := range backendKinds() {
		t.Run(k.String(), func(t *testing.T) { f(t, k) })
	}
}

func newTestParker(t *testing.T, k backendKind, maxWaking int) *Parker {
	t.Helper()
	p, err := newParker(Config{MaxWaking: maxWaking}, k)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t testing.TB) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.c.Close(); client.Close() })
	return r.c, client
}

// wrapped returns the server end of a fresh loopback connection wrapped
// by p, with a fresh waker as its owner; the client end; and the waker.
func wrapped(t *testing.T, p *Parker) (*Conn, net.Conn, *waker) {
	t.Helper()
	s, cl := tcpPair(t)
	w := newWaker()
	return p.Wrap(s, w.wake), cl, w
}

// waker is a test owner's wake function: it counts calls and signals each.
type waker struct {
	n  atomic.Int32
	ch chan struct{}
	do func() // runs inside the wake, if set
}

func newWaker() *waker { return &waker{ch: make(chan struct{}, 100)} }

func (w *waker) wake() {
	w.n.Add(1)
	if w.do != nil {
		w.do()
	}
	w.ch <- struct{}{}
}

func (w *waker) wait(t *testing.T, what string) {
	t.Helper()
	select {
	case <-w.ch:
	case <-time.After(testwait.Timeout):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// idle makes c's next Park legal: a Read that ends in its deadline empty.
func idle(t *testing.T, c *Conn) {
	t.Helper()
	c.SetReadDeadline(time.Unix(1, 0))
	n, err := c.Read(make([]byte, 1))
	if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read with a past deadline = %d, %v; want a deadline error", n, err)
	}
}

func parkIdle(t *testing.T, c *Conn) {
	t.Helper()
	idle(t, c)
	if err := c.Park(); err != nil {
		t.Fatalf("Park: %v", err)
	}
}

// readAll reads exactly len(want) bytes from c and compares.
func readAll(t *testing.T, c net.Conn, want string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(testwait.Timeout))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(got) != want {
		t.Fatalf("read %q, want %q", got, want)
	}
}

func TestParkWakesOnData(t *testing.T) {
	eachBackend(t, func(t *testing.T, k backendKind) {
		p := newTestParker(t, k, 0)
		c, cl, w := wrapped(t, p)
		parkIdle(t, c)
		if got := p.Parked(); got != 1 {
			t.Fatalf("Parked = %d, want 1", got)
		}
		cl.Write([]byte("boot: ok\n"))
		w.wait(t, "the wake-up")
		if got := p.Parked(); got != 0 {
			t.Fatalf("Parked after the wake-up = %d, want 0", got)
		}
		readAll(t, c, "boot: ok\n")
		// And again: a connection parks any number of times.
		parkIdle(t, c)
		cl.Write([]byte("login: "))
		w.wait(t, "the second wake-up")
		readAll(t, c, "login: ")
		if n := w.n.Load(); n != 2 {
			t.Fatalf("%d wake-ups, want 2", n)
		}
	})
}

// Level-triggered arming: data that arrived before Park wakes at once
// (an edge-triggered registration would wait for the next byte forever).
func TestParkWithDataAlreadyPending(t *testing.T) {
	eachBackend(t, func(t *testing.T, k backendKind) {
		p := newTestParker(t, k, 0)
		c, cl, w := wrapped(t, p)
		cl.Write([]byte("early"))
		// Wait until the bytes are in c's receive queue: a Read without
		// a deadline returns the first of them.
		c.SetReadDeadline(time.Now().Add(testwait.Timeout))
		b := make([]byte, 1)
		if _, err := c.Read(b); err != nil || b[0] != 'e' {
			t.Fatalf("first byte: %q, %v", b, err)
		}
		parkIdle(t, c) // "arly" is pending in the kernel
		w.wait(t, "the wake-up for data pending at Park")
		readAll(t, c, "arly")
	})
}

// An owner that read only part of what woke it is woken again when it
// parks again.
func TestPartialReadWakesAgain(t *testing.T) {
	eachBackend(t, func(t *testing.T, k backendKind) {
		p := newTestParker(t, k, 0)
		c, cl, w := wrapped(t, p)
		parkIdle(t, c)
		cl.Write([]byte("0123456789"))
		w.wait(t, "the wake-up")
		readAll(t, c, "0123")
		parkIdle(t, c)
		w.wait(t, "the wake-up for the rest")
		readAll(t, c, "456789")
	})
}

func TestParkRequiresAnEmptyTimedOutRead(t *testing.T) {
	p := newTestParker(t, defaultBackend, 0)
	s, cl := tcpPair(t)
	c := p.Wrap(s, func() { t.Error("woken") })
	if err := c.Park(); !errors.Is(err, ErrNotIdle) {
		t.Fatalf("Park before any Read = %v, want ErrNotIdle", err)
	}
	cl.Write([]byte("x"))
	readAll(t, c, "x")
	if err := c.Park(); !errors.Is(err, ErrNotIdle) {
		t.Fatalf("Park after a Read that returned data = %v, want ErrNotIdle", err)
	}
	idle(t, c)
	cl.Write([]byte("y"))
	readAll(t, c, "y")
	if err := c.Park(); !errors.Is(err, ErrNotIdle) {
		t.Fatalf("Park after a timeout and then data = %v, want ErrNotIdle", err)
	}
	if p.Parked() != 0 {
		t.Fatal("a refused Park left the connection parked")
	}
}

// ParkNow parks a plain TCP connection with no empty Read before it:
// bytes that arrived before it wake the connection at once (the
// registration is level-triggered), later ones wake it as for Park.
func TestParkNow(t *testing.T) {
	eachBackend(t, func(t *testing.T, k backendKind) {
		p := newTestParker(t, k, 0)
		c, cl, w := wrapped(t, p)
		if err := c.ParkNow(); err != nil {
			t.Fatalf("ParkNow of a fresh connection: %v", err)
		}
		if p.Parked() != 1 {
			t.Fatalf("Parked = %d, want 1", p.Parked())
		}
		cl.Write([]byte("later"))
		w.wait(t, "the wake-up by bytes after ParkNow")
		readAll(t, c, "later")
		cl.Write([]byte("before"))
		readAll(t, c, "be")
		if err := c.ParkNow(); err != nil { // "fore" is pending
			t.Fatalf("ParkNow after a Read that returned data: %v", err)
		}
		w.wait(t, "the wake-up by bytes pending at ParkNow")
		readAll(t, c, "fore")
	})
}

// ParkNow refuses a connection with a layer above its descriptor (TLS
// may hold decrypted bytes no socket event announces), even after an
// empty timed-out Read, and one with no descriptor.
func TestParkNowRefusesTLSAndPipes(t *testing.T) {
	p := newTestParker(t, defaultBackend, 0)
	s, cl := tcpPair(t)
	ts := tls.Server(s, &tls.Config{Certificates: []tls.Certificate{testCert(t)}})
	tc := tls.Client(cl, &tls.Config{InsecureSkipVerify: true})
	errc := make(chan error, 1)
	go func() { errc <- tc.Handshake() }()
	if err := ts.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	c := p.Wrap(ts, func() { t.Error("woken") })
	if err := c.ParkNow(); !errors.Is(err, ErrNotIdle) {
		t.Fatalf("ParkNow of a TLS connection = %v, want ErrNotIdle", err)
	}
	idle(t, c)
	if err := c.ParkNow(); !errors.Is(err, ErrNotIdle) {
		t.Fatalf("ParkNow of a TLS connection after an empty Read = %v, want ErrNotIdle", err)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if err := p.Wrap(a, func() { t.Error("woken") }).ParkNow(); !errors.Is(err, ErrNotParkable) {
		t.Fatalf("ParkNow of a net.Pipe = %v, want ErrNotParkable", err)
	}
	if p.Parked() != 0 {
		t.Fatalf("Parked = %d after refused ParkNow calls, want 0", p.Parked())
	}
}

func TestNotParkable(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	p := newTestParker(t, defaultBackend, 0)
	c := p.Wrap(a, func() { t.Error("woken") })
	if err := c.Park(); !errors.Is(err, ErrNotParkable) {
		t.Fatalf("Park of a net.Pipe = %v, want ErrNotParkable", err)
	}
	s, _ := tcpPair(t)
	var nilp *Parker
	c = nilp.Wrap(s, func() { t.Error("woken") })
	idle(t, c)
	if err := c.Park(); !errors.Is(err, ErrNotParkable) {
		t.Fatalf("Park with a nil Parker = %v, want ErrNotParkable", err)
	}
	if c.Wake() {
		t.Fatal("Wake with a nil Parker reported a wake-up")
	}
	if nilp.Parked() != 0 || nilp.Close() != nil {
		t.Fatal("a nil Parker is not empty and closed")
	}
}

// Closing a parked connection wakes its owner, whose Read then fails as a
// reader blocked in Read would have.
func TestCloseWakesParked(t *testing.T) {
	eachBackend(t, func(t *testing.T, k backendKind) {
		p := newTestParker(t, k, 0)
		c, _, w := wrapped(t, p)
		parkIdle(t, c)
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		w.wait(t, "the wake-up by Close")
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read after Close = %v, want net.ErrClosed", err)
		}
		if err := c.Park(); err == nil {
			t.Fatal("a closed connection parked")
		}
		if p.Parked() != 0 || w.n.Load() != 1 {
			t.Fatalf("Parked %d, wake-ups %d; want 0 and 1", p.Parked(), w.n.Load())
		}
	})
}

func TestPeerHangUpWakes(t *testing.T) {
	eachBackend(t, func(t *testing.T, k backendKind) {
		p := newTestParker(t, k, 0)
		c, cl, w := wrapped(t, p)
		parkIdle(t, c)
		cl.Close()
		w.wait(t, "the wake-up by the peer's FIN")
		c.SetReadDeadline(time.Now().Add(testwait.Timeout))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("Read after the peer closed = %v, want io.EOF", err)
		}
	})
}

// Wake hands the connection back to its owner without data; a later event
// from the registration it left armed is stale and wakes nobody.
func TestWakeAndStaleEvent(t *testing.T) {
	eachBackend(t, func(t *testing.T, k backendKind) {
		p := newTestParker(t, k, 0)
		c, cl, w := wrapped(t, p)
		if c.Wake() {
			t.Fatal("Wake of an active connection reported a wake-up")
		}
		parkIdle(t, c)
		stale0 := p.stale.Load()
		if !c.Wake() {
			t.Fatal("Wake of a parked connection did nothing")
		}
		w.wait(t, "the wake-up by Wake")
		if k == kindEpoll {
			// The registration is still armed with the old generation.
			cl.Write([]byte("z"))
		}
		testwait.For(t, "the stale event to be dropped", func() bool { return p.stale.Load() > stale0 })
		if n := w.n.Load(); n != 1 {
			t.Fatalf("%d wake-ups, want 1", n)
		}
		if k == kindEpoll {
			readAll(t, c, "z")
		}
	})
}

// Events carry a slot and a generation: once a slot is freed, an event
// armed with its old generation finds nobody, even when the slot (and the
// descriptor number) went to another connection.
func TestGenerations(t *testing.T) {
	eachBackend(t, func(t *testing.T, k backendKind) {
		p := newTestParker(t, k, 0)
		c1, _, w1 := wrapped(t, p)
		parkIdle(t, c1)
		p.mu.Lock()
		idx, gen := c1.slot, p.slots[c1.slot].gen
		p.mu.Unlock()
		fd1 := fdOf(t, c1)
		c1.Close()
		w1.wait(t, "the wake-up by Close")

		c2, cl2, w2 := wrapped(t, p)
		parkIdle(t, c2)
		p.mu.Lock()
		idx2, gen2 := c2.slot, p.slots[c2.slot].gen
		p.mu.Unlock()
		if idx2 != idx || gen2 == gen {
			t.Fatalf("second park got slot %d gen %d; want slot %d with a generation other than %d", idx2, gen2, idx, gen)
		}
		if fdOf(t, c2) != fd1 {
			t.Logf("descriptor %d not reused (got %d); the slot was", fd1, fdOf(t, c2))
		}
		if c := p.claimEvent(idx, gen); c != nil {
			t.Fatal("an event with the old generation claimed the new connection")
		}
		cl2.Write([]byte("new"))
		w2.wait(t, "the new connection's wake-up")
		readAll(t, c2, "new")
		if w1.n.Load() != 1 || w2.n.Load() != 1 {
			t.Fatalf("wake-ups %d and %d, want 1 and 1", w1.n.Load(), w2.n.Load())
		}
	})
}

func fdOf(t *testing.T, c *Conn) uintptr {
	t.Helper()
	var fd uintptr
	if err := c.raw().Control(func(f uintptr) { fd = f }); err != nil {
		return ^uintptr(0)
	}
	return fd
}

// At most MaxWaking connections are between their wake-up and their first
// Read's return; the rest wait, and go on as slots come back.
func TestMaxWaking(t *testing.T) {
	eachBackend(t, func(t *testing.T, k backendKind) {
		const n, max = 5, 2
		p := newTestParker(t, k, max)
		var running atomic.Int32
		release := make(chan struct{})
		var conns []*Conn
		var clients []net.Conn
		var wg sync.WaitGroup
		for range n {
			s, cl := tcpPair(t)
			var c *Conn
			c = p.Wrap(s, func() {
				running.Add(1)
				<-release
				b := make([]byte, 1)
				c.SetReadDeadline(time.Now().Add(testwait.Timeout))
				c.Read(b) // gives the slot back
				wg.Done()
			})
			parkIdle(t, c)
			conns = append(conns, c)
			clients = append(clients, cl)
		}
		wg.Add(n)
		for _, cl := range clients {
			cl.Write([]byte("!"))
		}
		testwait.For(t, "two wake-ups running and a third waiting for a slot", func() bool {
			return running.Load() == max && p.waiting.Load() >= 1
		})
		if r := running.Load(); r != max {
			t.Fatalf("%d wake-ups running, want %d", r, max)
		}
		close(release)
		wg.Wait()
		if r := running.Load(); r != n {
			t.Fatalf("%d wake-ups ran, want %d", r, n)
		}
		if len(p.sem) != 0 {
			t.Fatalf("%d wake slots still held", len(p.sem))
		}
	})
}

// A wake function that returns without reading gives its slot back too.
func TestWakeSlotBackWithoutRead(t *testing.T) {
	eachBackend(t, func(t *testing.T, k backendKind) {
		p := newTestParker(t, k, 1)
		for i := range 3 {
			c, cl, w := wrapped(t, p)
			parkIdle(t, c)
			cl.Write([]byte("x"))
			w.wait(t, "wake-up "+string(rune('1'+i)))
		}
		testwait.For(t, "the slot to come back", func() bool { return len(p.sem) == 0 })
	})
}

// Parker.Close wakes what is still parked, refuses new parks, and waits
// for the wake functions.
func TestParkerCloseWakesAll(t *testing.T) {
	eachBackend(t, func(t *testing.T, k backendKind) {
		p, err := newParker(Config{}, k)
		if err != nil {
			t.Fatal(err)
		}
		var woken atomic.Int32
		var conns []*Conn
		for range 10 {
			s, _ := tcpPair(t)
			c := p.Wrap(s, func() { woken.Add(1) })
			parkIdle(t, c)
			conns = append(conns, c)
		}
		p.Close()
		if n := woken.Load(); n != 10 {
			t.Fatalf("%d of 10 parked connections woken by Close", n)
		}
		idle(t, conns[0])
		if err := conns[0].Park(); !errors.Is(err, ErrClosed) {
			t.Fatalf("Park after Close = %v, want ErrClosed", err)
		}
		p.Close() // idempotent
	})
}

// Close racing a wake-up by data: the owner is woken exactly once.
func TestCloseRacesData(t *testing.T) {
	eachBackend(t, func(t *testing.T, k backendKind) {
		p := newTestParker(t, k, 4)
		const rounds = 100
		var ws []*waker
		for range rounds {
			c, cl, w := wrapped(t, p)
			parkIdle(t, c)
			ws = append(ws, w)
			var wg sync.WaitGroup
			wg.Go(func() { cl.Write([]byte("x")) })
			wg.Go(func() { c.Close() })
			wg.Wait()
			w.wait(t, "the wake-up")
		}
		p.Close() // waits for every wake function
		for i, w := range ws {
			if n := w.n.Load(); n != 1 {
				t.Fatalf("round %d: %d wake-ups, want 1", i, n)
			}
		}
	})
}

// Parked connections hold no goroutine on the epoll backend.
func TestNoGoroutinePerParkedConn(t *testing.T) {
	const n = 200
	p := newTestParker(t, kindEpoll, 0)
	g0 := runtime.NumGoroutine()
	for range n {
		s, _ := tcpPair(t)
		parkIdle(t, p.Wrap(s, func() {}))
	}
	if d := runtime.NumGoroutine() - g0; d > 2 {
		t.Fatalf("%d goroutines more for %d parked connections", d, n)
	}
	if p.Parked() != n {
		t.Fatalf("Parked = %d, want %d", p.Parked(), n)
	}
}

// TLS: a Read that returned data may have left plaintext inside the
// tls.Conn, so Park refuses until a Read times out empty; then the next
// record wakes the connection.
func TestTLS(t *testing.T) {
	eachBackend(t, func(t *testing.T, k backendKind) {
		p := newTestParker(t, k, 0)
		s, cl := tcpPair(t)
		cert := testCert(t)
		ts := tls.Server(s, &tls.Config{Certificates: []tls.Certificate{cert}})
		tc := tls.Client(cl, &tls.Config{InsecureSkipVerify: true})
		errc := make(chan error, 1)
		go func() { errc <- tc.Handshake() }()
		if err := ts.Handshake(); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		w := newWaker()
		c := p.Wrap(ts, w.wake)
		tc.Write([]byte("ab")) // one record
		readAll(t, c, "a")     // "b" stays inside the tls.Conn
		if err := c.Park(); !errors.Is(err, ErrNotIdle) {
			t.Fatalf("Park with plaintext buffered = %v, want ErrNotIdle", err)
		}
		c.SetReadDeadline(time.Unix(1, 0))
		b := make([]byte, 1)
		if n, err := c.Read(b); n != 1 || b[0] != 'b' {
			t.Fatalf("buffered plaintext with a past deadline: %q, %v", b[:n], err)
		}
		parkIdle(t, c)
		tc.Write([]byte("next record"))
		w.wait(t, "the wake-up by a TLS record")
		readAll(t, c, "next record")
	})
}

// The wrapper passes the net.Conn conformance tests of x/net/nettest.
func TestNetConn(t *testing.T) {
	eachBackend(t, func(t *testing.T, k backendKind) {
		p := newTestParker(t, k, 0)
		nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
			s, cl := tcpPair(t)
			c1, c2 = p.Wrap(s, func() {}), p.Wrap(cl, func() {})
			return c1, c2, func() { c1.Close(); c2.Close() }, nil
		})
	})
}

// nettest again, on connections that were parked and woken first: the
// wake-up leaves nothing behind in the wrapper.
func TestNetConnAfterPark(t *testing.T) {
	eachBackend(t, func(t *testing.T, k backendKind) {
		p := newTestParker(t, k, 0)
		nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
			a, cl, w := wrapped(t, p)
			b := p.Wrap(cl, func() {})
			parkIdle(t, a)
			if !a.Wake() {
				t.Fatal("Wake did nothing")
			}
			w.wait(t, "the wake-up")
			a.SetReadDeadline(time.Time{})
			return a, b, func() { a.Close(); b.Close() }, nil
		})
	})
}

func TestIdle(t *testing.T) {
	t0 := time.Unix(1000, 0)
	i := Idle{Period: 5 * time.Second}
	if d := i.Start(t0); !d.Equal(t0.Add(5 * time.Second)) {
		t.Fatalf("deadline %v", d)
	}
	if !i.Expired() {
		t.Fatal("a period with no data is not idle")
	}
	i.Seen()
	if i.Expired() {
		t.Fatal("a period with data counted as idle")
	}
	i.Start(t0.Add(5 * time.Second))
	if !i.Expired() {
		t.Fatal("Start did not begin a fresh period")
	}
}

func BenchmarkParkWake(b *testing.B) {
	for _, k := range backendKinds() {
		b.Run(k.String(), func(b *testing.B) {
			p, err := newParker(Config{}, k)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			s, cl := tcpPair(b)
			woke := make(chan struct{}, 1)
			c := p.Wrap(s, func() { woke <- struct{}{} })
			buf := make([]byte, 1)
			for b.Loop() {
				c.SetReadDeadline(time.Unix(1, 0))
				c.Read(buf)
				if err := c.Park(); err != nil {
					b.Fatal(err)
				}
				cl.Write(buf)
				<-woke
				c.SetReadDeadline(time.Time{})
				c.Read(buf)
			}
		})
	}
}

// testCert is a throwaway self-signed certificate for 127.0.0.1.
func testCert(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
