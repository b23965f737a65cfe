package vspc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/vspc-bridge/vspc-bridge/internal/lazylog"
	"github.com/vspc-bridge/vspc-bridge/internal/park"
	"github.com/vspc-bridge/vspc-bridge/internal/vcuuid"
	"github.com/vspc-bridge/vspc-bridge/telnet"
)

// connRole is what a VM connection turned out to be.
type connRole uint8

const (
	roleHandshake connRole = iota // negotiating; no port yet
	roleActive                    // carries a port's traffic (DO-PROXY accepted)
	roleDest                      // vMotion destination: PEER-OK sent, waiting for COMPLETE
	roleRetired                   // old connection after COMPLETE: drained, then closed
	roleRefused                   // WONT-PROXY sent or bad PEER: closing
	roleForwarded                 // carried to the bridge that serves its port (forward.go): bytes relayed as they are
)

// offerHold is how long our opening offers wait for the VM's first bytes
// (ESXi sends them within a millisecond of connecting).
const offerHold = 20 * time.Millisecond

// maxPending bounds data a VM sends before its port is attached.
const maxPending = 64 << 10

// vmConn is one telnet connection from an ESXi host. Its reader goroutine
// (run) owns every field not marked otherwise. Until the connection joins a
// port, the reader also writes to it (its handshake replies); from then on
// the port's writer is the only goroutine that does, and the reader's
// replies go to the port's control lane (flush).
type vmConn struct {
	srv *Server
	nc  net.Conn

	dec  telnet.Decoder
	opts telnet.Options
	out  []byte // replies collected while decoding; flushed after each read

	vmKnown string // the VM's KNOWN-SUBOPTIONS-1, one byte a suboption (when known is set)
	req     *ProxyRequest
	ident   identity
	// The handshake's timers, as monoTime (8 bytes where a time.Time
	// takes 24, so that a vmConn fits in the 416-byte size class: a parked
	// port keeps it; issue 17).
	identBy monoTime        // identification deadline; zero when not waiting
	offerBy monoTime        // opening offers held until the VM speaks or this; zero once sent
	hsBy    monoTime        // handshake deadline; zero once trusted
	waitFor <-chan struct{} // after COMPLETE: the old connection's reader must finish first (set by the hand-over's switch, on this reader)
	idle    park.Idle       // when the connection counts as idle (its Period is 0 when it never parks)

	done doneSignal // fired when the connection has ended (finish)

	// Shared with other goroutines (timers, the port's writer, vMotion
	// peers), hence atomic:
	port   atomic.Pointer[Port] // set once the connection carries a port (joins it)
	role   atomic.Uint32        // a connRole
	binOut atomic.Bool          // we send BINARY (escape only IAC); read by Port.Send

	// The flags sit together, beside binOut, so that a vmConn stays
	// within 416 bytes (a parked port keeps it; issue 17).
	wfailed bool   // guarded by the port's mu: a write failed; the writer skips this connection
	wfault  bool   // guarded by the port's mu: that write failed on a network fault (abnormalDrop)
	ksSent  bool   // KNOWN-SUBOPTIONS-2 sent since option 232 was enabled
	asked   askSet // GET-VM-* we sent and still wait for (before deciding)
	// owned: the reader may hand over to a fresh goroutine (not
	// ServeConn's caller); respawn: it should, once the handshake is done.
	owned, respawn bool
	relayed        bool // handed over by another bridge (ServeHandoff): never handed on again
	known          bool // the VM listed its suboptions (vmKnown): a KNOWN-SUBOPTIONS-1 that named any

	// cl is what few connections use: a cluster's hand-offs, VM data
	// before the port. Made on first use, on the reader; atomic because
	// status reads via from other goroutines.
	cl atomic.Pointer[connRare]
}

