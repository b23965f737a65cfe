package park

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrNotIdle is returned by Conn.Park when the last Read did not end in a
// read deadline with no data: only then is nothing buffered inside the
// connection (see the package doc on TLS).
var ErrNotIdle = errors.New("park: connection not idle: the last Read did not time out empty")

// ErrNotParkable is returned by Conn.Park for a connection that exposes no
// descriptor (net.Pipe, a Conn from a nil Parker) or on a platform without
// a backend. The owner keeps reading with its goroutine.
var ErrNotParkable = errors.New("park: connection cannot be parked")

// ErrClosed is returned by Conn.Park once the Parker is closed.
var ErrClosed = errors.New("park: parker closed")

// DefaultMaxWaking is Config.MaxWaking's default.
const DefaultMaxWaking = 128

// Config configures a Parker. Zero fields take defaults.
type Config struct {
	// MaxWaking bounds the wake-ups in flight: connections that were woken
	// by data and have not yet had their first Read return. Events beyond
	// it wait in the kernel. Wake-ups by Close, Conn.Wake and Parker.Close
	// are not counted (they read a closed connection or do the owner's
	// errand). Default DefaultMaxWaking.
	MaxWaking int
	// Logger gets the Parker's rare errors; nil discards them.
	Logger *slog.Logger
}

// backend waits for parked connections to become readable.
type backend interface {
	// start begins waiting (a goroutine counted in Parker.wg, or none).
	start()
	// arm registers c (marked parked in slot idx, generation gen) for one
	// wake-up. An error means c is not registered.
	arm(c *Conn, idx, gen uint32) error
	// disarm makes whatever the backend holds for c let go of it, after c
	// was claimed by something other than its event.
	disarm(c *Conn)
	// close stops waiting; no event is delivered after it returns.
	close()
}

type slot struct {
	c   *Conn // nil when free
	gen uint32
}

// Parker holds parked connections: one per process is the intent (one
// epoll set and one goroutine on Linux). It is safe for concurrent use.
// Close wakes what is still parked and waits for every goroutine it
// started, wake functions included.
type Parker struct {
	log     *slog.Logger
	sem     chan struct{} // wake slots (MaxWaking)
	closing chan struct{} // closed by Close
	wg      sync.WaitGroup
	be      backend

	// waiting counts claimed connections whose wake waits for a slot;
	// stale counts events dropped for a freed or reused slot.
	waiting atomic.Int32
	stale   atomic.Int64

	mu      sync.Mutex // guards the fields below and every Conn's parked and slot
	closed  bool
	slots   []slot
	free    []uint32
	nparked int
}

// New returns a Parker on this platform's default backend: epoll on Linux
// (the goroutine backend with the build tag park_goroutine), a goroutine
// per parked connection on other Unix systems.
func New(cfg Config) (*Parker, error) { return newParker(cfg, defaultBackend) }

// backendKind selects a backend (tests run every kind this platform has).
type backendKind int

const (
	kindEpoll     backendKind = iota // Linux
	kindGoroutine                    // Unix
)

func (k backendKind) String() string {
	if k == kindEpoll {
		return "epoll"
	}
	return "goroutine"
}

func newParker(cfg Config, k backendKind) (*Parker, error) {
	if cfg.MaxWaking <= 0 {
		cfg.MaxWaking = DefaultMaxWaking
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Parker{
		log:     cfg.Logger,
		sem:     make(chan struct{}, cfg.MaxWaking),
		closing: make(chan struct{}),
	}
	var err error
	switch k {
	case kindEpoll:
		p.be, err = newEpoll(p)
	default:
		p.be, err = newPoll(p)
	}
	if err != nil {
		return nil, err
	}
	p.be.start()
	return p, nil
}

// Parked is the number of connections parked now.
func (p *Parker) Parked() int {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nparked
}

// Close wakes every connection still parked (their wake functions run and
// find whatever their owners left), stops the backend, and waits for every
// goroutine the Parker started, wake functions included: close the
// connections' owners first. Park fails with ErrClosed afterwards. It is
// idempotent.
func (p *Parker) Close() error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return nil
	}
	p.closed = true
	close(p.closing)
	var woken []*Conn
	for i := range p.slots {
		if c := p.slots[i].c; c != nil {
			p.freeLocked(c)
			p.wg.Add(1)
			woken = append(woken, c)
		}
	}
	p.mu.Unlock()
	p.be.close()
	for _, c := range woken {
		p.be.disarm(c)
		p.spawn(c)
	}
	p.wg.Wait()
	return nil
}

