package remote

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// Mode is how a client is attached to a console (the lock modes of
// console servers).
type Mode uint8

// Attach modes.
const (
	// ModeShared: read-write, shared with other writers.
	ModeShared Mode = iota + 1
	// ModeReadOnly: watch only.
	ModeReadOnly
	// ModeExclusive: the only client; nobody else may attach meanwhile.
	ModeExclusive
	// ModeExclusiveWrite: the only writer; others may attach read-only.
	ModeExclusiveWrite
)

func (m Mode) String() string {
	switch m {
	case ModeShared:
		return "read-write"
	case ModeReadOnly:
		return "read-only"
	case ModeExclusive:
		return "exclusive"
	case ModeExclusiveWrite:
		return "exclusive-write"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

func (m Mode) writes() bool { return m != ModeReadOnly }

// ParseMode accepts rw, ro, x and xw and the long names of String.
func ParseMode(s string) (Mode, bool) {
	switch strings.ToLower(s) {
	case "rw", "read-write", "shared":
		return ModeShared, true
	case "ro", "read-only", "spy":
		return ModeReadOnly, true
	case "x", "exclusive":
		return ModeExclusive, true
	case "xw", "exclusive-write":
		return ModeExclusiveWrite, true
	}
	return 0, false
}

// Errors from attaching to a console.
var (
	ErrConsoleClosed = errors.New("remote: console closed")
	ErrConsoleBusy   = errors.New("remote: console busy")
	ErrReadOnly      = errors.New("remote: read-only")
)

// attachment is one client attached to a console. mode is written under
// console.mu (by attach and setMode) and read under it, or without it on
// the client's own session goroutine.
type attachment struct {
	user        string
	right       string // the user's access to this console: ro or rw
	mode        Mode
	peer        string
	via         string
	since       time.Time
	interactive bool // gets notices
	pause       bool // a full queue pauses the console (client_overflow = "pause"), else drops the client
	out         *outQueue
	enc         func(dst, p []byte) []byte
	replayed    int // scrollback bytes queued first by attach (before enc)
}

func (a *attachment) String() string {
	return fmt.Sprintf("%s (%s, %s from %s)", a.user, a.mode, a.via, a.peer)
}

// console is the Backend of one direction-server VM serial port: it fans
// the VM's output out to the attached clients, the scrollback and the
// log, and takes input from clients allowed to write.
type console struct {
	h        *Hub
	req      vspc.Request
	vm       vspc.Sink
	key      string // VC UUID (or "name:"+VM name) + " " + service URI
	log      *slog.Logger
	ctx      context.Context // cancelled by close: ends the listener and sessions
	cancel   context.CancelFunc
	ln       net.Listener // per-VM listener; nil if none
	acc      *vmListener  // accepts on ln; set before the console is published
	lnURL    string       // "telnet://127.0.0.1:7001"; "" if none
	lnGone   atomic.Bool  // the listener was closed by DropListener: lnURL no longer listens
	assigned bool         // ln's port came from the hub's PortAssigner (a cluster)
	logw     *logWriter   // nil without log_dir
	created  time.Time
	dropMsg  string // the last words to a client that fell behind (drop mode)

	mu      sync.Mutex // guards the fields below
	closed  bool
	sb      ring
	clients []*attachment // in attach order
	excl    *attachment   // holds ModeExclusive
	xwrite  *attachment   // holds ModeExclusiveWrite
	room    chan struct{} // closed when a full client queue drains or a client goes; nil when nobody waits
	waiting bool          // Write is waiting for clients now
	paused  time.Duration // total time Write waited for clients
	pauses  int64         // times Write waited
	stalled int64         // clients dropped for taking no output for client_stall
}

// ring keeps the last max bytes written. Its buffer grows as output
// arrives (a console that never printed holds none), up to max; then it
// wraps.
type ring struct {
	max  int
	buf  []byte // len(buf) == max once full
	next int    // once full: index of the oldest byte
	full bool
}

func (r *ring) write(p []byte) {
	if r.max == 0 || len(p) == 0 {
		return
	}
	if !r.full {
		if n := len(r.buf) + len(p); n < r.max {
			if n > cap(r.buf) {
				nb := make([]byte, len(r.buf), min(r.max, max(2*cap(r.buf), n, 256)))
				copy(nb, r.buf)
				r.buf = nb
			}
			r.buf = append(r.buf, p...)
			return
		}
		// It fills up now: keep the last max bytes, and wrap from here on.
		nb := make([]byte, r.max)
		if len(p) >= r.max {
			copy(nb, p[len(p)-r.max:])
		} else {
			k := copy(nb, r.buf[len(r.buf)-(r.max-len(p)):])
			copy(nb[k:], p)
		}
		r.buf, r.next, r.full = nb, 0, true
		return
	}
	n := len(r.buf)
	if len(p) >= n {
		copy(r.buf, p[len(p)-n:])
		r.next = 0
		return
	}
	c := copy(r.buf[r.next:], p)
	if c < len(p) {
		copy(r.buf, p[c:])
	}
	r.next = (r.next + len(p)) % n
}

// appendTo appends the kept bytes, oldest first.
func (r *ring) appendTo(dst []byte) []byte {
	if !r.full {
		return append(dst, r.buf...)
	}
	dst = append(dst, r.buf[r.next:]...)
	return append(dst, r.buf[:r.next]...)
}

// Write implements vspc.Backend: output from the VM, on the VM
// connection's reader. It queues p for every client, the scrollback and
// the log, and never blocks on the disk. A client whose queue is full
// either is dropped at once (client_overflow = "drop") or makes Write
// wait until it has caught up (pause): the VM connection is not read
// meanwhile, which back-pressures the VM as a slow device does. A client
// that takes no output for client_stall while Write waits for it is
// dropped, and Write goes on for the others.
func (c *console) Write(p []byte) (int, error) {
	var dropped []*attachment
	full := false
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, ErrConsoleClosed
	}
	c.sb.write(p)
	for _, a := range c.clients {
		if !a.out.data(p, a.enc, c.dropMsg, a.pause) {
			dropped = append(dropped, a)
		} else if a.pause {
			full = true // checked below, without the lock
		}
	}
	c.mu.Unlock()
	if c.logw != nil {
		c.logw.write(p)
	}
	for _, a := range dropped {
		c.h.dropped.Add(1)
		c.log.Warn("remote client dropped: too slow", "user", a.user, "peer", a.peer, "via", a.via, "client_queue", int64(c.h.cfg.Remote.ClientQueue))
		c.detach(a, "dropped: too slow")
	}
	if full {
		if err := c.waitClients(); err != nil {
			return len(p), err
		}
	}
	return len(p), nil
}

// waitClients waits while a pausing client's queue is full: until it has
// drained to half its limit, it goes, or it has taken no output for
// client_stall (then it is dropped).
func (c *console) waitClients() error {
	stall := c.h.cfg.Remote.ClientStall.Duration
	var (
		timer *time.Timer
		start time.Time
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
		if !start.IsZero() {
			d := time.Since(start)
			c.mu.Lock()
			c.paused += d
			c.pauses++
			c.waiting = false
			c.mu.Unlock()
		}
	}()
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return ErrConsoleClosed
		}
		var (
			worst      *attachment
			worstSince time.Time
		)
		for _, a := range c.clients {
			if !a.pause {
				continue
			}
			if since, full := a.out.fullSince(); full && (worst == nil || since.Before(worstSince)) {
				worst, worstSince = a, since
			}
		}
		if worst == nil {
			c.mu.Unlock()
			return nil
		}
		if c.room == nil {
			c.room = make(chan struct{})
		}
		room := c.room
		c.waiting = true
		c.mu.Unlock()
		if start.IsZero() {
			start = time.Now()
		}
		left := stall - c.h.now().Sub(worstSince)
		if left <= 0 {
			c.dropStalled(worst, stall)
			continue
		}
		if timer == nil {
			timer = time.NewTimer(left)
		} else {
			timer.Reset(left)
		}
		select {
		case <-room:
		case <-timer.C:
		case <-c.ctx.Done():
			return ErrConsoleClosed
		}
	}
}

