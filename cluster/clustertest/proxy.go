package clustertest

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy is a TCP relay on 127.0.0.1 that a test can cut like a network
// partition: while cut, it accepts connections and keeps every socket
// open but moves no bytes (they wait, as TCP retransmits would); Restore
// lets them flow again. Kill closes every connection (a reset).
type Proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	cond  sync.Cond
	cut   bool
	conns map[net.Conn]struct{}
	done  bool
	wg    sync.WaitGroup
}

// NewProxy starts a proxy to target; it stops when the test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.cond.L = &p.mu
	p.wg.Go(p.accept)
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL is the proxy's address as http://host:port (an etcd endpoint).
func (p *Proxy) URL() string { return "http://" + p.Addr() }

// Cut stops every byte, keeping the sockets open.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.cut = true
	p.mu.Unlock()
}

// Restore lets bytes flow again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.cut = false
	p.cond.Broadcast()
	p.mu.Unlock()
}

// Kill closes every relayed connection (new ones are still accepted).
func (p *Proxy) Kill() {
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
}

// Close stops the proxy and closes everything.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.done = true
	p.cut = false
	p.cond.Broadcast()
	p.mu.Unlock()
	p.ln.Close()
	p.Kill()
	p.wg.Wait()
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

// wait blocks while the proxy is cut; false once it is closed.
func (p *Proxy) wait() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.cut && !p.done {
		p.cond.Wait()
	}
	return !p.done
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			return
		}
		p.wg.Go(func() { p.relay(c) })
	}
}

func (p *Proxy) relay(c net.Conn) {
	defer c.Close()
	if !p.wait() {
		return
	}
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	if !p.track(u) {
		return
	}
	defer u.Close()
	var wg sync.WaitGroup
	wg.Go(func() { p.pipe(u, c); u.Close(); c.Close() })
	p.pipe(c, u)
	c.Close()
	u.Close()
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, u)
	p.mu.Unlock()
}

func (p *Proxy) pipe(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.wait() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