// park marks c parked in a slot and arms it.
func (p *Parker) park(c *Conn) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	if c.closed.Load() {
		p.mu.Unlock()
		return fmt.Errorf("park: %w", net.ErrClosed)
	}
	var idx uint32
	if n := len(p.free); n > 0 {
		idx = p.free[n-1]
		p.free = p.free[:n-1]
	} else {
		idx = uint32(len(p.slots))
		p.slots = append(p.slots, slot{})
	}
	s := &p.slots[idx]
	s.c = c
	gen := s.gen
	c.slot, c.parked = idx, true
	p.nparked++
	p.mu.Unlock()

	if err := p.be.arm(c, idx, gen); err != nil {
		p.mu.Lock()
		defer p.mu.Unlock()
		if c.parked && c.slot == idx && p.slots[idx].gen == gen {
			p.freeLocked(c)
			return fmt.Errorf("park: %w", err)
		}
		// Claimed meanwhile (closed, or the Parker closed): that claim's
		// wake runs.
		return nil
	}
	return nil
}

// freeLocked releases c's slot; a new generation makes its events stale.
func (p *Parker) freeLocked(c *Conn) {
	s := &p.slots[c.slot]
	s.c = nil
	s.gen++
	p.free = append(p.free, c.slot)
	c.parked = false
	p.nparked--
}

// claim takes a parked c out of the Parker; the caller then spawns its
// wake (counted in wg from here, so Close waits for it).
func (p *Parker) claim(c *Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !c.parked {
		return false
	}
	p.freeLocked(c)
	p.wg.Add(1)
	return true
}

// claimEvent takes the connection an event is for, unless the event is
// stale (its slot was freed, and maybe reused, since it was armed).
func (p *Parker) claimEvent(idx, gen uint32) *Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if int(idx) >= len(p.slots) || p.slots[idx].c == nil || p.slots[idx].gen != gen {
		p.stale.Add(1)
		return nil
	}
	s := &p.slots[idx]
	c := s.c
	p.freeLocked(c)
	p.wg.Add(1)
	return c
}

// acquire waits for a wake slot for c (given back by c's first Read, or
// when its wake returns). While the Parker closes, wakes go uncounted.
func (p *Parker) acquire(c *Conn) {
	p.waiting.Add(1)
	defer p.waiting.Add(-1)
	select {
	case p.sem <- struct{}{}:
		c.holding.Store(true)
	case <-p.closing:
	}
}

// spawn runs c's wake on a fresh goroutine; the claim counted it in wg.
func (p *Parker) spawn(c *Conn) {
	go p.run(c)
}

// run calls c's wake and ends the claim's count in wg.
func (p *Parker) run(c *Conn) {
	defer p.wg.Done()
	defer c.giveBack()
	c.wake()
}

// Conn is a net.Conn that its owner can park while it is idle. It passes
// every method through to the wrapped connection, except that Read
// records whether it ended in a read deadline with no data, and Close
// wakes the owner of a parked connection.
//
// The owner's reader is the only goroutine that calls Read and Park.
// After Park returns nil it must stop reading: the next Read happens in
// the wake function, on a fresh goroutine. The read deadline is
// unspecified after a wake-up: set it before reading.
type Conn struct {
	net.Conn
	p    *Parker
	wake func()

	timedOut atomic.Bool // the last Read timed out with no data
	holding  atomic.Bool // holds a wake slot until the first Read returns
	closed   atomic.Bool

	parked   bool   // guarded by p.mu
	parkable bool   // a descriptor is under the wrapped connection (raw finds it)
	direct   bool   // the wrapped connection is the descriptor's own (no TLS above it): ParkNow may park it
	slot     uint32 // guarded by p.mu
}

// Wrap returns nc as a Conn that can park with p; wake is what resumes
// the owner's reader (it runs on a fresh goroutine each time). A nil
// Parker gives a Conn that never parks.
//
// nc, or the connection it wraps through NetConn (a *tls.Conn), must be a
// syscall.Conn for parking to work; otherwise Park returns ErrNotParkable.
func (p *Parker) Wrap(nc net.Conn, wake func()) *Conn {
	c := &Conn{Conn: nc, p: p, wake: wake}
	if p != nil {
		c.parkable = rawConn(nc) != nil
		_, c.direct = nc.(syscall.Conn)
	}
	return c
}

