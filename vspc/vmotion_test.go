package vspc_test

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/vspc"
	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
)

// word is the counter pattern both directions carry: 4-byte words whose
// value is the word's index, XORed so that 0xFF bytes are frequent. A
// lost, duplicated or reordered byte breaks the sequence.
func word(i uint32) uint32 { return i ^ 0xff00ff00 }

type counterReader struct {
	next uint32
	part []byte
}

// check consumes b and reports the first mismatch.
func (r *counterReader) check(b []byte) error {
	r.part = append(r.part, b...)
	for len(r.part) >= 4 {
		got := binary.BigEndian.Uint32(r.part)
		if want := word(r.next); got != want {
			return fmt.Errorf("word %d: got %08x, want %08x (lost, duplicated or reordered bytes)", r.next, got, want)
		}
		r.next++
		r.part = r.part[4:]
	}
	if len(r.part) == 0 {
		r.part = r.part[:0:0]
	}
	return nil
}

func counterChunk(start uint32, n int) []byte {
	b := make([]byte, 4*n)
	for i := range n {
		binary.BigEndian.PutUint32(b[4*i:], word(start+uint32(i)))
	}
	return b
}

// streamVM is a simulated VM whose serial line carries counter streams both
// ways with a raw TCP remote, and that migrates between "hosts".
type streamVM struct {
	t      *testing.T
	addr   string
	vm     vspctest.VM
	remote net.Conn

	mu  sync.Mutex // held while the guest writes; a migration takes it (the VM is stunned)
	cur *vspctest.Conn

	conns     chan *vspctest.Conn // to the reader: each new connection
	toVM      atomic.Uint32       // words the remote sent
	atVM      atomic.Uint32       // words the VM received
	toRemote  atomic.Uint32
	atRemote  atomic.Uint32
	errc      chan error
	readSize  int
	stop      chan struct{}
	wg        sync.WaitGroup
	readDelay atomic.Int64    // a slow guest: pause after each read (ns)
	switches  []time.Duration // COMPLETE sent → first byte on the new connection
	swMu      sync.Mutex
	firstAt   chan time.Time
}

func startStreamVM(t *testing.T, e *env, i int, rate time.Duration) *streamVM {
	return startStreamVMOpts(t, e, i, rate, 0, 16<<10)
}

func startStreamVMOpts(t *testing.T, e *env, i int, rate, readDelay time.Duration, readSize int) *streamVM {
	t.Helper()
	raddr, rconns := rawRemote(t)
	vm := vmNamed(i, vspc.DirClient, "tcp://"+raddr)
	c, err := vspctest.Dial(t.Context(), e.addr, vm)
	if err != nil {
		t.Fatal(err)
	}
	s := &streamVM{t: t, addr: e.addr, vm: vm, cur: c, conns: make(chan *vspctest.Conn, 1),
		errc: make(chan error, 8), stop: make(chan struct{}), firstAt: make(chan time.Time, 1), readSize: readSize}
	s.readDelay.Store(int64(readDelay))
	s.remote = accept(t, rconns)
	s.conns <- c
	s.wg.Add(4)
	go s.vmReader()
	go s.remoteReader()
	go s.remoteWriter(rate)
	go s.vmWriter(rate)
	return s
}

func (s *streamVM) fail(err error) {
	select {
	case s.errc <- err:
	default:
	}
}

func (s *streamVM) vmReader() {
	defer s.wg.Done()
	var cr counterReader
	buf := make([]byte, s.readSize)
	for c := range s.conns {
		first := true
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if first {
					select {
					case s.firstAt <- time.Now():
					default:
					}
				}
				first = false
				if cerr := cr.check(buf[:n]); cerr != nil {
					s.fail(fmt.Errorf("VM side: %w", cerr))
					return
				}
				s.atVM.Store(cr.next)
				if d := s.readDelay.Load(); d > 0 {
					time.Sleep(time.Duration(d))
				}
			}
			if err != nil {
				break // the source went away: go on with the next connection
			}
		}
	}
}

func (s *streamVM) remoteReader() {
	defer s.wg.Done()
	var cr counterReader
	buf := make([]byte, 16<<10)
	for {
		n, err := s.remote.Read(buf)
		if n > 0 {
			if cerr := cr.check(buf[:n]); cerr != nil {
				s.fail(fmt.Errorf("remote side: %w", cerr))
				return
			}
			s.atRemote.Store(cr.next)
		}
		if err != nil {
			select {
			case <-s.stop:
			default:
				s.fail(fmt.Errorf("remote connection closed: %w", err))
			}
			return
		}
	}
}

