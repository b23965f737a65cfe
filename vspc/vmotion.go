package vspc

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"time"
)

// This file carries out the hand-over that handover.go decides: the
// connection readers turn option-232 messages into events, the Port feeds
// them to handover.on under its lock and executes the actions, and the
// server keeps the table PEER finds a hand-over in.

// secretLen is the size of a GOAHEAD secret (crypto/rand).
const secretLen = 16

// pendingPeer is a hand-over waiting for its destination, in the server's
// table: registered at BEGIN, forgotten when the hand-over ends. It has
// its own copy of what PEER is checked against, guarded by srv.mu.
type pendingPeer struct {
	port   *Port
	secret []byte
}

// registerLocked enters a hand-over of p in the table. Caller holds s.mu.
func (s *Server) registerLocked(seq, secret []byte, p *Port) {
	s.handovers[string(seq)] = append(s.handovers[string(seq)], pendingPeer{port: p, secret: secret})
	s.seqLens[len(seq)]++
}

// forgetLocked removes p's hand-over with seq from the table. Caller holds
// s.mu.
func (s *Server) forgetLocked(seq []byte, p *Port) {
	list := s.handovers[string(seq)]
	for i, x := range list {
		if x.port != p {
			continue
		}
		list = append(list[:i], list[i+1:]...)
		if len(list) == 0 {
			delete(s.handovers, string(seq))
		} else {
			s.handovers[string(seq)] = list
		}
		if s.seqLens[len(seq)]--; s.seqLens[len(seq)] <= 0 {
			delete(s.seqLens, len(seq))
		}
		return
	}
}

// lookupPeerLocked finds the port whose pending hand-over payload
// (seq||secret) names. ok reports that the secret matched (compared in
// constant time); a port with ok false is one whose sequence matched
// alone. Caller holds s.mu.
func (s *Server) lookupPeerLocked(payload []byte) (p *Port, ok bool) {
	for l := range s.seqLens {
		if l >= len(payload) {
			continue
		}
		for _, cand := range s.handovers[string(payload[:l])] {
			if subtle.ConstantTimeCompare(payload[l:], cand.secret) == 1 {
				return cand.port, true
			}
			p = cand.port
		}
	}
	return p, false
}

// effects is what a transition leaves to do once the locks are released.
type effects struct {
	note   note
	prev   handover // the hand-over before the transition
	ev     event
	close  []*vmConn // connections to close
	drain  *vmConn   // the old connection after COMPLETE: read its last bytes, then it ends
	refuse bool      // close ev.conn, a PEER we do not take, without a word
	peerOK []byte    // ev.conn joined as the destination: its reader answers PEER-OK with this seq
	grace  bool      // the grace period started
	queued int       // bytes queued for the VM at the transition
	began  time.Time // when the hand-over's BEGIN came
	err    error     // why the connection ended (drop)
}

// step feeds ev to the hand-over with the locks it needs, then runs the
// effects (see finish for from).
func (p *Port) step(ev event, from *vmConn) effects {
	p.srv.mu.Lock()
	p.mu.Lock()
	fx := p.stepLocked(ev)
	p.mu.Unlock()
	p.srv.mu.Unlock()
	p.finish(fx, from)
	return fx
}