// dropStalled tells a client that took no output for client_stall and
// drops it.
func (c *console) dropStalled(a *attachment, stall time.Duration) {
	a.out.drop(fmt.Sprintf("\r\n[vspc-bridge: you took no console output for %s while the console of %s waited for you; disconnecting]\r\n", stall, c.req.VMName))
	c.h.dropped.Add(1)
	c.mu.Lock()
	c.stalled++
	c.mu.Unlock()
	c.log.Warn("remote client dropped: too slow", "user", a.user, "peer", a.peer, "via", a.via, "client_queue", int64(c.h.cfg.Remote.ClientQueue), "client_stall", stall.String())
	c.detach(a, "dropped: too slow")
}

// wakeLocked wakes a Write waiting for clients. c.mu held.
func (c *console) wakeLocked() {
	if c.room != nil {
		close(c.room)
		c.room = nil
	}
}

// wake is wakeLocked for a client's writer (onRoom).
func (c *console) wake() {
	c.mu.Lock()
	c.wakeLocked()
	c.mu.Unlock()
}

// Close implements vspc.Backend: the VM port is gone (grace period over
// or shutdown). It closes the per-VM listener and disconnects clients.
func (c *console) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	clients := c.clients
	c.clients, c.excl, c.xwrite = nil, nil, nil
	c.mu.Unlock()
	for _, a := range clients { // before cancel: its "closing" would come first
		a.out.close(fmt.Sprintf("\r\n[vspc-bridge: the serial port of %s is gone]\r\n", c.req.VMName))
	}
	c.cancel()
	if c.acc != nil {
		c.acc.close()
	} else if c.ln != nil {
		c.ln.Close()
	}
	if c.logw != nil {
		c.logw.close()
	}
	c.h.removeConsole(c)
	c.log.Info("remote console closed")
	return nil
}