func (s *streamVM) remoteWriter(rate time.Duration) {
	defer s.wg.Done()
	for {
		select {
		case <-s.stop:
			return
		case <-time.After(rate):
		}
		n := 1 + mrand.IntN(64)
		start := s.toVM.Load()
		if _, err := s.remote.Write(counterChunk(start, n)); err != nil {
			s.fail(fmt.Errorf("remote write: %w", err))
			return
		}
		s.toVM.Add(uint32(n))
	}
}

func (s *streamVM) vmWriter(rate time.Duration) {
	defer s.wg.Done()
	for {
		select {
		case <-s.stop:
			return
		case <-time.After(rate):
		}
		n := 1 + mrand.IntN(64)
		s.mu.Lock()
		start := s.toRemote.Load()
		_, err := s.cur.Write(counterChunk(start, n))
		if err == nil {
			s.toRemote.Add(uint32(n))
		}
		s.mu.Unlock()
		if err != nil {
			s.fail(fmt.Errorf("VM write: %w", err))
			return
		}
	}
}

// migrate moves the VM to a new connection like ESXi does.
func (s *streamVM) migrate(ctx context.Context) error {
	seq := make([]byte, 4)
	rand.Read(seq)
	if mrand.IntN(4) == 0 {
		seq[1] = 0xff // IAC inside the sequence, as in the capture
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	secret, err := s.cur.Begin(ctx, seq)
	if err != nil {
		return fmt.Errorf("BEGIN: %w", err)
	}
	dst, err := vspctest.DialPeer(ctx, s.addr, s.vm, seq, secret)
	if err != nil {
		return fmt.Errorf("PEER: %w", err)
	}
	select { // forget a stale first-byte time
	case <-s.firstAt:
	default:
	}
	s.conns <- dst
	old := s.cur
	go old.Close() // the source host goes away at the same moment…
	sent := time.Now()
	if err := dst.Complete(seq); err != nil { // …as COMPLETE arrives
		return err
	}
	s.cur = dst
	select {
	case at := <-s.firstAt:
		s.swMu.Lock()
		s.switches = append(s.switches, at.Sub(sent))
		s.swMu.Unlock()
	case <-time.After(50 * time.Millisecond): // no data was due; fine
	}
	return nil
}

// finish stops the writers and checks every byte arrived exactly once.
func (s *streamVM) finish() {
	t := s.t
	t.Helper()
	close(s.stop)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if s.atVM.Load() == s.toVM.Load() && s.atRemote.Load() == s.toRemote.Load() {
			break
		}
		select {
		case err := <-s.errc:
			t.Fatal(err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	select {
	case err := <-s.errc:
		t.Fatal(err)
	default:
	}
	if s.atVM.Load() != s.toVM.Load() || s.atRemote.Load() != s.toRemote.Load() {
		t.Fatalf("lost data: VM got %d of %d words, remote got %d of %d", s.atVM.Load(), s.toVM.Load(), s.atRemote.Load(), s.toRemote.Load())
	}
	s.mu.Lock()
	s.cur.Close()
	s.mu.Unlock()
	close(s.conns)
	s.remote.Close()
	s.wg.Wait()
}

// TestVMotionManyMigrations: VMs stream counters both ways while they
// migrate again and again over real TCP; every byte arrives exactly once,
// in order, and the remote connection is never closed.
func TestVMotionManyMigrations(t *testing.T) {
	const vms, perVM = 10, 100 // 1,000 migrations
	e := newEnv(t, allowLoopback, func(c *vspc.Config) { c.Logger = quietLogger() })
	streams := make([]*streamVM, vms)
	for i := range vms {
		streams[i] = startStreamVM(t, e, 100+i, time.Duration(200+mrand.IntN(800))*time.Microsecond)
	}
	migrateAll(t, streams, perVM, 3*time.Millisecond)
	c := e.srv.Counters()
	if c.VMotionsCompleted != vms*perVM {
		t.Fatalf("completed %d vMotions, want %d", c.VMotionsCompleted, vms*perVM)
	}
	for _, p := range e.srv.Ports() {
		if p.VMotions != perVM || p.State != "attached" {
			t.Errorf("port %s: %d vMotions, state %s", p.VMName, p.VMotions, p.State)
		}
	}
	var all []time.Duration
	for _, s := range streams {
		s.finish()
		all = append(all, s.switches...)
	}
	if len(all) > 0 {
		slices.Sort(all)
		t.Logf("switch-over (COMPLETE sent → first byte on the new connection), %d samples: p50 %v p99 %v",
			len(all), all[len(all)/2], all[len(all)*99/100])
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestVMotionEdgeCases covers every failure the hand-over must survive.
func TestVMotionEdgeCases(t *testing.T) {
	ctx := t.Context()
	seq := []byte{0x76, 0x19, 0xff, 0xe9}
	newVM := func(t *testing.T, mod func(*vspc.Config)) (*env, *vspctest.Conn, net.Conn, vspctest.VM) {
		e := newEnv(t, allowLoopback, mod)
		raddr, rconns := rawRemote(t)
		vm := vmNamed(7, vspc.DirClient, "tcp://"+raddr)
		c, err := vspctest.Dial(ctx, e.addr, vm)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return e, c, accept(t, rconns), vm
	}
	readN := func(t *testing.T, r io.Reader, n int) []byte {
		t.Helper()
		b := make([]byte, n)
		done := make(chan error, 1)
		go func() { _, err := io.ReadFull(r, b); done <- err }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("read: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("read timed out")
		}
		return b
	}

	t.Run("second BEGIN gets NOTNOW", func(t *testing.T) {
		_, c, _, _ := newVM(t, nil)
		if _, err := c.Begin(ctx, seq); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Begin(ctx, []byte{1, 2, 3, 4}); !errors.Is(err, vspctest.ErrNotNow) {
			t.Fatalf("second BEGIN: %v, want NOTNOW", err)
		}
	})
	t.Run("policy NOTNOW", func(t *testing.T) {
		_, c, remote, _ := newVM(t, func(cfg *vspc.Config) { cfg.VMotionDisabled = true })
		if _, err := c.Begin(ctx, seq); !errors.Is(err, vspctest.ErrNotNow) {
			t.Fatalf("BEGIN: %v, want NOTNOW", err)
		}
		exchange(t, c, remote, []byte("after notnow"), []byte("still here"))
	})
	t.Run("ABORT resumes on the source with held data", func(t *testing.T) {
		_, c, remote, _ := newVM(t, nil)
		if _, err := c.Begin(ctx, seq); err != nil {
			t.Fatal(err)
		}
		remote.Write([]byte("held \xff during vMotion"))
		time.Sleep(50 * time.Millisecond)
		c.Abort()
		if got := readN(t, c, len("held \xff during vMotion")); string(got) != "held \xff during vMotion" {
			t.Fatalf("after ABORT VM got %q", got)
		}
		exchange(t, c, remote, []byte("after abort"), []byte("ok"))
	})
	t.Run("wrong secret and unknown sequence are refused", func(t *testing.T) {
		e, c, remote, vm := newVM(t, nil)
		secret := mustBegin(t, c, seq)
		bad := slices.Clone(secret)
		bad[0] ^= 1
		if _, err := vspctest.DialPeer(ctx, e.addr, vm, seq, bad); err == nil {
			t.Fatal("PEER with a wrong secret accepted")
		}
		if _, err := vspctest.DialPeer(ctx, e.addr, vm, []byte{9, 9, 9, 9}, secret); err == nil {
			t.Fatal("PEER with an unknown sequence accepted")
		}
		if got := e.srv.Counters().VMotionsBadSecret; got != 2 {
			t.Fatalf("bad secret counter %d", got)
		}
		// The original session is untouched: the right secret still works.
		dst := mustPeer(t, e.addr, vm, seq, secret)
		defer dst.Close()
		c.Close()
		dst.Complete(seq)
		exchange(t, dst, remote, []byte("moved"), []byte("fine"))
	})
	t.Run("replayed secret after COMPLETE", func(t *testing.T) {
		e, c, remote, vm := newVM(t, nil)
		secret := mustBegin(t, c, seq)
		dst := mustPeer(t, e.addr, vm, seq, secret)
		defer dst.Close()
		c.Close()
		dst.Complete(seq)
		exchange(t, dst, remote, []byte("a"), []byte("b"))
		if _, err := vspctest.DialPeer(ctx, e.addr, vm, seq, secret); err == nil {
			t.Fatal("replayed secret accepted")
		}
		exchange(t, dst, remote, []byte("c"), []byte("d"))
	})
	t.Run("old connection vanishes after GOAHEAD", func(t *testing.T) {
		e, c, remote, vm := newVM(t, nil)
		secret := mustBegin(t, c, seq)
		c.Close()
		remote.Write([]byte("buffered while nobody is there"))
		time.Sleep(50 * time.Millisecond)
		dst := mustPeer(t, e.addr, vm, seq, secret)
		defer dst.Close()
		dst.Complete(seq)
		if got := readN(t, dst, len("buffered while nobody is there")); string(got) != "buffered while nobody is there" {
			t.Fatalf("got %q", got)
		}
		exchange(t, dst, remote, []byte("x"), []byte("y"))
	})
	t.Run("new connection vanishes before COMPLETE", func(t *testing.T) {
		e, c, remote, vm := newVM(t, nil)
		secret := mustBegin(t, c, seq)
		dst1 := mustPeer(t, e.addr, vm, seq, secret)
		dst1.Close()
		time.Sleep(50 * time.Millisecond)
		remote.Write([]byte("kept"))
		// The source host aborts: the VM stays where it was.
		c.Abort()
		if got := readN(t, c, 4); string(got) != "kept" {
			t.Fatalf("got %q", got)
		}
		exchange(t, c, remote, []byte("x"), []byte("y"))
	})
	t.Run("PEER timeout, then the VM reconnects within the grace period", func(t *testing.T) {
		e, c, remote, vm := newVM(t, func(cfg *vspc.Config) { cfg.PeerTimeout = 200 * time.Millisecond })
		secret := mustBegin(t, c, seq)
		c.Close()
		remote.Write([]byte("waiting"))
		time.Sleep(400 * time.Millisecond)
		if _, err := vspctest.DialPeer(ctx, e.addr, vm, seq, secret); err == nil {
			t.Fatal("PEER accepted after the peer timeout")
		}
		if got := e.srv.Counters().VMotionsTimedOut; got != 1 {
			t.Fatalf("timed-out counter %d", got)
		}
		c2, err := vspctest.Dial(ctx, e.addr, vm)
		if err != nil {
			t.Fatal(err)
		}
		defer c2.Close()
		if got := readN(t, c2, 7); string(got) != "waiting" {
			t.Fatalf("got %q", got)
		}
		exchange(t, c2, remote, []byte("back"), []byte("again"))
	})
	t.Run("reconnect after the grace period closes the remote", func(t *testing.T) {
		_, c, remote, _ := newVM(t, func(cfg *vspc.Config) { cfg.GracePeriod = 200 * time.Millisecond })
		c.Close()
		remote.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := remote.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("remote not closed after the grace period: %v", err)
		}
	})
	t.Run("flush timeout answers NOTNOW", func(t *testing.T) {
		_, c, remote, _ := newVM(t, func(cfg *vspc.Config) { cfg.FlushTimeout = 200 * time.Millisecond; cfg.Buffer = 64 << 10 })
		// The VM does not read: fill the path to it.
		go remote.Write(make([]byte, 8<<20))
		time.Sleep(300 * time.Millisecond)
		res := make(chan error, 1)
		go func() { _, err := c.Begin(ctx, seq); res <- err }()
		time.Sleep(400 * time.Millisecond)
		go io.Copy(io.Discard, c) // now read: NOTNOW follows the data
		select {
		case err := <-res:
			if !errors.Is(err, vspctest.ErrNotNow) {
				t.Fatalf("BEGIN: %v, want NOTNOW", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("no answer to BEGIN")
		}
	})
}

// TestVMotionSlowGuestBackPressure: a slow guest and a small buffer, so
// the remote is back-pressured during hand-overs; nothing is lost.
func TestVMotionSlowGuestBackPressure(t *testing.T) {
	e := newEnv(t, allowLoopback, func(c *vspc.Config) { c.Logger = quietLogger(); c.Buffer = 8 << 10 })
	var streams []*streamVM
	for i := range 3 {
		streams = append(streams, startStreamVMOpts(t, e, 200+i, 100*time.Microsecond, 2*time.Millisecond, 512))
	}
	migrateAll(t, streams, 20, 20*time.Millisecond)
	for _, p := range e.srv.Ports() {
		if p.VMotions != 20 {
			t.Errorf("port %s: %d vMotions", p.VMName, p.VMotions)
		}
	}
	for _, s := range streams {
		s.readDelay.Store(0)
	}
	for _, s := range streams {
		s.finish()
	}
}

// migrateAll migrates every stream n times, all streams at once, with a
// random pause of up to maxPause before each hand-over.
func migrateAll(t *testing.T, streams []*streamVM, n int, maxPause time.Duration) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(streams))
	for _, s := range streams {
		wg.Go(func() {
			for k := range n {
				time.Sleep(time.Duration(mrand.Int64N(int64(maxPause))))
				if err := s.migrate(t.Context()); err != nil {
					errs <- fmt.Errorf("%s migration %d: %w", s.vm.Name, k, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// mustBegin sends VMOTION-BEGIN on c and returns GOAHEAD's secret.
func mustBegin(t *testing.T, c *vspctest.Conn, seq []byte) []byte {
	t.Helper()
	secret, err := c.Begin(t.Context(), seq)
	if err != nil {
		t.Fatalf("BEGIN: %v", err)
	}
	return secret
}

// mustPeer connects a vMotion destination and waits for PEER-OK.
func mustPeer(t *testing.T, addr string, vm vspctest.VM, seq, secret []byte) *vspctest.Conn {
	t.Helper()
	dst, err := vspctest.DialPeer(t.Context(), addr, vm, seq, secret)
	if err != nil {
		t.Fatalf("PEER: %v", err)
	}
	return dst
}
