package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
)

// flowStats is what a throughput run moved and checked.
type flowStats struct {
	sent, got, junk int64
	elapsed         time.Duration
	firstErr        error
}

func (f flowStats) rate() float64 { return float64(f.got) / f.elapsed.Seconds() }
func (f flowStats) lost() int64 {
	if l := f.sent - f.got - f.junk; l > 0 {
		return l
	}
	return 0
}

func (f *flowStats) add(o flowStats) {
	f.sent += o.sent
	f.got += o.got
	f.junk += o.junk
	f.elapsed = max(f.elapsed, o.elapsed)
	if f.firstErr == nil {
		f.firstErr = o.firstErr
	}
}

// flow streams counters from w to r as fast as possible for dur, then
// waits (up to drain) for everything sent to arrive.
type flow struct {
	w    io.Writer
	r    io.Reader
	cw   counterWriter
	cr   counterReader
	sent atomic.Int64
	werr error
}

// throughput runs the given flows at once and reports the totals; the
// elapsed time runs from the start until the last byte arrived.
func throughput(flows []*flow, dur, drain time.Duration) flowStats {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	for _, f := range flows {
		wg.Go(func() {
			buf := make([]byte, 32<<10)
			for {
				select {
				case <-stop:
					return
				default:
				}
				b := f.cw.fill(buf)
				n, err := f.w.Write(b)
				f.sent.Add(int64(n))
				if err != nil {
					f.werr = err
					return
				}
			}
		})
		go func() {
			buf := make([]byte, 64<<10)
			for {
				n, err := f.r.Read(buf)
				if n > 0 {
					f.cr.check(buf[:n])
				}
				if err != nil {
					return
				}
			}
		}()
	}
	time.Sleep(dur)
	close(stop)
	wg.Wait()
	deadline := time.Now().Add(drain)
	var end time.Time
	for {
		all := true
		for _, f := range flows {
			if f.cr.got.Load()+f.cr.junk.Load() < f.sent.Load() {
				all = false
				break
			}
		}
		end = time.Now()
		if all || end.After(deadline) {
			break
		}
		time.Sleep(200 * time.Microsecond)
	}
	var st flowStats
	st.elapsed = end.Sub(start)
	for _, f := range flows {
		st.sent += f.sent.Load()
		st.got += f.cr.got.Load()
		st.junk += f.cr.junk.Load()
		if st.firstErr == nil {
			if f.werr != nil {
				st.firstErr = f.werr
			} else if f.cr.bad.Load() {
				st.firstErr = f.cr.err
			}
		}
	}
	return st
}

// latency: each pair's remote echoes; each VM writes 16 bytes rate times
// a second and waits for them to come back. It returns the round trips,
// and the same round trips by the second of the test they started in
// (a stall shows there as a bad second, a slower bridge as every second
// worse). The echoes run until the pairs are closed.
func latency(ps []*pair, rate int, dur time.Duration) (durations, []durations, error) {
	echo(ps)
	return ping(ps, rate, dur)
}