// stepLocked feeds ev to the port's hand-over and carries out the actions
// that need the locks. Caller holds p.mu, and srv.mu for every event but
// the barrier (whose actions touch only the port). The caller runs the
// returned effects (finish) once it has unlocked.
func (p *Port) stepLocked(ev event) effects {
	s := p.srv
	if ev.kind == evBegin {
		ev.active = p.active == ev.conn
		ev.queued = len(p.q) - p.head
	}
	prev := p.hoLocked()
	next, acts, n := prev.on(ev)
	if p.hand == nil && (next.state != hoIdle || next.gen != 0) {
		p.hand = &handing{}
	}
	h := p.hand // nil only while no hand-over ever began: no action below needs it then
	if h != nil {
		h.ho = next
	}
	fx := effects{note: n, prev: prev, ev: ev, queued: len(p.q) - p.head}
	for _, a := range acts {
		switch a.kind {
		case doNotNow:
			s.counters.VMotionsNotNow++
			p.controlLocked(a.conn, AppendExt(nil, VMotionNotNow, a.seq))
		case doRegister:
			s.registerLocked(a.seq, a.secret, p)
			h.begun, h.held = time.Now(), 0
		case doHold:
			p.limit = a.n
		case doGoahead:
			h.held = len(p.q) - p.head
			p.controlLocked(a.conn, AppendExt(nil, VMotionGoahead, a.seq, a.secret))
		case doArm:
			p.armLocked(a.timeout, next.gen)
		case doJoin:
			// Runs on a.conn's reader (PEER came on it), which wrote its
			// own replies so far; from here on the writer writes to it.
			// The reader answers PEER-OK through the control lane, in one
			// write with the GET-VM-* queries that follow it.
			a.conn.port.Store(p)
			a.conn.role.Store(uint32(roleDest))
			fx.peerOK = a.seq
		case doRefuse:
			fx.refuse = true
		case doSwitch:
			// Runs on a.conn's reader (COMPLETE came on it).
			old := p.active
			p.active = a.conn
			a.conn.role.Store(uint32(roleActive))
			if old != nil && old != a.conn {
				old.role.Store(uint32(roleRetired))
				a.conn.waitFor = old.done.wait()
				fx.drain = old
			}
			h.completed++
		case doCloseConn:
			fx.close = append(fx.close, a.conn)
		case doEnd:
			p.endLocked(prev, a.result)
		case doGrace:
			fx.grace = p.detachLocked()
		}
	}
	if h != nil {
		fx.began = h.begun
	}
	if n == notePeerBadSecret {
		s.counters.VMotionsBadSecret++
		s.counters.HandshakeFailures++
		s.counters.HandshakeBadPeer++
	}
	return fx
}

// endLocked closes the books on hand-over h: its secret is forgotten, its
// timeout stopped, the data held for it released, its outcome recorded.
// Caller holds srv.mu and p.mu.
func (p *Port) endLocked(h handover, r result) {
	s := p.srv
	s.forgetLocked(h.seq, p)
	// A bridge shutting down leaves its hand-overs' records to the
	// cluster: another bridge finishes them.
	if ho := s.conf().HandOvers; ho != nil && len(h.secret) > 0 && !s.closing {
		payload := append(append([]byte(nil), h.seq...), h.secret...)
		key := p.key
		s.wg.Go(func() { ho.End(key, payload) })
	}
	clear(h.secret)
	p.stopTimerLocked(&p.hand.timer)
	p.limit = -1
	switch r {
	case resCompleted:
		s.counters.VMotionsCompleted++
	case resAborted:
		s.counters.VMotionsAborted++
	case resTimedOut:
		s.counters.VMotionsTimedOut++
	}
	if o := r.outcome(); o != "" {
		p.hand.last = &HandOver{Outcome: o, From: addr(h.src), To: addr(h.dst), At: time.Now(), Duration: time.Since(p.hand.begun), Buffered: p.hand.held}
	}
	p.kickLocked()
}

// armLocked (re)starts the hand-over's timeout; when it fires it is an
// event carrying gen. The timer is counted in srv.wg until it has run or
// been stopped. Caller holds p.mu.
func (p *Port) armLocked(k timeoutKind, gen uint32) {
	s := p.srv
	p.stopTimerLocked(&p.hand.timer)
	s.wg.Add(1)
	p.hand.timer = time.AfterFunc(k.duration(s.conf()), func() {
		defer s.wg.Done()
		p.step(event{kind: evTimeout, gen: gen}, nil)
	})
}

