package remote

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/vspc-bridge/vspc-bridge/internal/park"
)

// vmListener accepts on a console's per-VM port. Almost all the time
// nobody connects, so while it is idle its listener waits in the hub's
// parker, with no goroutine: a console costs no goroutine that only
// waits. When a connection arrives (or the listener is closed), a fresh
// goroutine accepts it and goes on.
type vmListener struct {
	h      *Hub
	c      *console
	lc     *lnConn
	pc     *park.Conn // lc, parkable; its Close wakes a parked acceptor
	idle   park.Idle
	handle func(ctx context.Context, nc net.Conn, loggedIn, done func())
}

func (h *Hub) newVMListener(c *console, ln net.Listener, tcp *net.TCPListener, handle func(ctx context.Context, nc net.Conn, loggedIn, done func())) *vmListener {
	v := &vmListener{h: h, c: c, lc: &lnConn{ln: ln, tcp: tcp}, idle: park.Idle{Period: min(firstPark, h.parkIdle)}, handle: handle}
	var p *park.Parker
	if tcp != nil {
		p = h.park
	}
	v.pc = p.Wrap(v.lc, v.wake)
	return v
}

// close closes the listener; a parked acceptor wakes and ends.
func (v *vmListener) close() error { return v.pc.Close() }

// run accepts until the listener is closed (then it returns) or has been
// idle for a park period (then it parks and returns; wake goes on). It
// runs counted in h.wg.
func (v *vmListener) run() {
	v.pc.SetReadDeadline(v.idle.Start(time.Now()))
	for {
		_, err := v.pc.Read(nil) // accepts: lnConn
		if err == nil {
			v.idle.Seen()
			if v.h.admit(v.c.ctx, v.lc.take(), v.handle) != nil {
				v.pc.Close()
				return
			}
			continue
		}
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			if v.idle.Expired() && v.park() {
				return
			}
			v.pc.SetReadDeadline(v.idle.Start(time.Now()))
		case errors.Is(err, net.ErrClosed) || v.c.ctx.Err() != nil:
			v.pc.Close()
			return
		default: // out of descriptors, say: try again soon
			if sleep(v.c.ctx, 50*time.Millisecond) != nil {
				v.pc.Close()
				return
			}
		}
	}
}

// park hands the idle listener to the parker, counting wake's run in h.wg
// before it can start.
func (v *vmListener) park() bool {
	v.h.wg.Add(1)
	v.h.parkedLn.Add(1)
	if v.pc.Park() == nil {
		return true
	}
	v.h.parkedLn.Add(-1)
	v.h.wg.Done()
	return false
}

// wake goes on accepting after the parker saw a connection (or a close).
func (v *vmListener) wake() {
	v.h.parkedLn.Add(-1)
	defer v.h.wg.Done()
	v.run()
}

// lnConn presents a listener as a connection to package park: its
// descriptor is the listener's, Read accepts one connection (kept for
// take), and the read deadline is the accept deadline.
type lnConn struct {
	ln  net.Listener     // Accept is called on it (tls-wrapped for telnets)
	tcp *net.TCPListener // its descriptor and deadline; nil: cannot park

	mu   sync.Mutex
	next net.Conn
}

func (l *lnConn) Read([]byte) (int, error) {
	nc, err := l.ln.Accept()
	if err != nil {
		return 0, err
	}
	l.mu.Lock()
	l.next = nc
	l.mu.Unlock()
	return 1, nil
}

// take returns the connection the last Read accepted.
func (l *lnConn) take() net.Conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	nc := l.next
	l.next = nil
	return nc
}

func (l *lnConn) SyscallConn() (syscall.RawConn, error) {
	if l.tcp == nil {
		return nil, errors.New("remote: listener without a descriptor")
	}
	return l.tcp.SyscallConn()
}

func (l *lnConn) SetReadDeadline(t time.Time) error {
	if l.tcp == nil {
		return nil
	}
	return l.tcp.SetDeadline(t)
}

func (l *lnConn) SetDeadline(t time.Time) error    { return l.SetReadDeadline(t) }
func (l *lnConn) SetWriteDeadline(time.Time) error { return nil }
func (l *lnConn) Write([]byte) (int, error)        { return 0, errors.New("remote: write to a listener") }
func (l *lnConn) Close() error                     { return l.ln.Close() }
func (l *lnConn) LocalAddr() net.Addr              { return l.ln.Addr() }
func (l *lnConn) RemoteAddr() net.Addr             { return l.ln.Addr() }
