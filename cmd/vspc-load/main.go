// Command vspc-load measures vspc-bridge at scale on one machine, over
// loopback only. It builds and starts the bridge as a separate process
// (so its RSS and CPU can be read from /proc), simulates ESXi hosts with
// vspc/vspctest and the remote systems with raw TCP listeners, and
// measures a plain Go TCP relay (io.Copy both ways, a subprocess) on the
// same traffic. It prints a table of figures, targets and ratios.
//
// Phases (each with a fresh bridge process):
//
//	burst   -burst VMs connecting at once, -burst-runs times, each time
//	        against a fresh bridge: median and range of the time until
//	        the last is past WILL-PROXY, CPU per burst.
//	idle    N VMs whose remote is unreachable (one descriptor per port):
//	        a burst of -burst VMs at once, then the rest; RSS per port;
//	        CPU while idle; CPU while -pending hand-overs wait for PEER.
//	idletls -idle-tls idle VM ports over telnets: RSS per port (crypto/tls
//	        sets their floor, so they are reported apart).
//	remote  -remote VMs each joined to a remote: RSS per port once idle;
//	        a wake storm (every remote writes a line at once; every line
//	        must arrive; the bridge's peak RSS); latency at -lat
//	        sessions; throughput through one session and through -agg
//	        sessions; a vMotion storm of -vmotion-vms VMs.
//	console, cstream, cstall: direction server (remote access); see
//	        console.go.
//	relay   the same traffic through the plain relay.
//	direct  the latency test with no relay at all (the added-latency base).
//	latab   (with -baseline-bin) both builds at once, -latab-ports ports
//	        each, parked and woken by a wake storm; then the latency test
//	        in -latab-slices slices alternating between them (ABBA), so
//	        that neighbouring slices see the same machine: the median
//	        ratio of their p50s is the figure (latab.go).
//
// RSS is read -settle plus -park-wait after the ports are up: a bridge
// that parks idle connections does so a few seconds after their last
// data.
//
// With -baseline-bin, every bridge phase runs against that build too,
// right before the same phase on -bridge-bin (-ab-rounds times, the
// order swapped each round), and a second table gives each key figure
// for both builds and their ratio: the way to compare two builds on a
// shared, noisy machine.
//
// Usage: go run ./cmd/vspc-load [flags]   (from the module root, or
// -bridge-bin with a built bridge). "vspc-load relay -target ADDR" is the
// relay subprocess the tool starts for its baseline. The run fails when a
// byte was lost, duplicated or corrupted.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if len(os.Args) > 1 && os.Args[1] == "relay" {
		err = runRelay(os.Args[2:])
	} else {
		err = run(ctx, os.Args[1:], os.Stdout)
	}
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

type options struct {
	bridgeBin     string
	baselineBin   string
	abRounds      int
	bridgeAddr    string
	bridgePid     int
	phases        string
	idle          int
	idleTLS       int
	wake          bool
	wakeTimeout   time.Duration
	parkWait      time.Duration
	burst         int
	burstRuns     int
	remote        int
	conc          int
	pendingN      int
	lat           int
	latRate       int
	latDur        time.Duration
	agg           int
	aggRuns       int
	tputDur       time.Duration
	vmotionVMs    int
	vmotionDur    time.Duration
	vmotionRate   float64
	vmotionSettle time.Duration
	dataEvery     time.Duration
	cpuDur        time.Duration
	settle        time.Duration
	rssWait       time.Duration
	timeout       time.Duration
	consoles      int
	cstreamN      int
	cstreamBytes  int64
	cstallN       int
	cstall        time.Duration
	latabPorts    int
	latabSlices   int
	latabSlice    time.Duration
	latabSettle   time.Duration
}

// trafficPairs is how many pairs the traffic tests take: the latency
// sessions, two single sessions, and the aggregate runs' sessions.
func (o *options) trafficPairs() int { return o.lat + 2 + max(o.aggRuns, 1)*o.agg }

