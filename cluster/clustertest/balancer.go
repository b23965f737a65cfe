package clustertest

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Balancer is an L4 relay on 127.0.0.1 in front of several backends (the
// bridge members), steered by the test: round robin (an active/active L4
// balancer), everything to one backend (a VIP: Send moves it, as a
// keepalived failover does), backends taken out of rotation (a failed
// health check), and the connections of one backend cut (its host died).
type Balancer struct {
	ln       net.Listener
	backends []string

	mu     sync.Mutex
	next   int
	only   int // -1: round robin
	down   map[int]bool
	counts []int
	conns  map[int]map[net.Conn]bool // relayed connections by backend (both ends) → reset by Reset
	done   bool
	wg     sync.WaitGroup
}

// NewBalancer starts a balancer in round-robin mode; it stops when the
// test ends.
func NewBalancer(t testing.TB, backends ...string) *Balancer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &Balancer{ln: ln, backends: backends, only: -1, down: map[int]bool{}, counts: make([]int, len(backends)), conns: map[int]map[net.Conn]bool{}}
	b.wg.Go(b.accept)
	t.Cleanup(b.Close)
	return b
}

// Addr is the shared address (what ESXi is given).
func (b *Balancer) Addr() string { return b.ln.Addr().String() }

// Send sends every new connection to backend i (a VIP held by i).
func (b *Balancer) Send(i int) {
	b.mu.Lock()
	b.only = i
	b.mu.Unlock()
}

// RoundRobin spreads new connections over the backends in rotation.
func (b *Balancer) RoundRobin() {
	b.mu.Lock()
	b.only = -1
	b.mu.Unlock()
}

// SetDown takes backend i out of rotation (or back in).
func (b *Balancer) SetDown(i int, down bool) {
	b.mu.Lock()
	b.down[i] = down
	b.mu.Unlock()
}

// Cut closes every relayed connection of backend i.
func (b *Balancer) Cut(i int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for c := range b.conns[i] {
		c.Close()
	}
}

// Reset resets every relayed connection of backend i, both ways (RST, no
// FIN): a network fault, as when a keepalived VIP moves away from a
// member that is still alive (the new holder's kernel resets the host's
// connection; the old holder's side ends in a reset or a keepalive
// timeout).
func (b *Balancer) Reset(i int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	// Marked first: a relay whose other end closes now must not send
	// this one a FIN (closeWrite) before its reset.
	for c := range b.conns[i] {
		b.conns[i][c] = true
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
	}
	for c := range b.conns[i] {
		c.Close()
	}
}

// Counts returns how many connections each backend got.
func (b *Balancer) Counts() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]int(nil), b.counts...)
}

// Close stops the balancer and closes every relayed connection.
func (b *Balancer) Close() {
	b.mu.Lock()
	b.done = true
	for _, m := range b.conns {
		for c := range m {
			c.Close()
		}
	}
	b.mu.Unlock()
	b.ln.Close()
	b.wg.Wait()
}

// pick chooses the backend of a new connection; -1 when none is up.
func (b *Balancer) pick() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.only >= 0 {
		if b.down[b.only] {
			return -1
		}
		b.counts[b.only]++
		return b.only
	}
	for range b.backends {
		i := b.next % len(b.backends)
		b.next++
		if !b.down[i] {
			b.counts[i]++
			return i
		}
	}
	return -1
}

func (b *Balancer) track(i int, cs ...net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return false
	}
	if b.conns[i] == nil {
		b.conns[i] = map[net.Conn]bool{}
	}
	for _, c := range cs {
		b.conns[i][c] = false
	}
	return true
}

func (b *Balancer) untrack(i int, cs ...net.Conn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range cs {
		delete(b.conns[i], c)
	}
}

func (b *Balancer) accept() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.wg.Go(func() { b.relay(c) })
	}
}

func (b *Balancer) relay(c net.Conn) {
	defer c.Close()
	i := b.pick()
	if i < 0 {
		return // nothing up: the connection is refused (closed)
	}
	u, err := net.Dial("tcp", b.backends[i])
	if err != nil {
		return
	}
	defer u.Close()
	if !b.track(i, c, u) {
		return
	}
	defer b.untrack(i, c, u)
	var wg sync.WaitGroup
	wg.Go(func() {
		io.Copy(u, c)
		b.closeWrite(i, u)
	})
	io.Copy(c, u)
	b.closeWrite(i, c)
	wg.Wait()
}

// closeWrite passes the end of one direction on (a FIN), unless Reset
// resets the connection.
func (b *Balancer) closeWrite(i int, c net.Conn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.conns[i][c] {
		c.(*net.TCPConn).CloseWrite()
	}
}
