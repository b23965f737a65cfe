package main

// The console phases measure direction server (remote access, issue 13):
// VMs whose serial port the bridge serves to remote clients on a per-VM
// port, with [remote] at its defaults except open = true (no login on
// loopback) and escape = "".
//
//	console  -consoles VMs, one telnet client attached to each: RSS per
//	         console (VM connection, console, per-VM listener and client
//	         connection together).
//	cstream  -cstream-n consoles × -cstream-bytes each way through raw
//	         tcp:// per-VM ports, one client each, all at once: bytes lost
//	         and the aggregate rate; then the same through -cstream-n
//	         direction-client pairs (the bridge dialing the remote): the
//	         rate to compare with.
//	cstall   -cstall-n consoles, each streaming to one client; console 0
//	         gets a second client that stops reading. How long the VM of
//	         console 0 waits (at most client_stall), and whether the other
//	         clients lose anything or slow down.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// consoleFigures are the console phases' results.
type consoleFigures struct {
	n, ok              int
	rss0, rss1         int64
	rssPerConsole      float64
	rssLater           time.Duration
	rssPerConsoleLater float64

	streamN                     int
	streamBytes                 int64
	srvElapsed, cliElapsed      time.Duration // direction server, direction client
	srvLost, cliLost            int64
	srvDropped                  int
	streamErr                   error
	stallN                      int
	stallFor                    time.Duration // client_stall
	stallWait                   time.Duration // longest wait of the VM of console 0
	stallDropped                bool          // the stalled client was dropped
	stallLost                   int64         // bytes other clients missed
	rateDuring, rateAfter       float64       // other consoles' aggregate rate while the client stalls, and after it was dropped
	witnessDuring, witnessAfter float64       // console 0's reading client, the same
	stallErr                    error
}

func (l *loader) consoleBridge(ctx context.Context, name, remoteExtra string) (*child, string, error) {
	bind := fmt.Sprintf("127.%d.0.1", l.net8+2)
	path := filepath.Join(l.dir, name+".toml")
	conf := bridgeConfig("200ms", "30s", "", true) + fmt.Sprintf(`[remote]
enabled = true
open = true
escape = ""
bind = %q
%s
`, bind, remoteExtra)
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, "", err
	}
	br, err := startChild(ctx, "bridge", []string{l.bridgeBin, "serve", "-config", path}, bridgeAddrRE, os.Stderr)
	return br, bind, err
}

// consolePort is the per-VM port of console i (on the phase's own
// loopback address, so that nothing else holds these ports).
func consolePort(i int) int { return 20000 + i }

// dialConsole connects VM i (direction server) and a client to its
// per-VM port; with telnet it reads the client's greeting up to the
// "attached" notice, so the console is fully set up when it returns.
func dialConsole(ctx context.Context, bridge, bind string, run uint32, i int, scheme string) (*pair, time.Duration, error) {
	vm := vmIdent(run, i, fmt.Sprintf("%s://%s:%d", scheme, bind, consolePort(i)))
	vm.Direction = vspc.DirServer
	c, nc, hs, err := dialVM(ctx, bridge, vm)
	if err != nil {
		return nil, 0, err
	}
	d := net.Dialer{KeepAlive: -1}
	cl, err := d.DialContext(context.WithoutCancel(ctx), "tcp", fmt.Sprintf("%s:%d", bind, consolePort(i)))
	if err != nil {
		c.Close()
		return nil, 0, fmt.Errorf("console %d: %w", i, err)
	}
	if scheme == "telnet" {
		cl.SetReadDeadline(time.Now().Add(30 * time.Second))
		var got []byte
		buf := make([]byte, 512)
		for !bytes.Contains(got, []byte("escapes off]\r\n")) {
			n, err := cl.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				c.Close()
				cl.Close()
				return nil, 0, fmt.Errorf("console %d: waiting for the attach notice: %w (got %q)", i, err, got)
			}
		}
		cl.SetReadDeadline(time.Time{})
	}
	return &pair{vm: c, sim: c, nc: nc, remote: cl, ident: vm}, hs, nil
}