func run(ctx context.Context, args []string, stdout io.Writer) error {
	var o options
	fs := flag.NewFlagSet("vspc-load", flag.ContinueOnError)
	fs.StringVar(&o.bridgeBin, "bridge-bin", "", "vspc-bridge binary; default: go build ./cmd/vspc-bridge into a temp dir")
	fs.StringVar(&o.bridgeAddr, "bridge-addr", "", "use a running bridge at this 127.0.0.0/8 address instead of starting one per phase")
	fs.IntVar(&o.bridgePid, "bridge-pid", 0, "with -bridge-addr: its pid, for RSS and CPU figures")
	fs.StringVar(&o.baselineBin, "baseline-bin", "", "a second vspc-bridge binary (the previous build): each bridge phase runs on it too, and a table compares the two")
	fs.IntVar(&o.abRounds, "ab-rounds", 1, "with -baseline-bin: rounds of (baseline, this build), the order swapped each round; each round's ratio is shown")
	fs.StringVar(&o.phases, "phases", "burst,idle,idletls,remote,relay,splice,direct", "phases to run, comma-separated")
	fs.IntVar(&o.idle, "idle", 18000, "idle VM ports (no remote) to establish")
	fs.IntVar(&o.idleTLS, "idle-tls", 2000, "idle VM ports over telnets in the idletls phase")
	fs.BoolVar(&o.wake, "wake", true, "remote phase: the wake storm (every remote writes a line at once)")
	fs.DurationVar(&o.wakeTimeout, "wake-timeout", time.Minute, "the wake storm fails when a line has not arrived by then")
	fs.DurationVar(&o.parkWait, "park-wait", 30*time.Second, "added to -settle before idle RSS is read (a parking bridge parks 5 to 10 s after the last data, and returns the memory of a storm within 20 s more)")
	fs.IntVar(&o.burst, "burst", 1000, "VMs connecting at once, first of the idle ones (and in the burst phase)")
	fs.IntVar(&o.burstRuns, "burst-runs", 7, "bursts in the burst phase, each against a fresh bridge")
	fs.IntVar(&o.remote, "remote", 9000, "VM ports each joined to a remote")
	fs.IntVar(&o.conc, "conc", 128, "connections being set up at once after the burst")
	fs.IntVar(&o.pendingN, "pending", 1000, "idle ports left with a vMotion pending (GOAHEAD answered, no PEER)")
	fs.IntVar(&o.lat, "lat", 1000, "sessions pinging at once in the latency test")
	fs.IntVar(&o.latRate, "lat-rate", 10, "pings per second per session")
	fs.DurationVar(&o.latDur, "lat-dur", 10*time.Second, "latency test length (its p99 rests on 1 % of rate × sessions × this many samples; 3 s gave tails that moved by 2× between runs)")
	fs.IntVar(&o.agg, "agg", 64, "sessions streaming at once (both ways) in the aggregate throughput test")
	fs.DurationVar(&o.tputDur, "tput-dur", 3*time.Second, "length of each throughput test")
	fs.IntVar(&o.aggRuns, "agg-runs", 3, "aggregate throughput tests, each on fresh sessions; the median rate of each direction is reported")
	fs.IntVar(&o.vmotionVMs, "vmotion-vms", 100, "VMs migrating back to back in the vMotion storm")
	fs.DurationVar(&o.vmotionDur, "vmotion-dur", 5*time.Second, "length of each vMotion storm")
	fs.DurationVar(&o.vmotionSettle, "vmotion-settle", 2*time.Millisecond, "wait between PEER-OK and COMPLETE (ESXi copies memory there); 0 sends COMPLETE at once")
	fs.Float64Var(&o.vmotionRate, "vmotion-rate", 1000, "vMotions per second attempted in the paced storm (the second storm is back to back)")
	fs.DurationVar(&o.dataEvery, "vmotion-data-every", 10*time.Millisecond, "during a storm each side of each VM writes 4..256 bytes this often (10ms: about a 115200-baud console)")
	fs.DurationVar(&o.cpuDur, "cpu-dur", 5*time.Second, "CPU sampling window for idle and pending figures")
	fs.DurationVar(&o.settle, "settle", 2*time.Second, "wait before reading RSS and CPU")
	fs.DurationVar(&o.rssWait, "rss-wait", 0, "read the idle RSS again after this long (130s: after the runtime's 2-minute forced GC)")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "the whole run is cancelled after this (with -baseline-bin, by default 10m × 2 × -ab-rounds)")
	fs.IntVar(&o.consoles, "consoles", 1000, "console phase: direction-server consoles, one telnet client each")
	fs.IntVar(&o.cstreamN, "cstream-n", 50, "cstream phase: consoles (and direction-client pairs) streaming at once")
	fs.Int64Var(&o.cstreamBytes, "cstream-bytes", 256<<10, "cstream phase: bytes each way per console")
	fs.IntVar(&o.cstallN, "cstall-n", 10, "cstall phase: consoles streaming, console 0 with a stalled second client")
	fs.DurationVar(&o.cstall, "cstall", 10*time.Second, "cstall phase: [remote] client_stall")
	fs.IntVar(&o.latabPorts, "latab-ports", 4000, "latab phase (with -baseline-bin): ports joined to a remote on each build")
	fs.IntVar(&o.latabSlices, "latab-slices", 20, "latab phase: latency slices in all, half on each build, alternating ABBA")
	fs.DurationVar(&o.latabSlice, "latab-slice", 2*time.Second, "latab phase: length of each latency slice")
	fs.DurationVar(&o.latabSettle, "latab-settle", 0, "latab phase: wait this long after the wake storms before the slices (0: start at once)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	timeoutSet := false
	fs.Visit(func(f *flag.Flag) { timeoutSet = timeoutSet || f.Name == "timeout" })
	if o.baselineBin != "" && !timeoutSet {
		// Every bridge phase runs twice per round.
		o.timeout *= time.Duration(2 * max(o.abRounds, 1))
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	limit := raiseOwnLimit()
	logf("vspc-load: open-file limit %d; GOMAXPROCS from %d CPUs", limit, numCPU())

	dir, err := os.MkdirTemp("", "vspc-load-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if o.bridgeBin == "" && o.bridgeAddr == "" {
		logf("building ./cmd/vspc-bridge")
		if o.bridgeBin, err = buildBridge(ctx, dir); err != nil {
			return err
		}
	}
	newReport := func() *report {
		return &report{agg: o.agg, latN: o.lat, latRate: o.latRate, cpuWindow: o.cpuDur}
	}
	l := &loader{o: o, dir: dir, run: mrand.Uint32(), r: newReport(), bridgeBin: o.bridgeBin}
	l.net8 = 100 + mrand.IntN(100) // 127.<net8>.0.0/16 for this run's targets
	// With a baseline: one loader per build and round, sharing the
	// relay and direct figures (they do not depend on the bridge).
	type side struct {
		name string
		l    *loader
	}
	var rounds [][2]side
	if o.baselineBin != "" {
		if o.bridgeAddr != "" {
			return errors.New("vspc-load: -baseline-bin starts both builds itself (no -bridge-addr)")
		}
		for k := range max(o.abRounds, 1) {
			cur := l
			if k > 0 {
				cur = &loader{o: o, dir: dir, run: mrand.Uint32(), r: newReport(), bridgeBin: o.bridgeBin, net8: l.net8}
			}
			base := &loader{o: o, dir: dir, run: mrand.Uint32(), r: newReport(), bridgeBin: o.baselineBin, net8: l.net8}
			pairOrder := [2]side{{"baseline", base}, {"this build", cur}}
			if k%2 == 1 {
				pairOrder[0], pairOrder[1] = pairOrder[1], pairOrder[0]
			}
			rounds = append(rounds, pairOrder)
		}
	}
	var latab *latabResult
	printAll := func() {
		l.r.print(stdout)
		latab.print(stdout, o.lat, o.latRate)
		if len(rounds) > 0 {
			var bases, curs []*report
			for _, rd := range rounds {
				for _, sd := range rd {
					if sd.name == "baseline" {
						bases = append(bases, sd.l.r)
					} else {
						curs = append(curs, sd.l.r)
					}
				}
			}
			fmt.Fprintf(stdout, "\ncomparison with the baseline build %s (this build: %s)\n", o.baselineBin, o.bridgeBin)
			printComparison(stdout, bases, curs)
			// The first table printed only this build's first round:
			// the other sides' notes say what they lost, and why.
			for k, rd := range rounds {
				for _, sd := range rd {
					if sd.l == l {
						continue
					}
					for _, n := range sd.l.r.notes {
						fmt.Fprintf(stdout, "note (%s, round %d): %s\n", sd.name, k+1, n)
					}
				}
			}
		}
	}
	phases := strings.Split(o.phases, ",")
	for _, ph := range phases {
		ph = strings.TrimSpace(ph)
		var err error
		logf("phase %s: this process holds %d descriptors", ph, openFDs())
		switch ph {
		case "idle", "burst", "idletls", "remote", "console", "cstream", "cstall":
			if len(rounds) == 0 {
				err = l.bridgePhase(ctx, ph)
				break
			}
			for k, rd := range rounds {
				for _, sd := range rd {
					logf("phase %s, round %d: %s (%s)", ph, k+1, sd.name, sd.l.bridgeBin)
					if err = sd.l.bridgePhase(ctx, ph); err != nil {
						err = fmt.Errorf("%s: %w", sd.name, err)
						break
					}
				}
				if err != nil {
					break
				}
			}
		case "latab":
			if o.baselineBin == "" {
				err = errors.New("vspc-load: the latab phase compares two builds: give -baseline-bin")
				break
			}
			latab, err = l.phaseLatAB(ctx, o.baselineBin)
		case "relay":
			err = l.phaseRelay(ctx, false)
		case "splice":
			err = l.phaseRelay(ctx, true)
		case "direct":
			err = l.phaseDirect(ctx)
		case "":
		default:
			err = fmt.Errorf("vspc-load: unknown phase %q", ph)
		}
		for _, rd := range rounds { // relay and direct are the same for both builds
			for _, sd := range rd {
				if sd.l != l {
					sd.l.r.relay, sd.l.r.splice, sd.l.r.directRTT, sd.l.r.relayCPUIdle = l.r.relay, l.r.splice, l.r.directRTT, l.r.relayCPUIdle
				}
			}
		}
		if err != nil {
			printAll()
			return err
		}
	}
	printAll()
	for _, rd := range rounds {
		for _, sd := range rd {
			if sd.l.r.lostAny {
				return fmt.Errorf("vspc-load: bytes were lost, duplicated or corrupted (%s)", sd.name)
			}
		}
	}
	if l.r.lostAny {
		return fmt.Errorf("vspc-load: bytes were lost, duplicated or corrupted")
	}
	return nil
}

// bridgePhase runs one of the phases that start a bridge.
func (l *loader) bridgePhase(ctx context.Context, ph string) error {
	switch ph {
	case "idle":
		return l.phaseIdle(ctx)
	case "burst":
		return l.phaseBurst(ctx)
	case "idletls":
		return l.phaseIdleTLS(ctx)
	case "remote":
		return l.phaseRemote(ctx)
	case "console":
		return l.phaseConsole(ctx)
	case "cstream":
		return l.phaseConsoleStream(ctx)
	case "cstall":
		return l.phaseConsoleStall(ctx)
	}
	return fmt.Errorf("vspc-load: %q is not a bridge phase", ph)
}

// quietGC collects now and turns this process's collector off until the
// returned func is called, so that the load tool's own GC pauses do not
// show up in a measured window (its heap is large: a 32 KiB buffer per
// simulated connection). Memory is plentiful for a few seconds of it.
func quietGC() (restore func()) {
	runtime.GC()
	old := debug.SetGCPercent(-1)
	return func() { debug.SetGCPercent(old) }
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

type loader struct {
	o         options
	bridgeBin string // the build this loader measures
	dir       string
	run       uint32
	net8      int
	r         *report
}

// bridge starts a fresh bridge for a phase, or returns the running one
// given with -bridge-addr (its config must allow connect_allow to
// 127.0.0.0/8; the idle phase wants a long reconnect backoff).
func (l *loader) bridge(ctx context.Context, name, reconnectMin, reconnectMax string) (*child, error) {
	if l.o.bridgeAddr != "" {
		if !isLoopback(l.o.bridgeAddr) {
			return nil, fmt.Errorf("vspc-load: -bridge-addr %s is not a 127.0.0.0/8 address", l.o.bridgeAddr)
		}
		return &child{name: "bridge", addr: l.o.bridgeAddr, extPid: l.o.bridgePid}, nil
	}
	return startBridge(ctx, l.bridgeBin, l.dir, name, reconnectMin, reconnectMax)
}

const remotePort = 21000 // remote listeners: 127.<net8+1>.x.y:21000

// burstResult is one burst of VMs connecting at once.
type burstResult struct {
	n, ok              int
	wall, p50, p99     time.Duration
	cpuBridge, cpuSelf time.Duration // until the last WILL-PROXY
	bridgeCPU0         time.Duration // the bridge's CPU time when the burst started
	cpuBridgeAfter     time.Duration // the burst and settle after it (device connects included)
	err                error
}

// burstOnce connects n VMs (indices 0..n-1, unreachable remotes) to br at
// the same instant; conns[i] gets each simulated host. The load tool's
// own preparation (identities, goroutines) is done before the clock
// starts.
func (l *loader) burstOnce(ctx context.Context, br *child, n int, conns []*vspctest.Conn) (burstResult, []*pair) {
	pid := br.pid()
	vms := make([]vspctest.VM, n)
	for i := range vms {
		vms[i] = vmIdent(l.run, i, fmt.Sprintf("tcp://%s:1", hostIP(l.net8, i)))
	}
	var bt0, st0 time.Duration
	restore := quietGC()
	ps, times, wall, err := establishAtOnce(ctx, n, func(i int) (*pair, time.Duration, error) {
		c, nc, d, err := dialVM(ctx, br.addr, vms[i])
		if err != nil {
			return nil, 0, err
		}
		conns[i] = c
		return &pair{vm: c, sim: c, nc: nc, ident: vms[i]}, d, nil
	}, func() {
		bt0, st0 = cpuTime(pid), cpuTime(os.Getpid())
	})
	restore()
	return burstResult{
		n: n, ok: countOK(ps), wall: wall, p50: times.pct(.5), p99: times.pct(.99),
		cpuBridge: cpuTime(pid) - bt0, cpuSelf: cpuTime(os.Getpid()) - st0, bridgeCPU0: bt0, err: err,
	}, ps
}

// phaseBurst repeats the burst -burst-runs times, each against a fresh
// bridge (as after a restart, when every VM reconnects at once): one run
// on this shared machine is too noisy to judge by.
func (l *loader) phaseBurst(ctx context.Context) error {
	o := l.o
	for run := range o.burstRuns {
		br, err := l.bridge(ctx, "burst", "1h", "1h")
		if err != nil {
			return err
		}
		time.Sleep(200 * time.Millisecond)
		conns := make([]*vspctest.Conn, o.burst)
		b, ps := l.burstOnce(ctx, br, o.burst, conns)
		// The bridge's work for the burst does not end at the last
		// WILL-PROXY: device connects held during it follow (bridge
		// gate.go). Its CPU over the next half second counts them.
		time.Sleep(500 * time.Millisecond)
		b.cpuBridgeAfter = cpuTime(br.pid()) - b.bridgeCPU0
		logf("burst run %d: %d of %d past WILL-PROXY in %v (p50 %v p99 %v; CPU bridge %v, load tool %v; bridge CPU including the 0.5 s after %v) err=%v", run+1, b.ok, b.n, b.wall, b.p50, b.p99, b.cpuBridge, b.cpuSelf, b.cpuBridgeAfter, b.err)
		br.stop()
		closeAll(ps)
		l.r.burstRuns = append(l.r.burstRuns, b)
		if b.err != nil {
			return fmt.Errorf("vspc-load: burst run %d: %w", run+1, b.err)
		}
	}
	return nil
}

func (l *loader) phaseIdle(ctx context.Context) error {
	o := l.o
	br, err := l.bridge(ctx, "idle", "1h", "1h")
	if err != nil {
		return err
	}
	defer br.stop()
	pid := br.pid()
	l.r.fileLimit = openFileLimit(pid)
	time.Sleep(200 * time.Millisecond)
	rss0, _ := rssKiB(pid)
	anon0, file0 := rssParts(pid)
	logf("idle: bridge pid %d on %s, open-file limit %d, RSS %d KiB", pid, br.addr, l.r.fileLimit, rss0)

	n := o.idle
	conns := make([]*vspctest.Conn, n)
	dial := func(i int) (*pair, time.Duration, error) {
		vm := vmIdent(l.run, i, fmt.Sprintf("tcp://%s:1", hostIP(l.net8, i)))
		c, nc, d, err := dialVM(ctx, br.addr, vm)
		if err != nil {
			return nil, 0, err
		}
		conns[i] = c
		return &pair{vm: c, sim: c, nc: nc, ident: vm}, d, nil
	}
	burst := min(o.burst, n)
	b, bp := l.burstOnce(ctx, br, burst, conns)
	l.r.burst = b
	berr := b.err
	logf("idle: burst of %d: %d past WILL-PROXY in %v (p50 %v p99 %v; CPU bridge %v, load tool %v) err=%v", burst, b.ok, b.wall, b.p50, b.p99, b.cpuBridge, b.cpuSelf, berr)
	// The rest, conc at a time.
	rest, rtimes, rerr := establish(ctx, n-burst, o.conc, func(i int) (*pair, time.Duration, error) { return dial(burst + i) })
	all := append(bp, rest...)
	defer func() {
		br.stop()
		closeAll(all)
	}()
	l.r.idleN, l.r.idleOK = n, countOK(all)
	l.r.hsP50, l.r.hsP99 = rtimes.pct(.5), rtimes.pct(.99)
	logf("idle: %d of %d ports established (handshake at %d in flight: p50 %v p99 %v) err=%v", l.r.idleOK, n, o.conc, rtimes.pct(.5), rtimes.pct(.99), rerr)
	l.parkWait("idle")
	rss1, _ := rssKiB(pid)
	anon1, file1 := rssParts(pid)
	l.r.rssIdleBase, l.r.rssIdle = rss0, rss1
	if l.r.idleOK > 0 {
		l.r.rssPerIdle = float64(rss1-rss0) / float64(l.r.idleOK)
		l.r.anonPerIdle = float64(anon1-anon0) / float64(l.r.idleOK)
	}
	logf("idle: bridge RSS %d KiB → %.2f KiB per idle port; private (RssAnon) %d → %d KiB, %.2f KiB per port; the binary's pages (RssFile) %d → %d KiB",
		rss1, l.r.rssPerIdle, anon0, anon1, l.r.anonPerIdle, file0, file1)
	if o.rssWait > 0 {
		// The Go runtime forces a collection every 2 minutes; after one,
		// the garbage of the handshakes is freed and scavenged.
		for end := time.Now().Add(o.rssWait); time.Now().Before(end); {
			time.Sleep(min(10*time.Second, time.Until(end)))
			r, _ := rssKiB(pid)
			logf("idle: bridge RSS %d KiB (%.2f KiB per port)", r, float64(r-rss0)/float64(l.r.idleOK))
		}
		rss2, _ := rssKiB(pid)
		l.r.rssPerIdleLater = float64(rss2-rss0) / float64(l.r.idleOK)
		l.r.rssLater = o.rssWait
	}
	l.r.cpuIdle, _ = cpuOver(pid, o.cpuDur)
	logf("idle: CPU with %d idle ports: %.2f%% of a core", l.r.idleOK, 100*l.r.cpuIdle)

	var pend []*vspctest.Conn
	for _, c := range conns {
		if c != nil && len(pend) < o.pendingN {
			pend = append(pend, c)
		}
	}
	np, perr := pending(ctx, pend)
	l.r.pendingN = np
	time.Sleep(o.settle / 2)
	l.r.cpuPending, _ = cpuOver(pid, o.cpuDur)
	logf("idle: CPU with %d vMotions pending (and %d idle ports): %.2f%% of a core (err=%v)", np, l.r.idleOK, 100*l.r.cpuPending, perr)
	if l.r.idleOK == 0 {
		return fmt.Errorf("vspc-load: no idle port established: %v", keepFirst(berr, rerr))
	}
	return nil
}

func (l *loader) phaseRemote(ctx context.Context) error {
	o := l.o
	br, err := l.bridge(ctx, "remote", "200ms", "30s")
	if err != nil {
		return err
	}
	defer br.stop()
	pid := br.pid()
	time.Sleep(200 * time.Millisecond)
	rss0, _ := rssKiB(pid)
	anon0, file0 := rssParts(pid)
	ps, times, err := establish(ctx, o.remote, o.conc, func(i int) (*pair, time.Duration, error) {
		return dialBridgePair(ctx, br.addr, l.run, l.net8+1, remotePort, i)
	})
	defer func() {
		br.stop()
		closeAll(ps)
	}()
	ok := okPairs(ps)
	l.r.remoteN, l.r.remoteOK = o.remote, len(ok)
	logf("remote: %d of %d ports joined to a remote (handshake p50 %v p99 %v) err=%v", len(ok), o.remote, times.pct(.5), times.pct(.99), err)
	l.parkWait("remote")
	rss1, _ := rssKiB(pid)
	anon1, file1 := rssParts(pid)
	if len(ok) > 0 {
		l.r.rssPerRemote = float64(rss1-rss0) / float64(len(ok))
		l.r.anonPerRemote = float64(anon1-anon0) / float64(len(ok))
	}
	logf("remote: bridge RSS %d → %d KiB → %.2f KiB per port with a remote; private (RssAnon) %d → %d KiB, %.2f KiB per port; the binary's pages (RssFile) %d → %d KiB",
		rss0, rss1, l.r.rssPerRemote, anon0, anon1, l.r.anonPerRemote, file0, file1)
	l.r.cpuIdleRemote, _ = cpuOver(pid, o.cpuDur)
	logf("remote: CPU with %d idle joined ports: %.2f%% of a core", len(ok), 100*l.r.cpuIdleRemote)
	if o.wake && len(ok) > 0 {
		ws := wakeStorm(ctx, ok, pid, o.wakeTimeout)
		l.r.wake = &ws
		logf("remote: wake storm: %d of %d lines delivered in %v; bridge RSS %d KiB before, peak %d KiB (reset first: %v), %d KiB after; err=%v",
			ws.delivered, ws.ports, ws.wall, ws.rssBefore, ws.hwmKiB, ws.hwmReset, ws.rssAfter, ws.err)
		if ws.err != nil || ws.delivered != ws.ports {
			l.r.lostAny = true
			l.r.notes = append(l.r.notes, fmt.Sprintf("wake storm: %d of %d lines: %v", ws.delivered, ws.ports, ws.err))
		}
	}

	if err := detachPairs(ok[:min(len(ok), o.trafficPairs())]); err != nil {
		return err
	}
	tr, err := l.traffic(ctx, "bridge", ok, pid)
	l.r.bridge = tr
	if err != nil {
		return err
	}
	// vMotion storms on pairs not used yet: one paced at -vmotion-rate,
	// one back to back (the peak rate).
	used := o.trafficPairs()
	rest := ok[min(used, len(ok)):]
	for k, rate := range []float64{o.vmotionRate, 0} {
		var movers []*mover
		for len(rest) > 0 && len(movers) < o.vmotionVMs {
			movers = append(movers, newMover(br.addr, rest[0], o.vmotionSettle))
			rest = rest[1:]
		}
		if len(movers) == 0 {
			break
		}
		logf("remote: vMotion storm %d: %d VMs, %.0f/s in total (0: back to back) for %v with data flowing", k+1, len(movers), rate, o.vmotionDur)
		restore := quietGC()
		t0, _ := cpuTicks(pid)
		s0, _ := cpuTicks(os.Getpid())
		st := storm(ctx, movers, o.vmotionDur, o.dataEvery, rate)
		t1, _ := cpuTicks(pid)
		s1, _ := cpuTicks(os.Getpid())
		restore()
		st.cpu = float64(t1-t0) / clkTck / st.elapsed.Seconds()
		st.selfCPU = float64(s1-s0) / clkTck / st.elapsed.Seconds()
		st.paced = rate
		l.r.storms = append(l.r.storms, &st)
		l.r.account(st.toVM, "vMotion storm, remote→VM")
		l.r.account(st.toRemote, "vMotion storm, VM→remote")
		logf("remote: %d migrations in %v (%.0f/s); switch-over p50 %v p99 %v; hand-over p50 %v p99 %v; CPU bridge %.0f%%, load tool %.0f%%; err=%v",
			st.migrations, st.elapsed, float64(st.migrations)/st.elapsed.Seconds(), st.switches.pct(.5), st.switches.pct(.99),
			st.handovers.pct(.5), st.handovers.pct(.99), 100*st.cpu, 100*st.selfCPU, st.firstErr)
		if st.firstErr != nil {
			l.r.notes = append(l.r.notes, fmt.Sprintf("vMotion storm %d: %v", k+1, st.firstErr))
		}
		for _, m := range movers {
			m.mu.Lock()
			m.cur.Close()
			m.mu.Unlock()
			close(m.epochs)
		}
	}
	return nil
}

// trafficFigures are the figures measured the same way on the bridge and
// on the relay.
type trafficFigures struct {
	pairs                   int
	rtt                     durations
	rttWorstSec             time.Duration // the highest p50 of one second of the latency test
	cpuPerRTT               time.Duration // the relay's (bridge's) CPU per round trip in the latency test
	oneToVM, oneToRem       flowStats
	aggToVM, aggToRem       flowStats
	cpuOneToVM, cpuOneToRem float64
	cpuAgg                  float64
	aggRuns                 int
	rssPerPair              float64
	ran                     bool
	latErr                  error
}

// traffic runs latency and throughput on ps (disjoint slices of it).
func (l *loader) traffic(ctx context.Context, name string, ps []*pair, pid int) (*trafficFigures, error) {
	o := l.o
	tf := &trafficFigures{pairs: len(ps), ran: true}
	need := o.trafficPairs()
	if len(ps) < need {
		return tf, fmt.Errorf("vspc-load: %s: %d pairs, need %d for latency and throughput", name, len(ps), need)
	}
	restore := quietGC()
	t0, _ := cpuTicks(pid)
	lt0 := time.Now()
	// Each second: the CPU the bridge ran and the time its threads and
	// this process's waited to run (the machine's other load), to tell a
	// bridge that stalled from a machine that did.
	var sched []string
	sdone, sstop := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sdone)
		self := os.Getpid()
		c0, w0, s0 := cpuTime(pid), runDelay(pid), runDelay(self)
		tk := time.NewTicker(time.Second)
		defer tk.Stop()
		for {
			select {
			case <-sstop:
				return
			case <-tk.C:
			}
			c1, w1, s1 := cpuTime(pid), runDelay(pid), runDelay(self)
			sched = append(sched, fmt.Sprintf("%d/%d/%d", (c1-c0)/time.Millisecond, (w1-w0)/time.Millisecond, (s1-s0)/time.Millisecond))
			c0, w0, s0 = c1, w1, s1
		}
	}()
	rtt, secs, err := latency(ps[:o.lat], o.latRate, o.latDur)
	close(sstop)
	<-sdone
	t1, _ := cpuTicks(pid)
	lel := time.Since(lt0)
	restore()
	tf.rtt, tf.latErr = rtt, err
	tf.rttWorstSec, _ = worstSecond(secs)
	if len(rtt) > 0 {
		tf.cpuPerRTT = time.Duration(float64(t1-t0) / clkTck * float64(time.Second) / float64(len(rtt)))
	}
	var bySec []string
	for _, s := range secs {
		bySec = append(bySec, fmt.Sprintf("%.2f", float64(s.pct(.5))/float64(time.Millisecond)))
	}
	logf("%s: RTT at %d sessions × %d/s: %d samples, p50 %v p99 %v; p50 by second [%s] ms; CPU %.0f%% of a core, %v per round trip; by second, ms of %s CPU / its run-queue wait / this process's run-queue wait [%s]; err=%v",
		name, o.lat, o.latRate, len(rtt), rtt.pct(.5), rtt.pct(.99), strings.Join(bySec, " "), 100*float64(t1-t0)/clkTck/lel.Seconds(), tf.cpuPerRTT,
		name, strings.Join(sched, " "), err)
	if err != nil {
		l.r.lostAny = true
		l.r.notes = append(l.r.notes, fmt.Sprintf("%s latency: %v", name, err))
	}
	ps = ps[o.lat:]

	one := func(p *pair, toVM bool) (flowStats, float64) {
		f := &flow{w: p.vm, r: p.remote}
		if toVM {
			f.w, f.r = p.remote, p.vm
		}
		restore := quietGC()
		t0, _ := cpuTicks(pid)
		st := throughput([]*flow{f}, o.tputDur, 10*time.Second)
		t1, _ := cpuTicks(pid)
		restore()
		return st, float64(t1-t0) / clkTck / st.elapsed.Seconds()
	}
	tf.oneToVM, tf.cpuOneToVM = one(ps[0], true)
	l.r.account(tf.oneToVM, name+" one session remote→VM")
	logf("%s: one session remote→VM %.1f MiB/s (CPU %.0f%%)", name, tf.oneToVM.rate()/(1<<20), 100*tf.cpuOneToVM)
	tf.oneToRem, tf.cpuOneToRem = one(ps[1], false)
	l.r.account(tf.oneToRem, name+" one session VM→remote")
	logf("%s: one session VM→remote %.1f MiB/s (CPU %.0f%%)", name, tf.oneToRem.rate()/(1<<20), 100*tf.cpuOneToRem)
	ps = ps[2:]

	// The aggregate test runs o.aggRuns times, each on sessions of its
	// own (a flow's reader cannot be restarted), and the median of each
	// direction is the figure: one 3 s run on this shared machine ranged
	// from 0.39 to 0.80 of the relay's rate.
	var runsToVM, runsToRem []flowStats
	var cpu []float64
	for run := range max(o.aggRuns, 1) {
		var toVM, toRem []*flow
		for _, p := range ps[run*o.agg : (run+1)*o.agg] {
			toVM = append(toVM, &flow{w: p.remote, r: p.vm})
			toRem = append(toRem, &flow{w: p.vm, r: p.remote})
		}
		restore = quietGC()
		t0, _ := cpuTicks(pid)
		done := make(chan flowStats, 1)
		go func() { done <- throughput(toVM, o.tputDur, 10*time.Second) }()
		aggToRem := throughput(toRem, o.tputDur, 10*time.Second)
		aggToVM := <-done
		t1, _ := cpuTicks(pid)
		restore()
		c := float64(t1-t0) / clkTck / max(aggToVM.elapsed, aggToRem.elapsed).Seconds()
		l.r.account(aggToVM, name+" aggregate remote→VM")
		l.r.account(aggToRem, name+" aggregate VM→remote")
		logf("%s: %d sessions both ways at once, run %d: remote→VM %.1f MiB/s, VM→remote %.1f MiB/s (CPU %.0f%%)", name, o.agg, run+1,
			aggToVM.rate()/(1<<20), aggToRem.rate()/(1<<20), 100*c)
		runsToVM, runsToRem, cpu = append(runsToVM, aggToVM), append(runsToRem, aggToRem), append(cpu, c)
	}
	tf.aggToVM, tf.aggToRem, tf.cpuAgg = medianFlow(runsToVM), medianFlow(runsToRem), median(cpu)
	tf.aggRuns = len(cpu)
	return tf, nil
}

