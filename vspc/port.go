package vspc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vspc-bridge/vspc-bridge/internal/lazylog"
	"github.com/vspc-bridge/vspc-bridge/rfc2217"
	"github.com/vspc-bridge/vspc-bridge/telnet"
)

// Port is one VM serial port: the long-lived join between a VM (through
// whichever connection currently carries it) and its Backend. It outlives
// connections: vMotion moves it to a new connection, a reconnect
// re-attaches it, and it waits a grace period for its VM when detached.
//
// One writer per VM connection: once a connection is joined to a port (by
// DO-PROXY or an accepted VMOTION-PEER), the port's writer goroutine is the
// only caller of its Write. Everyone else queues: replies of the
// connection's reader, WILL-PROXY, the vMotion messages and timeouts go to
// the control lane (ctl), which the writer empties before it writes data;
// the Backend's data goes to q. So WILL-PROXY always precedes the data on
// a new connection, GOAHEAD always follows the barrier, and no message
// depends on concurrent Writes being atomic. Before it is joined, a
// connection has only its reader, which writes its own handshake replies.
type Port struct {
	srv     *Server
	key     PortKey // immutable once published
	backend Backend // set before the port is published
	vmName  string  // as first identified; immutable (for logs)
	since   int64   // when the port was made, in Unix nanoseconds (8 bytes where a time.Time takes 24)

	bytesToVM   atomic.Int64
	bytesFromVM atomic.Int64
	done        doneSignal // fired by close

	comMu sync.Mutex            // guards com and polling; held across device calls; before mu
	com   *rfc2217.AccessServer // RFC 2217 state toward the VM; nil until it negotiates

	mu     sync.Mutex // guards everything below; after srv.mu
	cond   *sync.Cond // signalled when queue or control space frees, or the port closes; made by the first wait (waitLocked)
	req    Request
	active *vmConn // connection carrying data to and from the VM; nil when detached
	// q holds telnet-escaped data for the VM; q[head:] is still to be
	// written. The writer writes q[head:head+n] without the lock, so while
	// writing is true only the writer may move or reuse q's bytes (compact,
	// reset, trim); others only append.
	q       []byte
	head    int
	limit   int      // bytes of q[head:] the writer may write; -1 = all (a hand-over's barrier)
	ctl     []ctlMsg // the control lane: written before q, in order
	writing bool     // a writer goroutine runs
	suspend bool     // the VM sent FLOWCONTROL-SUSPEND (RFC 2217)
	closed  bool
	polling bool     // guarded by comMu, not mu (here to share the bools' word): the modem-state poller runs
	hand    *handing // the vMotion hand-overs; nil until the first BEGIN (an idle port pays a pointer)

	tm *portTimers // nil until a port first needs one (an attached idle port: never)
}

// portTimers are a port's timers and its drain signal, made at first
// need and kept apart so that a Port stays within 352 bytes (a parked
// port keeps it; issue 17). Guarded by the port's mu.
type portTimers struct {
	grace   *time.Timer   // the grace period of a detached port; counted in srv.wg
	flushed chan struct{} // closed when the queue drains; nil when nobody waits
	trim    *time.Timer   // drops a large drained queue buffer after a quiet second; counted in srv.wg
}

// timersLocked returns p.tm, made on first use. Caller holds p.mu.
func (p *Port) timersLocked() *portTimers {
	if p.tm == nil {
		p.tm = new(portTimers)
	}
	return p.tm
}

// handing is a port's vMotion bookkeeping, allocated at its first BEGIN.
type handing struct {
	ho        handover    // the hand-over's state (handover.go)
	begun     time.Time   // when its BEGIN came
	held      int         // bytes queued at GOAHEAD (HandOver.Buffered)
	timer     *time.Timer // its flush, peer or complete timeout; counted in srv.wg
	completed int         // hand-overs completed (PortInfo.VMotions)
	last      *HandOver
}

// hoLocked is the port's hand-over state. Caller holds p.mu.
func (p *Port) hoLocked() handover {
	if p.hand == nil {
		return handover{}
	}
	return p.hand.ho
}