// connRare is the part of a vmConn that only some connections use (a
// cluster's hand-offs, a VM that sends data before its port is
// attached), kept apart so that the common connection stays small.
type connRare struct {
	tookOver []byte   // reader-owned: the sequence of another bridge's hand-over this connection took over (its COMPLETE is expected)
	via      string   // the bridge that relays it, when relayed (for status); set before the port exists
	fwdConn  net.Conn // reader-owned: the stream to the bridge that serves the port, once the connection is handed there
	pending  []byte   // reader-owned: VM data before the port is attached
}

// rare returns c.cl, made on first use (on the reader).
func (c *vmConn) rare() *connRare {
	if r := c.cl.Load(); r != nil {
		return r
	}
	r := new(connRare)
	c.cl.Store(r)
	return r
}

// via is the bridge that relays the connection, or "".
func (c *vmConn) via() string {
	if r := c.cl.Load(); r != nil {
		return r.via
	}
	return ""
}

// pending is the VM data held before the port is attached (reader).
func (c *vmConn) pending() []byte {
	if r := c.cl.Load(); r != nil {
		return r.pending
	}
	return nil
}

// takePending returns the VM data held before the port is attached and
// forgets it (reader).
func (c *vmConn) takePending() []byte {
	r := c.cl.Load()
	if r == nil {
		return nil
	}
	p := r.pending
	r.pending = nil
	return p
}

// monoTime is a point in time as nanoseconds after the server's epoch
// (on the monotonic clock, as a time.Time from time.Now compares), or
// zero when unset.
type monoTime int64

// IsZero reports whether m is unset.
func (m monoTime) IsZero() bool { return m == 0 }

// mono converts t (from time.Now, so after the epoch) to a monoTime.
func (s *Server) mono(t time.Time) monoTime {
	d := t.Sub(s.epoch)
	if d <= 0 {
		d = 1 // never zero: zero is unset
	}
	return monoTime(d)
}

// wall converts m, which must be set, back to a time.Time.
func (s *Server) wall(m monoTime) time.Time { return s.epoch.Add(time.Duration(m)) }

type identity struct {
	name, vcUUID, biosUUID, locUUID string
}

type askSet uint8

const (
	askVCUUID askSet = 1 << iota
	askName
	askBIOS
	askLocation
)

// newConn wraps nc for parking when parker is not nil (see serve).
func newConn(s *Server, nc net.Conn, parker *park.Parker) *vmConn {
	c := &vmConn{
		srv: s,
		nc:  nc,
	}
	if parker != nil && s.conf().ParkAfter > 0 {
		c.nc = parker.Wrap(nc, c.serve)
		c.idle.Period = s.conf().ParkAfter
	}
	c.dec.MaxSubnegotiation = s.conf().MaxSubnegotiation
	// What we agree to when the VM asks (RFC 1143 policy). Everything else
	// — AUTHENTICATION (37) included — gets DONT/WONT from the zero-value
	// null policy.
	c.opts.Accept(telnet.Remote, telnet.VMwareExt, true)
	c.opts.Accept(telnet.Remote, telnet.Binary, true)
	c.opts.Accept(telnet.Remote, telnet.SuppressGA, true)
	c.opts.Accept(telnet.Local, telnet.Binary, true)
	c.opts.Accept(telnet.Local, telnet.SuppressGA, true)
	c.opts.Accept(telnet.Local, telnet.Echo, true)
	c.opts.Accept(telnet.Remote, telnet.ComPort, true) // we are an RFC 2217 access server
	return c
}

// openingOffers is what a proxy sends first, in this order, as in VMware's
// capture (notes esxi-wire.md §4.1): WILL BINARY, WILL SGA, WILL ECHO,
// DO BINARY, DO SGA, DO VMWARE-TELNET-EXT.
func (c *vmConn) openingOffers(dst []byte) []byte {
	dst = c.opts.Enable(dst, telnet.Local, telnet.Binary)
	dst = c.opts.Enable(dst, telnet.Local, telnet.SuppressGA)
	dst = c.opts.Enable(dst, telnet.Local, telnet.Echo)
	dst = c.opts.Enable(dst, telnet.Remote, telnet.Binary)
	dst = c.opts.Enable(dst, telnet.Remote, telnet.SuppressGA)
	dst = c.opts.Enable(dst, telnet.Remote, telnet.VMwareExt)
	return dst
}