func (l *loader) phaseRelay(ctx context.Context, splice bool) error {
	o := l.o
	name, n := "relay", o.remote
	if splice {
		// A splicing relay holds 6 descriptors per relayed connection.
		name, n = "splice relay", min(o.remote, o.trafficPairs())
	}
	m, err := newIDMatcher()
	if err != nil {
		return err
	}
	defer m.close()
	rl, err := startRelay(ctx, m.ln.Addr().String(), splice)
	if err != nil {
		return err
	}
	defer rl.stop()
	pid := rl.pid()
	time.Sleep(200 * time.Millisecond)
	rss0, _ := rssKiB(pid)
	ps, times, err := establish(ctx, n, o.conc, func(i int) (*pair, time.Duration, error) {
		return m.dialIDPair(ctx, rl.addr, uint64(i))
	})
	defer func() {
		rl.stop()
		closeAll(ps)
	}()
	ok := okPairs(ps)
	logf("%s: %d of %d relayed connections (connect p50 %v p99 %v) err=%v", name, len(ok), n, times.pct(.5), times.pct(.99), err)
	time.Sleep(o.settle)
	rss1, _ := rssKiB(pid)
	perPair := 0.0
	if len(ok) > 0 {
		perPair = float64(rss1-rss0) / float64(len(ok))
	}
	cpu, _ := cpuOver(pid, o.cpuDur)
	logf("%s: RSS %d KiB → %.2f KiB per relayed connection; idle CPU %.2f%%", name, rss1, perPair, 100*cpu)
	tr, err := l.traffic(ctx, name, ok, pid)
	tr.rssPerPair = perPair
	if splice {
		l.r.splice = tr
	} else {
		l.r.relayCPUIdle = cpu
		l.r.relay = tr
	}
	return err
}

