package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
)

// wakeStats is one wake storm: every remote writes a line at once to a
// VM port that has been idle (parked, in a bridge that parks).
type wakeStats struct {
	ports, delivered int
	wall             time.Duration // first write until the last line arrived
	hwmKiB           int64         // the bridge's peak RSS during the storm (VmHWM after a reset)
	rssBefore        int64         // RSS before the storm
	rssAfter         int64         // RSS right after the last line
	hwmReset         bool          // the peak could be reset first (else VmHWM is the process's peak)
	err              error
}

// wakeStorm makes every remote of ps write one line at the same moment
// and waits until each VM has its line, byte for byte.
func wakeStorm(ctx context.Context, ps []*pair, pid int, timeout time.Duration) wakeStats {
	st := wakeStats{ports: len(ps)}
	st.rssBefore, _ = rssKiB(pid)
	st.hwmReset = resetPeakRSS(pid) == nil
	var delivered atomic.Int64
	var errMu sync.Mutex
	var ready, wg sync.WaitGroup
	gate := make(chan struct{})
	ready.Add(len(ps))
	for i, p := range ps {
		line := fmt.Sprintf("wake %06d: console output after a long silence\r\n", i)
		wg.Go(func() {
			ready.Done()
			<-gate
			if _, err := p.remote.Write([]byte(line)); err != nil {
				errMu.Lock()
				st.err = cmpErr(st.err, fmt.Errorf("remote %d write: %w", i, err))
				errMu.Unlock()
				return
			}
			got := make([]byte, len(line))
			if _, err := io.ReadFull(p.vm, got); err != nil || string(got) != line {
				errMu.Lock()
				st.err = cmpErr(st.err, fmt.Errorf("VM %d: got %q, %v; want %q", i, got, err, line))
				errMu.Unlock()
				return
			}
			delivered.Add(1)
		})
	}
	ready.Wait()
	restore := quietGC()
	start := time.Now()
	close(gate)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		st.err = cmpErr(st.err, fmt.Errorf("%d of %d lines after %v", delivered.Load(), len(ps), timeout))
		closeAll(ps) // unblocks the readers
		<-done
	case <-ctx.Done():
		closeAll(ps)
		<-done
	}
	st.wall = time.Since(start)
	restore()
	st.delivered = int(delivered.Load())
	st.rssAfter, _ = rssKiB(pid)
	st.hwmKiB, _ = procStatusKiB(pid, "VmHWM:")
	return st
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// resetPeakRSS resets pid's VmHWM to its current RSS (Linux 4.0+:
// "5" to /proc/PID/clear_refs), so that the next VmHWM is the peak of
// what follows.
func resetPeakRSS(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// procStatusKiB reads a "kB" field such as VmHWM: from /proc/PID/status.
func procStatusKiB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			if f := strings.Fields(v); len(f) > 0 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("vspc-load: no %s in /proc/%d/status", field, pid)
}

// writeTestCert writes a throwaway self-signed certificate and key for
// 127.0.0.1 (the telnets phase's listener) and returns their paths.
func writeTestCert(dir string) (certPath, keyPath string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certPath, keyPath = filepath.Join(dir, "telnets.crt"), filepath.Join(dir, "telnets.key")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

// dialVMTLS is dialVM over telnets (TLS as the client negotiates it; the
// certificate is the phase's own, so it is not verified).
func dialVMTLS(ctx context.Context, addr string, vm vspctest.VM) (*vspctest.Conn, net.Conn, time.Duration, error) {
	start := time.Now()
	d := net.Dialer{KeepAlive: -1}
	raw, err := d.DialContext(context.WithoutCancel(ctx), "tcp", addr)
	if err != nil {
		return nil, nil, 0, err
	}
	tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true})
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, nil, 0, fmt.Errorf("TLS: %w", err)
	}
	c, err := vspctest.Handshake(ctx, tc, vm)
	if err != nil {
		tc.Close()
		return nil, nil, 0, err
	}
	return c, tc, time.Since(start), nil
}