// finish runs a transition's effects: it closes connections and logs what
// happened. It runs with no lock held, on the goroutine of the event; from
// is the connection whose reader that is, when it is one (its logger then
// names the connection too), else nil.
func (p *Port) finish(fx effects, from *vmConn) {
	for _, c := range fx.close {
		c.nc.Close()
	}
	if fx.drain != nil {
		// Let the source's last bytes arrive (it closes at this instant),
		// then close it; its reader forwards them before the new ones.
		fx.drain.nc.SetReadDeadline(time.Now().Add(p.srv.conf().DrainTimeout))
	}
	if fx.note == noteNone && !fx.grace || !p.logs(fx.note) {
		return // nothing to say, or nobody listening: build no logger, format nothing
	}
	log := p.logger()
	if from != nil {
		log = from.logger()
	}
	h, ev := fx.prev, fx.ev
	seq := func(b []byte) string { return hex.EncodeToString(b) }
	cfg := p.srv.conf()
	switch fx.note {
	case noteBegin:
		log.Info("VMOTION-BEGIN", "seq", seq(ev.seq), "src", addr(ev.conn), "to_flush", ev.queued)
		if ev.queued == 0 {
			log.Info("VMOTION-GOAHEAD sent; holding data for the VM", "seq", seq(ev.seq), "flush_time", time.Duration(0))
		}
	case noteBeginBusy:
		log.Info("VMOTION-BEGIN answered VMOTION-NOTNOW", "reason", "a hand-over is already in flight for this VM", "seq", seq(ev.seq))
	case noteBeginNotActive:
		log.Info("VMOTION-BEGIN answered VMOTION-NOTNOW", "reason", "connection is not the VM's active connection", "seq", seq(ev.seq))
	case noteGoahead:
		log.Info("VMOTION-GOAHEAD sent; holding data for the VM", "seq", seq(h.seq),
			"flush_time", time.Since(fx.began).Round(time.Microsecond))
	case notePeerOK:
		log.Info("VMOTION-PEER accepted: PEER-OK", "seq", seq(h.seq), "src", addr(h.src))
	case notePeerBadSecret:
		log.Warn("SECURITY: VMOTION-PEER with a wrong secret; closing the new connection, the VM's session is untouched",
			"security", true, "new_peer", addr(ev.conn), "len", ev.size,
			"vm", p.Request().VMName, "vm_peer", addr(h.src), "seq", seq(h.seq))
	case notePeerNotWaiting:
		log.Warn("VMOTION-PEER for a hand-over that is not waiting for a peer; closing", "busy", h.dst != nil)
	case noteComplete:
		log.Info("vMotion complete: traffic moved to the new connection",
			"src", addr(h.src), "dst", addr(ev.conn), "duration", time.Since(fx.began).Round(time.Millisecond), "buffered", fx.queued,
			"seq", seq(ev.seq))
	case noteCompleteMismatch:
		log.Warn("VMOTION-COMPLETE with a sequence that does not match; ignored", "seq", seq(ev.seq))
	case noteAbort:
		log.Info("VMOTION-ABORT: resuming on the source connection", "buffered", fx.queued, "seq", seq(h.seq))
	case noteAbortIgnored:
		log.Info("VMOTION-ABORT without a hand-over in flight ignored")
	case noteSrcDroppedFlushing:
		log.Warn("VM connection dropped during VMOTION-BEGIN; hand-over abandoned", "err", fx.err)
	case noteSrcClosed:
		log.Info("vMotion source connection closed; waiting for VMOTION-COMPLETE on the destination", "queued", fx.queued)
	case noteDstDropped:
		log.Warn("vMotion destination connection dropped before VMOTION-COMPLETE; waiting for the VM", "dst", addr(ev.conn), "err", fx.err)
	case noteDoProxyEnds:
		log.Info("DO-PROXY during a vMotion hand-over: hand-over failed, the new connection takes the port", "seq", seq(h.seq))
	case noteFlushTimeout:
		log.Warn("data for the VM could not be flushed in time; VMOTION-NOTNOW", "flush_timeout", cfg.FlushTimeout, "seq", seq(h.seq))
	case notePeerTimeout:
		log.Warn("no VMOTION-PEER within the peer timeout; hand-over abandoned", "peer_timeout", cfg.PeerTimeout, "seq", seq(h.seq))
	case noteCompleteTimeout:
		log.Warn("no VMOTION-COMPLETE within the complete timeout; dropping the destination connection", "complete_timeout", cfg.CompleteTimeout)
	case noteClosedInFlight:
		log.Info("vMotion hand-over abandoned: the port closed", "seq", seq(h.seq), "held", fx.queued)
	}
	if fx.grace {
		log.Info("VM connection lost; keeping its port and remote for the grace period", "grace_period", cfg.GracePeriod, "err", fx.err, "queued", fx.queued)
	}
}