// errClose ends a connection with a reason already logged.
var errClose = errors.New("vspc: connection closed by proxy")

// run serves a new connection: the TLS handshake for telnets, the
// opening offers, then the read loop (serve). It returns when the
// connection has ended, or when it parked (its wake runs serve again).
func (c *vmConn) run(ctx context.Context) {
	// ctx is the server's: Close cancels it and then closes every
	// connection in s.conns, which ends this read loop. No AfterFunc per
	// connection: on one shared context, each would take the parent's
	// mutex and grow its child map (1,000 VMs connecting at once queued
	// on that mutex and grew both the map and their stacks).

	c.hsBy = c.srv.mono(time.Now().Add(c.srv.conf().HandshakeTimeout))
	// telnets: finish TLS first, under the handshake timeout; the short
	// wait for the VM's first bytes below must not cut it short (a
	// tls.Conn that timed out in its handshake is unusable).
	if tc, ok := c.rawConn().(interface{ HandshakeContext(context.Context) error }); ok {
		c.nc.SetDeadline(c.srv.wall(c.hsBy))
		if err := tc.HandshakeContext(ctx); err != nil {
			c.logger().Info("TLS handshake with VM host failed", "err", err)
			timeout := errors.Is(err, os.ErrDeadlineExceeded)
			c.srv.count(func(k *Counters) {
				k.HandshakeFailures++
				if timeout {
					k.HandshakeTimeouts++
				} else {
					k.HandshakeLost++
				}
			})
			c.finish()
			return
		}
		c.nc.SetWriteDeadline(time.Time{})
	}
	now := time.Now()
	// ESXi speaks first (WILL AUTHENTICATION, then its offers, KNOWN-
	// SUBOPTIONS-1 and DO-PROXY; notes esxi-wire.md §4.1). Our offers wait
	// for those bytes, briefly, and leave in the same write as our
	// answers: one write and one round trip fewer per VM on both sides.
	// A peer that waits for us gets them after offerHold.
	c.out = c.openingOffers(c.out[:0])
	c.offerBy = c.srv.mono(now.Add(offerHold))
	c.serve()
}

// rawConn is the connection under the parking wrapper, if any.
func (c *vmConn) rawConn() net.Conn {
	if pc, ok := c.nc.(*park.Conn); ok {
		return pc.NetConn()
	}
	return c.nc
}

// deadlineOutcome is what onDeadline decided.
type deadlineOutcome uint8

const (
	readOn   deadlineOutcome = iota // go on reading
	stop                            // the connection has ended
	parked                          // the connection parked: its goroutine ends
	handedOn                        // the connection goes to another bridge (connRare.fwdConn): relay it
)

