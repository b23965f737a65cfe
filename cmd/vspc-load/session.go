package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vspc-bridge/vspc-bridge/vspc"
	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
)

// pair is one simulated VM serial port and its remote system: vm is the
// VM's side (a vspctest.Conn through the bridge, or a plain TCP connection
// through the relay), remote the connection the remote system accepted.
type pair struct {
	vm     io.ReadWriteCloser
	sim    *vspctest.Conn // vm, when it goes through the bridge
	nc     net.Conn       // sim's connection
	remote net.Conn
	ident  vspctest.VM
	lat    *latState // the latency test's counter streams; nil until it runs
}

// latState is a pair's latency stream: its counter continues from one
// ping run to the next.
type latState struct {
	cw counterWriter
	cr counterReader
}

func (p *pair) close() {
	if p.remote != nil {
		p.remote.Close()
	}
	if p.vm != nil {
		p.vm.Close()
	}
}

// vmIdent is VM number i of this run.
func vmIdent(run uint32, i int, service string) vspctest.VM {
	return vspctest.VM{
		Name:       fmt.Sprintf("load-%06d", i),
		VCUUID:     fmt.Sprintf("4c0ad%03x-%04x-4000-8000-%012x", run&0xfff, run>>16, i),
		BIOSUUID:   fmt.Sprintf("42%06x-0000-4000-8000-%012x", i, i),
		LocUUID:    fmt.Sprintf("56%06x-0000-4000-8000-%012x", i, i),
		Direction:  vspc.DirClient,
		ServiceURI: service,
	}
}

// hostIP is a distinct loopback address for index i inside 127.net.0.0/16.
func hostIP(net8 int, i int) string {
	return fmt.Sprintf("127.%d.%d.%d", net8, i/250, i%250+1)
}

// dialVM connects a simulated VM to the bridge and returns the time from
// the start of the TCP connect to WILL-PROXY.
func dialVM(ctx context.Context, addr string, vm vspctest.VM) (*vspctest.Conn, net.Conn, time.Duration, error) {
	start := time.Now()
	// No keepalive on loopback (four setsockopt calls per simulated VM,
	// CPU taken from the bridge on the same two cores), and a context
	// that cannot be cancelled: net starts a goroutine per connect to
	// watch one that can, and a loopback connect cannot hang.
	d := net.Dialer{KeepAlive: -1}
	nc, err := d.DialContext(context.WithoutCancel(ctx), "tcp", addr)
	if err != nil {
		return nil, nil, 0, err
	}
	c, err := vspctest.Handshake(ctx, nc, vm)
	if err != nil {
		nc.Close()
		return nil, nil, 0, err
	}
	return c, nc, time.Since(start), nil
}

// dialBridgePair opens a remote listener on its own loopback address,
// connects a VM whose service URI names it, and accepts the bridge's
// connection. The listener is closed again: the pair holds one
// descriptor on each side.
func dialBridgePair(ctx context.Context, bridge string, run uint32, net8, port, i int) (*pair, time.Duration, error) {
	// No keepalive on the accepted remote either (as in dialVM): four
	// setsockopt calls per pair, and probes of thousands of remotes that
	// went idle together would fill the loopback backlog in step.
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(ctx, "tcp", fmt.Sprintf("%s:%d", hostIP(net8, i), port))
	if err != nil {
		return nil, 0, err
	}
	defer ln.Close()
	vm := vmIdent(run, i, "tcp://"+ln.Addr().String())
	c, nc, hs, err := dialVM(ctx, bridge, vm)
	if err != nil {
		return nil, 0, err
	}
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	r, err := ln.Accept()
	if err != nil {
		c.Close()
		return nil, 0, fmt.Errorf("remote %s: no connection from the bridge: %w", ln.Addr(), err)
	}
	return &pair{vm: c, sim: c, nc: nc, remote: r, ident: vm}, hs, nil
}

// idMatcher hands connections accepted on a shared remote listener to the
// pair whose 8-byte id they start with (relay and direct pairs).
type idMatcher struct {
	ln   net.Listener
	mu   sync.Mutex
	wait map[uint64]chan net.Conn
}

func newIDMatcher() (*idMatcher, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	m := &idMatcher{ln: ln, wait: make(map[uint64]chan net.Conn)}
	go m.loop()
	return m, nil
}

func (m *idMatcher) loop() {
	for {
		c, err := m.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			var id [8]byte
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadFull(c, id[:]); err != nil {
				c.Close()
				return
			}
			c.SetReadDeadline(time.Time{})
			m.mu.Lock()
			ch := m.wait[binary.BigEndian.Uint64(id[:])]
			m.mu.Unlock()
			if ch == nil {
				c.Close()
				return
			}
			ch <- c
		}()
	}
}