// phaseIdleTLS holds -idle-tls idle VM ports over telnets (unreachable
// remotes, as in the idle phase) and reports their RSS apart: crypto/tls
// keeps about 8 KB per connection that no parking can release.
func (l *loader) phaseIdleTLS(ctx context.Context) error {
	o := l.o
	if o.idleTLS <= 0 {
		return nil
	}
	if l.o.bridgeAddr != "" {
		return errors.New("vspc-load: the idletls phase starts its own bridge (no -bridge-addr)")
	}
	cert, key, err := writeTestCert(l.dir)
	if err != nil {
		return err
	}
	extra := fmt.Sprintf("tls_listen = \"127.0.0.1:0\"\ntls_cert = %q\ntls_key = %q\n", cert, key)
	br, err := startBridgeWith(ctx, l.bridgeBin, l.dir, "idletls", "1h", "1h", extra, false)
	if err != nil {
		return err
	}
	defer br.stop()
	pid := br.pid()
	time.Sleep(200 * time.Millisecond)
	rss0, _ := rssKiB(pid)
	ps, times, err := establish(ctx, o.idleTLS, o.conc, func(i int) (*pair, time.Duration, error) {
		vm := vmIdent(l.run, 500000+i, fmt.Sprintf("tcp://%s:1", hostIP(l.net8, i)))
		c, nc, d, err := dialVMTLS(ctx, br.addr, vm)
		if err != nil {
			return nil, 0, err
		}
		return &pair{vm: c, sim: c, nc: nc, ident: vm}, d, nil
	})
	defer func() {
		br.stop()
		closeAll(ps)
	}()
	ok := countOK(ps)
	l.r.tlsN, l.r.tlsOK = o.idleTLS, ok
	logf("idletls: %d of %d telnets ports established (handshake p50 %v p99 %v) err=%v", ok, o.idleTLS, times.pct(.5), times.pct(.99), err)
	l.parkWait("idletls")
	rss1, _ := rssKiB(pid)
	if ok > 0 {
		l.r.rssPerTLS = float64(rss1-rss0) / float64(ok)
	}
	logf("idletls: bridge RSS %d → %d KiB → %.2f KiB per idle telnets port", rss0, rss1, l.r.rssPerTLS)
	if ok == 0 {
		return fmt.Errorf("vspc-load: no telnets port established: %v", err)
	}
	return nil
}

// parkWait waits -settle plus -park-wait before RSS is read: a bridge
// that parks idle connections does so a few seconds after their last
// data.
func (l *loader) parkWait(phase string) {
	d := l.o.settle + l.o.parkWait
	logf("%s: waiting %v for the ports to go idle (settle %v + park-wait %v)", phase, d, l.o.settle, l.o.parkWait)
	time.Sleep(d)
}

// keyFigure is one figure compared between two builds.
type keyFigure struct {
	name   string
	unit   string
	higher bool // higher is better
	v      float64
	ok     bool // measured in this run
}

