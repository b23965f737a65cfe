package vspc

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vspc-bridge/vspc-bridge/internal/lazylog"
	"github.com/vspc-bridge/vspc-bridge/rfc2217"
	"github.com/vspc-bridge/vspc-bridge/telnet"
)

// Port is one VM serial port: the long-lived join between a VM (through
// whichever connection currently carries it) and its Backend. It outlives
// connections: vMotion moves it to a new connection, a reconnect
// re-attaches it, and it waits a grace period for its VM when detached.
type Port struct {
	srv     *Server
	key     PortKey // immutable once published
	backend Backend // set before the port is published
	vmName  string  // as first identified; immutable (for logs)
	vcUUID  string  // as first identified ("" when the VM sent none); immutable (for logs)
	since   time.Time

	bytesToVM   atomic.Int64
	bytesFromVM atomic.Int64
	done        chan struct{} // closed by close

	comMu   sync.Mutex            // guards com and polling; held across device calls
	com     *rfc2217.AccessServer // RFC 2217 state toward the VM; nil until it negotiates
	polling bool                  // the modem-state poller runs

	mu       sync.Mutex // guards everything below
	cond     sync.Cond  // signalled when queue space frees or the port closes
	req      Request
	active   *vmConn // connection carrying data to and from the VM; nil when detached
	q        []byte  // telnet-escaped bytes queued for the VM
	head     int     // q[head:] is still to be written
	limit    int     // bytes of q[head:] the writer may write; -1 = all
	writing  bool    // a writer goroutine runs
	suspend  bool    // the VM sent FLOWCONTROL-SUSPEND (RFC 2217)
	closed   bool
	mig      *migration
	grace    *time.Timer
	vmotions int
	lastMig  *HandOver
	flushed  chan struct{} // closed when the queue drains; nil when nobody waits
	trim     *time.Timer   // drops a large drained queue buffer after a quiet second
}

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
		since:  time.Now(),
		done:   make(chan struct{}),
		vmName: req.VMName,
		vcUUID: req.VCUUID,
	}
	p.cond.L = &p.mu
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
	case p.mig != nil:
		st = "vmotion"
	case p.active == nil:
		st = "detached"
	}
	if p.active != nil {
		peer = p.active.nc.RemoteAddr().String()
	}
	var last *HandOver
	if p.lastMig != nil {
		h := *p.lastMig
		last = &h
	}
	return PortInfo{
		VMName: p.req.VMName, VCUUID: p.req.VCUUID, BIOSUUID: p.req.BIOSUUID, LocationUUID: p.req.LocationUUID,
		Direction: p.req.Direction.String(), ServiceURI: p.req.ServiceURI,
		Peer: peer, State: st, Since: p.since,
		BytesToVM: p.bytesToVM.Load(), BytesFromVM: p.bytesFromVM.Load(),
		Queued: len(p.q) - p.head, VMotions: p.vmotions, LastHandOver: last,
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
	defer p.mu.Unlock()
	if id.name != "" {
		p.req.VMName = id.name
	}
	if id.biosUUID != "" {
		p.req.BIOSUUID = id.biosUUID
	}
	if id.locUUID != "" {
		p.req.LocationUUID = id.locUUID
	}
	if id.vcUUID != "" && p.req.VCUUID != "" && id.vcUUID != p.req.VCUUID {
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
		p.cond.Wait()
	}
	if p.closed {
		return ErrPortClosed
	}
	if p.head > 0 && p.head == len(p.q) && !p.writing {
		p.q, p.head = p.q[:0], 0
	}
	if p.active != nil && !p.active.binOut {
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
		p.cond.Wait()
	}
	if p.closed {
		return ErrPortClosed
	}
	p.q = telnet.AppendCommand(p.q, telnet.BRK)
	p.kickLocked()
	return nil
}

// kickLocked starts the writer if there is something it may write.
func (p *Port) kickLocked() {
	if p.writing || p.closed || p.active == nil || p.active.willPending.Load() || p.writableLocked() == 0 {
		return
	}
	p.writing = true
	p.srv.wg.Add(1)
	go func() {
		defer p.srv.wg.Done()
		p.writer()
	}()
}

func (p *Port) writableLocked() int {
	if p.suspend {
		return 0
	}
	n := len(p.q) - p.head
	if p.limit >= 0 && p.limit < n {
		n = p.limit
	}
	return n
}

// writer writes queued data to the active connection until the queue is
// empty, a vMotion barrier is reached, or the connection fails. At most
// one writer runs per port (p.writing).
func (p *Port) writer() {
	const maxWrite = 256 << 10
	for {
		p.mu.Lock()
		n := p.writableLocked()
		c := p.active
		if n == 0 || c == nil || p.closed || c.willPending.Load() {
			p.writing = false
			m := p.barrierReachedLocked()
			p.drainedLocked()
			p.mu.Unlock()
			if m != nil {
				p.goahead(m)
			}
			return
		}
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
		p.cond.Broadcast()
		if err != nil {
			p.writing = false
			p.mu.Unlock()
			p.logger().Info("write to VM failed; data stays queued for the next connection", "peer", addr(c), "err", err, "queued", p.queued())
			c.nc.Close() // the reader notices and detaches the port
			return
		}
		p.mu.Unlock()
	}
}