// serve is the read loop. It runs on the connection's goroutine from run,
// and again on a fresh goroutine each time a parked connection wakes up
// (package park): every state it needs lives in c, none on its stack, so
// a wake-up resumes exactly where the loop parked. It ends the connection
// (finish) unless it parked.
func (c *vmConn) serve() {
	ctx := c.srv.ctx
	c.setDeadline() // after a wake-up the old deadline is gone
	rb := readBuf{pool: &c.srv.bufs}
	defer rb.release()
	for {
		buf := rb.get()
		n, err := c.nc.Read(buf)
		if n > 0 {
			c.idle.Seen()
			k, derr := c.dec.DecodeN(buf[:n], c.handle)
			if errors.Is(derr, errForward) {
				// The host's bytes after the hand-off event go to the
				// bridge that serves the port, undecoded.
				rest := append([]byte(nil), buf[k:n]...)
				rb.release()
				c.handOn(rest)
				return
			}
			rb.used(n) // only now: used may hand buf back to the pool
			if derr != nil {
				c.flush()
				c.fail(derr)
				c.finish()
				return
			}
			if ferr := c.flush(); ferr != nil {
				c.ended(ferr)
				c.finish()
				return
			}
			if !c.offerBy.IsZero() {
				c.offerBy = 0
				c.setDeadline()
			}
			if c.respawn && err == nil {
				// The handshake's 8 KiB stack goes now, not when the
				// connection parks: it parks at once when it can (the
				// next byte starts a fresh goroutine), else the read
				// loop goes on on a fresh 2 KiB stack (notes
				// idle-memory.md §2.1, a3).
				c.respawn = false
				if !c.parkNow() {
					go c.serve()
				}
				return
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				c.ended(ctx.Err())
				c.finish()
				return
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				switch c.onDeadline() {
				case readOn:
					continue
				case parked:
					return
				case handedOn:
					rb.release()
					c.handOn(nil)
					return
				}
				c.finish()
				return
			}
			c.ended(err)
			c.finish()
			return
		}
	}
}

// finish ends the connection for good: it is closed, done is closed, and
// the server forgets it.
func (c *vmConn) finish() {
	c.nc.Close()
	c.done.fire(c.srv.closedCh)
	c.srv.connEnded(c)
}

// mayPark reports whether the connection may park now: it carries its
// port's traffic with no protocol timer running, no hand-over in
// progress, and nothing of its own waiting to be written or forwarded.
func (c *vmConn) mayPark() bool {
	if c.idle.Period <= 0 || !c.idle.Expired() {
		return false
	}
	return c.quiet()
}

// quiet is mayPark without the idle period: nothing the connection's
// reader waits for or owes.
func (c *vmConn) quiet() bool {
	if c.waitFor != nil {
		// After a hand-over: once the old connection's reader has
		// ended, nothing of it can overtake this one's data any more.
		select {
		case <-c.waitFor:
			c.waitFor = nil
		default:
			return false
		}
	}
	if !c.hsBy.IsZero() || !c.identBy.IsZero() || !c.offerBy.IsZero() || len(c.out) > 0 || len(c.pending()) > 0 {
		return false
	}
	if connRole(c.role.Load()) != roleActive {
		return false
	}
	p := c.port.Load()
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.active == c && !p.hoLocked().state.inFlight() && !p.closed
}

// park hands the idle connection to the Parker; it reports whether it
// did (then the goroutine must end).
func (c *vmConn) park() bool {
	pc, ok := c.nc.(*park.Conn)
	if !ok || !c.mayPark() {
		return false
	}
	c.out = nil // an idle connection holds no reply buffer
	return pc.Park() == nil
}

// parkNow parks the connection at once, with no idle period first. The
// reader calls it right after the handshake, where it would otherwise go
// on on a fresh goroutine that waits out a park period: in a burst of
// VMs connecting, every port then held a goroutine at once, and each
// left its g behind for good (480 bytes; notes idle-memory.md §2.1).
// Only a plain TCP connection parks so (park.Conn.ParkNow; a telnets
// one may hold decrypted bytes); it reports whether it did.
func (c *vmConn) parkNow() bool {
	pc, ok := c.nc.(*park.Conn)
	if !ok || c.idle.Period <= 0 || !c.quiet() {
		return false
	}
	out := c.out
	c.out = nil
	if pc.ParkNow() != nil {
		c.out = out
		return false
	}
	return true
}

