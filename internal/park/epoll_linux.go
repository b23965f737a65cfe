//go:build linux

package park

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// epollBackend keeps parked connections in one epoll set. The set's own
// descriptor is waited on through the Go runtime's poller, so no thread
// blocks in epoll_wait and Close unblocks the wait by closing the set.
type epollBackend struct {
	p  *Parker
	f  *os.File        // the epoll set
	rc syscall.RawConn // f's: Control keeps the set open while it is used
}

// parkEvents is what a parked connection waits for: level-triggered (no
// EPOLLET), so that arming a descriptor with data already pending reports
// it at once, and one-shot, so that one wake-up disarms it until it parks
// again. EPOLLHUP and EPOLLERR are always reported.
const parkEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

func newEpoll(p *Parker) (backend, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("park: epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("park: epoll set: %w", err)
	}
	f := os.NewFile(uintptr(fd), "park-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("park: epoll set: %w", err)
	}
	return &epollBackend{p: p, f: f, rc: rc}, nil
}

func (e *epollBackend) start() { e.p.wg.Go(e.loop) }

// arm registers c's descriptor with slot and generation as the event's
// data (never the descriptor: descriptors are reused). MOD re-arms a
// registration left disarmed by an earlier wake-up; ADD makes a new one.
// Both descriptors are held open while they are used.
func (e *epollBackend) arm(c *Conn, idx, gen uint32) error {
	ev := unix.EpollEvent{Events: parkEvents, Fd: int32(idx), Pad: int32(gen)}
	raw := c.raw()
	if raw == nil {
		return ErrNotParkable
	}
	var err error
	eerr := e.rc.Control(func(epfd uintptr) {
		cerr := raw.Control(func(fd uintptr) {
			err = unix.EpollCtl(int(epfd), unix.EPOLL_CTL_MOD, int(fd), &ev)
			if errors.Is(err, unix.ENOENT) {
				err = unix.EpollCtl(int(epfd), unix.EPOLL_CTL_ADD, int(fd), &ev)
			}
			if err != nil {
				err = fmt.Errorf("epoll_ctl: %w", err)
			}
		})
		if cerr != nil {
			err = cerr
		}
	})
	if eerr != nil {
		return ErrClosed
	}
	return err
}

// disarm does nothing: a registration left armed fires at most once more,
// and that event's generation is stale.
func (e *epollBackend) disarm(*Conn) {}

func (e *epollBackend) close() { e.f.Close() }

// loop dispatches events until the set is closed. It only claims
// connections and starts their wake functions: it never reads or runs an
// owner's code, so a woken owner that blocks holds up nobody else.
func (e *epollBackend) loop() {
	events := make([]unix.EpollEvent, 128)
	for {
		var n int
		var werr error
		err := e.rc.Read(func(fd uintptr) bool {
			for {
				n, werr = unix.EpollWait(int(fd), events, 0)
				if werr != unix.EINTR {
					return n > 0 || werr != nil
				}
			}
		})
		if err != nil {
			return // the set was closed
		}
		if werr != nil {
			e.p.log.Error("park: epoll_wait failed; parked connections wake only when closed", "err", werr)
			return
		}
		for _, ev := range events[:n] {
			if c := e.p.claimEvent(uint32(ev.Fd), uint32(ev.Pad)); c != nil {
				e.p.acquire(c)
				e.p.spawn(c)
			}
		}
	}
}