// echo makes each pair's remote send back what it reads, until the pair
// is closed.
func echo(ps []*pair) {
	for _, p := range ps {
		go func() {
			buf := make([]byte, 256)
			for {
				n, err := p.remote.Read(buf)
				if n > 0 {
					if _, werr := p.remote.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

// ping is latency's measuring half, on pairs whose remotes echo. Each
// pair's counter stream continues from its previous ping run (its
// checker is kept in the pair), so ping can run again on the same pairs.
func ping(ps []*pair, rate int, dur time.Duration) (durations, []durations, error) {
	interval := time.Second / time.Duration(rate)
	var mu sync.Mutex
	var all durations
	secs := make([]durations, int((dur+time.Second-1)/time.Second))
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(dur)
	for _, p := range ps {
		wg.Go(func() {
			if p.lat == nil {
				p.lat = &latState{}
			}
			cw, cr := &p.lat.cw, &p.lat.cr
			out := make([]byte, 16)
			in := make([]byte, 16)
			var mine durations
			var secOf []int32
			next := time.Now().Add(time.Duration(mrand.Int64N(int64(interval))))
			for {
				time.Sleep(time.Until(next))
				if time.Now().After(deadline) {
					break
				}
				next = next.Add(interval)
				b := cw.fill(out)
				t0 := time.Now()
				if _, err := p.vm.Write(b); err != nil {
					mu.Lock()
					firstErr = keepFirst(firstErr, err)
					mu.Unlock()
					break
				}
				if _, err := io.ReadFull(p.vm, in); err != nil {
					mu.Lock()
					firstErr = keepFirst(firstErr, err)
					mu.Unlock()
					break
				}
				mine = append(mine, time.Since(t0))
				secOf = append(secOf, int32(t0.Sub(start)/time.Second))
				if cr.check(in); cr.bad.Load() {
					mu.Lock()
					firstErr = keepFirst(firstErr, cr.err)
					mu.Unlock()
					break
				}
			}
			mu.Lock()
			all = append(all, mine...)
			for k, d := range mine {
				if s := int(secOf[k]); s >= 0 && s < len(secs) {
					secs[s] = append(secs[s], d)
				}
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	return all, secs, firstErr
}

// worstSecond is the highest per-second p50 of a latency test, and the
// second it was in (0-based).
func worstSecond(secs []durations) (p50 time.Duration, sec int) {
	for k, s := range secs {
		if v := s.pct(.5); v > p50 {
			p50, sec = v, k
		}
	}
	return p50, sec
}

// keepFirst is a unless it is nil, else b: the first error seen.
func keepFirst(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// mover is a VM that migrates between hosts again and again while
// counter streams flow both ways (VM-side writes pause while it is
// stunned, as a real VM's do).
type mover struct {
	addr   string
	ident  vspctest.VM
	remote net.Conn

	mu  sync.Mutex // held by the VM writer and by a migration
	cur *vspctest.Conn

	epochs chan epoch
	settle time.Duration // PEER-OK → COMPLETE
	vmW    counterWriter
	remW   counterWriter
	vmR    counterReader // what the VM received
	remR   counterReader // what the remote received
	toVM   atomic.Int64
	toRem  atomic.Int64

	swMu      sync.Mutex
	switches  durations // COMPLETE sent → first byte on the new connection
	handovers durations // BEGIN sent → COMPLETE sent (settle included)
	done      int
	err       error
}

type epoch struct {
	c          *vspctest.Conn
	completeAt time.Time
	target     int64 // bytes the remote had written when COMPLETE was sent
}

func newMover(addr string, p *pair, settle time.Duration) *mover {
	m := &mover{addr: addr, ident: p.ident, remote: p.remote, cur: p.sim, epochs: make(chan epoch, 4), settle: settle}
	m.vmW.mask, m.remW.mask, m.vmR.mask, m.remR.mask = ffMask, ffMask, ffMask, ffMask
	m.epochs <- epoch{c: p.sim}
	return m
}

func (m *mover) vmReader() {
	buf := make([]byte, 16<<10)
	for ep := range m.epochs {
		// Switch-over: COMPLETE sent → the VM has everything the remote
		// wrote before it (data held during the hand-over included).
		// Hand-overs with nothing outstanding give no sample.
		waiting := !ep.completeAt.IsZero() && m.vmR.got.Load()+m.vmR.junk.Load() < ep.target
		for {
			n, err := ep.c.Read(buf)
			if n > 0 {
				m.vmR.check(buf[:n])
				if waiting && m.vmR.got.Load()+m.vmR.junk.Load() >= ep.target {
					d := time.Since(ep.completeAt)
					m.swMu.Lock()
					m.switches = append(m.switches, d)
					m.swMu.Unlock()
					waiting = false
				}
			}
			if err != nil {
				break
			}
		}
	}
}

func (m *mover) remoteReader() {
	buf := make([]byte, 16<<10)
	for {
		n, err := m.remote.Read(buf)
		if n > 0 {
			m.remR.check(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

func (m *mover) writers(stop <-chan struct{}, every time.Duration, wg *sync.WaitGroup) {
	buf := make([]byte, 256)
	buf2 := make([]byte, 256)
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(every):
			}
			b := m.remW.fill(buf[:4*(1+mrand.IntN(64))])
			n, err := m.remote.Write(b)
			m.toVM.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(every):
			}
			m.mu.Lock()
			b := m.vmW.fill(buf2[:4*(1+mrand.IntN(64))])
			n, err := m.cur.Write(b)
			m.toRem.Add(int64(n))
			m.mu.Unlock()
			if err != nil {
				return
			}
		}
	})
}

// migrate moves the VM to a new connection the way ESXi does.
func (m *mover) migrate(ctx context.Context) error {
	seq := randomSeq()
	m.mu.Lock()
	defer m.mu.Unlock()
	t0 := time.Now()
	secret, err := m.cur.Begin(ctx, seq)
	if err != nil {
		return fmt.Errorf("BEGIN: %w", err)
	}
	dst, err := vspctest.DialPeer(ctx, m.addr, m.ident, seq, secret)
	if err != nil {
		return fmt.Errorf("PEER: %w", err)
	}
	if m.settle > 0 {
		// ESXi sends COMPLETE after the memory copy, never right after
		// PEER-OK.
		time.Sleep(m.settle)
	}
	old := m.cur
	go old.Close() // the source host lets go at the same moment…
	target := m.toVM.Load()
	at := time.Now()
	if err := dst.Complete(seq); err != nil { // …as COMPLETE arrives
		return err
	}
	m.epochs <- epoch{c: dst, completeAt: at, target: target}
	m.cur = dst
	m.swMu.Lock()
	m.handovers = append(m.handovers, at.Sub(t0))
	m.done++
	m.swMu.Unlock()
	return nil
}

type stormStats struct {
	vms                 int
	paced, cpu, selfCPU float64
	migrations          int
	elapsed             time.Duration
	switches, handovers durations
	toVM, toRemote      flowStats
	firstErr            error
}

// storm runs the movers for dur with data flowing, migrating back to back
// (rate 0) or rate times a second in total; then it stops the data and
// checks every byte arrived once.
func storm(ctx context.Context, movers []*mover, dur, every time.Duration, rate float64) stormStats {
	stop := make(chan struct{})
	var wwg, mwg sync.WaitGroup
	for _, m := range movers {
		go m.vmReader()
		go m.remoteReader()
		m.writers(stop, every, &wwg)
	}
	start := time.Now()
	deadline := start.Add(dur)
	for _, m := range movers {
		mwg.Go(func() {
			var interval time.Duration
			next := time.Now()
			if rate > 0 {
				interval = time.Duration(float64(len(movers)) / rate * float64(time.Second))
				next = next.Add(time.Duration(mrand.Int64N(int64(interval))))
			}
			for ctx.Err() == nil {
				if rate > 0 {
					time.Sleep(time.Until(next))
					next = next.Add(interval)
				}
				if !time.Now().Before(deadline) {
					return
				}
				if err := m.migrate(ctx); err != nil {
					m.err = err
					return
				}
			}
		})
	}
	mwg.Wait()
	elapsed := time.Since(start)
	close(stop)
	wwg.Wait()
	end := time.Now().Add(10 * time.Second)
	for time.Now().Before(end) {
		all := true
		for _, m := range movers {
			if m.vmR.got.Load()+m.vmR.junk.Load() < m.toVM.Load() || m.remR.got.Load()+m.remR.junk.Load() < m.toRem.Load() {
				all = false
			}
		}
		if all {
			break
		}
		time.Sleep(time.Millisecond)
	}
	var st stormStats
	st.elapsed = elapsed
	st.vms = len(movers)
	for _, m := range movers {
		st.migrations += m.done
		st.switches = append(st.switches, m.switches...)
		st.handovers = append(st.handovers, m.handovers...)
		st.toVM.add(flowStats{sent: m.toVM.Load(), got: m.vmR.got.Load(), junk: m.vmR.junk.Load()})
		st.toRemote.add(flowStats{sent: m.toRem.Load(), got: m.remR.got.Load(), junk: m.remR.junk.Load()})
		if st.firstErr == nil {
			switch {
			case m.err != nil:
				st.firstErr = fmt.Errorf("%s: %w", m.ident.Name, m.err)
			case m.vmR.bad.Load():
				st.firstErr = fmt.Errorf("%s VM side: %w", m.ident.Name, m.vmR.err)
			case m.remR.bad.Load():
				st.firstErr = fmt.Errorf("%s remote side: %w", m.ident.Name, m.remR.err)
			}
		}
	}
	return st
}

// pending sends VMOTION-BEGIN on each connection and waits for GOAHEAD;
// the hand-overs then stay pending (no PEER follows).
func pending(ctx context.Context, cs []*vspctest.Conn) (int, error) {
	var n atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	var errMu sync.Mutex
	var first error
	for _, c := range cs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if _, err := c.Begin(ctx, randomSeq()); err != nil {
				errMu.Lock()
				first = keepFirst(first, err)
				errMu.Unlock()
				return
			}
			n.Add(1)
		})
	}
	wg.Wait()
	if first != nil && n.Load() == 0 {
		return 0, errors.New("no GOAHEAD: " + first.Error())
	}
	return int(n.Load()), first
}
