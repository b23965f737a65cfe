//go:build unix

package park

import (
	"time"

	"golang.org/x/sys/unix"
)

// pollBackend parks a connection on a goroutine of its own that waits for
// readability in syscall.RawConn.Read, without reading. It is the backend
// off Linux: the waiting goroutine's stack is a fresh 2 KiB one, where the
// owner's reader had grown to 4 or 8 KiB and could never shrink back while
// blocked in Read (notes idle-memory.md §2.1).
type pollBackend struct{ p *Parker }

func newPoll(p *Parker) (backend, error) { return &pollBackend{p: p}, nil }

func (b *pollBackend) start() {}

func (b *pollBackend) arm(c *Conn, idx, gen uint32) error {
	// The owner parked after its read deadline expired, and RawConn.Read
	// honours it: clear it, unless c was claimed meanwhile (then disarm's
	// deadline in the past must stay, to end the wait below at once).
	raw := c.raw()
	if raw == nil {
		return ErrNotParkable
	}
	b.p.mu.Lock()
	if c.parked && c.slot == idx && b.p.slots[idx].gen == gen {
		c.Conn.SetReadDeadline(time.Time{})
	}
	b.p.wg.Add(1)
	b.p.mu.Unlock()
	go func() {
		defer b.p.wg.Done()
		raw.Read(readable) // returns when readable, on a hang-up, or by disarm or Close
		if cl := b.p.claimEvent(idx, gen); cl != nil {
			b.p.acquire(cl)
			b.p.run(cl)
		}
	}()
	return nil
}

// disarm ends the wait of c's goroutine with a read deadline long
// passed: its claim then finds the slot taken and it exits.
func (b *pollBackend) disarm(c *Conn) { c.Conn.SetReadDeadline(time.Unix(1, 0)) }

func (b *pollBackend) close() {}

// readable reports whether fd would not block a read (data, end of file,
// an error). The runtime calls it after resetting its readiness flag, so
// it must really look: it polls with no timeout.
func readable(fd uintptr) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLPRI}}
	for {
		n, err := unix.Poll(fds, 0)
		if err != unix.EINTR {
			return n > 0 || err != nil
		}
	}
}