// onDeadline handles a read deadline.
func (c *vmConn) onDeadline() deadlineOutcome {
	now := time.Now()
	if !c.offerBy.IsZero() && !now.Before(c.srv.wall(c.offerBy)) {
		c.offerBy = 0
		if err := c.flush(); err != nil {
			c.ended(err)
			return stop
		}
		c.setDeadline()
		return readOn
	}
	if !c.identBy.IsZero() && !now.Before(c.srv.wall(c.identBy)) {
		c.logger().Info("VM did not answer every identification query in time; deciding with what it sent",
			"identify_timeout", c.srv.conf().IdentifyTimeout, "vm", c.ident.name, "vc_uuid", c.ident.vcUUID)
		if err := c.decide(); err != nil {
			if errors.Is(err, errForward) {
				return handedOn
			}
			c.flush()
			return stop
		}
		if err := c.flush(); err != nil {
			c.ended(err)
			return stop
		}
		return readOn
	}
	if connRole(c.role.Load()) == roleRetired {
		c.ended(nil)
		return stop
	}
	if !c.hsBy.IsZero() && !now.Before(c.srv.wall(c.hsBy)) {
		what := "no DO-PROXY or VMOTION-PEER"
		if c.req != nil {
			what = "DO-PROXY not completed"
		}
		c.logger().Warn("handshake timeout: closing VM connection", "reason", what, "handshake_timeout", c.srv.conf().HandshakeTimeout)
		c.srv.count(func(k *Counters) { k.HandshakeFailures++; k.HandshakeTimeouts++ })
		c.ended(nil)
		return stop
	}
	// The idle period ended (or a deadline that no longer matters).
	if c.park() {
		return parked
	}
	c.setDeadline()
	return readOn
}

// setDeadline arms the read deadline for the nearest timer.
func (c *vmConn) setDeadline() {
	m := c.hsBy
	for _, t := range [...]monoTime{c.identBy, c.offerBy} {
		if t != 0 && (m == 0 || t < m) {
			m = t
		}
	}
	var d time.Time
	switch {
	case m != 0:
		d = c.srv.wall(m)
	case c.idle.Period > 0:
		// No protocol timer: the idle period, after which the
		// connection may park. One deadline per period, none per Read.
		d = c.idle.Start(time.Now())
	}
	c.nc.SetReadDeadline(d)
}

// flush sends the replies collected so far: on the port's control lane
// once the connection has joined a port, else by writing them itself.
func (c *vmConn) flush() error {
	if len(c.out) == 0 {
		return nil
	}
	if p := c.port.Load(); p != nil {
		p.control(c, c.out)
		c.out = nil
		return nil
	}
	_, err := c.nc.Write(c.out)
	c.out = c.out[:0]
	if cap(c.out) > 4096 {
		c.out = nil
	}
	return err
}

// fail logs a protocol error that ends the connection.
func (c *vmConn) fail(err error) {
	if errors.Is(err, errClose) {
		c.ended(nil)
		return
	}
	c.logger().Warn("closing VM connection: protocol error", "vm", c.ident.name, "vc_uuid", c.ident.vcUUID, "err", err)
	if c.port.Load() == nil {
		c.srv.count(func(k *Counters) { k.HandshakeFailures++; k.HandshakeErrors++ })
		c.role.Store(uint32(roleRefused)) // counted: not again as lost
	}
	c.ended(err)
}

// ended detaches the connection from its port, if any.
func (c *vmConn) ended(err error) {
	if opt, ok := c.dec.InSubnegotiation(); ok && err != nil {
		c.logger().Warn("VM connection ended inside a subnegotiation (truncated SB)", "option", opt.String(), "err", err)
	}
	if p := c.port.Load(); p != nil {
		p.connGone(c, err)
	} else if connRole(c.role.Load()) == roleHandshake && err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, context.Canceled) {
		c.logger().Debug("VM connection ended before the handshake completed", "err", err)
		c.srv.count(func(k *Counters) { k.HandshakeFailures++; k.HandshakeLost++ })
	}
}