// dialIDPair connects to addr (the relay, or the remote listener itself
// for a direct pair), sends the id and waits for the remote's side.
func (m *idMatcher) dialIDPair(ctx context.Context, addr string, id uint64) (*pair, time.Duration, error) {
	ch := make(chan net.Conn, 1)
	m.mu.Lock()
	m.wait[id] = ch
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.wait, id)
		m.mu.Unlock()
	}()
	start := time.Now()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, 0, err
	}
	c.(*net.TCPConn).SetNoDelay(true)
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], id)
	if _, err := c.Write(b[:]); err != nil {
		c.Close()
		return nil, 0, err
	}
	select {
	case r := <-ch:
		return &pair{vm: c, remote: r}, time.Since(start), nil
	case <-time.After(10 * time.Second):
		c.Close()
		return nil, 0, errors.New("no matching remote connection within 10s")
	case <-ctx.Done():
		c.Close()
		return nil, 0, ctx.Err()
	}
}

func (m *idMatcher) close() { m.ln.Close() }

// establish opens n pairs with conc dials in flight; it returns the
// pairs (in index order, nil where one failed), the handshake times and
// the first error.
func establish(ctx context.Context, n, conc int, dial func(i int) (*pair, time.Duration, error)) ([]*pair, durations, error) {
	pairs := make([]*pair, n)
	times := make(durations, n)
	var next atomic.Int64
	var firstErr error
	var errMu sync.Mutex
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				p, d, err := dial(i)
				if err != nil {
					errMu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("pair %d: %w", i, err)
					}
					errMu.Unlock()
					continue
				}
				pairs[i], times[i] = p, d
			}
		})
	}
	wg.Wait()
	ok := times[:0]
	for i, p := range pairs {
		if p != nil {
			ok = append(ok, times[i])
		}
	}
	return pairs, ok, firstErr
}

// establishAtOnce runs dial(0..n-1) on n goroutines released together:
// the goroutines exist and wait before the clock starts, so the wall time
// is the bridge's and the connections', not goroutine creation. started
// runs just before the release.
func establishAtOnce(ctx context.Context, n int, dial func(i int) (*pair, time.Duration, error), started func()) ([]*pair, durations, time.Duration, error) {
	pairs := make([]*pair, n)
	times := make(durations, n)
	errs := make([]error, n)
	var ready, wg sync.WaitGroup
	gate := make(chan struct{})
	ready.Add(n)
	for i := range n {
		wg.Go(func() {
			growStack(stackPad)
			ready.Done()
			<-gate
			if ctx.Err() != nil {
				errs[i] = ctx.Err()
				return
			}
			pairs[i], times[i], errs[i] = dial(i)
		})
	}
	ready.Wait()
	started()
	start := time.Now()
	close(gate)
	wg.Wait()
	wall := time.Since(start)
	ok := times[:0]
	var firstErr error
	for i, p := range pairs {
		if p != nil {
			ok = append(ok, times[i])
		} else if firstErr == nil && errs[i] != nil {
			firstErr = fmt.Errorf("pair %d: %w", i, errs[i])
		}
	}
	return pairs, ok, wall, firstErr
}

// stackPad is how deep growStack goes, in KiB: a dial and the
// handshake grow a goroutine's stack from 2 to 8 KiB (perf uprobe on
// runtime.copystack), so the stack is grown past 4 KiB before the clock
// starts.
const stackPad = 5

// growStack uses about n KiB of stack, so that the runtime gives the
// calling goroutine a larger stack now, while nothing is measured: a
// stack growth during the burst copies the stack and faults in fresh
// pages, and in a 1,000-VM burst that was 17 % of the load tool's CPU,
// taken from the cores the bridge runs on. The stack stays grown until
// a collection shrinks it (quietGC holds them off during the burst).
//
//go:noinline
func growStack(n int) byte {
	var pad [1000]byte
	pad[n%len(pad)] = byte(n)
	if n <= 1 {
		return pad[0]
	}
	return growStack(n-1) + pad[n%len(pad)]
}

func countOK(ps []*pair) int {
	n := 0
	for _, p := range ps {
		if p != nil {
			n++
		}
	}
	return n
}

func okPairs(ps []*pair) []*pair {
	var out []*pair
	for _, p := range ps {
		if p != nil {
			out = append(out, p)
		}
	}
	return out
}

func closeAll(ps []*pair) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	for _, p := range ps {
		if p == nil {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() { p.close(); <-sem })
	}
	wg.Wait()
}

func randomSeq() []byte {
	seq := make([]byte, 4)
	rand.Read(seq)
	if mrand.IntN(4) == 0 {
		seq[1] = 0xff // IAC inside the sequence, as in VMware's capture
	}
	return seq
}

// detachPairs takes each bridge pair's VM side over from vspctest
// (vspctest.Raw: no pipe, no extra goroutine), so that the load tool
// spends less CPU per byte than the bridge it shares the 2 cores with.
func detachPairs(ps []*pair) error {
	for _, p := range ps {
		if p.sim == nil {
			continue
		}
		r, err := p.sim.Detach()
		if err != nil {
			return err
		}
		p.vm, p.sim = r, nil
	}
	return nil
}