func (l *loader) phaseDirect(ctx context.Context) error {
	o := l.o
	m, err := newIDMatcher()
	if err != nil {
		return err
	}
	defer m.close()
	ps, _, err := establish(ctx, o.lat, o.conc, func(i int) (*pair, time.Duration, error) {
		return m.dialIDPair(ctx, m.ln.Addr().String(), uint64(i))
	})
	defer closeAll(ps)
	ok := okPairs(ps)
	if len(ok) == 0 {
		return fmt.Errorf("vspc-load: direct: no connection: %v", err)
	}
	restore := quietGC()
	rtt, _, lerr := latency(ok, o.latRate, o.latDur)
	restore()
	l.r.directRTT = rtt
	logf("direct: RTT at %d sessions × %d/s: p50 %v p99 %v err=%v", len(ok), o.latRate, rtt.pct(.5), rtt.pct(.99), lerr)
	return nil
}

// medianFlow is the run with the median rate.
func medianFlow(runs []flowStats) flowStats {
	s := slices.Clone(runs)
	slices.SortFunc(s, func(a, b flowStats) int { return cmp.Compare(a.rate(), b.rate()) })
	return s[len(s)/2]
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func openFDs() int {
	ents, _ := os.ReadDir("/proc/self/fd")
	return len(ents)
}

func numCPU() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "processor\t:")
}

