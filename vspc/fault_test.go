package vspc_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/vspc"
	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
)

// Fault injection: remotes and VM connections killed at random points
// (mid-vMotion included), thousands of garbage and half-open connections,
// slow-loris handshakes, peers that never read. The default sizes keep
// `go test -race ./vspc/` short; VSPC_HEAVY=1 (make bench) runs the full
// sizes of issue 8 (10,000 bad connections, more rounds).

func heavy() bool { return os.Getenv("VSPC_HEAVY") != "" }

// slowed reports a healthy session that lost throughput. Timings are a
// benchmark's business (make bench runs these tests with VSPC_HEAVY=1,
// alone on the machine, and fails on it); in the unit run, where other
// packages' tests share the two cores, it is only logged.
func slowed(t *testing.T, format string, args ...any) {
	t.Helper()
	if heavy() {
		t.Errorf(format, args...)
		return
	}
	t.Logf("(timing, not checked outside make bench) "+format, args...)
}

func pick(light, full int) int {
	if heavy() {
		return full
	}
	return light
}

// gapReader checks a counter stream (see word) that may lose a run of
// bytes where a connection died, but never repeats or reorders any. On a
// new connection (newConn) it finds the stream again: it continues byte
// for byte where the old one stopped, or it starts further on, possibly
// with the tail of a word torn by the old connection's death.
type gapReader struct {
	next  uint32 // index of the next word due
	buf   []byte
	gaps  int
	lost  uint64 // words skipped
	fresh bool
	first uint32 // first whole word seen since newConn
	seen  bool   // first is set
}

func wordIndex(b []byte) uint32 { return binary.BigEndian.Uint32(b) ^ 0xff00ff00 }

func (r *gapReader) newConn() { r.fresh, r.seen = true, false }

func (r *gapReader) check(b []byte) error {
	r.buf = append(r.buf, b...)
	if r.fresh {
		if len(r.buf) < 11 {
			return nil // not enough to find two whole words yet
		}
		found := -1
		for k := range 4 {
			a, b := wordIndex(r.buf[k:]), wordIndex(r.buf[k+4:])
			if b == a+1 && a >= r.next && (found < 0 || a == r.next) {
				found = k
				if a == r.next {
					break
				}
			}
		}
		if found < 0 {
			return fmt.Errorf("new connection: no counter stream at or after word %d in % x", r.next, r.buf[:11])
		}
		r.buf = r.buf[found:]
		if a := wordIndex(r.buf); a > r.next {
			r.gaps++
			r.lost += uint64(a - r.next)
			r.next = a
		}
		r.fresh = false
	}
	for len(r.buf) >= 4 {
		got := wordIndex(r.buf)
		if got != r.next {
			return fmt.Errorf("word %d arrived when %d was due (duplicated, reordered or corrupted)", got, r.next)
		}
		if !r.seen {
			r.first, r.seen = got, true
		}
		r.next++
		r.buf = r.buf[4:]
	}
	if len(r.buf) == 0 {
		r.buf = r.buf[:0:0]
	}
	return nil
}

// counterSource writes counter words to whatever connection is current.
type counterSource struct {
	mu   sync.Mutex
	next uint32
}

func (s *counterSource) write(w io.Writer, n int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := counterChunk(s.next, n)
	k, err := w.Write(b)
	s.next += uint32(k / 4) // a torn word is never counted as sent
	return err
}

func (s *counterSource) sent() uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next
}

