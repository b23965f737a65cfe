package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// The latab phase compares the round trip of two builds when the machine's
// other load changes from second to second (a shared machine: one build's
// 10 s test can fall into a load spike the other's missed). Both bridges
// run at once, each with -latab-ports ports joined to remotes, parked and
// then woken by a wake storm, as in the remote phase. Then the latency
// test runs in short slices, on one build at a time, alternating ABBA:
// each pair of neighbouring slices saw nearly the same machine, and the
// ratio of their p50s is the figure (its median over all pairs), beside
// each build's pooled p50 and p99.

// latabSide is one build in the latab phase.
type latabSide struct {
	name   string
	bin    string
	br     *child
	ps     []*pair
	slices []durations // its latency slices, in order
	all    durations
	cpu    time.Duration // the bridge's CPU time in the current slice
}

// latabResult is the latab phase's outcome.
type latabResult struct {
	base, cur          *latabSide
	slice              time.Duration
	ratios50, ratios99 []float64 // this build / baseline, per neighbouring pair of slices
	ratiosCPU          []float64 // the same for the bridge's CPU time in the slice (the same pings: its work per round trip)
	err                error
	wakeBase, wakeCur  wakeStats
}

func (l *loader) phaseLatAB(ctx context.Context, baselineBin string) (*latabResult, error) {
	o := l.o
	res := &latabResult{slice: o.latabSlice}
	res.base = &latabSide{name: "baseline", bin: baselineBin}
	res.cur = &latabSide{name: "this build", bin: l.bridgeBin}
	sides := []*latabSide{res.base, res.cur}
	n := o.latabPorts
	if n < o.lat {
		return nil, fmt.Errorf("vspc-load: -latab-ports %d is fewer than -lat %d", n, o.lat)
	}
	for k, sd := range sides {
		br, err := startBridge(ctx, sd.bin, l.dir, fmt.Sprintf("latab-%d", k), "200ms", "30s")
		if err != nil {
			return nil, err
		}
		sd.br = br
		defer br.stop()
	}
	defer func() {
		for _, sd := range sides {
			sd.br.stop()
			closeAll(sd.ps)
		}
	}()
	for k, sd := range sides {
		ps, times, err := establish(ctx, n, o.conc, func(i int) (*pair, time.Duration, error) {
			// Each build's remotes on a port of their own.
			return dialBridgePair(ctx, sd.br.addr, l.run+uint32(k), l.net8+1, remotePort+1+k, i)
		})
		sd.ps = ps
		ok := okPairs(ps)
		logf("latab: %s: %d of %d ports joined to a remote (handshake p50 %v p99 %v) err=%v", sd.name, len(ok), n, times.pct(.5), times.pct(.99), err)
		if len(ok) < o.lat {
			return nil, fmt.Errorf("vspc-load: latab: %s: %d ports joined, need %d: %v", sd.name, len(ok), o.lat, err)
		}
	}
	l.parkWait("latab")
	for k, sd := range sides {
		ok := okPairs(sd.ps)
		ws := wakeStorm(ctx, ok, sd.br.pid(), o.wakeTimeout)
		logf("latab: %s: wake storm: %d of %d lines in %v; err=%v", sd.name, ws.delivered, ws.ports, ws.wall, ws.err)
		if k == 0 {
			res.wakeBase = ws
		} else {
			res.wakeCur = ws
		}
		if ws.err != nil {
			l.r.lostAny = true
			return res, fmt.Errorf("vspc-load: latab: %s: wake storm: %w", sd.name, ws.err)
		}
		if err := detachPairs(ok[:o.lat]); err != nil {
			return res, err
		}
		echo(ok[:o.lat])
	}
	if o.latabSettle > 0 {
		// Past the wake storms' aftermath (the woken connections park
		// again 5 to 10 s later), to tell it from the steady state.
		logf("latab: waiting %v after the wake storms", o.latabSettle)
		time.Sleep(o.latabSettle)
	}
	restore := quietGC()
	defer restore()
	// ABBA: slice pairs (base, cur), (cur, base), (base, cur), ...
	for j := range max(o.latabSlices/2, 1) {
		order := []*latabSide{res.base, res.cur}
		if j%2 == 1 {
			order[0], order[1] = order[1], order[0]
		}
		var sched []string
		for _, sd := range order {
			other := res.base
			if sd == res.base {
				other = res.cur
			}
			c0, w0, oc0 := cpuTime(sd.br.pid()), runDelay(sd.br.pid()), cpuTime(other.br.pid())
			rtt, _, err := ping(okPairs(sd.ps)[:o.lat], o.latRate, o.latabSlice)
			c1, w1, oc1 := cpuTime(sd.br.pid()), runDelay(sd.br.pid()), cpuTime(other.br.pid())
			sd.cpu = c1 - c0
			sched = append(sched, fmt.Sprintf("%s: CPU %v, run-queue wait %v, threads %d, the other's CPU %v", sd.name,
				(c1-c0).Round(time.Millisecond), (w1-w0).Round(time.Millisecond), threads(sd.br.pid()), (oc1-oc0).Round(time.Millisecond)))
			sd.slices = append(sd.slices, rtt)
			sd.all = append(sd.all, rtt...)
			if err != nil {
				res.err = keepFirst(res.err, fmt.Errorf("%s: %w", sd.name, err))
			}
		}
		b, c := res.base.slices[j], res.cur.slices[j]
		r50 := float64(c.pct(.5)) / float64(max(b.pct(.5), 1))
		r99 := float64(c.pct(.99)) / float64(max(b.pct(.99), 1))
		res.ratios50, res.ratios99 = append(res.ratios50, r50), append(res.ratios99, r99)
		if res.base.cpu > 0 {
			res.ratiosCPU = append(res.ratiosCPU, float64(res.cur.cpu)/float64(res.base.cpu))
		}
		logf("latab: slice pair %d: baseline p50 %v p99 %v, this build p50 %v p99 %v (ratio %.2f / %.2f); %s", j+1,
			b.pct(.5), b.pct(.99), c.pct(.5), c.pct(.99), r50, r99, strings.Join(sched, "; "))
	}
	if res.err != nil {
		l.r.lostAny = true
		l.r.notes = append(l.r.notes, fmt.Sprintf("latab: %v", res.err))
	}
	return res, nil
}