// report collects every figure and prints the table.
type report struct {
	fileLimit                          int64
	burst                              burstResult   // the idle phase's burst
	burstRuns                          []burstResult // the burst phase
	idleN, idleOK                      int
	hsP50, hsP99                       time.Duration
	rssIdleBase, rssIdle               int64
	rssPerIdleLater                    float64
	rssLater                           time.Duration
	rssPerIdle                         float64
	cpuIdle, cpuPending, cpuIdleRemote float64
	pendingN                           int
	remoteN, remoteOK                  int
	rssPerRemote                       float64
	anonPerIdle, anonPerRemote         float64 // the same from RssAnon: private memory, not the binary's pages
	tlsN, tlsOK                        int
	rssPerTLS                          float64
	wake                               *wakeStats
	bridge, relay, splice              *trafficFigures
	relayCPUIdle                       float64
	directRTT                          durations
	storms                             []*stormStats
	consoles                           *consoleFigures
	sent, got, junk, lost              int64
	lostAny                            bool
	notes                              []string
	agg, latN, latRate                 int
	cpuWindow                          time.Duration
}

func (r *report) account(f flowStats, what string) {
	r.sent += f.sent
	r.got += f.got
	r.junk += f.junk
	r.lost += f.lost()
	if f.lost() > 0 || f.junk > 0 || f.firstErr != nil {
		r.lostAny = true
		r.notes = append(r.notes, fmt.Sprintf("%s: sent %d, arrived intact %d, corrupt %d, missing %d: %v", what, f.sent, f.got, f.junk, f.lost(), f.firstErr))
	}
}