// ctlMsg is one entry of the control lane: telnet-encoded bytes for c.
type ctlMsg struct {
	c *vmConn
	b []byte
}

// maxControl bounds the control lane. A connection's reader that finds it
// full waits (as it would have waited in Write): a VM that floods us with
// requests and reads nothing cannot grow it.
const maxControl = 64 << 10

// HandOver describes a finished vMotion hand-over.
type HandOver struct {
	Outcome  string // completed, aborted, timed out, failed
	From, To string // peer addresses of the source and destination hosts
	At       time.Time
	Duration time.Duration
	Buffered int // bytes held for the VM during the hand-over
}

// PortInfo is a snapshot of a port for status reports.
type PortInfo struct {
	VMName, VCUUID, BIOSUUID, LocationUUID string
	Direction                              string
	ServiceURI                             string
	Peer                                   string // current VM connection, "" when detached
	Via                                    string // the bridge that relays the current VM connection, when another bridge accepted it
	State                                  string // attached, detached, vmotion
	Since                                  time.Time
	BytesToVM, BytesFromVM                 int64
	Queued                                 int
	VMotions                               int
	LastHandOver                           *HandOver
}

func newPort(s *Server, key PortKey, req Request) *Port {
	p := &Port{
		srv:    s,
		key:    key,
		req:    req,
		limit:  -1,
		since:  time.Now().UnixNano(),
		vmName: req.VMName,
	}
	return p
}

// Info returns a snapshot of the port.
func (p *Port) Info() PortInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := "attached"
	peer := ""
	switch {
	case p.closed:
		st = "closed"
	case p.hoLocked().state.inFlight():
		st = "vmotion"
	case p.active == nil:
		st = "detached"
	}
	via := ""
	if p.active != nil {
		peer = p.active.nc.RemoteAddr().String()
		via = p.active.via()
	}
	var last *HandOver
	completed := 0
	if p.hand != nil {
		completed = p.hand.completed
		if p.hand.last != nil {
			h := *p.hand.last
			last = &h
		}
	}
	return PortInfo{
		VMName: p.req.VMName, VCUUID: p.req.VCUUID, BIOSUUID: p.req.BIOSUUID, LocationUUID: p.req.LocationUUID,
		Direction: p.req.Direction.String(), ServiceURI: p.req.ServiceURI,
		Peer: peer, Via: via, State: st, Since: time.Unix(0, p.since),
		BytesToVM: p.bytesToVM.Load(), BytesFromVM: p.bytesFromVM.Load(),
		Queued: len(p.q) - p.head, VMotions: completed, LastHandOver: last,
	}
}

// Request returns what the VM asked for, with its latest identity.
func (p *Port) Request() Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.req
}

func (p *Port) queued() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.q) - p.head
}

func (p *Port) updateIdentity(id identity) {
	p.mu.Lock()
	if id.name != "" {
		p.req.VMName = id.name
	}
	if id.biosUUID != "" {
		p.req.BIOSUUID = id.biosUUID
	}
	if id.locUUID != "" {
		p.req.LocationUUID = id.locUUID
	}
	differs := id.vcUUID != "" && p.req.VCUUID != "" && id.vcUUID != p.req.VCUUID
	p.mu.Unlock()
	if differs {
		p.logger().Warn("VM connection reports a different VC UUID than its port", "got", id.vcUUID)
	}
}

// Send queues data for the VM. It blocks while the queue holds Buffer
// bytes or more (back-pressure: the caller stops reading its source), and
// never drops data. It returns ErrPortClosed once the port is closed.
func (p *Port) Send(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for !p.closed && len(p.q)-p.head > 0 && len(p.q)-p.head+len(b) > p.srv.conf().Buffer {
		p.waitLocked()
	}
	if p.closed {
		return ErrPortClosed
	}
	if p.head > 0 && p.head == len(p.q) && !p.writing {
		p.q, p.head = p.q[:0], 0
	}
	if p.active != nil && !p.active.binOut.Load() {
		p.q = telnet.AppendText(p.q, b)
	} else {
		p.q = telnet.AppendData(p.q, b)
	}
	p.kickLocked()
	return nil
}