// logs reports whether the server's logger takes n's record (Warn for
// the notes that warn, Info for the rest).
func (p *Port) logs(n note) bool {
	level := slog.LevelInfo
	switch n {
	case notePeerBadSecret, notePeerNotWaiting, noteCompleteMismatch, noteSrcDroppedFlushing,
		noteDstDropped, noteFlushTimeout, notePeerTimeout, noteCompleteTimeout:
		level = slog.LevelWarn
	}
	return p.srv.log.Enabled(context.Background(), level)
}

func addr(c *vmConn) string {
	if c == nil {
		return ""
	}
	return c.nc.RemoteAddr().String()
}

// vmotionBegin handles VMOTION-BEGIN seq. The refusals that do not depend
// on the port's hand-over are answered here; the rest is the table's.
func (c *vmConn) vmotionBegin(seq []byte) error {
	p := c.port.Load()
	notnow := func(why string) error {
		c.logger().Info("VMOTION-BEGIN answered VMOTION-NOTNOW", "reason", why, "seq", hex.EncodeToString(seq))
		c.srv.count(func(k *Counters) { k.VMotionsNotNow++ })
		c.out = AppendExt(c.out, VMotionNotNow, seq)
		return nil
	}
	switch {
	case len(seq) == 0:
		return notnow("BEGIN carries no sequence")
	case p == nil || connRole(c.role.Load()) != roleActive:
		return notnow("connection carries no proxied port")
	case c.srv.conf().VMotionDisabled:
		return notnow("vMotion disabled by policy ([vmotion] enabled = false)")
	case c.srv.isClosing():
		return notnow("bridge shutting down")
	}
	secret := make([]byte, secretLen)
	if _, err := io.ReadFull(c.srv.conf().Rand, secret); err != nil {
		c.logger().Error("cannot generate a vMotion secret; answering NOTNOW", "err", err)
		c.srv.count(func(k *Counters) { k.VMotionsNotNow++ })
		c.out = AppendExt(c.out, VMotionNotNow, seq)
		return nil
	}
	if ho := c.srv.conf().HandOvers; ho != nil {
		if err := ho.Begin(p.key, p.Request(), append(append([]byte(nil), seq...), secret...), len(seq)); err != nil {
			return notnow(err.Error())
		}
	}
	c.flush() // replies so far go ahead of NOTNOW or GOAHEAD
	p.step(event{kind: evBegin, conn: c, seq: append([]byte(nil), seq...), secret: secret}, c)
	return nil
}

// vmotionPeer handles VMOTION-PEER seq||secret on a new connection from
// the destination host (instead of DO-PROXY).
func (c *vmConn) vmotionPeer(payload []byte) error {
	if c.port.Load() != nil || c.req != nil {
		c.logger().Warn("VMOTION-PEER on a connection that already carries a port; closing", "vm", c.ident.name)
		return c.refuseQuietly()
	}
	// What this reader has to say so far, it writes itself: once the
	// connection joins the port, only the port's writer does.
	if err := c.flush(); err != nil {
		return err
	}
	s := c.srv
	s.mu.Lock()
	p, ok := s.lookupPeerLocked(payload)
	if p == nil && s.conf().HandOvers != nil && !c.relayed {
		s.mu.Unlock()
		if done, err := c.takeOver(payload); done {
			return err
		}
		s.mu.Lock()
		p, ok = s.lookupPeerLocked(payload)
	}
	if p == nil {
		s.counters.VMotionsBadSecret++
		s.counters.HandshakeFailures++
		s.counters.HandshakeBadPeer++
		s.mu.Unlock()
		c.logger().Warn("SECURITY: VMOTION-PEER with an unknown sequence; closing the new connection",
			"security", true, "new_peer", c.nc.RemoteAddr().String(), "len", len(payload))
		return c.refuseQuietly()
	}
	p.mu.Lock()
	fx := p.stepLocked(event{kind: evPeer, conn: c, ok: ok, size: len(payload)})
	p.mu.Unlock()
	s.mu.Unlock()
	p.finish(fx, c)
	if fx.refuse {
		return c.refuseQuietly()
	}
	c.hsBy = 0
	c.setDeadline()
	c.out = AppendExt(c.out, VMotionPeerOK, fx.peerOK) // c.out is empty: flushed above
	c.askIdentity()
	return nil
}