// keyFigures are the figures -baseline-bin compares.
func (r *report) keyFigures() []keyFigure {
	var out []keyFigure
	add := func(name, unit string, higher, ok bool, v float64) {
		out = append(out, keyFigure{name: name, unit: unit, higher: higher, v: v, ok: ok})
	}
	msf := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	add("RSS per idle VM port", "KiB", false, r.idleOK > 0, r.rssPerIdle)
	add("RSS per idle telnets VM port", "KiB", false, r.tlsOK > 0, r.rssPerTLS)
	add("RSS per port with an idle remote", "KiB", false, r.remoteOK > 0, r.rssPerRemote)
	add("private RSS (RssAnon) per idle VM port", "KiB", false, r.idleOK > 0, r.anonPerIdle)
	add("private RSS (RssAnon) per port with an idle remote", "KiB", false, r.remoteOK > 0, r.anonPerRemote)
	if w := r.wake; w != nil {
		add("wake storm: time until every line arrived", "ms", false, w.delivered > 0, msf(w.wall))
		add("wake storm: bridge peak RSS", "MiB", false, w.hwmKiB > 0, float64(w.hwmKiB)/1024)
	}
	if runs := r.burstRuns; len(runs) > 0 {
		var walls, cpu durations
		for _, b := range runs {
			walls = append(walls, b.wall)
			cpu = append(cpu, b.cpuBridge)
		}
		add(fmt.Sprintf("burst of %d VMs: median time to the last WILL-PROXY", runs[0].n), "ms", false, true, msf(walls.pct(.5)))
		add("burst: bridge CPU per burst, median", "ms", false, true, msf(cpu.pct(.5)))
	}
	if b := r.bridge; b != nil && b.ran {
		mib := func(f flowStats) float64 { return f.rate() / (1 << 20) }
		add("one session, remote→VM", "MiB/s", true, b.oneToVM.got > 0, mib(b.oneToVM))
		add("one session, VM→remote", "MiB/s", true, b.oneToRem.got > 0, mib(b.oneToRem))
		add("aggregate, remote→VM (median run)", "MiB/s", true, b.aggToVM.got > 0, mib(b.aggToVM))
		add("aggregate, VM→remote (median run)", "MiB/s", true, b.aggToRem.got > 0, mib(b.aggToRem))
		add("round trip p50 (raw)", "ms", false, len(b.rtt) > 0, msf(b.rtt.pct(.5)))
		add("round trip p99 (raw)", "ms", false, len(b.rtt) > 0, msf(b.rtt.pct(.99)))
		add("round trip: worst second's p50", "ms", false, len(b.rtt) > 0, msf(b.rttWorstSec))
		add("round trip: bridge CPU per round trip", "µs", false, b.cpuPerRTT > 0, float64(b.cpuPerRTT)/float64(time.Microsecond))
	}
	for _, st := range r.storms {
		how := fmt.Sprintf("paced at %.0f/s", st.paced)
		if st.paced == 0 {
			how = "back to back"
		}
		add("vMotions/s, "+how, "/s", true, st.migrations > 0, float64(st.migrations)/st.elapsed.Seconds())
		add("  switch-over p99, "+how, "ms", false, len(st.switches) > 0, msf(st.switches.pct(.99)))
	}
	return out
}

// printComparison prints each key figure for the baseline and this
// build, round by round, and their ratio (this build / baseline). A
// figure a round did not measure (a phase that failed) is left out of
// that round.
func printComparison(w io.Writer, bases, curs []*report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tbaseline\tthis build\tratio (this / baseline)\tbetter")
	type fig struct {
		keyFigure
		base, cur []float64
	}
	var order []string
	figs := map[string]*fig{}
	for i := range min(len(bases), len(curs)) {
		bm := map[string]keyFigure{}
		for _, f := range bases[i].keyFigures() {
			if f.ok {
				bm[f.name] = f
			}
		}
		for _, c := range curs[i].keyFigures() {
			b, ok := bm[c.name]
			if !ok || !c.ok {
				continue
			}
			f := figs[c.name]
			if f == nil {
				f = &fig{keyFigure: c}
				figs[c.name] = f
				order = append(order, c.name)
			}
			f.base, f.cur = append(f.base, b.v), append(f.cur, c.v)
		}
	}
	for _, name := range order {
		f := figs[name]
		var bs, cs, rs []string
		for k := range f.base {
			bs = append(bs, fmt.Sprintf("%.2f", f.base[k]))
			cs = append(cs, fmt.Sprintf("%.2f", f.cur[k]))
			rs = append(rs, ratio(f.cur[k], f.base[k]))
		}
		better := "lower"
		if f.higher {
			better = "higher"
		}
		fmt.Fprintf(tw, "%s\t%s %s\t%s %s\t%s\t%s\n", name, strings.Join(bs, " / "), f.unit, strings.Join(cs, " / "), f.unit, strings.Join(rs, " / "), better)
	}
	tw.Flush()
}