// TestFaultRemoteKillRestart kills the remote (FIN or RST) at random
// points while the VM streams to it, keeps it away for a while and brings
// it back on the same address. What the VM sends while the remote is away
// (and the bridge knows it) is delivered when it returns; nothing is ever
// duplicated or reordered; what is lost is only what was in flight to the
// dying connection.
func TestFaultRemoteKillRestart(t *testing.T) {
	e := newBenchEnv(t, "20ms", nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	vm := dialRaw(t, e.addr, vmNamed(1, vspc.DirClient, "tcp://"+addr))
	defer vm.Close()

	var src counterSource
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(mrand.IntN(500)) * time.Microsecond):
			}
			if err := src.write(vm, 1+mrand.IntN(256)); err != nil {
				t.Errorf("VM write: %v", err)
				return
			}
		}
	})
	defer func() { close(stop); wg.Wait() }()

	var rd gapReader
	buf := make([]byte, 32<<10)
	rounds := pick(6, 30)
	var mustFrom uint32 // every word from here on must arrive
	for round := range rounds {
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
		c, err := ln.Accept()
		if err != nil {
			t.Fatalf("round %d: the bridge did not come back: %v", round, err)
		}
		rd.newConn()
		until := time.Now().Add(time.Duration(20+mrand.IntN(150)) * time.Millisecond)
		checked := false
		for time.Now().Before(until) {
			c.SetReadDeadline(until)
			n, err := c.Read(buf)
			if n > 0 {
				if cerr := rd.check(buf[:n]); cerr != nil {
					t.Fatalf("round %d: %v", round, cerr)
				}
				if !checked && rd.seen && round > 0 {
					checked = true
					if rd.first > mustFrom {
						t.Fatalf("round %d: the first word after the restart is %d, but %d was sent while the remote was away and must arrive", round, rd.first, mustFrom)
					}
				}
			}
			if err != nil {
				break
			}
		}
		// Kill it: half the time with RST (unread data discarded).
		if mrand.IntN(2) == 0 {
			c.(*net.TCPConn).SetLinger(0)
		}
		c.Close()
		ln.Close()
		// Once the bridge has noticed, what the VM writes goes to the
		// link's backlog, and must all arrive.
		testwait.For(t, "the bridge to notice the remote is gone", func() bool {
			d := e.br.Devices()
			return len(d) == 1 && d[0].State != "up"
		})
		mustFrom = src.sent()
		time.Sleep(time.Duration(mrand.IntN(150)) * time.Millisecond)
		if ln, err = net.Listen("tcp", addr); err != nil {
			t.Skipf("round %d: %s taken meanwhile: %v", round, addr, err)
		}
	}
	ln.Close()
	t.Logf("%d remote kills: %d gaps, %d words (%d bytes) lost in flight to dying connections; %d words checked",
		rounds, rd.gaps, rd.lost, 4*rd.lost, rd.next)
}

// vmStream is a VM that receives a counter stream from its remote across
// connections that die and are replaced.
type vmStream struct {
	src    counterSource
	conns  chan *vspctest.Conn
	rdMu   sync.Mutex
	rd     gapReader
	errc   chan error
	firsts chan firstWord // the first whole word read on each connection
}

type firstWord struct {
	c     *vspctest.Conn
	index uint32
	none  bool // the connection ended before a whole word arrived
}

func (s *vmStream) reader() {
	buf := make([]byte, 16<<10)
	for c := range s.conns {
		s.rdMu.Lock()
		s.rd.newConn()
		s.rdMu.Unlock()
		reported := false
		for {
			n, err := c.Read(buf)
			if n > 0 {
				s.rdMu.Lock()
				cerr := s.rd.check(buf[:n])
				seen, first := s.rd.seen, s.rd.first
				s.rdMu.Unlock()
				if cerr != nil {
					s.errc <- cerr
					return
				}
				if seen && !reported {
					reported = true
					s.firsts <- firstWord{c: c, index: first}
				}
			}
			if err != nil {
				break
			}
		}
		if !reported {
			s.firsts <- firstWord{c: c, none: true}
		}
	}
}

// settleBinary is how long a destination waits after PEER-OK before
// COMPLETE, as real ESXi does (its COMPLETE follows the memory copy).
const settleBinary = 20 * time.Millisecond