// SendBreak sends a telnet BREAK (IAC BRK) to the VM, in order with the
// data queued before it. It blocks like Send.
func (p *Port) SendBreak() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for !p.closed && len(p.q)-p.head > p.srv.conf().Buffer {
		p.waitLocked()
	}
	if p.closed {
		return ErrPortClosed
	}
	p.q = telnet.AppendCommand(p.q, telnet.BRK)
	p.kickLocked()
	return nil
}

// controlLocked queues b (telnet-encoded, now owned by the port) for c on
// the control lane and starts the writer. Caller holds p.mu.
func (p *Port) controlLocked(c *vmConn, b []byte) {
	if len(b) == 0 || p.closed || c.wfailed {
		return
	}
	p.ctl = append(p.ctl, ctlMsg{c: c, b: b})
	p.kickLocked()
}

// control queues the replies of c's reader on the control lane, waiting
// while the lane is full. It takes b.
func (p *Port) control(c *vmConn, b []byte) {
	p.mu.Lock()
	for p.controlBytesLocked() >= maxControl && !p.closed && !c.wfailed {
		p.waitLocked()
	}
	p.controlLocked(c, b)
	p.mu.Unlock()
}

// controlBytesLocked is the size of the control lane.
func (p *Port) controlBytesLocked() int {
	n := 0
	for _, m := range p.ctl {
		n += len(m.b)
	}
	return n
}

// nextControlLocked takes the first control message off the lane, joined
// with the ones after it for the same connection (one write).
func (p *Port) nextControlLocked() (*vmConn, []byte) {
	c, b := p.ctl[0].c, p.ctl[0].b
	k := 1
	for ; k < len(p.ctl) && p.ctl[k].c == c; k++ {
		b = append(b, p.ctl[k].b...)
	}
	clear(p.ctl[:k])
	p.ctl = p.ctl[k:]
	if len(p.ctl) == 0 {
		p.ctl = nil
	}
	p.broadcastLocked()
	return c, b
}

// failedLocked marks c as broken after a failed write: the writer skips
// it, and its control messages are dropped. Its reader notices the closed
// connection and detaches it.
func (p *Port) failedLocked(c *vmConn) {
	c.wfailed = true
	kept := p.ctl[:0]
	for _, m := range p.ctl {
		if m.c == c {
			continue
		}
		kept = append(kept, m)
	}
	clear(p.ctl[len(kept):])
	p.ctl = kept
	p.broadcastLocked()
}

// kickLocked starts the writer if there is something it may write.
func (p *Port) kickLocked() {
	if p.writing || p.closed || len(p.ctl) == 0 && p.writableLocked() == 0 {
		return
	}
	p.writing = true
	p.srv.wg.Add(1)
	go func() {
		defer p.srv.wg.Done()
		p.writer()
	}()
}

// writableLocked is how many bytes of data the writer may write now.
func (p *Port) writableLocked() int {
	if p.suspend || p.active == nil || p.active.wfailed {
		return 0
	}
	n := len(p.q) - p.head
	if p.limit >= 0 && p.limit < n {
		n = p.limit
	}
	return n
}