// handle processes one decoded event. It runs on the reader goroutine.
func (c *vmConn) handle(ev telnet.Event) error {
	switch ev.Kind {
	case telnet.EventData:
		return c.data(ev.Data)
	case telnet.EventNegotiation:
		var ch *telnet.Change
		c.out, ch = c.opts.Receive(c.out, ev.Command, ev.Option)
		if ch != nil {
			c.optionChanged(*ch)
		}
	case telnet.EventSubnegotiation:
		switch ev.Option {
		case telnet.VMwareExt:
			return c.ext(ev.Data)
		case telnet.ComPort:
			p := c.port.Load()
			if p == nil || !c.opts.Enabled(telnet.Remote, telnet.ComPort) {
				c.logger().Info("COM-PORT-OPTION request before the port is set up or without WILL 44; ignored", "len", len(ev.Data))
				return nil
			}
			if err := c.flush(); err != nil {
				return err
			}
			c.out = append(c.out, p.comRequest(ev.Data)...)
		default:
			c.logger().Debug("ignoring subnegotiation of a refused option", "option", ev.Option.String(), "len", len(ev.Data))
		}
	case telnet.EventCommand:
		c.logger().Debug("telnet command from VM", "command", ev.Command.String())
	}
	return nil
}

func (c *vmConn) optionChanged(ch telnet.Change) {
	switch {
	case ch.Option == telnet.Binary && ch.Side == telnet.Remote:
		c.dec.Binary = ch.Enabled
	case ch.Option == telnet.Binary && ch.Side == telnet.Local:
		c.binOut.Store(ch.Enabled)
	case ch.Option == telnet.VMwareExt && ch.Side == telnet.Remote:
		if ch.Enabled {
			// Announce what we implement as soon as the extension is on
			// (as VMware's proxy does); KNOWN-SUBOPTIONS-1 is then answered.
			c.ksSent = true
			c.out = AppendKnownSuboptions2(c.out)
		} else {
			c.ksSent = false
			c.logger().Info("VM turned the VMware telnet extension off (WONT 232); data keeps flowing", "vm", c.ident.name)
		}
	}
}

// data handles bytes from the VM.
func (c *vmConn) data(p []byte) error {
	role, port := connRole(c.role.Load()), c.port.Load()
	switch role {
	case roleActive, roleRetired:
		if err := c.flush(); err != nil {
			return err
		}
		return port.fromVM(c, p)
	case roleRefused:
		return nil
	}
	r := c.rare()
	if len(r.pending)+len(p) > maxPending {
		c.logger().Warn("VM sent too much data before the proxy session was set up; closing", "limit", maxPending)
		return errClose
	}
	r.pending = append(r.pending, p...)
	return nil
}

// ext handles one VMWARE-TELNET-EXT subnegotiation.
func (c *vmConn) ext(payload []byte) error {
	m, err := ParseExt(payload)
	if err != nil {
		c.logger().Warn("empty VMWARE-TELNET-EXT subnegotiation ignored")
		return nil
	}
	switch m.Cmd {
	case KnownSuboptions1:
		// A string (16 bytes, no slice header of 24 and its array):
		// a parked port keeps it (issue 17). An empty list changes
		// nothing until the VM has named some.
		c.vmKnown = string(m.Payload)
		c.known = c.known || len(m.Payload) > 0
		if !c.ksSent {
			c.ksSent = true
			c.out = AppendKnownSuboptions2(c.out)
		}
	case UnknownSuboptionRcvd1:
		code := -1
		if len(m.Payload) > 0 {
			code = int(m.Payload[0])
		}
		c.logger().Warn("VM did not understand a suboption we sent", "code", code)
	case DoProxy:
		return c.doProxy(m.Payload)
	case VMVCUUID, VMName, VMBIOSUUID, VMLocationUUID:
		return c.identification(m.Cmd, m.Payload)
	case VMotionBegin:
		return c.vmotionBegin(m.Payload)
	case VMotionPeer:
		return c.vmotionPeer(m.Payload)
	case VMotionComplete:
		return c.vmotionComplete(m.Payload)
	case VMotionAbort:
		return c.vmotionAbort()
	default:
		// Unknown, or a proxy-to-VM message the VM has no business sending.
		c.logger().Info("unknown VMWARE-TELNET-EXT suboption; answering UNKNOWN-SUBOPTION-RCVD-2", "code", int(m.Cmd))
		c.out = AppendExt(c.out, UnknownSuboptionRcvd2, []byte{byte(m.Cmd)})
	}
	return nil
}