// refuseQuietly closes a connection without WONT-PROXY (bad PEER).
func (c *vmConn) refuseQuietly() error {
	c.role.Store(uint32(roleRefused))
	c.flush()
	return errClose
}

// vmotionComplete handles VMOTION-COMPLETE seq on the destination.
func (c *vmConn) vmotionComplete(seq []byte) error {
	p := c.port.Load()
	if r := c.cl.Load(); p != nil && r != nil && r.tookOver != nil && bytes.Equal(seq, r.tookOver) {
		r.tookOver = nil // the port was this connection's since PEER-OK
		c.logger().Info("VMOTION-COMPLETE of a hand-over taken over from another bridge", "seq", hex.EncodeToString(seq))
		return nil
	}
	if p == nil || connRole(c.role.Load()) != roleDest {
		c.logger().Warn("VMOTION-COMPLETE without an accepted VMOTION-PEER ignored", "seq", hex.EncodeToString(seq))
		return nil
	}
	c.flush()
	fx := p.step(event{kind: evComplete, conn: c, seq: seq}, c)
	if fx.note == noteComplete && len(c.pending()) > 0 {
		// Data the destination sent before COMPLETE (ESXi sends none):
		// after the source's last bytes, before anything newer.
		return p.fromVM(c, c.takePending())
	}
	return nil
}

// vmotionAbort handles VMOTION-ABORT on the source.
func (c *vmConn) vmotionAbort() error {
	p := c.port.Load()
	if p == nil {
		return nil
	}
	c.flush()
	p.step(event{kind: evAbort, conn: c}, c)
	return nil
}

// takeOver asks the cluster about a VMOTION-PEER this server has no
// hand-over for. Another bridge has it: the connection is carried there
// (errForward). The bridge that began it is gone: the port is claimed for
// this bridge, the connection gets PEER-OK and becomes the port's active
// connection (the COMPLETE that follows finds nothing left to do). done is
// false when nobody has the hand-over: the caller refuses the PEER as
// unknown.
func (c *vmConn) takeOver(payload []byte) (done bool, err error) {
	res, err := c.srv.conf().HandOvers.TakeOver(c.srv.ctx, c.handoff(HandoffPeer, payload))
	switch {
	case errors.Is(err, ErrNoHandOver):
		return false, nil
	case err != nil:
		c.logger().Warn("VMOTION-PEER of another bridge's hand-over could not be carried there nor taken over; closing (the vMotion fails, the VM stays on its source host)", "err", err)
		return true, c.refuseQuietly()
	case res.Conn != nil:
		c.rare().fwdConn = res.Conn
		c.logger().Info("VMOTION-PEER of a hand-over another bridge holds: connection carried there")
		return true, errForward
	}
	seqLen := res.SeqLen
	if seqLen <= 0 || seqLen >= len(payload) {
		return false, nil
	}
	req := res.Req
	req.Peer = c.nc.RemoteAddr()
	c.out = AppendExt(c.out, VMotionPeerOK, payload[:seqLen]) // c.out is empty: flushed
	c.askIdentity()
	hello := c.out
	p, _, err := c.srv.attach(c, req, hello)
	if err != nil {
		c.out = nil
		c.logger().Warn("VMOTION-PEER of a gone bridge's hand-over: the port cannot be opened here; closing", "reason", err.Error())
		return true, c.refuseQuietly()
	}
	c.out = nil // the port's now
	c.rare().tookOver = append([]byte(nil), payload[:seqLen]...)
	c.hsBy = 0
	c.setDeadline()
	c.srv.count(func(k *Counters) { k.VMotionsCompleted++ })
	p.logger().Info("VMOTION-PEER of a hand-over another bridge began and could not finish: taken over, PEER-OK", "peer", c.nc.RemoteAddr().String())
	return true, nil
}
