package bridge

import (
	"sync"
	"time"
)

// A reconnect storm (the bridge restarted, every VM comes back at once)
// used to spend 40 % of the bridge's CPU on device connects while ESXi
// hosts waited for WILL-PROXY (perf, 1,000 VMs at once; a refused
// loopback connect alone costs about 25 µs of kernel time). ESXi gives up
// on a handshake after a timeout; a device connect has no one waiting. So
// a link opened while other VMs are attaching holds its first connect
// until attaches pause for gateQuiet, or for gateMax at most. A VM that
// attaches on its own is not held.
const (
	gateQuiet = 5 * time.Millisecond
	gateMax   = time.Second
)

// dialGate holds the first device connect of links opened in a burst.
type dialGate struct {
	quiet, max time.Duration

	mu     sync.Mutex // guards the fields below
	last   time.Time  // the latest Open
	held   []func()
	since  time.Time // when the oldest held connect started waiting
	timer  *time.Timer
	closed bool
}

// opened records an Open at now and reports whether its first connect
// should be held: another Open came less than quiet before it.
func (g *dialGate) opened(now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	prev := g.last
	g.last = now
	return !g.closed && !prev.IsZero() && now.Sub(prev) < g.quiet
}

// hold runs f once Opens have paused for quiet, or max after the oldest
// held f, or when the gate closes; at once if it is closed.
func (g *dialGate) hold(now time.Time, f func()) {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		f()
		return
	}
	if len(g.held) == 0 {
		g.since = now
	}
	g.held = append(g.held, f)
	if g.timer == nil {
		g.timer = time.AfterFunc(g.quiet, g.check)
	}
	g.mu.Unlock()
}

func (g *dialGate) check() {
	g.mu.Lock()
	now := time.Now()
	if calm, waited := now.Sub(g.last), now.Sub(g.since); !g.closed && calm < g.quiet && waited < g.max {
		g.timer.Reset(min(g.quiet-calm, g.max-waited))
		g.mu.Unlock()
		return
	}
	held := g.held
	g.held, g.timer = nil, nil
	g.mu.Unlock()
	for _, f := range held {
		f()
	}
}

// close releases everything held; later holds run at once.
func (g *dialGate) close() {
	g.mu.Lock()
	g.closed = true
	held, t := g.held, g.timer
	g.held, g.timer = nil, nil
	g.mu.Unlock()
	if t != nil {
		t.Stop()
	}
	for _, f := range held {
		f()
	}
}
