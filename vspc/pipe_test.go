package vspc_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/vspc-bridge/vspc-bridge/vspc"
	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
)

// pipeEnv is a server whose VM connections are net.Pipes (ServeConn) and
// whose backends live in memory (memBackend). Nothing in it touches the
// network, so it runs whole inside a testing/synctest bubble: timeouts
// fire on the bubble's clock, exactly when they are due, and "nothing
// more happened" is synctest.Wait, not a sleep. Create it inside
// synctest.Test.
type pipeEnv struct {
	t   *testing.T
	srv *vspc.Server

	mu       sync.Mutex
	backends []*memBackend // in Open order
}

func newPipeEnv(t *testing.T, mod func(*vspc.Config)) *pipeEnv {
	t.Helper()
	e := &pipeEnv{t: t}
	cfg := vspc.Config{Bridger: e, Logger: testLogger(t)}
	if mod != nil {
		mod(&cfg)
	}
	e.srv = vspc.NewServer(cfg)
	t.Cleanup(func() { e.srv.Close() })
	return e
}

// Open implements vspc.Bridger.
func (e *pipeEnv) Open(ctx context.Context, req vspc.Request, vm vspc.Sink) (vspc.Backend, error) {
	b := &memBackend{req: req, sink: vm}
	b.cond.L = &b.mu
	e.mu.Lock()
	e.backends = append(e.backends, b)
	e.mu.Unlock()
	return b, nil
}

// conn connects a host to the server and returns the host's end.
func (e *pipeEnv) conn() net.Conn {
	host, proxy := net.Pipe()
	go e.srv.ServeConn(proxy)
	e.t.Cleanup(func() { host.Close() })
	return host
}

// dial connects a simulated ESXi host for vm (DO-PROXY) and waits for
// WILL-PROXY.
func (e *pipeEnv) dial(vm vspctest.VM) *vspctest.Conn {
	e.t.Helper()
	c, err := vspctest.Handshake(e.t.Context(), e.conn(), vm)
	if err != nil {
		e.t.Fatalf("DO-PROXY: %v", err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// dialPeer connects a vMotion destination host and waits for PEER-OK.
func (e *pipeEnv) dialPeer(vm vspctest.VM, seq, secret []byte) (*vspctest.Conn, error) {
	c, err := vspctest.PeerHandshake(e.t.Context(), e.conn(), vm, seq, secret)
	if err == nil {
		e.t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// backend returns the i-th backend opened.
func (e *pipeEnv) backend(i int) *memBackend {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if i >= len(e.backends) {
		e.t.Fatalf("backend %d: only %d opened", i, len(e.backends))
	}
	return e.backends[i]
}

// port is the server's only port.
func (e *pipeEnv) port() vspc.PortInfo {
	e.t.Helper()
	ps := e.srv.Ports()
	if len(ps) != 1 {
		e.t.Fatalf("%d ports, want 1: %+v", len(ps), ps)
	}
	return ps[0]
}

// memBackend is a Backend in memory, the remote system of one port.
type memBackend struct {
	req  vspc.Request
	sink vspc.Sink

	mu        sync.Mutex
	cond      sync.Cond // signalled on data from the VM and on Close
	unread    []byte    // from the VM, not yet read through remote()
	all       []byte    // everything from the VM
	closed    bool
	closeHook func() // run by Close, if set (before it marks the backend closed)
}

var errBackendClosed = errors.New("memBackend: closed")

// Write takes data the VM sent (Backend).
func (b *memBackend) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, errBackendClosed
	}
	b.unread = append(b.unread, p...)
	b.all = append(b.all, p...)
	b.cond.Broadcast()
	return len(p), nil
}

// Close implements Backend.
func (b *memBackend) Close() error {
	b.mu.Lock()
	hook := b.closeHook
	b.mu.Unlock()
	if hook != nil {
		hook()
	}
	b.mu.Lock()
	b.closed = true
	b.cond.Broadcast()
	b.mu.Unlock()
	return nil
}

func (b *memBackend) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// received is everything the VM sent so far.
func (b *memBackend) received() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.all...)
}

// remote is the remote system's side: Read returns what the VM sent (EOF
// once the backend is closed and read empty), Write sends to the VM.
func (b *memBackend) remote() io.ReadWriter { return memRemote{b} }

type memRemote struct{ b *memBackend }

func (r memRemote) Read(p []byte) (int, error) {
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(b.unread) == 0 && !b.closed {
		b.cond.Wait()
	}
	if len(b.unread) == 0 {
		return 0, io.EOF
	}
	n := copy(p, b.unread)
	b.unread = b.unread[n:]
	return n, nil
}

func (r memRemote) Write(p []byte) (int, error) {
	if err := r.b.sink.Send(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// readN reads exactly n bytes of serial data from r.
func readN(t *testing.T, r io.Reader, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatalf("read %d bytes: got % x: %v", n, b, err)
	}
	return b
}