// TestFaultVMKillMidVMotion kills the VM's connections at random points of
// the hand-over (before GOAHEAD is read, after GOAHEAD, with the
// destination open but before COMPLETE, the destination itself) and lets
// the VM come back by DO-PROXY or a new PEER. Data the bridge held for the
// VM while no connection could take it is delivered in order on the
// connection that comes back; nothing is duplicated or reordered.
func TestFaultVMKillMidVMotion(t *testing.T) {
	e := newBenchEnv(t, "20ms", nil)
	rln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer rln.Close()
	vm := vmNamed(2, vspc.DirClient, "tcp://"+rln.Addr().String())
	// A hand-over or reconnect that hangs fails the test instead of the
	// package's timeout.
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	cur, err := vspctest.Dial(ctx, e.addr, vm)
	if err != nil {
		t.Fatal(err)
	}
	remote, err := rln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer remote.Close()
	s := &vmStream{conns: make(chan *vspctest.Conn, 4), errc: make(chan error, 1), firsts: make(chan firstWord, 64)}
	s.conns <- cur
	done := make(chan struct{})
	go func() { defer close(done); s.reader() }()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(mrand.IntN(400)) * time.Microsecond):
			}
			if err := s.src.write(remote, 1+mrand.IntN(64)); err != nil {
				t.Errorf("remote write: %v", err)
				return
			}
		}
	})
	// swap makes c current: the reader moves on once the old one ends.
	swap := func(c *vspctest.Conn) {
		s.conns <- c
		cur = c
	}
	// nextFirst returns the first word read on the current connection.
	nextFirst := func() uint32 {
		for {
			select {
			case f := <-s.firsts:
				if f.c != cur {
					continue // an older connection's
				}
				if f.none {
					t.Fatal("the new connection ended without data")
				}
				return f.index
			case err := <-s.errc:
				t.Fatal(err)
			case <-time.After(10 * time.Second):
				t.Fatal("no data on the new connection within 10s")
			}
		}
	}
	nextFirst() // the first connection's
	rounds := pick(12, 60)
	stages := map[string]int{}
	for round := range rounds {
		seq := []byte{byte(round), 0xff, byte(round >> 8), 7}
		var held uint32
		switch mrand.IntN(5) {
		case 0: // the VM's connection dies; the VM comes back by DO-PROXY
			time.Sleep(time.Duration(mrand.IntN(20)) * time.Millisecond)
			cur.Close()
			c, err := vspctest.Dial(ctx, e.addr, vm)
			if err != nil {
				t.Fatalf("round %d: reconnect: %v", round, err)
			}
			swap(c)
			nextFirst() // in-flight data may be lost: no bound to check
			stages["killed, DO-PROXY"]++
		case 1: // killed right after sending BEGIN (GOAHEAD never read)
			cur.SendRaw(vspc.AppendExt(nil, vspc.VMotionBegin, seq))
			cur.Close()
			c, err := vspctest.Dial(ctx, e.addr, vm)
			if err != nil {
				t.Fatalf("round %d: reconnect after BEGIN: %v", round, err)
			}
			swap(c)
			nextFirst()
			stages["BEGIN, killed, DO-PROXY"]++
		case 2: // GOAHEAD, the source host dies, the VM comes back by DO-PROXY
			if _, err := cur.Begin(ctx, seq); err != nil {
				t.Fatalf("round %d: BEGIN: %v", round, err)
			}
			held = s.src.sent() // from here on the bridge holds it all
			cur.Close()
			time.Sleep(time.Duration(mrand.IntN(20)) * time.Millisecond)
			c, err := vspctest.Dial(ctx, e.addr, vm)
			if err != nil {
				t.Fatalf("round %d: reconnect after GOAHEAD: %v", round, err)
			}
			swap(c)
			if f := nextFirst(); f > held {
				t.Fatalf("round %d: held data lost: first word %d on the new connection, %d was held", round, f, held)
			}
			stages["GOAHEAD, killed, DO-PROXY"]++
		case 3: // the destination dies before COMPLETE; a second PEER completes
			secret, err := cur.Begin(ctx, seq)
			if err != nil {
				t.Fatalf("round %d: BEGIN: %v", round, err)
			}
			held = s.src.sent()
			d1, err := vspctest.DialPeer(ctx, e.addr, vm, seq, secret)
			if err != nil {
				t.Fatalf("round %d: PEER: %v", round, err)
			}
			d1.Close()
			// Until the bridge has seen d1 go, it holds the hand-over
			// for d1 and turns another PEER away: wait until d1's
			// session has ended (only the source is left).
			testwait.For(t, "the first destination's session to end", func() bool { return e.srv.Sessions() == 1 })
			d2, err := vspctest.DialPeer(ctx, e.addr, vm, seq, secret)
			if err != nil {
				t.Fatalf("round %d: second PEER: %v", round, err)
			}
			time.Sleep(settleBinary)
			cur.Close()
			if err := d2.Complete(seq); err != nil {
				t.Fatal(err)
			}
			swap(d2)
			if f := nextFirst(); f > held {
				t.Fatalf("round %d: held data lost: first word %d, %d was held", round, f, held)
			}
			stages["PEER, destination killed, PEER again, COMPLETE"]++
		case 4: // a normal hand-over, the source closing at COMPLETE
			secret, err := cur.Begin(ctx, seq)
			if err != nil {
				t.Fatalf("round %d: BEGIN: %v", round, err)
			}
			held = s.src.sent()
			dst, err := vspctest.DialPeer(ctx, e.addr, vm, seq, secret)
			if err != nil {
				t.Fatalf("round %d: PEER: %v", round, err)
			}
			time.Sleep(settleBinary)
			go cur.Close()
			if err := dst.Complete(seq); err != nil {
				t.Fatal(err)
			}
			swap(dst)
			if f := nextFirst(); f > held {
				t.Fatalf("round %d: held data lost: first word %d, %d was held", round, f, held)
			}
			stages["complete hand-over"]++
		}
	}
	close(stop)
	wg.Wait()
	// Everything sent since the last switch arrives.
	want := s.src.sent()
	var got uint32
	if !testwait.Until(t, testwait.Timeout, func() bool {
		s.rdMu.Lock()
		got = s.rd.next
		s.rdMu.Unlock()
		return got >= want || len(s.errc) > 0
	}) || len(s.errc) > 0 {
		select {
		case err := <-s.errc:
			t.Fatal(err)
		default:
		}
		t.Fatalf("VM got %d of %d words", got, want)
	}
	cur.Close()
	close(s.conns)
	go func() {
		for range s.firsts {
		}
	}()
	<-done
	close(s.firsts)
	s.rdMu.Lock()
	t.Logf("%d rounds %v: %d gaps, %d words lost in flight to killed connections, %d words checked", rounds, stages, s.rd.gaps, s.rd.lost, s.rd.next)
	s.rdMu.Unlock()
}