// phaseConsole: RSS per console with one telnet client each.
func (l *loader) phaseConsole(ctx context.Context) error {
	o := l.o
	br, bind, err := l.consoleBridge(ctx, "console", "")
	if err != nil {
		return err
	}
	defer br.stop()
	pid := br.pid()
	time.Sleep(200 * time.Millisecond)
	cf := l.consoles()
	cf.rss0, _ = rssKiB(pid)
	ps, times, err := establish(ctx, o.consoles, o.conc, func(i int) (*pair, time.Duration, error) {
		return dialConsole(ctx, br.addr, bind, l.run, i, "telnet")
	})
	defer func() {
		br.stop()
		closeAll(ps)
	}()
	ok := okPairs(ps)
	cf.n, cf.ok = o.consoles, len(ok)
	logf("console: %d of %d consoles with a telnet client attached (VM handshake p50 %v p99 %v) err=%v", len(ok), o.consoles, times.pct(.5), times.pct(.99), err)
	l.parkWait("console")
	cf.rss1, _ = rssKiB(pid)
	if len(ok) > 0 {
		cf.rssPerConsole = float64(cf.rss1-cf.rss0) / float64(len(ok))
	}
	logf("console: bridge RSS %d → %d KiB: %.2f KiB per console with one client", cf.rss0, cf.rss1, cf.rssPerConsole)
	if o.rssWait > 0 && len(ok) > 0 {
		// Parked connections free their goroutines' stacks; the runtime
		// gives that memory back after a collection, at the latest the
		// one it forces every 2 minutes.
		for end := time.Now().Add(o.rssWait); time.Now().Before(end); {
			time.Sleep(min(10*time.Second, time.Until(end)))
			r, _ := rssKiB(pid)
			logf("console: bridge RSS %d KiB (%.2f KiB per console)", r, float64(r-cf.rss0)/float64(len(ok)))
		}
		r, _ := rssKiB(pid)
		cf.rssLater, cf.rssPerConsoleLater = o.rssWait, float64(r-cf.rss0)/float64(len(ok))
	}
	if len(ok) < o.consoles {
		return fmt.Errorf("vspc-load: console: %d of %d consoles: %v", len(ok), o.consoles, err)
	}
	return nil
}

func (l *loader) consoles() *consoleFigures {
	if l.r.consoles == nil {
		l.r.consoles = &consoleFigures{}
	}
	return l.r.consoles
}

// pattern is the byte stream of flow k: every byte value, shifted per
// flow, so that a byte from another flow is noticed.
func pattern(k, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*131 + i/256 + k*7)
	}
	return b
}

// exchange sends want[k] from w[k] to r[k] for every k at once and
// returns the time until the last byte arrived and the bytes that did not
// arrive intact.
func exchange(ws []io.Writer, rs []io.Reader, wants [][]byte, timeout time.Duration) (time.Duration, int64, error) {
	var (
		wg       sync.WaitGroup
		lost     atomic.Int64
		errMu    sync.Mutex
		firstErr error
	)
	fail := func(err error) {
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
	}
	start := time.Now()
	for k := range ws {
		wg.Go(func() {
			if _, err := ws[k].Write(wants[k]); err != nil {
				fail(err)
			}
		})
		wg.Go(func() {
			got := make([]byte, len(wants[k]))
			if c, ok := rs[k].(net.Conn); ok {
				c.SetReadDeadline(time.Now().Add(timeout))
				defer c.SetReadDeadline(time.Time{})
			}
			n, err := io.ReadFull(rs[k], got)
			if err != nil {
				fail(fmt.Errorf("flow %d: %w after %d bytes", k, err, n))
			}
			bad := int64(len(wants[k]) - n)
			for i := range n {
				if got[i] != wants[k][i] {
					bad++
				}
			}
			lost.Add(bad)
		})
	}
	wg.Wait()
	return time.Since(start), lost.Load(), firstErr
}

