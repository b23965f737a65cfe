// Package gcfloor keeps the garbage collector's heap goal from falling
// below a floor while the heap is small.
//
// A bridge that has just started has about 2 MiB of heap, so Go's default
// pacing (GOGC=100: collect when the heap has doubled) collects at 4, 8
// and 16 MiB. When every VM reconnects at once after a restart, those
// collections fall inside the burst: each scans every new goroutine's
// stack and makes allocating goroutines assist, which stalls handshakes.
// A profile of 1,000 VMs connecting at once showed 3 collections and
// about 15 % of the bridge's CPU in them.
//
// Start raises GOGC while the live heap is small, so that the goal is
// about the floor, and gives the configured GOGC back once twice the live
// heap (GOGC=100) is past the floor: from then on it changes nothing. It
// re-reads the live heap after every collection (a cleanup on a sentinel
// object). That cleanup can run late: it waits for the sentinel's span
// to be swept, which a busy process may do only when the next collection
// starts. Meanwhile a raised GOGC would let the heap grow to many times
// its live size, so while the floor is up a memory limit of
// limitFactor × floor caps the goal too (seen without it: a heap that
// grew to 172 MiB on 36 MiB live before the cleanup ran).
//
// What the floor costs is memory that is really used: up to the floor of
// heap before the first collection. A never-written "ballast" allocation
// was tried first and dropped: when its pages overlap memory the heap
// used before, the runtime zeroes them and the ballast becomes resident.
package gcfloor

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// heapMinimum is the runtime's smallest heap goal at GOGC=100 (4 MiB,
// runtime.defaultHeapMinimum); the runtime scales it by GOGC/100.
const heapMinimum = 4 << 20

// limitFactor × floor is the memory limit while the floor is up: room for
// the floor's heap, goroutine stacks and the runtime's own memory.
const limitFactor = 3

// Floor is a running heap-goal floor; Stop ends it.
type Floor struct {
	floor     uint64
	base      int   // GOGC at Start; what is restored
	baseLimit int64 // the memory limit at Start; what is restored

	mu      sync.Mutex
	stopped bool // guarded by mu
	percent int  // the GOGC in effect (base until adjust changes it); guarded by mu
}

// sentinel is allocated for each collection to notice the next one. It
// is larger than 16 bytes so that the tiny allocator never packs it with
// other objects (which could keep it reachable).
type sentinel struct{ _ [32]byte }

// Start keeps the heap goal at no less than floor bytes until Stop or
// until the heap outgrows it. It does nothing when floor is 0, GOGC=off,
// or a memory limit (GOMEMLIMIT) below 2 × limitFactor × floor is set:
// the operator's pacing wins.
func Start(floor uint64) *Floor {
	base := currentPercent()
	f := &Floor{floor: floor, base: base, percent: base, baseLimit: debug.SetMemoryLimit(-1)}
	if f.base <= 0 || floor == 0 || floor > math.MaxInt64/(2*limitFactor) ||
		(f.baseLimit != math.MaxInt64 && f.baseLimit < int64(2*limitFactor*floor)) {
		f.stopped = true
		return f
	}
	f.mu.Lock()
	debug.SetMemoryLimit(int64(limitFactor * floor))
	f.adjust()
	f.mu.Unlock()
	f.arm()
	return f
}

// arm registers a cleanup that runs after the next collection.
func (f *Floor) arm() {
	runtime.AddCleanup(new(sentinel), func(f *Floor) { f.collected() }, f)
}

func (f *Floor) collected() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return
	}
	if f.adjust() {
		f.arm()
		return
	}
	// The heap has outgrown the floor: the operator's pacing is back for
	// good. (A heap that shrinks again later keeps it: a floor is for a
	// young process.)
	f.endLocked()
}

// adjust sets GOGC for the live heap; it reports whether the floor still
// matters. Call with f.mu held.
func (f *Floor) adjust() bool {
	live := liveHeap()
	if live == 0 {
		live = 1 << 20 // no collection yet
	}
	// The goal is max(live × (1 + p/100), heapMinimum × p/100): with p at
	// most floor × 100 / heapMinimum the second term is at most the
	// floor, and the first is the floor when p = floor × 100 / live - 100.
	p := f.base
	if goal := live * uint64(100+f.base) / 100; goal < f.floor {
		p = max(f.base, int(min(f.floor*100/live-100, f.floor*100/heapMinimum)))
	}
	if p != f.percent {
		debug.SetGCPercent(p)
		f.percent = p
	}
	return p != f.base
}

// endLocked gives back the operator's GOGC and memory limit.
func (f *Floor) endLocked() {
	f.stopped = true
	debug.SetGCPercent(f.base)
	debug.SetMemoryLimit(f.baseLimit)
	f.percent = f.base
}

// Stop ends the floor now (it is idempotent).
func (f *Floor) Stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.stopped {
		f.endLocked()
	}
}

// Active reports whether the floor is still up and the GOGC in effect
// (the operator's once it has ended).
func (f *Floor) Active() (active bool, percent int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.stopped, f.percent
}

func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// currentPercent reads GOGC without changing it (-1 when off).
func currentPercent() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 100
	}
	v := s[0].Value.Uint64()
	if v > 1<<30 {
		return -1
	}
	return int(v)
}