func (c *vmConn) vmKnows(s Subopt) bool {
	if !c.known {
		return s == GetVMVCUUID || s == GetVMName // what every ESXi answers
	}
	return strings.IndexByte(c.vmKnown, byte(s)) >= 0
}

// askIdentity sends the GET-VM-* queries the VM advertised and returns
// the set still awaited among those we decide on.
func (c *vmConn) askIdentity() askSet {
	var a askSet
	if c.vmKnows(GetVMVCUUID) {
		c.out = AppendExt(c.out, GetVMVCUUID)
		a |= askVCUUID
	}
	if c.vmKnows(GetVMName) {
		c.out = AppendExt(c.out, GetVMName)
		a |= askName
	}
	if c.vmKnows(GetVMBIOSUUID) {
		c.out = AppendExt(c.out, GetVMBIOSUUID)
	}
	if c.vmKnows(GetVMLocationUUID) {
		c.out = AppendExt(c.out, GetVMLocationUUID)
	}
	return a
}

func (c *vmConn) doProxy(payload []byte) error {
	if c.req != nil || c.port.Load() != nil {
		c.logger().Warn("repeated DO-PROXY ignored", "vm", c.ident.name)
		return nil
	}
	req, err := ParseDoProxy(payload)
	if err != nil {
		c.logger().Warn("malformed DO-PROXY: answering WONT-PROXY", "err", err, "payload", fmt.Sprintf("%q", payload))
		return c.refuse()
	}
	c.req = &req
	c.asked = c.askIdentity()
	if c.asked == 0 {
		return c.decide()
	}
	c.identBy = c.srv.mono(time.Now().Add(c.srv.conf().IdentifyTimeout))
	c.setDeadline()
	return nil
}

// refuse answers WONT-PROXY and closes the connection: a refused VM holds
// no resources.
func (c *vmConn) refuse() error {
	c.out = AppendExt(c.out, WontProxy)
	c.role.Store(uint32(roleRefused))
	c.srv.count(func(k *Counters) { k.Refused++ })
	c.flush()
	return errClose
}

func (c *vmConn) identification(cmd Subopt, p []byte) error {
	var field *string
	var bit askSet
	switch cmd {
	case VMVCUUID:
		field, bit = &c.ident.vcUUID, askVCUUID
	case VMName:
		field, bit = &c.ident.name, askName
	case VMBIOSUUID:
		field, bit = &c.ident.biosUUID, askBIOS
	case VMLocationUUID:
		field, bit = &c.ident.locUUID, askLocation
	}
	v, err := identValue(cmd, p)
	if err != nil {
		c.logger().Warn("bad identification from VM ignored", "suboption", cmd.String(), "err", err)
	} else {
		*field = v
	}
	if port := c.port.Load(); port != nil {
		port.updateIdentity(c.ident)
		return nil
	}
	c.asked &^= bit
	if c.req != nil && !c.identBy.IsZero() && c.asked == 0 {
		return c.decide()
	}
	return nil
}

// identValue validates and normalises an identification answer.
func identValue(cmd Subopt, p []byte) (string, error) {
	if cmd == VMName {
		if !utf8.Valid(p) {
			return strings.ToValidUTF8(string(p), "\uFFFD"), fmt.Errorf("vspc: VM-NAME is not UTF-8")
		}
		return string(p), nil
	}
	u, err := vcuuid.Normalize(string(p))
	if err != nil {
		return "", fmt.Errorf("vspc: %v %q: %w", cmd, p, err)
	}
	return u, nil
}