// phaseConsoleStream: N consoles × bytes each way, one client each; then
// the same through direction-client pairs.
func (l *loader) phaseConsoleStream(ctx context.Context) error {
	o := l.o
	cf := l.consoles()
	cf.streamN, cf.streamBytes = o.cstreamN, o.cstreamBytes
	// Each side runs -agg-runs times on the same sessions; the median
	// time is the figure (one run of a fraction of a second on this
	// shared machine is noisy).
	run := func(name string, ps []*pair) (time.Duration, int64, error) {
		var (
			times     []float64
			lostTotal int64
			firstErr  error
		)
		for range max(o.aggRuns, 1) {
			var ws []io.Writer
			var rs []io.Reader
			var wants [][]byte
			for k, p := range ps {
				down, up := pattern(2*k, int(o.cstreamBytes)), pattern(2*k+1, int(o.cstreamBytes))
				ws, rs, wants = append(ws, p.vm, p.remote), append(rs, p.remote, p.vm), append(wants, down, up)
			}
			restore := quietGC()
			d, lost, err := exchange(ws, rs, wants, time.Minute)
			restore()
			total := float64(2*int64(len(ps))*o.cstreamBytes) / (1 << 20)
			logf("cstream: %s: %d sessions × %d KiB each way: %.1f MiB in %v = %.1f MiB/s; %d bytes lost; err=%v",
				name, len(ps), o.cstreamBytes>>10, total, d.Round(time.Millisecond), total/d.Seconds(), lost, err)
			times, lostTotal = append(times, float64(d)), lostTotal+lost
			if firstErr == nil {
				firstErr = err
			}
			if err != nil {
				break
			}
		}
		return time.Duration(median(times)), lostTotal, firstErr
	}

	br, bind, err := l.consoleBridge(ctx, "cstream", "")
	if err != nil {
		return err
	}
	ps, _, err := establish(ctx, o.cstreamN, o.conc, func(i int) (*pair, time.Duration, error) {
		return dialConsole(ctx, br.addr, bind, l.run, i, "tcp")
	})
	if err == nil {
		err = detachPairs(okPairs(ps))
	}
	if err == nil {
		cf.srvElapsed, cf.srvLost, cf.streamErr = run("direction server", okPairs(ps))
	}
	closeAll(ps)
	br.stop()
	if err != nil {
		cf.streamErr = err
		return err
	}

	br2, err := l.bridge(ctx, "cstream-client", "200ms", "30s")
	if err != nil {
		return err
	}
	defer br2.stop()
	ps2, _, err := establish(ctx, o.cstreamN, o.conc, func(i int) (*pair, time.Duration, error) {
		return dialBridgePair(ctx, br2.addr, l.run, l.net8+1, remotePort, i)
	})
	defer closeAll(ps2)
	if err == nil {
		err = detachPairs(okPairs(ps2))
	}
	if err != nil {
		return err
	}
	var cerr error
	cf.cliElapsed, cf.cliLost, cerr = run("direction client", okPairs(ps2))
	if cf.srvLost > 0 || cf.cliLost > 0 || cf.streamErr != nil || cerr != nil {
		l.r.lostAny = true
		l.r.notes = append(l.r.notes, fmt.Sprintf("cstream: lost %d (server) / %d (client): %v %v", cf.srvLost, cf.cliLost, cf.streamErr, cerr))
	}
	return nil
}

// meter counts what a client reads, verifying it against its pattern.
type meter struct {
	want []byte // the pattern, repeated as needed
	got  atomic.Int64
	bad  atomic.Int64
}

func (m *meter) read(r io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		off := m.got.Load()
		for i := range n {
			if buf[i] != m.want[(off+int64(i))%int64(len(m.want))] {
				m.bad.Add(1)
			}
		}
		m.got.Add(int64(n))
		if err != nil {
			return
		}
	}
}

// phaseConsoleStall: one stalled client among streaming consoles.
func (l *loader) phaseConsoleStall(ctx context.Context) error {
	o := l.o
	cf := l.consoles()
	cf.stallN, cf.stallFor = o.cstallN, o.cstall
	br, bind, err := l.consoleBridge(ctx, "cstall", fmt.Sprintf("client_stall = %q", o.cstall.String()))
	if err != nil {
		return err
	}
	defer br.stop()
	ps, _, err := establish(ctx, o.cstallN, o.conc, func(i int) (*pair, time.Duration, error) {
		return dialConsole(ctx, br.addr, bind, l.run, i, "tcp")
	})
	defer closeAll(ps)
	if err != nil {
		return err
	}
	ok := okPairs(ps)
	if err := detachPairs(ok); err != nil {
		return err
	}
	// Console 0's second client: a small receive buffer, and it never reads.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	stalled, err := d.DialContext(ctx, "tcp", fmt.Sprintf("%s:%d", bind, consolePort(0)))
	if err != nil {
		return err
	}
	defer stalled.Close()
	time.Sleep(200 * time.Millisecond) // it attaches: its greeting is nothing on a tcp:// port

	const unit = 64 << 10
	meters := make([]*meter, len(ok))
	var (
		stop      atomic.Bool
		wg        sync.WaitGroup
		longestNs atomic.Int64 // console 0's longest single Write
	)
	for k, p := range ok {
		meters[k] = &meter{want: pattern(k, unit)}
		go meters[k].read(p.remote)
		wg.Go(func() {
			chunk := meters[k].want
			for !stop.Load() {
				t0 := time.Now()
				for off := 0; off < len(chunk); off += 4 << 10 {
					if _, err := p.vm.Write(chunk[off : off+4<<10]); err != nil {
						return
					}
				}
				if k == 0 {
					if d := time.Since(t0).Nanoseconds(); d > longestNs.Load() {
						longestNs.Store(d)
					}
				}
			}
		})
	}
	sum := func(from int) int64 {
		var s int64
		for _, m := range meters[from:] {
			s += m.got.Load()
		}
		return s
	}
	window := func(d time.Duration) (others, witness float64) {
		a, w := sum(1), meters[0].got.Load()
		time.Sleep(d)
		return float64(sum(1)-a) / d.Seconds() / (1 << 20), float64(meters[0].got.Load()-w) / d.Seconds() / (1 << 20)
	}
	// The stalled client fills within moments; the console then waits
	// for it until client_stall has passed without progress.
	stallStart := time.Now()
	cf.rateDuring, cf.witnessDuring = window(o.cstall / 2)
	for time.Since(stallStart) < o.cstall+3*time.Second {
		time.Sleep(100 * time.Millisecond)
	}
	cf.rateAfter, cf.witnessAfter = window(2 * time.Second)
	stop.Store(true)
	wg.Wait()
	cf.stallWait = time.Duration(longestNs.Load())
	for _, m := range meters {
		cf.stallLost += m.bad.Load()
	}
	// Was the stalled client dropped? The bridge has closed its end.
	stalled.SetReadDeadline(time.Now().Add(5 * time.Second))
	var rerr error
	for {
		var b [64 << 10]byte
		if _, rerr = stalled.Read(b[:]); rerr != nil {
			break
		}
	}
	cf.stallDropped = errors.Is(rerr, io.EOF) || errors.Is(rerr, syscall.ECONNRESET)
	logf("cstall: %d consoles; console 0's VM waited at most %v (client_stall %v); stalled client dropped: %v (%v); other consoles %.1f MiB/s while it stalled, %.1f after; console 0's other client %.1f MiB/s while stalled, %.1f after; %d bytes corrupted",
		len(ok), cf.stallWait.Round(time.Millisecond), o.cstall, cf.stallDropped, rerr, cf.rateDuring, cf.rateAfter, cf.witnessDuring, cf.witnessAfter, cf.stallLost)
	if cf.stallLost > 0 {
		l.r.lostAny = true
		l.r.notes = append(l.r.notes, fmt.Sprintf("cstall: %d bytes corrupted", cf.stallLost))
	}
	return nil
}