func mibs(f flowStats) string { return fmt.Sprintf("%.1f MiB/s", f.rate()/(1<<20)) }

func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", a/b)
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func (r *report) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tmeasured\ttarget\tplain relay\tratio to relay\tverdict")
	row := func(fig, val, target, relay, rat, v string) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", fig, val, target, relay, rat, v)
	}
	if r.idleN > 0 {
		row("idle VM ports established", fmt.Sprintf("%d of %d (bridge file limit %d)", r.idleOK, r.idleN, r.fileLimit), "≥ 18000", "-", "-", verdict(r.idleOK >= 18000))
		b := r.burst
		row(fmt.Sprintf("burst: %d VMs at once, all past WILL-PROXY", b.n), fmt.Sprintf("%d in %s", b.ok, ms(b.wall)), "all within 100 ms", "-", "-", verdict(b.ok == b.n && b.wall <= 100*time.Millisecond))
		row("  handshake in the burst p50 / p99", ms(b.p50)+" / "+ms(b.p99), "-", "-", "-", "")
		row("  CPU for the burst: bridge / load tool", fmt.Sprintf("%v / %v", b.cpuBridge.Round(time.Millisecond), b.cpuSelf.Round(time.Millisecond)), "-", "-", "-", "")
		row("  handshake at 128 in flight p50 / p99", ms(r.hsP50)+" / "+ms(r.hsP99), "-", "-", "-", "")
		relayPer, rat := "-", "-"
		if r.relay != nil {
			relayPer = fmt.Sprintf("%.1f KiB per relayed conn", r.relay.rssPerPair)
			rat = ratio(r.rssPerIdle, r.relay.rssPerPair)
		}
		row("bridge RSS per idle VM port", fmt.Sprintf("%.2f KiB (%d → %d KiB)", r.rssPerIdle, r.rssIdleBase, r.rssIdle), "≤ 4 KiB", relayPer, rat, verdict(r.rssPerIdle <= 4))
		row("  private memory (RssAnon) per idle VM port", fmt.Sprintf("%.2f KiB", r.anonPerIdle), "-", "-", "-", "")
		if r.rssLater > 0 {
			row(fmt.Sprintf("  the same %s later (after the runtime's periodic GC)", r.rssLater), fmt.Sprintf("%.2f KiB", r.rssPerIdleLater), "≤ 4 KiB", "-", "-", verdict(r.rssPerIdleLater <= 4))
		}
		row(fmt.Sprintf("CPU, %d idle ports, over %s", r.idleOK, r.cpuWindow), fmt.Sprintf("%.2f %% of a core", 100*r.cpuIdle), "~0", "-", "-", verdict(r.cpuIdle < 0.01))
		row(fmt.Sprintf("CPU, %d vMotions pending (BEGIN answered, no PEER)", r.pendingN), fmt.Sprintf("%.2f %% of a core", 100*r.cpuPending), "~0", "-", "-", verdict(r.cpuPending < 0.01))
	}
	if runs := r.burstRuns; len(runs) > 0 {
		walls := make(durations, 0, len(runs))
		var cb, cs, ca durations
		allOK := true
		for _, b := range runs {
			walls = append(walls, b.wall)
			cb = append(cb, b.cpuBridge)
			cs = append(cs, b.cpuSelf)
			ca = append(ca, b.cpuBridgeAfter)
			allOK = allOK && b.ok == b.n
		}
		med := walls.pct(.5)
		row(fmt.Sprintf("burst, %d runs on fresh bridges: %d VMs at once, median time to the last WILL-PROXY", len(runs), runs[0].n),
			fmt.Sprintf("%s (%s to %s)", ms(med), ms(slices.Min(walls)), ms(slices.Max(walls))), "within 100 ms", "-", "-", verdict(allOK && med <= 100*time.Millisecond))
		row("  CPU per burst, median: bridge / load tool", fmt.Sprintf("%v / %v", cb.pct(.5).Round(time.Millisecond), cs.pct(.5).Round(time.Millisecond)), "-", "-", "-", "")
		row("  bridge CPU including the 0.5 s after (held device connects), median", ca.pct(.5).Round(time.Millisecond).String(), "-", "-", "-", "")
	}
	if r.remoteN > 0 {
		relayPer, rat := "-", "-"
		if r.relay != nil {
			relayPer = fmt.Sprintf("%.1f KiB", r.relay.rssPerPair)
			rat = ratio(r.rssPerRemote, r.relay.rssPerPair)
		}
		row("VM ports joined to a remote", fmt.Sprintf("%d of %d", r.remoteOK, r.remoteN), "≥ 9000", "-", "-", verdict(r.remoteOK >= 9000))
		row("bridge RSS per port with a remote", fmt.Sprintf("%.2f KiB", r.rssPerRemote), "≤ 6 KiB", relayPer, rat, verdict(r.rssPerRemote <= 6))
		row("  private memory (RssAnon) per port with a remote", fmt.Sprintf("%.2f KiB", r.anonPerRemote), "-", "-", "-", "")
		relayCPU := "-"
		if r.relay != nil {
			relayCPU = fmt.Sprintf("%.2f %%", 100*r.relayCPUIdle)
		}
		row(fmt.Sprintf("CPU, %d idle joined ports", r.remoteOK), fmt.Sprintf("%.2f %% of a core", 100*r.cpuIdleRemote), "~0", relayCPU, "-", verdict(r.cpuIdleRemote < 0.01))
	}
	if w := r.wake; w != nil {
		row(fmt.Sprintf("wake storm: %d idle ports, every remote writes a line at once", w.ports), fmt.Sprintf("%d lines delivered in %s", w.delivered, ms(w.wall)), "every line", "-", "-", verdict(w.err == nil && w.delivered == w.ports))
		peak := fmt.Sprintf("%d KiB peak (RSS %d before, %d after)", w.hwmKiB, w.rssBefore, w.rssAfter)
		if !w.hwmReset {
			peak += "; peak since start: VmHWM could not be reset"
		}
		row("  bridge RSS during the wake storm", peak, "reported", "-", "-", "")
	}
	if r.tlsN > 0 {
		row("idle telnets VM ports established", fmt.Sprintf("%d of %d", r.tlsOK, r.tlsN), "-", "-", "-", verdict(r.tlsOK == r.tlsN))
		row("bridge RSS per idle telnets VM port", fmt.Sprintf("%.2f KiB", r.rssPerTLS), "reported (crypto/tls sets the floor)", "-", "-", "")
	}
	if b := r.bridge; b != nil {
		rl := r.relay
		cmpRate := func(fig string, f flowStats, rf func(*trafficFigures) flowStats, target string, ok func(bf, rf float64) bool) {
			relay, rat := "-", "-"
			rv := 0.0
			if rl != nil {
				rv = rf(rl).rate()
				relay, rat = mibs(rf(rl)), ratio(f.rate(), rv)
			}
			row(fig, mibs(f), target, relay, rat, verdict(ok(f.rate(), rv)))
		}
		cmpRate("one session, remote→VM", b.oneToVM, func(t *trafficFigures) flowStats { return t.oneToVM }, "≥ 100 MiB/s",
			func(bf, _ float64) bool { return bf >= 100<<20 })
		cmpRate("one session, VM→remote", b.oneToRem, func(t *trafficFigures) flowStats { return t.oneToRem }, "≥ 100 MiB/s",
			func(bf, _ float64) bool { return bf >= 100<<20 })
		agg := fmt.Sprintf("aggregate, %d sessions both ways (median of %d runs): ", r.agg, b.aggRuns)
		cmpRate(agg+"remote→VM", b.aggToVM, func(t *trafficFigures) flowStats { return t.aggToVM }, "≥ 50 % of relay",
			func(bf, rf float64) bool { return rf > 0 && bf >= rf/2 })
		cmpRate(agg+"VM→remote", b.aggToRem, func(t *trafficFigures) flowStats { return t.aggToRem }, "≥ 50 % of relay",
			func(bf, rf float64) bool { return rf > 0 && bf >= rf/2 })
		if sp := r.splice; sp != nil {
			row("  splice relay (io.Copy on the TCPConns): one session each way", mibs(sp.oneToVM)+" / "+mibs(sp.oneToRem), "-", "-",
				ratio(b.oneToVM.rate(), sp.oneToVM.rate())+" / "+ratio(b.oneToRem.rate(), sp.oneToRem.rate()), "")
			row("  splice relay: aggregate each way", mibs(sp.aggToVM)+" / "+mibs(sp.aggToRem), "-", "-",
				ratio(b.aggToVM.rate(), sp.aggToVM.rate())+" / "+ratio(b.aggToRem.rate(), sp.aggToRem.rate()), "")
		}
		if len(b.rtt) > 0 {
			base50, base99 := r.directRTT.pct(.5), r.directRTT.pct(.99)
			add50, add99 := b.rtt.pct(.5)-base50, b.rtt.pct(.99)-base99
			relay, rat := "-", "-"
			if rl != nil && len(rl.rtt) > 0 {
				r50, r99 := rl.rtt.pct(.5)-base50, rl.rtt.pct(.99)-base99
				relay = ms(r50) + " / " + ms(r99)
				rat = ratio(float64(add99), float64(r99))
			}
			row(fmt.Sprintf("added round trip, %d sessions × %d/s, p50 / p99", r.latN, r.latRate),
				ms(add50)+" / "+ms(add99), "p99 < 1 ms", relay, rat, verdict(len(r.directRTT) > 0 && add99 < time.Millisecond))
			row("  raw round trip bridge / direct, p50 / p99", fmt.Sprintf("%s / %s ; %s / %s", ms(b.rtt.pct(.5)), ms(b.rtt.pct(.99)), ms(base50), ms(base99)), "-", "-", "-", "")
		}
	}
	for _, st := range r.storms {
		rate := float64(st.migrations) / st.elapsed.Seconds()
		how := fmt.Sprintf("paced at %.0f/s", st.paced)
		if st.paced == 0 {
			how = "back to back"
		}
		row(fmt.Sprintf("vMotions/s with data flowing (%d VMs, %s)", st.vms, how), fmt.Sprintf("%.0f/s (%d in %s, CPU bridge %.0f %%, load tool %.0f %%)", rate, st.migrations, st.elapsed.Round(time.Millisecond), 100*st.cpu, 100*st.selfCPU), "≥ 500/s", "-", "-", verdict(rate >= 500))
		// The target is p99 < 10 ms at 500/s or more: the paced storm
		// checks it. Back to back is the peak rate (about 10 × the
		// target, both cores saturated): its tail is reported, not judged.
		target, v := "p99 < 10 ms", verdict(len(st.switches) > 0 && st.switches.pct(.99) < 10*time.Millisecond)
		if st.paced == 0 {
			target, v = fmt.Sprintf("- (peak: %.0f × 500/s)", rate/500), ""
		}
		row(fmt.Sprintf("  switch-over p50 / p99 (COMPLETE → VM caught up; %d with data held)", len(st.switches)), ms(st.switches.pct(.5))+" / "+ms(st.switches.pct(.99)), target, "-", "-", v)
		row("  whole hand-over p50 / p99 (BEGIN → COMPLETE sent)", ms(st.handovers.pct(.5))+" / "+ms(st.handovers.pct(.99)), "-", "-", "-", "")
	}
	if r.sent > 0 {
		row("bytes lost / duplicated or corrupted", fmt.Sprintf("%d / %d of %d", r.lost, r.junk, r.sent), "0", "-", "-", verdict(!r.lostAny))
	}
	r.printConsoles(row)
	tw.Flush()
	for _, n := range r.notes {
		fmt.Fprintln(w, "note:", n)
	}
}