// attach adds a to the clients, after checking the lock modes, and
// queues the scrollback for it first.
func (c *console) attach(a *attachment) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return ErrConsoleClosed
	case len(c.clients) >= c.h.cfg.Remote.MaxClients:
		return fmt.Errorf("%w: %d clients attached (the limit)", ErrConsoleBusy, len(c.clients))
	case c.excl != nil:
		return fmt.Errorf("%w: %s holds it exclusively since %s", ErrConsoleBusy, c.excl.user, c.excl.since.Format(time.TimeOnly))
	case a.mode == ModeExclusive && len(c.clients) > 0:
		return fmt.Errorf("%w: cannot attach exclusively while others are attached: %s", ErrConsoleBusy, c.whoLocked())
	case a.mode == ModeExclusiveWrite && c.xwrite != nil:
		return fmt.Errorf("%w: %s holds write access exclusively", ErrConsoleBusy, c.xwrite.user)
	case a.mode == ModeExclusiveWrite:
		for _, o := range c.clients {
			if o.mode.writes() {
				return fmt.Errorf("%w: %s is attached read-write; exclusive write needs no other writer", ErrConsoleBusy, o.user)
			}
		}
	}
	var note string
	if a.mode == ModeShared && c.xwrite != nil {
		a.mode = ModeReadOnly
		note = fmt.Sprintf("[vspc-bridge: %s holds write access exclusively; you are read-only]\r\n", c.xwrite.user)
	}
	switch a.mode {
	case ModeExclusive:
		c.excl = a
	case ModeExclusiveWrite:
		c.xwrite = a
	}
	if a.interactive {
		esc := "escapes off"
		if len(c.h.escape) > 0 {
			esc = "escape " + escapeName(c.h.escape) + ", then ? for help"
		}
		a.out.control([]byte(fmt.Sprintf("[vspc-bridge: attached to %s (%s); %s]\r\n%s", c.req.VMName, a.mode, esc, note)))
	}
	if sb := c.sb.appendTo(nil); len(sb) > 0 {
		// At most half the client's queue (encoding may double it), so
		// the scrollback never drops a client by itself.
		if keep := a.out.limit / 2; len(sb) > keep {
			sb = sb[len(sb)-keep:]
		}
		a.out.data(sb, a.enc, c.dropMsg, true) // never drops: at most half the limit
		a.replayed = len(sb)
	}
	c.notifyLocked(a, fmt.Sprintf("%s joined (%s, %s from %s); %d attached", a.user, a.mode, a.via, a.peer, len(c.clients)+1))
	a.out.setOnRoom(c.wake)
	c.clients = append(c.clients, a)
	c.log.Info("remote client attached", "user", a.user, "mode", a.mode.String(), "peer", a.peer, "via", a.via, "attached", len(c.clients))
	return nil
}

// detach removes a (no-op if it is not attached) and tells the others.
func (c *console) detach(a *attachment, why string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.Index(c.clients, a)
	if i < 0 {
		return
	}
	c.clients = slices.Delete(c.clients, i, i+1)
	a.out.setOnRoom(nil)
	c.wakeLocked()
	if c.excl == a {
		c.excl = nil
	}
	if c.xwrite == a {
		c.xwrite = nil
	}
	c.notifyLocked(a, fmt.Sprintf("%s left (%s); %d attached", a.user, why, len(c.clients)))
	c.log.Info("remote client detached", "user", a.user, "peer", a.peer, "via", a.via, "why", why, "attached", len(c.clients))
}