// heapInuse is the heap in use after a collection.
func heapInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// goodSession streams remote→VM on a healthy session in the background
// and counts what arrives intact.
type goodSession struct {
	vm     *vspctest.Raw
	remote net.Conn
	got    atomic.Int64
	stop   chan struct{}
	wg     sync.WaitGroup
	err    atomic.Value
}

func startGoodSession(t *testing.T, e *benchEnv) *goodSession {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	g := &goodSession{stop: make(chan struct{})}
	g.vm = dialRaw(t, e.addr, vmNamed(9, vspc.DirClient, "tcp://"+ln.Addr().String()))
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	if g.remote, err = ln.Accept(); err != nil {
		t.Fatal(err)
	}
	g.wg.Go(func() {
		var next uint32
		for {
			select {
			case <-g.stop:
				return
			default:
			}
			if _, err := g.remote.Write(counterChunk(next, 1024)); err != nil {
				return
			}
			next += 1024
			time.Sleep(time.Millisecond) // a few MB/s: a busy console, not a benchmark
		}
	})
	g.wg.Go(func() {
		var cr counterReader
		buf := make([]byte, 32<<10)
		for {
			n, err := g.vm.Read(buf)
			if n > 0 {
				if cerr := cr.check(buf[:n]); cerr != nil {
					g.err.Store(cerr)
					return
				}
				g.got.Add(int64(n))
			}
			if err != nil {
				return
			}
		}
	})
	return g
}