// print writes the latab phase's table.
func (res *latabResult) print(w io.Writer, lat, rate int) {
	if res == nil || len(res.ratios50) == 0 {
		return
	}
	fmt.Fprintf(w, "\nround trip, both builds running at once, %d slices of %v each (%d sessions × %d/s), alternating ABBA\n",
		2*len(res.ratios50), res.slice, lat, rate)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tbaseline\tthis build\tratio (this / baseline)")
	b, c := res.base.all, res.cur.all
	fmt.Fprintf(tw, "round trip p50, all slices\t%s\t%s\t%s\n", ms(b.pct(.5)), ms(c.pct(.5)), ratio(float64(c.pct(.5)), float64(b.pct(.5))))
	fmt.Fprintf(tw, "round trip p99, all slices\t%s\t%s\t%s\n", ms(b.pct(.99)), ms(c.pct(.99)), ratio(float64(c.pct(.99)), float64(b.pct(.99))))
	fmt.Fprintf(tw, "p50 ratio of neighbouring slices: median (min … max)\t-\t-\t%.2f (%.2f … %.2f)\n", median(res.ratios50), slices.Min(res.ratios50), slices.Max(res.ratios50))
	fmt.Fprintf(tw, "p99 ratio of neighbouring slices: median (min … max)\t-\t-\t%.2f (%.2f … %.2f)\n", median(res.ratios99), slices.Min(res.ratios99), slices.Max(res.ratios99))
	if len(res.ratiosCPU) > 0 {
		fmt.Fprintf(tw, "bridge CPU time per slice, ratio of neighbouring slices: median (min … max)\t-\t-\t%.2f (%.2f … %.2f)\n", median(res.ratiosCPU), slices.Min(res.ratiosCPU), slices.Max(res.ratiosCPU))
	}
	fmt.Fprintf(tw, "wake storm before the slices\t%v\t%v\t-\n", res.wakeBase.wall.Round(time.Millisecond), res.wakeCur.wall.Round(time.Millisecond))
	tw.Flush()
	for _, sd := range []*latabSide{res.base, res.cur} {
		var ps []string
		for _, sl := range sd.slices {
			ps = append(ps, fmt.Sprintf("%.2f", float64(sl.pct(.5))/float64(time.Millisecond)))
		}
		fmt.Fprintf(w, "p50 of each slice, %s (ms): %s\n", sd.name, strings.Join(ps, " "))
	}
}