// setMode switches an attached client between read-only and read-write
// (shared), within its rights and the lock modes held by others.
func (c *console) setMode(a *attachment, m Mode) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !slices.Contains(c.clients, a) {
		return ErrConsoleClosed
	}
	if m.writes() {
		switch {
		case a.right != "rw":
			return errors.New("remote: you have read-only access to this console")
		case c.xwrite != nil && c.xwrite != a:
			return fmt.Errorf("%w: %s holds write access exclusively", ErrConsoleBusy, c.xwrite.user)
		}
	}
	if a.mode == m {
		return nil
	}
	if c.excl == a {
		c.excl = nil
	}
	if c.xwrite == a {
		c.xwrite = nil
	}
	a.mode = m
	c.notifyLocked(a, fmt.Sprintf("%s is now %s", a.user, m))
	c.log.Info("remote client changed mode", "user", a.user, "peer", a.peer, "mode", m.String())
	return nil
}

// notifyLocked tells the interactive clients other than a. c.mu held.
func (c *console) notifyLocked(a *attachment, msg string) {
	b := []byte("\r\n[vspc-bridge: " + msg + "]\r\n")
	for _, o := range c.clients {
		if o != a && o.interactive {
			o.out.control(b)
		}
	}
}

func (c *console) whoLocked() string {
	var parts []string
	for _, o := range c.clients {
		parts = append(parts, fmt.Sprintf("%s (%s, %s from %s, since %s)", o.user, o.mode, o.via, o.peer, o.since.Format(time.TimeOnly)))
	}
	if len(parts) == 0 {
		return "nobody"
	}
	return strings.Join(parts, "; ")
}

func (c *console) who() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.whoLocked()
}

// input sends data typed by a to the VM. It blocks while the VM's queue
// is full (back-pressure to this client only).
func (c *console) input(a *attachment, p []byte) error {
	if !a.mode.writes() {
		return ErrReadOnly
	}
	if err := c.vm.Send(p); err != nil {
		return fmt.Errorf("remote: console of %s: %w", c.req.VMName, err)
	}
	return nil
}

// sendBreak sends a BREAK to the VM on behalf of a.
func (c *console) sendBreak(a *attachment) error {
	if !a.mode.writes() {
		return ErrReadOnly
	}
	c.log.Info("remote client sent BREAK", "user", a.user, "peer", a.peer)
	if err := c.vm.SendBreak(); err != nil {
		return fmt.Errorf("remote: console of %s: %w", c.req.VMName, err)
	}
	return nil
}

// portInfoer is what a vspc.Sink offers for status (a *vspc.Port does).
type portInfoer interface{ Info() vspc.PortInfo }

// state is the VM port's state (attached, detached, vmotion) if known.
func (c *console) state() string {
	if pi, ok := c.vm.(portInfoer); ok {
		return pi.Info().State
	}
	return "attached"
}

// ConsoleInfo describes a console for status.
type ConsoleInfo struct {
	// Key identifies the console for Hub.Attach: the String form of its
	// VM serial port's vspc.PortKey.
	Key                        string
	VMName, VCUUID, ServiceURI string
	Listen                     string // per-VM listener as a URI ("telnet://127.0.0.1:7001"); "" if none
	State                      string // the VM port's state: attached, detached, vmotion
	Since                      time.Time
	Clients                    []ClientInfo
	LogFile                    string // "" without log_dir
	LogLost                    int64  // bytes of output lost from the log (slow disk)
	// Pausing (client_overflow = "pause"): whether the console waits for
	// a client now (the VM is not read meanwhile), how often and how long
	// it waited in all, and how many clients were dropped for taking no
	// output for client_stall.
	Paused      bool
	Pauses      int64
	PausedTotal time.Duration
	Stalled     int64
}

// ClientInfo describes an attached client.
type ClientInfo struct {
	User   string
	Mode   string // read-write, read-only, exclusive, exclusive-write
	Peer   string
	Via    string // telnet, telnets, tcp, ssh
	Since  time.Time
	Queued int // output bytes waiting for it
}

func (c *console) info() ConsoleInfo {
	ci := ConsoleInfo{Key: c.key, VMName: c.req.VMName, VCUUID: c.req.VCUUID, ServiceURI: c.req.ServiceURI, Listen: c.lnURL, State: c.state(), Since: c.created}
	if c.lnGone.Load() {
		ci.Listen = ""
	}
	if c.logw != nil {
		ci.LogFile = c.logw.path
		ci.LogLost = c.logw.lostTotal.Load()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ci.Paused, ci.Pauses, ci.PausedTotal, ci.Stalled = c.waiting, c.pauses, c.paused, c.stalled
	for _, a := range c.clients {
		ci.Clients = append(ci.Clients, ClientInfo{User: a.user, Mode: a.mode.String(), Peer: a.peer, Via: a.via, Since: a.since, Queued: a.out.queued()})
	}
	return ci
}
