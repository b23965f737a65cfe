package vspc_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
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
	testwait.Until(t, testwait.Timeout, func() bool {
		return len(s.errc) > 0 || s.atVM.Load() == s.toVM.Load() && s.atRemote.Load() == s.toRemote.Load()
	})
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

// TestVMotionEdgeCases: the refusals of the hand-over over real TCP, with
// the real bridge and a raw TCP remote. The failures that depend on time
// or on a connection going away are in TestHandOverOnPipes.
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
}

// TestHandOverOnPipes walks the hand-over's failures on net.Pipe
// connections and an in-memory remote, inside testing/synctest bubbles:
// each timeout is checked to fire exactly when it is due (not a
// millisecond before), and data "held" is shown to be in the port's queue
// before the step that releases it.
func TestHandOverOnPipes(t *testing.T) {
	seq := []byte{0x76, 0x19, 0xff, 0xe9}
	vm := vmNamed(7, vspc.DirClient, "tcp://remote.example:4001")
	// start connects the VM and returns its connection and its remote.
	start := func(t *testing.T, mod func(*vspc.Config)) (*pipeEnv, *vspctest.Conn, io.ReadWriter) {
		e := newPipeEnv(t, mod)
		c := e.dial(vm)
		return e, c, e.backend(0).remote()
	}
	// held checks that the port is mid-hand-over with n bytes queued.
	held := func(t *testing.T, e *pipeEnv, n int) {
		t.Helper()
		synctest.Wait()
		if p := e.port(); p.State != "vmotion" || p.Queued != n {
			t.Fatalf("port %s with %d bytes queued, want vmotion with %d held", p.State, p.Queued, n)
		}
	}
	outcome := func(t *testing.T, e *pipeEnv, want string) {
		t.Helper()
		synctest.Wait()
		p := e.port()
		if p.LastHandOver == nil || p.LastHandOver.Outcome != want {
			t.Fatalf("last hand-over %+v, want outcome %q", p.LastHandOver, want)
		}
	}
	closed := func(c *vspctest.Conn) bool {
		synctest.Wait()
		return c.WaitClosed(0)
	}
	run := func(name string, f func(t *testing.T)) {
		t.Run(name, func(t *testing.T) { synctest.Test(t, f) })
	}

	run("ABORT resumes on the source with held data", func(t *testing.T) {
		e, c, remote := start(t, nil)
		mustBegin(t, c, seq)
		remote.Write([]byte("held \xff during vMotion"))
		held(t, e, len("held \xff\xff during vMotion"))
		c.Abort()
		if got := readN(t, c, len("held \xff during vMotion")); string(got) != "held \xff during vMotion" {
			t.Fatalf("after ABORT VM got %q", got)
		}
		exchange(t, c, remote, []byte("after abort"), []byte("ok"))
		outcome(t, e, "aborted")
		if k := e.srv.Counters(); k.VMotionsAborted != 1 {
			t.Fatalf("counters %+v", k)
		}
	})
	run("ABORT while flushing releases the barrier", func(t *testing.T) {
		e, c, remote := start(t, func(cfg *vspc.Config) { cfg.Buffer = 64 << 10 })
		// The VM does not read: the data already accepted cannot be
		// flushed, so BEGIN stays unanswered.
		go remote.Write(bytes.Repeat([]byte{'a'}, 256<<10))
		synctest.Wait()
		c.SendRaw(vspc.AppendExt(nil, vspc.VMotionBegin, seq))
		synctest.Wait()
		if p := e.port(); p.State != "vmotion" {
			t.Fatalf("after BEGIN port is %s", p.State)
		}
		c.Abort()
		synctest.Wait()
		if p := e.port(); p.State != "attached" {
			t.Fatalf("after ABORT port is %s", p.State)
		}
		if got := readN(t, c, 256<<10); !bytes.Equal(got, bytes.Repeat([]byte{'a'}, 256<<10)) {
			t.Fatal("data after ABORT differs")
		}
		outcome(t, e, "aborted")
	})
	run("the source vanishes after GOAHEAD", func(t *testing.T) {
		e, c, remote := start(t, nil)
		secret := mustBegin(t, c, seq)
		c.Close()
		remote.Write([]byte("buffered while nobody is there"))
		held(t, e, len("buffered while nobody is there"))
		if p := e.port(); p.Peer != "" {
			t.Fatalf("the closed source still carries the port: %+v", p)
		}
		dst := mustPeerPipe(t, e, vm, seq, secret)
		dst.Complete(seq)
		if got := readN(t, dst, len("buffered while nobody is there")); string(got) != "buffered while nobody is there" {
			t.Fatalf("got %q", got)
		}
		exchange(t, dst, remote, []byte("x"), []byte("y"))
		outcome(t, e, "completed")
	})
	run("the source vanishes while flushing", func(t *testing.T) {
		e, c, remote := start(t, func(cfg *vspc.Config) { cfg.GracePeriod = time.Minute })
		go remote.Write(bytes.Repeat([]byte{'a'}, 256<<10)) // the VM reads nothing: BEGIN stays in Flushing
		synctest.Wait()
		c.SendRaw(vspc.AppendExt(nil, vspc.VMotionBegin, seq))
		synctest.Wait()
		c.Close()
		outcome(t, e, "failed")
		if p := e.port(); p.State != "detached" {
			t.Fatalf("port %s, want detached (grace period)", p.State)
		}
		// The VM comes back by DO-PROXY and gets the rest, in order: what
		// the dead connection took in is all that is missing.
		p := e.port()
		if p.Queued == 0 || p.Queued+int(p.BytesToVM) != 256<<10 {
			t.Fatalf("%d bytes queued and %d written, want %d in all", p.Queued, p.BytesToVM, 256<<10)
		}
		c2 := e.dial(vm)
		if got := readN(t, c2, p.Queued); !bytes.Equal(got, bytes.Repeat([]byte{'a'}, p.Queued)) {
			t.Fatal("data on the new connection differs")
		}
		exchange(t, c2, remote, []byte("back"), []byte("again"))
	})
	run("the destination vanishes before COMPLETE", func(t *testing.T) {
		e, c, remote := start(t, nil)
		secret := mustBegin(t, c, seq)
		dst1 := mustPeerPipe(t, e, vm, seq, secret)
		dst1.Close()
		remote.Write([]byte("kept"))
		held(t, e, 4)
		// Waiting for the VM again: another PEER is taken…
		dst2 := mustPeerPipe(t, e, vm, seq, secret)
		dst2.Close()
		synctest.Wait()
		// …and the source host can still abort: the VM stays where it was.
		c.Abort()
		if got := readN(t, c, 4); string(got) != "kept" {
			t.Fatalf("got %q", got)
		}
		exchange(t, c, remote, []byte("x"), []byte("y"))
		outcome(t, e, "aborted")
	})
	run("PEER timeout, then the VM reconnects within the grace period", func(t *testing.T) {
		const peerTimeout = 200 * time.Millisecond
		e, c, remote := start(t, func(cfg *vspc.Config) { cfg.PeerTimeout = peerTimeout; cfg.GracePeriod = time.Minute })
		secret := mustBegin(t, c, seq)
		c.Close()
		remote.Write([]byte("waiting"))
		held(t, e, 7)
		time.Sleep(peerTimeout - time.Millisecond)
		held(t, e, 7)
		if got := e.srv.Counters().VMotionsTimedOut; got != 0 {
			t.Fatalf("timed out after %v of %v", peerTimeout-time.Millisecond, peerTimeout)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if got := e.srv.Counters().VMotionsTimedOut; got != 1 {
			t.Fatalf("timed-out counter %d at the peer timeout", got)
		}
		if p := e.port(); p.State != "detached" || p.Queued != 7 {
			t.Fatalf("port %s with %d queued after the peer timeout, want detached with the data kept", p.State, p.Queued)
		}
		outcome(t, e, "timed out")
		if _, err := e.dialPeer(vm, seq, secret); err == nil {
			t.Fatal("PEER accepted after the peer timeout")
		}
		c2 := e.dial(vm)
		if got := readN(t, c2, 7); string(got) != "waiting" {
			t.Fatalf("got %q", got)
		}
		exchange(t, c2, remote, []byte("back"), []byte("again"))
	})
	run("COMPLETE timeout drops the destination; another PEER completes", func(t *testing.T) {
		const completeTimeout = 300 * time.Millisecond
		e, c, remote := start(t, func(cfg *vspc.Config) { cfg.CompleteTimeout = completeTimeout })
		secret := mustBegin(t, c, seq)
		dst1 := mustPeerPipe(t, e, vm, seq, secret)
		time.Sleep(completeTimeout - time.Millisecond)
		if closed(dst1) {
			t.Fatalf("destination dropped before the complete timeout")
		}
		time.Sleep(time.Millisecond)
		if !closed(dst1) {
			t.Fatalf("destination not dropped at the complete timeout")
		}
		held(t, e, 0)
		remote.Write([]byte("for the second"))
		dst2 := mustPeerPipe(t, e, vm, seq, secret)
		c.Close()
		dst2.Complete(seq)
		if got := readN(t, dst2, len("for the second")); string(got) != "for the second" {
			t.Fatalf("got %q", got)
		}
		exchange(t, dst2, remote, []byte("moved"), []byte("fine"))
		outcome(t, e, "completed")
	})
	run("flush timeout answers NOTNOW", func(t *testing.T) {
		const flushTimeout = 200 * time.Millisecond
		e, c, remote := start(t, func(cfg *vspc.Config) { cfg.FlushTimeout = flushTimeout; cfg.Buffer = 64 << 10 })
		// The VM does not read: fill the path to it.
		go remote.Write(make([]byte, 1<<20))
		synctest.Wait()
		if p := e.port(); p.Queued == 0 {
			t.Fatal("nothing queued for a VM that does not read")
		}
		res := make(chan error, 1)
		go func() { _, err := c.Begin(t.Context(), seq); res <- err }()
		time.Sleep(flushTimeout - time.Millisecond)
		synctest.Wait()
		if n := e.srv.Counters().VMotionsNotNow; n != 0 || e.port().State != "vmotion" {
			t.Fatalf("before the flush timeout: %d NOTNOW, port %s", n, e.port().State)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if n := e.srv.Counters().VMotionsNotNow; n != 1 || e.port().State != "attached" {
			t.Fatalf("at the flush timeout: %d NOTNOW, port %s", n, e.port().State)
		}
		go io.Copy(io.Discard, c) // now read: NOTNOW follows the data
		if err := <-res; !errors.Is(err, vspctest.ErrNotNow) {
			t.Fatalf("BEGIN: %v, want NOTNOW", err)
		}
		if p := e.port(); p.LastHandOver != nil {
			t.Fatalf("a refused BEGIN recorded a hand-over: %+v", p.LastHandOver)
		}
	})
	run("DO-PROXY during a hand-over ends it; the new connection gets the held data", func(t *testing.T) {
		e, c, remote := start(t, nil)
		secret := mustBegin(t, c, seq)
		dst := mustPeerPipe(t, e, vm, seq, secret)
		remote.Write([]byte("held"))
		held(t, e, 4)
		c2 := e.dial(vm)
		if got := readN(t, c2, 4); string(got) != "held" {
			t.Fatalf("got %q", got)
		}
		outcome(t, e, "failed")
		if !closed(c) || !closed(dst) {
			t.Fatal("the replaced source or the abandoned destination is still open")
		}
		if _, err := e.dialPeer(vm, seq, secret); err == nil {
			t.Fatal("the ended hand-over's secret was accepted")
		}
		exchange(t, c2, remote, []byte("x"), []byte("y"))
	})
	run("port closed mid-hand-over", func(t *testing.T) {
		e, c, remote := start(t, nil)
		secret := mustBegin(t, c, seq)
		dst := mustPeerPipe(t, e, vm, seq, secret)
		remote.Write([]byte("dropped with the port"))
		held(t, e, len("dropped with the port"))
		b := e.backend(0)
		port := b.sink.(*vspc.Port)
		port.Close("route removed from the config")
		synctest.Wait()
		info := port.Info()
		if info.State != "closed" || info.LastHandOver == nil || info.LastHandOver.Outcome != "failed" {
			t.Fatalf("closed port %+v, want state closed and the hand-over failed", info)
		}
		if !closed(c) || !closed(dst) || !b.isClosed() {
			t.Fatal("source, destination or backend still open")
		}
		if len(e.srv.Ports()) != 0 {
			t.Fatalf("ports after Close: %+v", e.srv.Ports())
		}
		if _, err := e.dialPeer(vm, seq, secret); err == nil {
			t.Fatal("the closed port's secret was accepted")
		}
	})
	run("grace period: the VM back in time keeps its remote; late, the remote is closed", func(t *testing.T) {
		const grace = 200 * time.Millisecond
		e, c, remote := start(t, func(cfg *vspc.Config) { cfg.GracePeriod = grace })
		c.Close()
		synctest.Wait()
		if p := e.port(); p.State != "detached" {
			t.Fatalf("port %s after the VM left", p.State)
		}
		time.Sleep(grace - time.Millisecond)
		c2 := e.dial(vm) // just in time
		exchange(t, c2, remote, []byte("same"), []byte("remote"))
		c2.Close()
		synctest.Wait()
		time.Sleep(grace - time.Millisecond)
		synctest.Wait()
		if e.backend(0).isClosed() {
			t.Fatal("remote closed before the grace period ended")
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if !e.backend(0).isClosed() || len(e.srv.Ports()) != 0 {
			t.Fatalf("remote open (%v) or port kept (%+v) after the grace period", !e.backend(0).isClosed(), e.srv.Ports())
		}
	})
	run("no grace period: the remote closes with the connection", func(t *testing.T) {
		e, c, _ := start(t, func(cfg *vspc.Config) { cfg.GracePeriod = -1 })
		c.Close()
		synctest.Wait()
		if !e.backend(0).isClosed() {
			t.Fatal("remote not closed at once")
		}
	})
	run("Close waits for a grace period that is closing the port", func(t *testing.T) {
		e, c, _ := start(t, func(cfg *vspc.Config) { cfg.GracePeriod = time.Second })
		release := make(chan struct{})
		b := e.backend(0)
		b.mu.Lock()
		b.closeHook = func() { <-release }
		b.mu.Unlock()
		c.Close()
		time.Sleep(time.Second) // the grace period ends: its callback closes the backend, which blocks
		synctest.Wait()
		closedSrv := make(chan struct{})
		go func() { e.srv.Close(); close(closedSrv) }()
		synctest.Wait()
		select {
		case <-closedSrv:
			t.Fatal("Server.Close returned while a grace-period callback was still closing its port")
		default:
		}
		close(release)
		<-closedSrv
		if !b.isClosed() {
			t.Fatal("backend not closed")
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

// mustPeerPipe connects a vMotion destination to a pipeEnv and waits for
// PEER-OK.
func mustPeerPipe(t *testing.T, e *pipeEnv, vm vspctest.VM, seq, secret []byte) *vspctest.Conn {
	t.Helper()
	dst, err := e.dialPeer(vm, seq, secret)
	if err != nil {
		t.Fatalf("PEER: %v", err)
	}
	return dst
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