// decide answers DO-PROXY once the VM is identified (or the wait is over).
func (c *vmConn) decide() error {
	c.identBy = 0
	req := Request{
		Direction:    c.req.Direction,
		ServiceURI:   c.req.ServiceURI,
		VMName:       c.ident.name,
		VCUUID:       c.ident.vcUUID,
		BIOSUUID:     c.ident.biosUUID,
		LocationUUID: c.ident.locUUID,
		Peer:         c.nc.RemoteAddr(),
	}
	if !c.srv.directionAllowed(req.Direction) {
		c.logger().Warn("refusing DO-PROXY: direction not allowed by [policy] directions")
		return c.refuse()
	}
	// WILL-PROXY, after the replies so far, is the first thing the port's
	// writer writes to c; whatever was held for the VM follows it.
	hello := AppendExt(c.out, WillProxy)
	p, reconnect, err := c.srv.attach(c, req, hello)
	if errors.Is(err, ErrElsewhere) {
		// Another bridge serves the port: the connection goes there,
		// which answers WILL-PROXY or WONT-PROXY itself.
		err = c.forward(err)
		if errors.Is(err, errForward) {
			c.logger().Info("VM serial port served by another bridge: connection carried there")
			return err
		}
		if errors.Is(err, ErrServeHere) {
			p, reconnect, err = c.srv.attach(c, req, hello)
		}
	}
	if err != nil {
		c.logger().Warn("refusing DO-PROXY: WONT-PROXY", "reason", err.Error())
		return c.refuse()
	}
	c.out = nil // the port's now
	// Trusted from here on: no handshake deadline, only keepalive.
	c.hsBy = 0
	// The handshake grew this goroutine's stack to 8 KiB (Bridge.Open,
	// the option dance), and a goroutine blocked in Read never shrinks
	// below what its deepest frames needed: serve goes on on a fresh one.
	c.respawn = c.owned
	c.setDeadline()
	switch {
	case !c.srv.log.Enabled(context.Background(), slog.LevelInfo):
		// Not logged: the connection's and port's loggers are not built
		// for it (about 500 bytes of garbage per VM in a storm, which
		// leaves the small size classes' spans partly used; issue 17).
	case reconnect:
		c.logger().Info("VM reconnected; re-attached to its port", "buffered", p.queued())
	default:
		c.logger().Info("VM attached: WILL-PROXY")
	}
	if pend := c.takePending(); len(pend) > 0 {
		return p.fromVM(c, pend)
	}
	return nil
}

// readBuf is an adaptive read buffer: an idle connection holds only a
// small buffer; one that fills it reads into a pooled large one.
type readBuf struct {
	pool  *sync.Pool // of *[]byte, 32 KiB each; owned by the Server
	small [512]byte
	big   *[]byte
	full  int // consecutive reads that filled the buffer
}

func (r *readBuf) get() []byte {
	if r.big != nil {
		return *r.big
	}
	return r.small[:]
}

func (r *readBuf) used(n int) {
	if r.big == nil {
		if n == len(r.small) {
			r.big = r.pool.Get().(*[]byte)
		}
		return
	}
	if n < len(r.small) {
		r.release()
	}
}

func (r *readBuf) release() {
	if r.big != nil {
		r.pool.Put(r.big)
		r.big = nil
	}
}

// logger returns the server's logger with this connection's context. It
// is built when something is logged, so an idle connection holds no
// logger. Call it on the connection's reader goroutine only.
func (c *vmConn) logger() *slog.Logger {
	if p := c.port.Load(); p != nil {
		return lazylog.With(p.logger(), "peer", c.nc.RemoteAddr().String())
	}
	args := make([]any, 0, 10)
	args = append(args, "peer", c.nc.RemoteAddr().String())
	if c.req != nil {
		args = append(args, "direction", c.req.Direction.String(), "service_uri", c.req.ServiceURI)
	}
	if c.ident.name != "" {
		args = append(args, "vm", c.ident.name)
	}
	if c.ident.vcUUID != "" {
		args = append(args, "vc_uuid", c.ident.vcUUID)
	}
	return lazylog.With(c.srv.log, args...)
}