// printConsoles prints the console phases' figures.
func (r *report) printConsoles(row func(fig, val, target, relay, rat, v string)) {
	cf := r.consoles
	if cf == nil {
		return
	}
	if cf.n > 0 {
		row("direction server: consoles with one telnet client each, at the defaults", fmt.Sprintf("%d of %d", cf.ok, cf.n), "all", "-", "-", verdict(cf.ok == cf.n))
		row("  bridge RSS per console with one client (VM port, console, listener, client)", fmt.Sprintf("%.2f KiB (%d → %d KiB)", cf.rssPerConsole, cf.rss0, cf.rss1), "≤ 16 KiB", "-", "-", verdict(cf.rssPerConsole <= 16))
		if cf.rssLater > 0 {
			row(fmt.Sprintf("  the same %s later (after the runtime's periodic GC)", cf.rssLater), fmt.Sprintf("%.2f KiB", cf.rssPerConsoleLater), "≤ 16 KiB", "-", "-", verdict(cf.rssPerConsoleLater <= 16))
		}
	}
	if cf.streamN > 0 && cf.srvElapsed > 0 {
		total := float64(2*int64(cf.streamN)*cf.streamBytes) / (1 << 20)
		srv, cli := total/cf.srvElapsed.Seconds(), 0.0
		if cf.cliElapsed > 0 {
			cli = total / cf.cliElapsed.Seconds()
		}
		row(fmt.Sprintf("direction server: %d consoles × %d KiB each way, one client each", cf.streamN, cf.streamBytes>>10),
			fmt.Sprintf("%.1f MiB/s, %d bytes lost", srv, cf.srvLost), "0 lost, ≥ 0.5 × direction client", fmt.Sprintf("direction client %.1f MiB/s", cli), ratio(srv, cli), verdict(cf.srvLost == 0 && srv >= cli/2))
	}
	if cf.stallN > 0 {
		row(fmt.Sprintf("direction server: 1 of %d consoles has a client that stops reading: longest VM wait", cf.stallN), cf.stallWait.Round(time.Millisecond).String(), fmt.Sprintf("≤ client_stall (%v)", cf.stallFor), "-", "-", verdict(cf.stallWait <= cf.stallFor+time.Second && cf.stallDropped))
		row("  other consoles' clients while it stalls / after it is dropped", fmt.Sprintf("%.1f / %.1f MiB/s, %d bytes lost", cf.rateDuring, cf.rateAfter, cf.stallLost), "lose nothing, keep their rate", "-", ratio(cf.rateDuring, cf.rateAfter), verdict(cf.stallLost == 0))
		row("  the stalled console's other client while it stalls / after", fmt.Sprintf("%.1f / %.1f MiB/s", cf.witnessDuring, cf.witnessAfter), "loses nothing", "-", "-", "")
	}
}