// raw is the descriptor under the wrapped connection, looked up each time
// it is needed: a parked connection keeps no RawConn (24 bytes an idle
// port would hold for good; issue 17). Nil only if that lookup fails now.
func (c *Conn) raw() syscall.RawConn { return rawConn(c.Conn) }

// rawConn finds the descriptor under nc, through NetConn for TLS.
func rawConn(nc net.Conn) syscall.RawConn {
	for range 4 {
		if sc, ok := nc.(syscall.Conn); ok {
			rc, err := sc.SyscallConn()
			if err != nil {
				return nil
			}
			return rc
		}
		u, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			return nil
		}
		nc = u.NetConn()
	}
	return nil
}

// NetConn returns the wrapped connection.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// Read reads from the wrapped connection. The first Read after a wake-up
// gives the wake slot back.
func (c *Conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	// Stored only when it changes: a busy connection's Reads do no
	// atomic writes.
	if to := n == 0 && err != nil && errors.Is(err, os.ErrDeadlineExceeded); to != c.timedOut.Load() {
		c.timedOut.Store(to)
	}
	if c.holding.Load() {
		c.giveBack()
	}
	return n, err
}

// giveBack returns the wake slot c holds, if any.
func (c *Conn) giveBack() {
	if c.holding.CompareAndSwap(true, false) {
		<-c.p.sem
	}
}

// Park hands the connection to the Parker until it becomes readable,
// hangs up, is closed, or Wake is called; then wake runs on a fresh
// goroutine. Call it on the reader's goroutine, right after a Read that
// returned a deadline error and no data (ErrNotIdle otherwise). On nil the
// caller must stop reading (and typically returns, ending its goroutine);
// on an error nothing changed and the caller goes on reading.
func (c *Conn) Park() error {
	if !c.parkable || c.p == nil {
		return ErrNotParkable
	}
	if !c.timedOut.CompareAndSwap(true, false) {
		return ErrNotIdle
	}
	return c.p.park(c)
}

// ParkNow is Park without the empty Read before it, for a reader that
// has nothing to wait for right after a Read that returned data (a VM
// connection past its handshake, a device connection just opened): it
// parks at once instead of holding a goroutine for a park period, so
// that a burst of connections leaves no dead goroutines behind (each
// costs 480 bytes for good). Only a connection that buffers nothing above
// its descriptor may: one wrapped directly (a *net.TCPConn), not a
// *tls.Conn, which may hold decrypted bytes (ErrNotIdle). Bytes that
// arrived after that Read wake it at once: the registration is
// level-triggered. The rest is as for Park.
func (c *Conn) ParkNow() error {
	if !c.parkable || c.p == nil {
		return ErrNotParkable
	}
	if !c.direct {
		return ErrNotIdle
	}
	c.timedOut.Store(false)
	return c.p.park(c)
}

// Wake runs the wake function now, on a fresh goroutine, if the
// connection is parked; it reports whether it did. Owners use it when
// they need their reader back without data arriving (a state change the
// reader must act on).
func (c *Conn) Wake() bool {
	if c.p == nil || !c.p.claim(c) {
		return false
	}
	c.p.be.disarm(c)
	c.p.spawn(c)
	return true
}

// Close closes the wrapped connection. If it was parked, its wake function
// runs (on a fresh goroutine) and finds it closed, as a reader blocked in
// Read would have.
func (c *Conn) Close() error {
	c.closed.Store(true)
	err := c.Conn.Close()
	if c.p != nil && c.p.claim(c) {
		c.p.be.disarm(c)
		c.p.spawn(c)
	}
	return err
}

// Idle tells a reader when its connection has been idle for a whole
// period, with one read deadline per period instead of one per Read (a
// deadline per Read costs timer work at hundreds of MB/s): a connection
// counts as idle between Period and twice Period after its last data.
//
//	conn.SetReadDeadline(idle.Start(time.Now()))
//	for {
//		n, err := conn.Read(buf)
//		if n > 0 { idle.Seen(); ... }
//		if deadline expired {
//			if idle.Expired() { park } else { conn.SetReadDeadline(idle.Start(time.Now())) }
//		}
//	}
type Idle struct {
	Period time.Duration
	seen   bool
}

// Start begins a period at now and returns the read deadline that ends it.
func (i *Idle) Start(now time.Time) time.Time {
	i.seen = false
	return now.Add(i.Period)
}

// Seen records that a Read returned data: a store, no timer work.
func (i *Idle) Seen() { i.seen = true }

// Expired reports, once the period's deadline has passed, whether no data
// arrived during the whole period.
func (i *Idle) Expired() bool { return !i.seen }