// writer is the only goroutine that writes to the port's connections. It
// writes the control lane, then queued data to the active connection,
// until both are empty (or the data is held for a hand-over), and exits.
// At most one writer runs per port (p.writing); an idle port has none.
func (p *Port) writer() {
	const maxWrite = 256 << 10
	for {
		p.mu.Lock()
		if p.closed {
			p.writing = false
			p.mu.Unlock()
			return
		}
		if len(p.ctl) > 0 {
			c, b := p.nextControlLocked()
			p.mu.Unlock()
			if _, err := c.nc.Write(b); err != nil {
				p.writeFailed(c, err)
			}
			continue
		}
		n := p.writableLocked()
		if n == 0 {
			if p.hand != nil && p.hand.ho.state == hoFlushing && p.limit == 0 && p.active != nil && !p.active.wfailed {
				// The barrier is written: GOAHEAD goes next, on the
				// control lane, ahead of everything held from here on.
				p.barrierLocked() // unlocks
				continue
			}
			p.writing = false
			p.drainedLocked()
			p.mu.Unlock()
			return
		}
		c := p.active
		n = min(n, maxWrite)
		buf := p.q[p.head : p.head+n]
		p.mu.Unlock()

		w, err := c.nc.Write(buf)
		if err != nil && w > 0 && w < len(buf) {
			// Never count half a telnet command (IAC IAC, IAC BRK) as
			// delivered on a dead connection: resend it whole.
			w = wholeCommands(buf, w)
		}

		p.mu.Lock()
		p.head += w
		if p.limit > 0 {
			p.limit -= w
		}
		p.bytesToVM.Add(int64(w)) // escaped bytes on the wire
		if p.head == len(p.q) {
			p.q, p.head = p.q[:0], 0
			if cap(p.q) > 64<<10 {
				// Keep it while data keeps coming: growing it again for
				// every chunk cost a busy port a quarter of its CPU.
				p.trimLaterLocked()
			}
		} else if p.head > cap(p.q)/2 && len(p.q)-p.head < 64<<10 {
			p.q = append(p.q[:0], p.q[p.head:]...)
			p.head = 0
		}
		p.broadcastLocked()
		p.mu.Unlock()
		if err != nil {
			p.writeFailed(c, err)
		}
	}
}

// barrierLocked steps the hand-over past its barrier and unlocks p.mu.
// It is a function of its own so that the writer's frame, which every
// short-lived writer goroutine starts with, stays small.
//
//go:noinline
func (p *Port) barrierLocked() {
	fx := p.stepLocked(event{kind: evBarrier})
	p.mu.Unlock()
	p.finish(fx, nil)
}

// writeFailed gives up on c after a failed write: the data stays queued,
// and c is closed, which its reader notices (it detaches the port).
func (p *Port) writeFailed(c *vmConn, err error) {
	p.mu.Lock()
	first := !c.wfailed
	if first {
		c.wfault = abnormalDrop(err) // the reader then ends on the close
	}
	p.failedLocked(c)
	queued := len(p.q) - p.head
	p.mu.Unlock()
	if first {
		p.logger().Info("write to VM failed; data stays queued for the next connection", "peer", addr(c), "err", err, "queued", queued)
	}
	c.nc.Close()
}

// trimLaterLocked gives a large, drained queue buffer back once the port
// has been quiet for a second: an idle port holds no large buffer.
// Caller holds p.mu.
func (p *Port) trimLaterLocked() {
	s := p.srv
	tm := p.timersLocked()
	if tm.trim != nil {
		if !tm.trim.Reset(time.Second) {
			s.wg.Add(1) // it had run (or been stopped): it will run again
		}
		return
	}
	s.wg.Add(1)
	tm.trim = time.AfterFunc(time.Second, func() {
		defer s.wg.Done()
		p.mu.Lock()
		if p.head == len(p.q) && !p.writing && cap(p.q) > 64<<10 {
			p.q, p.head = nil, 0
		}
		p.mu.Unlock()
	})
}

// wholeCommands returns the length of the longest prefix of buf[:w]
// that does not end inside a two-byte telnet command. The queue holds only
// escaped data (IAC IAC) and IAC BRK, so every IAC starts a pair.
func wholeCommands(buf []byte, w int) int {
	for i := 0; i < w; i++ {
		if buf[i] == byte(telnet.IAC) {
			if i+1 >= w {
				return i
			}
			i++
		}
	}
	return w
}

// drainedLocked wakes a Shutdown waiting for the queue to drain.
func (p *Port) drainedLocked() {
	if tm := p.tm; tm != nil && tm.flushed != nil && len(p.q) == p.head {
		close(tm.flushed)
		tm.flushed = nil
	}
}

