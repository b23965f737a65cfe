package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vspc-bridge/vspc-bridge/devices"
	"github.com/vspc-bridge/vspc-bridge/devices/target"
	"github.com/vspc-bridge/vspc-bridge/internal/lazylog"
	"github.com/vspc-bridge/vspc-bridge/internal/park"
	"github.com/vspc-bridge/vspc-bridge/rfc2217"
	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// ErrLinkClosed is returned by a link's Write after Close.
var ErrLinkClosed = errors.New("bridge: link closed")

// link is the vspc.Backend of one port: the device or remote it is joined
// to, kept open by a chain of connect attempts (see attempt).
type link struct {
	b *Bridge
	// What the port's request said that the link uses (the whole
	// vspc.Request is 104 bytes): with direction and state in bytes
	// beside the bools, a link stays within 448 bytes (a parked port
	// keeps it; issue 17).
	name, uuid, service string // VM name, VC UUID, service URI
	target              target.Target
	key                 string
	route               string   // the route's name; "" for a service-URI target
	observer            Observer // console alerts; nil when none
	trusted             bool
	direction           vspc.Direction
	initial             rfc2217.Settings // the route's settings; zero for a VM-named target
	vm                  vspc.Sink
	buffer              int
	minWait             time.Duration
	maxWait             time.Duration
	dialTimeout         time.Duration

	// fixed answers line control for a kind whose line cannot change
	// (tcp, nport, telnet), the device present or away: every Open gets
	// it, and SetSettings consults it while the device is away. Nil for
	// other kinds.
	fixed *devices.FixedLine

	wmu sync.Mutex // serialises writes to the device (VM data and the backlog flush)

	mu      sync.Mutex // guards the fields below
	cond    sync.Cond  // backlog space, device up, or closed
	dev     devices.Device
	backlog []byte // VM data held while the device is away
	closed  bool
	gated   bool // the first attempt is held by the bridge's dial gate
	state   linkState
	// released: the attempt chain has ended and the device is free for
	// other VMs (release). Beside the bools, so that a link stays
	// within 448 bytes.
	released atomic.Bool
	lastErr  string
	connects int
	settings rfc2217.Settings // what the guest set last (re-applied after reconnect)
	timer    *time.Timer      // the next attempt
	abort    func()           // cancels the device open in progress; nil when none

	// Owned by the attempt chain (one attempt at a time):
	wait     time.Duration // backoff before the next attempt
	attempts int
}

func (l *link) vmName() string { return l.name }
func (l *link) vmUUID() string { return l.uuid }

// linkState is the device's state as status reports it.
type linkState uint8

const (
	stateNone       linkState = iota // before the first attempt
	stateConnecting                  // an attempt in progress or held by the dial gate
	stateUp                          // the device is open
	stateDown                        // the last attempt failed or the device was lost
)

func (s linkState) String() string {
	switch s {
	case stateConnecting:
		return "connecting"
	case stateUp:
		return "up"
	case stateDown:
		return "down"
	}
	return ""
}

// The link's life is a chain of attempts: open the device (on the
// bridge's dial pool), pump its output to the VM on a goroutine of its own
// until it fails, then schedule the next attempt with backoff. Between
// attempts no goroutine waits, so a port whose device is unreachable
// costs a timer, not a goroutine stack; and a device connection that is
// idle parks (package park), so it costs no goroutine either. At most one
// attempt or pump runs at a time. Each is counted in the Bridge's
// WaitGroup from the moment it is scheduled until the chain moves on (a
// parked pump stays counted: closing its device wakes it).

// start arms the first connect: at once, or, when held (a burst of VMs
// attaching; see gate.go), once the bridge's dial gate lets it go.
func (l *link) start(held bool) {
	l.wait = l.minWait
	if !held {
		l.schedule(0)
		return
	}
	l.mu.Lock()
	l.gated = true
	l.state = stateConnecting // after the storm
	l.mu.Unlock()
	l.b.gate.hold(time.Now(), func() {
		l.mu.Lock()
		was := l.gated
		l.gated = false
		l.mu.Unlock()
		if was { // not already released by Close
			l.schedule(0)
		}
	})
}

// schedule queues the next attempt on the dial pool after d, unless the
// link is closed. The pool's goroutines do the connects: a goroutine per
// attempt left a dead g (480 B, never freed) per port after a burst.
func (l *link) schedule(d time.Duration) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		l.release()
		return
	}
	l.b.wg.Add(1)
	if d <= 0 {
		l.timer = nil
		l.mu.Unlock()
		l.b.dials.submit(l.attemptDone)
		return
	}
	l.timer = time.AfterFunc(d, func() { l.b.dials.submit(l.attemptDone) })
	l.mu.Unlock()
}