// trimLaterLocked gives a large, drained queue buffer back once the port
// has been quiet for a second: an idle port holds no large buffer.
// Caller holds p.mu.
func (p *Port) trimLaterLocked() {
	if p.trim != nil {
		p.trim.Reset(time.Second)
		return
	}
	p.trim = time.AfterFunc(time.Second, func() {
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
	if p.flushed != nil && len(p.q) == p.head {
		close(p.flushed)
		p.flushed = nil
	}
}

// waitFlushed waits until the queue is written or ctx is done.
func (p *Port) waitFlushed(ctx context.Context) {
	p.mu.Lock()
	if p.closed || p.active == nil || len(p.q) == p.head || p.limit == 0 {
		p.mu.Unlock()
		return
	}
	if p.flushed == nil {
		p.flushed = make(chan struct{})
	}
	ch := p.flushed
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
		select {
		case <-c.waitFor:
		case <-time.After(p.srv.conf().DrainTimeout):
		}
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
// reconnect). Caller holds p.mu.
func (p *Port) attachLocked(c *vmConn) {
	if p.grace != nil {
		p.grace.Stop()
		p.grace = nil
	}
	c.willPending.Store(true) // decide kicks the writer after WILL-PROXY
	p.active = c
	c.port.Store(p)
	c.role.Store(uint32(roleActive))
}

// connGone is called by a connection's reader when it ends.
func (p *Port) connGone(c *vmConn, err error) {
	p.srv.mu.Lock()
	defer p.srv.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	m := p.mig
	switch {
	case connRole(c.role.Load()) == roleRetired:
		return
	case m != nil && m.dst == c:
		// Destination dropped before COMPLETE: wait for another PEER
		// (or ABORT on the source) until the peer timeout.
		p.logger().Warn("vMotion destination connection dropped before VMOTION-COMPLETE; waiting for the VM", "dst", c.nc.RemoteAddr().String(), "err", err)
		m.dst = nil
		m.state = migGoahead
		m.armLocked(p.srv.conf().PeerTimeout)
		return
	case p.active != c:
		return
	}
	p.active = nil
	if m != nil && m.src == c {
		if m.state == migFlushing {
			p.logger().Warn("VM connection dropped during VMOTION-BEGIN; hand-over abandoned", "err", err)
			p.endMigrationLocked(m, "failed")
		} else {
			// Normal: the source host lets go once the VM runs elsewhere.
			p.logger().Info("vMotion source connection closed; waiting for VMOTION-COMPLETE on the destination", "queued", len(p.q)-p.head)
			return
		}
	}
	p.detachLocked(err)
}

// detachLocked starts the grace period. Caller holds srv.mu and p.mu.
func (p *Port) detachLocked(err error) {
	if p.active != nil || p.mig != nil || p.closed {
		return
	}
	grace := p.srv.conf().GracePeriod
	p.logger().Info("VM connection lost; keeping its port and remote for the grace period", "grace_period", grace, "err", err, "queued", len(p.q)-p.head)
	if p.grace != nil {
		p.grace.Stop()
	}
	p.grace = time.AfterFunc(grace, func() {
		p.srv.mu.Lock()
		p.mu.Lock()
		expired := p.active == nil && p.mig == nil && !p.closed
		p.mu.Unlock()
		if expired {
			delete(p.srv.ports, p.key)
		}
		p.srv.mu.Unlock()
		if expired {
			p.close("VM did not come back within the grace period")
		}
	})
}

// Close ends the port for good, logging reason ("route removed from the
// config"): its VM connection is closed, a pending vMotion hand-over is
// abandoned, its backend is closed, and the port is forgotten, so that
// the VM's next DO-PROXY opens a new port through the Bridger with the
// configuration then in force. Data still queued for the VM is dropped
// (and counted in the "port closed" log line). Safe from any goroutine
// that holds no lock; idempotent.
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
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.done)
	if p.grace != nil {
		p.grace.Stop()
	}
	if p.trim != nil {
		p.trim.Stop()
	}
	m := p.mig
	active := p.active
	lost := len(p.q) - p.head
	p.cond.Broadcast()
	if p.flushed != nil {
		close(p.flushed)
		p.flushed = nil
	}
	p.mu.Unlock()
	if m != nil {
		m.stop()
		p.srv.forgetMigration(m)
		if m.dst != nil {
			m.dst.nc.Close()
		}
	}
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
	return lazylog.With(p.srv.log, "vm", p.vmName, "vc_uuid", p.vcUUID, "service_uri", p.key.Service)
}