// waitFlushed waits until the queue is written or ctx is done.
func (p *Port) waitFlushed(ctx context.Context) {
	p.mu.Lock()
	if p.closed || p.active == nil || len(p.q) == p.head || p.limit == 0 {
		p.mu.Unlock()
		return
	}
	tm := p.timersLocked()
	if tm.flushed == nil {
		tm.flushed = make(chan struct{})
	}
	ch := tm.flushed
	p.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
	}
}

// fromVM forwards data the VM sent on connection c to the backend.
func (p *Port) fromVM(c *vmConn, b []byte) error {
	if c.waitFor != nil {
		// After a hand-over the old connection's last bytes go first.
		t := time.NewTimer(p.srv.conf().DrainTimeout)
		select {
		case <-c.waitFor:
		case <-t.C:
		}
		t.Stop()
		c.waitFor = nil
	}
	for len(b) > 0 {
		n, err := p.backend.Write(b)
		p.bytesFromVM.Add(int64(n))
		if err != nil {
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			if closed {
				return errClose
			}
			return fmt.Errorf("vspc: backend write: %w", err)
		}
		b = b[n:]
	}
	return nil
}

// attachLocked makes c the port's active connection (first attach or a
// reconnect) and queues hello, WILL-PROXY and the replies before it, on
// its control lane: from here on only the port's writer writes to c, and
// whatever data was held for the VM follows WILL-PROXY. Caller holds p.mu.
func (p *Port) attachLocked(c *vmConn, hello []byte) {
	p.stopGraceLocked()
	p.active = c
	c.port.Store(p)
	c.role.Store(uint32(roleActive))
	p.controlLocked(c, hello)
}

// connGone is called by a connection's reader when it ends.
func (p *Port) connGone(c *vmConn, err error) {
	if connRole(c.role.Load()) == roleRetired {
		// Neither active nor a destination: a drop the hand-over ignores
		// (the table's "other drops"). The old source after COMPLETE ends
		// here, in the middle of the switch; it takes no lock.
		return
	}
	p.srv.mu.Lock()
	p.mu.Lock()
	active := p.active == c
	if active {
		p.active = nil
	}
	fx := p.stepLocked(event{kind: evDrop, conn: c, active: active})
	if d := p.srv.conf().Drops; d != nil && fx.grace && !p.srv.closing {
		// Under srv.mu, as every srv.wg.Go after Close began must not be.
		req, abnormal := p.req, !c.relayed && (abnormalDrop(err) || c.wfault)
		p.srv.wg.Go(func() { d.Dropped(req, abnormal) })
	}
	p.mu.Unlock()
	p.srv.mu.Unlock()
	fx.err = err
	p.finish(fx, nil)
}