// attemptDone runs one attempt on a dial pool goroutine and ends its
// count in the WaitGroup.
func (l *link) attemptDone() {
	defer l.b.wg.Done()
	l.attempt()
}

func (l *link) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// attempt opens the device once; if that works, it starts the pump on a
// goroutine of its own and returns; else it schedules the next attempt.
// The open is bounded by the dial timeout and cancelled by Close (abort):
// the link keeps no context of its own.
func (l *link) attempt() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		l.release()
		return
	}
	l.abort = cancel
	l.state, l.lastErr = stateConnecting, ""
	l.mu.Unlock()
	// Initial is the route's settings (for tcp/telnet kinds: what the
	// device server is configured to, and the answer of l.fixed). Guest
	// is what the guest set before this (re)connect: the device applies
	// it over Initial beside the data, so that data never waits for it.
	var dev devices.Device
	opts := devices.Options{Initial: l.initial, Guest: l.guestSettings(), Line: l.fixed, Logger: l.logger(), DialTimeout: l.dialTimeout}
	if p := l.b.parker(); p != nil {
		opts.Parker = p
		// The device parks only after Open returned and its pump
		// started (below), so dev is set by the time this runs.
		opts.Wake = func() { l.pump(dev) }
	}
	if !l.trusted {
		opts.Dial = l.b.policyDial
	}
	d, err := l.open(ctx, opts) // claimed first in a cluster (guard.go)
	dev = d
	l.mu.Lock()
	l.abort = nil
	closed := l.closed
	l.mu.Unlock()
	if err != nil {
		if closed {
			l.release()
			return
		}
		l.setState(stateDown, err.Error())
		if l.attempts == 0 || l.wait >= l.maxWait {
			if l.logs(slog.LevelWarn) {
				l.logger().Warn("cannot reach device; VM session stays up, retrying", "err", err, "retry_in", l.wait)
			}
		} else if l.logs(slog.LevelDebug) {
			l.logger().Debug("device still unreachable", "err", err, "retry_in", l.wait)
		}
		l.attempts++
		w := jitter(l.wait)
		l.wait = min(2*l.wait, l.maxWait)
		l.schedule(w)
		return
	}
	l.attempts++
	switch err = l.up(dev); {
	case errors.Is(err, ErrLinkClosed):
		dev.Close()
		l.release()
		return
	case err != nil:
		dev.Close() // the backlog did not go through: lost at once
		l.logger().Warn("device connection lost; VM session stays up, reconnecting", "err", err)
		l.setState(stateDown, errString(err))
		l.schedule(jitter(l.minWait))
		return
	}
	if l.connects > 1 {
		l.logger().Info("device reconnected", "connects", l.connects)
	} else {
		l.logger().Info("device connected")
	}
	l.wait = l.minWait
	if g := l.guestSettings(); g != opts.Guest {
		// The guest set the line while the device was opening (it was
		// told "applied when the device is back"): apply it now, beside
		// the data. Bounded by the dial timeout; Close ends it sooner.
		l.b.wg.Go(func() {
			sctx, cancel := context.WithTimeout(context.Background(), l.dialTimeout)
			defer cancel()
			if _, err := dev.SetSettings(sctx, g); err != nil && !errors.Is(err, devices.ErrClosed) && !l.isClosed() {
				l.logger().Warn("applying the guest's line settings", "settings", g.String(), "err", err)
			}
		})
	}
	// The pump runs on a goroutine of its own, not under this frame: a
	// goroutine blocked in Read never shrinks its stack below what its
	// deepest frames needed (notes idle-memory.md §2.1), and attempt's
	// frames held the pump at 8 KiB. A parkable device parks at once
	// instead: its pump starts when it has something to say.
	l.b.wg.Add(1)
	if !l.parkNow(dev) {
		go l.pump(dev)
	}
}

// parkNow parks a device connection that has just opened, before its
// pump ever runs (its first byte, hang-up or close runs the pump through
// Options.Wake), and reports whether it did. Without it, a burst of
// devices connecting held a pump goroutine each for a park period, and
// each left its g behind for good (480 bytes; notes idle-memory.md §2.1).
// The caller has counted the pump in the WaitGroup.
func (l *link) parkNow(dev devices.Device) bool {
	if l.b.parkAfter() <= 0 {
		return false
	}
	pd, ok := raw(dev).(parkNowDevice)
	return ok && pd.CanPark() && pd.ParkNow() == nil
}

