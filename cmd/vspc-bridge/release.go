package main

import (
	"context"
	"log/slog"
	"runtime/debug"
	"time"
)

// After a reconnect storm (a restart: every VM comes back at once) the
// bridge has touched memory for thousands of handshakes, goroutine
// stacks and device connects. Once those connections have parked
// ([vspc] park_after), all that is garbage, but the Go runtime keeps up
// to about twice the live heap resident: an idle bridge of 18,000 ports
// sat at 6.6 KiB of RSS per port for a live cost of about 4. So when the
// number of parked connections has reached a new high and then holds
// still, the bridge hands the storm's memory back at once
// (debug.FreeOSMemory: one collection, then every free page returned).
//
// Only a new high: connections that wake up (a wake storm: every
// console printing at once) and park again are the bridge's ordinary
// work, and a release there cost the traffic of that moment a forced
// collection, the return of every free page under the heap lock, and
// the page faults of touching them again: in vspc-load's latency A/B
// (latab) the slices after a release had a p99 several times the
// baseline's. The memory of such a storm stays with the runtime, which
// reuses it for the next one and scavenges what is above its heap goal
// in the background.

// releaseCheck is how often the parked count is looked at.
const releaseCheck = 10 * time.Second

// releaser decides when a storm has settled; it holds no clock, so the
// rule is tested sample by sample.
type releaser struct {
	high int // the connections parked at the last release (0 before the first)
	prev int // the previous sample
}

// sample takes the parked count at one check and reports whether to
// release memory now: the count is at least 1,000 and a quarter above
// the count at the last release (so connections that woke and parked
// again do not count), and moved by less than 1 % since the previous
// check.
func (r *releaser) sample(n int) bool {
	defer func() { r.prev = n }()
	if grown := n - r.high; grown < 1000 || grown < r.high/4 {
		return false
	}
	if d := n - r.prev; d*100 > n || -d*100 > n {
		return false // still moving
	}
	r.high = n
	return true
}

// releaseAfterStorms runs the releaser on parked until ctx is done. Each
// release is logged at debug level with what it took (it stops the
// world briefly, so a latency figure can be matched against it).
func releaseAfterStorms(ctx context.Context, parked func() int, log *slog.Logger) {
	t := time.NewTicker(releaseCheck)
	defer t.Stop()
	var r releaser
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n := parked(); r.sample(n) {
				t0 := time.Now()
				debug.FreeOSMemory()
				log.Debug("memory of a storm returned to the OS", "parked", n, "took", time.Since(t0))
			}
		}
	}
}
