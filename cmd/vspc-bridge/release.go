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
// number of parked connections has grown a lot and then holds still, the
// bridge hands the storm's memory back at once (debug.FreeOSMemory: one
// collection, then every free page returned). It does so once per storm,
// never while connections keep parking or waking.

// releaseCheck is how often the parked count is looked at.
const releaseCheck = 10 * time.Second

// releaser decides when a storm has settled; it holds no clock, so the
// rule is tested sample by sample.
type releaser struct {
	base    int  // parked connections after the last release (or the lowest since)
	prev    int  // the previous sample
	pending bool // grown enough since base; waiting for the count to settle
}

// sample takes the parked count at one check and reports whether to
// release memory now: the count has grown by at least 1,000 and by a
// quarter since the last release, and moved by less than 1 % since the
// previous check.
func (r *releaser) sample(n int) bool {
	defer func() { r.prev = n }()
	if n < r.base {
		r.base = n // connections woke up or closed: measure growth from here
	}
	if grown := n - r.base; grown >= 1000 && grown >= r.base/4 {
		r.pending = true
	}
	if !r.pending {
		return false
	}
	if d := n - r.prev; d*100 > n || -d*100 > n {
		return false // still moving
	}
	r.pending = false
	r.base = n
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
