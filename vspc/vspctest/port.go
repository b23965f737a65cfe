package vspctest

import (
	"context"
	"sync"
	"time"
)

// AfterDrop is what a simulated host does when its proxy connection drops
// (notes ha-etcd.md §1: no public source says what ESXi does; the evidence
// leans towards "nothing until the device is reconnected through vCenter,
// the VM powers on, or it is vMotioned").
type AfterDrop uint8

const (
	// DropStay: the port stays disconnected until Reconnect (a vCenter
	// toggle of connectable.connected, a power-on). The likely ESXi.
	DropStay AfterDrop = iota
	// DropRetry: the host dials again with exponential backoff.
	DropRetry
)

func (a AfterDrop) String() string {
	switch a {
	case DropStay:
		return "stay"
	case DropRetry:
		return "retry"
	}
	return "AfterDrop(?)"
}

// Port is a VM serial port on a simulated host that keeps itself
// connected to the proxy as its AfterDrop mode says. Addr is asked for the
// proxy address at each dial (a test moves it between members, or puts a
// balancer in front).
type Port struct {
	VM         VM
	Addr       func() string
	Mode       AfterDrop
	MinBackoff time.Duration // DropRetry; default 100ms
	MaxBackoff time.Duration // DropRetry; default 5s
	// OnConnect, if set, is called with each new connection (from Run's
	// goroutine) before Run waits for it to drop.
	OnConnect func(*Conn)

	kick chan struct{}

	mu      sync.Mutex
	conn    *Conn
	dials   int
	drops   int
	lastErr error
	changed chan struct{} // closed and replaced on every connect and drop
}

// Reconnect makes the port dial now, as a vCenter toggle of its
// connectable.connected does (or a power-on). A connected port first
// drops its connection.
func (p *Port) Reconnect() {
	p.init()
	p.mu.Lock()
	c := p.conn
	p.mu.Unlock()
	if c != nil {
		c.Close()
	}
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func (p *Port) init() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.kick == nil {
		p.kick = make(chan struct{}, 1)
		p.changed = make(chan struct{})
	}
}

// Run keeps the port connected per its mode until ctx ends, then closes
// the connection. It dials once at start.
func (p *Port) Run(ctx context.Context) {
	p.init()
	minB, maxB := p.MinBackoff, p.MaxBackoff
	if minB <= 0 {
		minB = 100 * time.Millisecond
	}
	if maxB < minB {
		maxB = max(5*time.Second, minB)
	}
	backoff := minB
	for ctx.Err() == nil {
		c, err := Dial(ctx, p.Addr(), p.VM)
		p.mu.Lock()
		p.dials++
		p.lastErr = err
		if err == nil {
			p.conn = c
			backoff = minB
			p.signalLocked()
		}
		p.mu.Unlock()
		if err == nil {
			if p.OnConnect != nil {
				p.OnConnect(c)
			}
			select {
			case <-c.done:
			case <-ctx.Done():
			}
			c.Close()
			p.mu.Lock()
			p.conn = nil
			p.drops++
			p.signalLocked()
			p.mu.Unlock()
			if ctx.Err() != nil {
				return
			}
		}
		switch {
		case p.Mode == DropRetry:
			select {
			case <-ctx.Done():
				return
			case <-p.kick:
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, maxB)
		default: // DropStay: wait for Reconnect
			select {
			case <-ctx.Done():
				return
			case <-p.kick:
			}
		}
	}
}

func (p *Port) signalLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// Conn is the current connection, or nil while disconnected.
func (p *Port) Conn() *Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conn
}

// Stats reports how many times the port dialed and dropped, and the last
// dial error.
func (p *Port) Stats() (dials, drops int, lastErr error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dials, p.drops, p.lastErr
}

// Changed returns a channel closed at the next connect or drop.
func (p *Port) Changed() <-chan struct{} {
	p.init()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}
