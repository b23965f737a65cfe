package bridge

import "sync"

// maxDialers bounds the goroutines that open devices at once. A device
// connect blocks (up to dial_timeout, and for rfc2217 a handshake), so a
// goroutine per attempt made a burst of 2,000 VMs start 2,000 goroutines,
// whose 480 B g structs the runtime keeps for good (notes idle-memory.md
// §2.1: one dead g per port). 64 keep a refused loopback connect (25 µs)
// off the critical path and still ride out a few unreachable hosts that
// hold a dialer for the whole dial_timeout.
const maxDialers = 64

// dialPool runs attempts FIFO on at most max goroutines, started when
// work arrives and ending when the queue is empty: an idle bridge holds
// none. Its goroutines are counted in the Bridge's WaitGroup; submit is
// only called by work that is itself counted there.
type dialPool struct {
	max int
	wg  *sync.WaitGroup

	mu      sync.Mutex // guards the fields below
	queue   []func()
	head    int
	running int
}

func (d *dialPool) submit(f func()) {
	d.mu.Lock()
	d.queue = append(d.queue, f)
	start := d.running < d.max
	if start {
		d.running++
	}
	d.mu.Unlock()
	if start {
		d.wg.Go(d.work)
	}
}

func (d *dialPool) work() {
	for {
		d.mu.Lock()
		if d.head == len(d.queue) {
			d.queue, d.head = d.queue[:0], 0
			if cap(d.queue) > 1024 {
				d.queue = nil // a storm's queue is not kept
			}
			d.running--
			d.mu.Unlock()
			return
		}
		f := d.queue[d.head]
		d.queue[d.head] = nil
		d.head++
		d.mu.Unlock()
		f()
	}
}