// abnormalDrop reports whether err, the end of a VM connection's read or
// write, is a network fault: a reset (ECONNRESET, ECONNABORTED), a
// keepalive or retransmission timeout (ETIMEDOUT), or an unreachable host
// or network. Everything else is not: a clean close by the host (io.EOF:
// ESXi closes with a FIN when the VM powers off or its serial port is
// disconnected, and at the end of a vMotion's source), a close by this
// bridge (net.ErrClosed), a protocol error, and EPIPE, which Linux gives
// a write after the host's FIN too (the host then resets the
// connection), so it cannot tell a fault from a clean close.
func abnormalDrop(err error) bool {
	if err == nil {
		return false
	}
	for _, e := range [...]syscall.Errno{syscall.ECONNRESET, syscall.ECONNABORTED, syscall.ETIMEDOUT,
		syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.EHOSTDOWN, syscall.ENETDOWN} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// detachLocked starts the grace period of a port left without a
// connection, and reports whether it did. Caller holds srv.mu and p.mu.
func (p *Port) detachLocked() bool {
	if p.active != nil || p.hoLocked().state.inFlight() || p.closed {
		return false
	}
	s := p.srv
	p.stopGraceLocked()
	s.wg.Add(1)
	p.timersLocked().grace = time.AfterFunc(s.conf().GracePeriod, func() {
		defer s.wg.Done()
		s.mu.Lock()
		p.mu.Lock()
		expired := p.active == nil && !p.hoLocked().state.inFlight() && !p.closed
		p.mu.Unlock()
		if expired && s.ports[p.key] == p {
			delete(s.ports, p.key)
		}
		s.mu.Unlock()
		if expired {
			p.close("VM did not come back within the grace period")
		}
	})
	return true
}

// waitLocked waits on the port's condition (queue or control space, or
// the port closing). The sync.Cond is made by the first wait: most ports
// never wait, and a parked port keeps its Port for good (a Cond is 56
// bytes; issue 17). Caller holds p.mu.
func (p *Port) waitLocked() {
	if p.cond == nil {
		p.cond = sync.NewCond(&p.mu)
	}
	p.cond.Wait()
}

// broadcastLocked wakes whoever waits in waitLocked. Caller holds p.mu.
func (p *Port) broadcastLocked() {
	if p.cond != nil {
		p.cond.Broadcast()
	}
}

// stopGraceLocked stops the grace period, if one runs. Caller holds p.mu.
func (p *Port) stopGraceLocked() {
	if p.tm != nil {
		p.stopTimerLocked(&p.tm.grace)
	}
}

// stopTimerLocked stops *t, if set, and clears it. A timer stopped before
// it ran will not run: its share of srv.wg is given back here.
func (p *Port) stopTimerLocked(t **time.Timer) {
	if *t != nil && (*t).Stop() {
		p.srv.wg.Done()
	}
	*t = nil
}

// Close ends the port for good, logging reason ("route removed from the
// config"): its VM connection is closed, a pending vMotion hand-over is
// abandoned (recorded as failed), its backend is closed, and the port is
// forgotten, so that the VM's next DO-PROXY opens a new port through the
// Bridger with the configuration then in force. Data still queued for the
// VM is dropped (and counted in the "port closed" log line). Safe from any
// goroutine that holds no lock; idempotent.
func (p *Port) Close(reason string) {
	p.srv.mu.Lock()
	if p.srv.ports[p.key] == p {
		delete(p.srv.ports, p.key)
	}
	p.srv.mu.Unlock()
	p.close(reason)
}

// close shuts the port and its backend once. Safe from any goroutine
// holding no lock.
func (p *Port) close(reason string) {
	s := p.srv
	s.mu.Lock()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		s.mu.Unlock()
		return
	}
	p.closed = true
	p.done.fire(p.srv.closedCh)
	fx := p.stepLocked(event{kind: evClose})
	if tm := p.tm; tm != nil {
		p.stopTimerLocked(&tm.grace)
		p.stopTimerLocked(&tm.trim)
	}
	active := p.active
	lost := len(p.q) - p.head
	p.ctl = nil
	p.broadcastLocked()
	if tm := p.tm; tm != nil && tm.flushed != nil {
		close(tm.flushed)
		tm.flushed = nil
	}
	p.mu.Unlock()
	s.mu.Unlock()
	p.finish(fx, nil)
	if active != nil {
		active.nc.Close()
	}
	level := slog.LevelInfo
	if lost > 0 {
		level = slog.LevelWarn
	}
	p.logger().Log(context.Background(), level, "port closed", "reason", reason, "undelivered", lost)
	if err := p.backend.Close(); err != nil {
		p.logger().Debug("closing backend", "err", err)
	}
}

// logger returns the server's logger with this port's identity, built on
// demand so that an idle port holds none.
func (p *Port) logger() *slog.Logger {
	return lazylog.With(p.srv.log, "vm", p.vmName, "vc_uuid", p.keyUUID(), "service_uri", p.key.Service)
}

// keyUUID is the VC UUID the port is keyed by ("" when the VM sent none).
func (p *Port) keyUUID() string {
	if strings.HasPrefix(p.key.VM, "name:") || strings.HasPrefix(p.key.VM, "anon:") {
		return ""
	}
	return p.key.VM
}