// parkNowDevice is a parkable device that can park before any Read.
type parkNowDevice interface {
	CanPark() bool
	ParkNow() error
}

// up flushes the backlog to dev, then publishes it: while l.dev is set
// the backlog is empty, so VM data never overtakes data held for the
// device. It returns ErrLinkClosed after Close, and the write error if the
// backlog did not go through (what did not is kept, in order, for the
// next device).
func (l *link) up(dev devices.Device) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrLinkClosed
	}
	backlog := l.backlog
	l.backlog = nil
	l.mu.Unlock()
	if len(backlog) > 0 {
		if n, err := dev.Write(backlog); err != nil {
			l.mu.Lock()
			l.backlog = backlog[n:] // nothing was added: wmu is held
			if n > 0 {
				l.cond.Broadcast() // room for a back-pressured Write
			}
			l.mu.Unlock()
			return fmt.Errorf("delivering %d bytes the VM sent while the device was away: %w", len(backlog), err)
		}
		l.logger().Info("delivered data the VM sent while the device was away", "bytes", len(backlog))
	}
	l.mu.Lock()
	if l.closed {
		// Close ran while the backlog went out: it saw no device to close,
		// so publishing this one would leave it open and its pump running
		// after the port is gone. The caller closes it.
		l.mu.Unlock()
		return ErrLinkClosed
	}
	l.dev = dev
	l.state = stateUp
	l.lastErr = ""
	l.connects++
	l.cond.Broadcast()
	l.mu.Unlock()
	return nil
}

func (l *link) down(dev devices.Device) {
	l.wmu.Lock()
	l.mu.Lock()
	if l.dev == dev {
		l.dev = nil
	}
	l.mu.Unlock()
	l.wmu.Unlock()
	dev.Close()
}

// parkableDevice is a device whose connection can be parked while idle
// (the tcp and nport kinds; CanPark when opened with a Parker).
type parkableDevice interface {
	CanPark() bool
	SetReadDeadline(time.Time) error
	Park() error
}

// pump copies device output to the VM until the device fails; then it
// takes the device down and schedules a reconnect. When the device has
// been idle for a park period it parks instead, and its goroutine ends;
// the Parker runs pump again, on a fresh goroutine, when data or a
// hang-up arrives or the device is closed. It is counted in the Bridge's
// WaitGroup (by attempt) until it ends for good, parked periods included.
func (l *link) pump(dev devices.Device) {
	parked := false
	defer func() {
		if !parked {
			l.b.wg.Done()
		}
	}()
	pd, _ := raw(dev).(parkableDevice)
	idle := park.Idle{Period: l.b.parkAfter()}
	if pd != nil && pd.CanPark() && idle.Period > 0 {
		pd.SetReadDeadline(idle.Start(time.Now()))
	} else {
		pd = nil
	}
	bp := l.b.bufs.Get().(*[]byte) // 1 KiB while quiet, 32 KiB while busy
	defer l.b.bufs.Put(bp)
	var big []byte
	var err error
	for {
		buf := *bp
		if big != nil {
			buf = big
		}
		n, rerr := dev.Read(buf)
		if n > 0 {
			idle.Seen()
			if l.observer != nil {
				l.observer.ObserveConsole(l.name, l.route, true, buf[:n])
			}
			if serr := l.vm.Send(buf[:n]); serr != nil {
				err = serr
				break
			}
			switch {
			case big == nil && n == len(*bp):
				big = make([]byte, 32<<10) // busy: read more at once
			case big != nil && n < len(*bp):
				big = nil // idle again: hold no large buffer
			}
		}
		if rerr != nil {
			if pd != nil && errors.Is(rerr, os.ErrDeadlineExceeded) {
				if idle.Expired() && pd.Park() == nil {
					parked = true
					return
				}
				pd.SetReadDeadline(idle.Start(time.Now()))
				continue
			}
			err = rerr
			break
		}
	}
	l.down(dev)
	if l.isClosed() {
		l.release()
		return
	}
	l.logger().Warn("device connection lost; VM session stays up, reconnecting", "err", err)
	l.setState(stateDown, errString(err))
	l.schedule(jitter(l.minWait))
}