// flowing waits until data arrives on the healthy session.
func (g *goodSession) flowing(t *testing.T) {
	t.Helper()
	testwait.For(t, "data on the healthy session", func() bool { return g.got.Load() > 0 })
}

// rate measures the session's throughput over d.
func (g *goodSession) rate(d time.Duration) float64 {
	a := g.got.Load()
	time.Sleep(d)
	return float64(g.got.Load()-a) / d.Seconds()
}

func (g *goodSession) close(t *testing.T) {
	close(g.stop)
	g.remote.Close()
	g.vm.Close()
	g.wg.Wait()
	if err, _ := g.err.Load().(error); err != nil {
		t.Fatalf("healthy session: %v", err)
	}
}

// TestFaultGarbageAndHalfOpen opens thousands of bad connections (garbage,
// silent half-open ones, half-closed mid-subnegotiation, reset at once),
// a bounded number at a time (file limit), while a healthy session
// streams. The bridge closes each one (protocol error or handshake
// timeout), its memory and goroutines return to where they were, and the
// healthy session keeps flowing.
func TestFaultGarbageAndHalfOpen(t *testing.T) {
	e := newBenchEnv(t, "1h", func(c *vspc.Config) { c.HandshakeTimeout = time.Second })
	g := startGoodSession(t, e)
	defer g.close(t)
	g.flowing(t)
	before := g.rate(500 * time.Millisecond)
	heap0, gr0 := heapInuse(), runtime.NumGoroutine()

	total, inFlight := pick(1000, 10000), pick(250, 1000)
	var kinds [4]atomic.Int64
	var notClosed atomic.Int64
	sem := make(chan struct{}, inFlight)
	var wg sync.WaitGroup
	rateDuring := make(chan float64, 1)
	go func() { rateDuring <- g.rate(time.Second) }()
	start := time.Now()
	for i := range total {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := net.Dial("tcp", e.addr)
			if err != nil {
				t.Errorf("dial %d: %v", i, err)
				return
			}
			defer c.Close()
			k := i % 4
			kinds[k].Add(1)
			switch k {
			case 0: // garbage
				c.Write(randomData(uint64(i), 1+mrand.IntN(4096)))
			case 1: // silent: the handshake timeout must close it
			case 2: // half-closed inside a subnegotiation
				c.Write([]byte{0xff, 0xfb, 0xe8, 0xff, 0xfa, 0xe8, 0x46, 'x'})
				c.(*net.TCPConn).CloseWrite()
			case 3: // reset at once
				c.(*net.TCPConn).SetLinger(0)
				return
			}
			if !closedByPeer(c, 5*time.Second) {
				notClosed.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	during := <-rateDuring
	if n := notClosed.Load(); n > 0 {
		t.Errorf("%d bad connections were not closed by the bridge within 5s", n)
	}
	// Everything the bad connections held is released.
	if !testwait.Until(t, testwait.Timeout, func() bool { return e.srv.Sessions() == 1 }) {
		t.Errorf("%d sessions open after the storm, want 1 (the healthy one)", e.srv.Sessions())
	}
	var heap1 uint64
	var gr1 int
	testwait.Until(t, testwait.Timeout, func() bool {
		heap1, gr1 = heapInuse(), runtime.NumGoroutine()
		return gr1 <= gr0+2 && heap1 < heap0+8<<20
	})
	if gr1 > gr0+2 {
		t.Errorf("goroutines %d → %d after the storm", gr0, gr1)
	}
	if heap1 > heap0+8<<20 {
		t.Errorf("heap in use %d → %d KiB after the storm", heap0>>10, heap1>>10)
	}
	after := g.rate(500 * time.Millisecond)
	t.Logf("%d bad connections (%d garbage, %d silent, %d half-closed, %d reset), ≤%d at a time, in %v; heap %d → %d KiB; goroutines %d → %d",
		total, kinds[0].Load(), kinds[1].Load(), kinds[2].Load(), kinds[3].Load(), inFlight, elapsed.Round(time.Millisecond), heap0>>10, heap1>>10, gr0, gr1)
	t.Logf("healthy session: %.1f MB/s before, %.1f MB/s during the storm, %.1f MB/s after", before/1e6, during/1e6, after/1e6)
	// The storm's clients run in this process too (and under -race), so
	// "during" is a floor against stalls, not a fairness figure.
	if during < before/10 || after < before/2 {
		slowed(t, "healthy session slowed down: %.1f MB/s before, %.1f during, %.1f after", before/1e6, during/1e6, after/1e6)
	}
}

// TestFaultSlowLoris trickles ESXi's opening bytes one at a time and never
// finishes: the handshake deadline runs from accept, so every such
// connection is closed after handshake_timeout however slowly it sends,
// and a real VM still gets through quickly meanwhile.
func TestFaultSlowLoris(t *testing.T) {
	const hsTimeout = 700 * time.Millisecond
	e := newBenchEnv(t, "1h", func(c *vspc.Config) { c.HandshakeTimeout = hsTimeout })
	n := pick(100, 1500)
	hello := append([]byte{0xff, 0xfb, 0x25, 0xff, 0xfb, 0xe8},
		vspc.AppendExt(nil, vspc.KnownSuboptions1, []byte{0, 1, 2, 3, 0x46, 0x47})...)
	hello = append(hello, vspc.AppendExt(nil, vspc.DoProxy, []byte("Ctcp://127.0.0.1:1"))...)
	var wg sync.WaitGroup
	var trickling atomic.Int64
	lifetimes := make([]time.Duration, n)
	for i := range n {
		wg.Go(func() {
			c, err := net.Dial("tcp", e.addr)
			if err != nil {
				t.Errorf("dial: %v", err)
				trickling.Add(1)
				return
			}
			defer c.Close()
			start := time.Now()
			go io.Copy(io.Discard, c)
			for j, first := 0, true; ; j = (j + 1) % len(hello) {
				_, err := c.Write(hello[j : j+1])
				if first {
					first = false
					trickling.Add(1)
				}
				if err != nil {
					break
				}
				time.Sleep(50 * time.Millisecond)
				if time.Since(start) > hsTimeout+5*time.Second {
					t.Errorf("slow-loris connection %d still open after %v", i, time.Since(start))
					return
				}
			}
			lifetimes[i] = time.Since(start)
		})
	}
	testwait.For(t, "every slow-loris connection to be trickling", func() bool { return trickling.Load() == int64(n) })
	// A real VM meanwhile.
	raddr, rconns := rawRemote(t)
	start := time.Now()
	good, err := vspctest.Dial(t.Context(), e.addr, vmNamed(5, vspc.DirClient, "tcp://"+raddr))
	if err != nil {
		t.Fatal(err)
	}
	hs := time.Since(start)
	defer good.Close()
	remote := accept(t, rconns)
	wg.Wait()
	var longest time.Duration
	for _, d := range lifetimes {
		longest = max(longest, d)
	}
	exchange(t, good, remote, []byte("after the loris"), []byte("still fine \xff"))
	t.Logf("%d slow-loris connections all closed, the last after %v (handshake_timeout %v); a real VM's handshake meanwhile took %v", n, longest.Round(time.Millisecond), hsTimeout, hs.Round(time.Millisecond))
	if hs > hsTimeout {
		t.Errorf("a real VM's handshake took %v under the slow-loris load", hs)
	}
}

// TestFaultPeerNeverReads: a remote that never reads, and a VM that never
// reads. The bridge back-pressures the sender instead of buffering
// without bound (its heap stays bounded), another session keeps its
// throughput, and once the stuck side reads again every byte arrives.
func TestFaultPeerNeverReads(t *testing.T) {
	const buffer = 256 << 10
	e := newBenchEnv(t, "20ms", func(c *vspc.Config) { c.Buffer = buffer })
	g := startGoodSession(t, e)
	defer g.close(t)
	g.flowing(t)
	before := g.rate(500 * time.Millisecond)
	heap0 := heapInuse()

	pairFor := func(i int) (*vspctest.Raw, net.Conn) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		vm := dialRaw(t, e.addr, vmNamed(i, vspc.DirClient, "tcp://"+ln.Addr().String()))
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
		r, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { vm.Close(); r.Close() })
		return vm, r
	}
	type stuck struct {
		name string
		w    io.Writer
		r    io.Reader
		sent atomic.Int64
	}
	vmA, remA := pairFor(20) // the remote never reads
	vmB, remB := pairFor(21) // the VM never reads
	cases := []*stuck{{name: "remote never reads", w: vmA, r: remA}, {name: "VM never reads", w: remB, r: vmB}}
	const attempt = 16 << 20
	var wg sync.WaitGroup
	for _, s := range cases {
		wg.Go(func() {
			var next uint32
			for s.sent.Load() < attempt {
				if _, err := s.w.Write(counterChunk(next, 8192)); err != nil {
					return
				}
				next += 8192
				s.sent.Add(32 << 10)
			}
		})
	}
	// Both writers are held back: the bridge's queue toward the VM that
	// does not read is full, and neither writer has made progress for
	// 100 ms. (A bridge that buffered without bound would have taken all
	// 16 MiB long before.)
	type progress struct {
		sent  int64
		since time.Time
	}
	last := make([]progress, len(cases))
	testwait.For(t, "both writers to be held back", func() bool {
		var queued int
		for _, p := range e.srv.Ports() {
			if p.VMName == "vm-00021" {
				queued = p.Queued
			}
		}
		held := queued >= buffer/2
		for i, s := range cases {
			if n := s.sent.Load(); n != last[i].sent || last[i].since.IsZero() {
				last[i] = progress{n, time.Now()}
			}
			held = held && time.Since(last[i].since) >= 100*time.Millisecond
		}
		return held
	})
	during := g.rate(500 * time.Millisecond)
	heap1 := heapInuse()
	for _, s := range cases {
		if n := s.sent.Load(); n >= attempt {
			t.Errorf("%s: the writer pushed all %d MiB into the bridge: no back-pressure", s.name, n>>20)
		} else {
			t.Logf("%s: the writer is held back after %d KiB (socket buffers and the bridge's bounded queue)", s.name, n>>10)
		}
	}
	if heap1 > heap0+16<<20 {
		t.Errorf("heap grew from %d to %d KiB while the peers did not read", heap0>>10, heap1>>10)
	}
	// Now they read: everything arrives, in order.
	for _, s := range cases {
		wg.Go(func() {
			var cr counterReader
			buf := make([]byte, 64<<10)
			var got int64
			for got < attempt {
				if c, ok := s.r.(net.Conn); ok {
					c.SetReadDeadline(time.Now().Add(20 * time.Second))
				}
				n, err := s.r.Read(buf)
				if n > 0 {
					if cerr := cr.check(buf[:n]); cerr != nil {
						t.Errorf("%s: %v", s.name, cerr)
						return
					}
					got += int64(n)
				}
				if err != nil {
					if errors.Is(err, os.ErrDeadlineExceeded) {
						t.Errorf("%s: stalled after %d of %d bytes", s.name, got, attempt)
					} else {
						t.Errorf("%s: read after %d bytes: %v", s.name, got, err)
					}
					return
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("stuck sessions did not drain within 60s")
	}
	t.Logf("heap %d KiB before, %d KiB while two peers did not read; healthy session %.1f MB/s before, %.1f MB/s during", heap0>>10, heap1>>10, before/1e6, during/1e6)
	if during < before/2 {
		slowed(t, "healthy session slowed from %.1f to %.1f MB/s while other peers did not read", before/1e6, during/1e6)
	}
}