// Write implements vspc.Backend: VM data to the device, or, while it is
// away, to the backlog, which never holds more than the buffer ([vmotion]
// buffer): what does not fit waits for the device (the VM is
// back-pressured) and goes to it once the backlog has. A device that fails
// a write is away from then on, for this Write and the next ones, until
// the next connect.
func (l *link) Write(p []byte) (int, error) {
	if l.observer != nil {
		l.observer.ObserveConsole(l.name, l.route, false, p)
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	done := 0
	for done < len(p) {
		l.mu.Lock()
		dev := l.dev
		if dev == nil {
			if l.closed {
				l.mu.Unlock()
				return done, ErrLinkClosed
			}
			if room := l.buffer - len(l.backlog); room > 0 {
				k := min(room, len(p)-done)
				l.backlog = append(l.backlog, p[done:done+k]...)
				done += k
				l.mu.Unlock()
				continue
			}
			// Backlog full: back-pressure the VM until the device is back
			// or the link closes. The writer lock is released while
			// waiting so that up can flush.
			l.wmu.Unlock()
			l.cond.Wait()
			l.mu.Unlock()
			l.wmu.Lock()
			continue
		}
		l.mu.Unlock()
		n, err := dev.Write(p[done:])
		done += n
		if err != nil {
			// The device broke mid-write. Until pump notices (it reads,
			// and may be blocked a while), no Write may use it again:
			// the rest goes to the bounded backlog.
			l.mu.Lock()
			if l.dev == dev {
				l.dev = nil
			}
			l.mu.Unlock()
			dev.Close() // pump notices and reconnects
		}
	}
	return done, nil
}

// Close implements vspc.Backend.
func (l *link) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	dev := l.dev
	t := l.timer
	gated := l.gated // held by the dial gate: no attempt will run
	l.gated = false
	abort := l.abort
	l.cond.Broadcast()
	l.mu.Unlock()
	if abort != nil {
		abort()
	}
	if dev != nil {
		dev.Close()
	}
	if t != nil && t.Stop() {
		// The pending attempt will not run: finish for it.
		l.b.wg.Done()
		l.release()
	}
	if gated {
		l.release()
	}
	return nil
}

// release frees the device for other VMs once the attempt chain has
// ended. It runs once.
func (l *link) release() {
	if l.released.CompareAndSwap(false, true) {
		l.doRelease()
	}
}

func (l *link) doRelease() {
	l.Close()
	if g := l.b.deviceGuard(); g != nil {
		g.Forget(l.key, l.holder()) // a claim still waiting out its lock delay
	}
	l.b.mu.Lock()
	if l.b.owners[l.key] == l {
		delete(l.b.owners, l.key)
	}
	l.b.mu.Unlock()
	l.mu.Lock()
	if n := len(l.backlog); n > 0 {
		l.logger().Warn("port closed with VM data the device never received", "bytes", n)
	}
	l.mu.Unlock()
}

func (l *link) setState(st linkState, err string) {
	l.mu.Lock()
	l.state, l.lastErr = st, err
	l.mu.Unlock()
}

// guestSettings returns what the guest set through RFC 2217 (zero fields:
// never set).
func (l *link) guestSettings() rfc2217.Settings {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.settings
}

// mismatcher is implemented by devices that remember what a guest asked
// for in vain: FixedLine (tcp, nport, telnet) and an NPort's command port.
type mismatcher interface{ Mismatch() string }

// jitter spreads reconnects of many ports over ±20 %.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d - d/5 + time.Duration(rand.Int64N(int64(d)*2/5+1))
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// logs reports whether the bridge's logger takes a record at level. The
// lines every port logs as it comes up check it first: the link's logger
// costs about 200 bytes to build, and in a storm of VMs connecting that
// garbage, dropped by the level, is what leaves the small size classes'
// spans partly used for good (issue 17).
func (l *link) logs(level slog.Level) bool { return l.b.log.Enabled(context.Background(), level) }

// logger returns the bridge's logger with this link's VM and device,
// built on demand so that an idle link holds none. It costs one small
// allocation (the Logger): the context is added by linkHandler when a
// record is handled, since every attempt hands a logger to the device it
// opens, and a storm of unreachable devices made about 200 bytes of
// garbage per port of it (issue 17).
func (l *link) logger() *slog.Logger { return slog.New(linkHandler{l}) }

// linkHandler is the bridge's handler with the link's VM and device
// before each record's attributes. It holds only the link, so that it
// fits in an interface without an allocation.
type linkHandler struct{ l *link }

// full is the handler with the link's context, built now.
func (h linkHandler) full() slog.Handler {
	l := h.l
	return lazylog.With(l.b.log, "vm", l.name, "vc_uuid", l.uuid, "device", l.key).Handler()
}

func (h linkHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.l.b.log.Enabled(ctx, level)
}

func (h linkHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.full().Handle(ctx, r)
}

func (h linkHandler) WithAttrs(as []slog.Attr) slog.Handler { return h.full().WithAttrs(as) }
func (h linkHandler) WithGroup(name string) slog.Handler    { return h.full().WithGroup(name) }
