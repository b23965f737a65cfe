package vspc

import (
	"crypto/subtle"
	"encoding/hex"
	"io"
	"time"
)

// The vMotion hand-over (seed "vMotion and Persistent Serial Port
// Connections", table 2-5; traces in notes esxi-wire.md §4.2–4.3):
//
//	source conn                      proxy                         destination conn
//	VMOTION-BEGIN seq      ──►  migFlushing: stop new data for the VM,
//	                            write what was already accepted (barrier)
//	                  ◄──  VMOTION-GOAHEAD seq secret   (migGoahead: hold data)
//	(FIN, any time now)                                  ◄──  handshake, VMOTION-PEER seq secret
//	                            constant-time check  ──►  VMOTION-PEER-OK seq (migPeerOK)
//	                                                     ◄──  VMOTION-COMPLETE seq
//	                            switch: queue flushed to the destination in order,
//	                            the source drained for its last bytes, then closed.
//	VMOTION-ABORT          ──►  resume on the source, flush, forget the secret.

// secretLen is the size of a GOAHEAD secret (crypto/rand).
const secretLen = 16

type migState uint8

const (
	migFlushing migState = iota // BEGIN received; writing data accepted before it
	migGoahead                  // GOAHEAD sent; holding data; waiting for PEER
	migPeerOK                   // PEER-OK sent on dst; waiting for COMPLETE
)

// migration is one hand-over in progress. Its fields are guarded by the
// port's mu (and srv.mu for its place in srv.migs).
type migration struct {
	port   *Port
	seq    []byte
	secret []byte
	src    *vmConn
	dst    *vmConn
	state  migState
	begun  time.Time
	timer  *time.Timer // flush, peer or complete timeout, whichever applies
	queued int         // bytes held at GOAHEAD, for the log
}

func (m *migration) stop() {
	if m.timer != nil {
		m.timer.Stop()
	}
}

// armLocked (re)starts the migration's timeout. Caller holds port.mu.
func (m *migration) armLocked(d time.Duration) {
	m.stop()
	state := m.state
	m.timer = time.AfterFunc(d, func() { m.port.migTimeout(m, state) })
}

// vmotionBegin handles VMOTION-BEGIN seq on an active connection.
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
	if err := c.flush(); err != nil { // replies before anything the writer sends
		return err
	}
	p.mu.Lock()
	if p.mig != nil {
		p.mu.Unlock()
		return notnow("a hand-over is already in flight for this VM")
	}
	if p.active != c || p.closed {
		p.mu.Unlock()
		return notnow("connection is not the VM's active connection")
	}
	m := &migration{port: p, seq: append([]byte(nil), seq...), src: c, state: migFlushing, begun: time.Now()}
	p.mig = m
	// Barrier: what was accepted for the VM before BEGIN is written to the
	// old connection; anything later is held for the new one.
	p.limit = len(p.q) - p.head
	m.armLocked(c.srv.conf().FlushTimeout)
	var ready *migration
	if !p.writing {
		ready = p.barrierReachedLocked()
	}
	p.mu.Unlock()
	p.logger().Info("VMOTION-BEGIN", "seq", hex.EncodeToString(seq), "src", c.nc.RemoteAddr().String(), "to_flush", p.limitSnapshot())
	if ready != nil {
		p.goahead(ready)
	}
	return nil
}

func (p *Port) limitSnapshot() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.limit
}

// barrierReachedLocked reports a flushing migration whose barrier has been
// written, switching it to migGoahead. The caller sends GOAHEAD.
func (p *Port) barrierReachedLocked() *migration {
	m := p.mig
	if m == nil || m.state != migFlushing || p.limit != 0 {
		return nil
	}
	m.state = migGoahead
	m.stop()
	return m
}

// goahead generates the secret, registers the migration and sends
// VMOTION-GOAHEAD seq secret on the source connection.
func (p *Port) goahead(m *migration) {
	secret := make([]byte, secretLen)
	if _, err := io.ReadFull(p.srv.conf().Rand, secret); err != nil {
		p.logger().Error("cannot generate a vMotion secret; answering NOTNOW", "err", err)
		p.mu.Lock()
		p.endMigrationLocked(m, "")
		p.mu.Unlock()
		p.srv.count(func(k *Counters) { k.VMotionsNotNow++ })
		m.src.nc.Write(AppendExt(nil, VMotionNotNow, m.seq))
		return
	}
	p.srv.mu.Lock()
	p.mu.Lock()
	if p.mig != m || p.closed {
		p.mu.Unlock()
		p.srv.mu.Unlock()
		return
	}
	m.secret = secret
	m.queued = len(p.q) - p.head
	m.armLocked(p.srv.conf().PeerTimeout)
	p.srv.migs[string(m.seq)] = append(p.srv.migs[string(m.seq)], m)
	p.srv.seqLens[len(m.seq)]++
	p.mu.Unlock()
	p.srv.mu.Unlock()
	msg := AppendExt(nil, VMotionGoahead, m.seq, secret)
	if _, err := m.src.nc.Write(msg); err != nil {
		p.logger().Warn("writing VMOTION-GOAHEAD failed", "err", err)
		return
	}
	p.logger().Info("VMOTION-GOAHEAD sent; holding data for the VM", "seq", hex.EncodeToString(m.seq),
		"flush_time", time.Since(m.begun).Round(time.Microsecond))
}

// migTimeout fires when a migration stayed too long in state.
func (p *Port) migTimeout(m *migration, state migState) {
	p.srv.mu.Lock()
	p.mu.Lock()
	if p.mig != m || m.state != state || p.closed {
		p.mu.Unlock()
		p.srv.mu.Unlock()
		return
	}
	var notnow, closeDst *vmConn
	switch state {
	case migFlushing:
		p.logger().Warn("data for the VM could not be flushed in time; VMOTION-NOTNOW", "flush_timeout", p.srv.conf().FlushTimeout, "seq", hex.EncodeToString(m.seq))
		notnow = m.src
		p.srv.counters.VMotionsNotNow++
		p.endMigrationLocked(m, "")
	case migGoahead:
		p.logger().Warn("no VMOTION-PEER within the peer timeout; hand-over abandoned", "peer_timeout", p.srv.conf().PeerTimeout, "seq", hex.EncodeToString(m.seq))
		p.srv.counters.VMotionsTimedOut++
		p.forgetMigrationLocked(m)
		p.endMigrationLocked(m, "timed out")
		if p.active == nil {
			p.detachLocked(nil)
		}
	case migPeerOK:
		p.logger().Warn("no VMOTION-COMPLETE within the complete timeout; dropping the destination connection", "complete_timeout", p.srv.conf().CompleteTimeout)
		closeDst = m.dst
	}
	p.mu.Unlock()
	p.srv.mu.Unlock()
	if notnow != nil {
		notnow.nc.Write(AppendExt(nil, VMotionNotNow, m.seq))
	}
	if closeDst != nil {
		closeDst.nc.Close()
	}
}

// endMigrationLocked ends m and resumes normal forwarding on whatever
// connection is active. Caller holds p.mu (and srv.mu when m is registered).
func (p *Port) endMigrationLocked(m *migration, outcome string) {
	if p.mig != m {
		return
	}
	m.stop()
	p.mig = nil
	p.limit = -1
	clear(m.secret)
	if outcome != "" {
		h := &HandOver{Outcome: outcome, From: addr(m.src), To: addr(m.dst), At: time.Now(), Duration: time.Since(m.begun), Buffered: m.queued}
		p.lastMig = h
	}
	p.kickLocked()
}

func addr(c *vmConn) string {
	if c == nil {
		return ""
	}
	return c.nc.RemoteAddr().String()
}

// forgetMigrationLocked removes m from the server's secret table. Caller
// holds srv.mu.
func (p *Port) forgetMigrationLocked(m *migration) {
	s := p.srv
	list := s.migs[string(m.seq)]
	for i, x := range list {
		if x == m {
			list = append(list[:i], list[i+1:]...)
			if len(list) == 0 {
				delete(s.migs, string(m.seq))
			} else {
				s.migs[string(m.seq)] = list
			}
			if s.seqLens[len(m.seq)]--; s.seqLens[len(m.seq)] <= 0 {
				delete(s.seqLens, len(m.seq))
			}
			return
		}
	}
}

func (s *Server) forgetMigration(m *migration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m.port.forgetMigrationLocked(m)
}

// lookupPeer finds the migration whose seq||secret equals payload,
// comparing secrets in constant time. Caller holds s.mu. It returns the
// migration and, when only the sequence matched, the port it belongs to.
func (s *Server) lookupPeerLocked(payload []byte) (m *migration, seqOnly *migration) {
	for l := range s.seqLens {
		if l >= len(payload) {
			continue
		}
		for _, cand := range s.migs[string(payload[:l])] {
			if subtle.ConstantTimeCompare(payload[l:], cand.secret) == 1 {
				return cand, nil
			}
			seqOnly = cand
		}
	}
	return nil, seqOnly
}

// vmotionPeer handles VMOTION-PEER seq||secret on a new connection from
// the destination host (instead of DO-PROXY).
func (c *vmConn) vmotionPeer(payload []byte) error {
	if c.port.Load() != nil || c.req != nil {
		c.logger().Warn("VMOTION-PEER on a connection that already carries a port; closing", "vm", c.ident.name)
		return c.refuseQuietly()
	}
	s := c.srv
	s.mu.Lock()
	m, seqOnly := s.lookupPeerLocked(payload)
	if m == nil {
		s.counters.VMotionsBadSecret++
		s.counters.HandshakeFailures++
		s.counters.HandshakeBadPeer++
		s.mu.Unlock()
		attrs := []any{"security", true, "new_peer", c.nc.RemoteAddr().String(), "len", len(payload)}
		if seqOnly != nil {
			attrs = append(attrs, "vm", seqOnly.port.Request().VMName, "vm_peer", addr(seqOnly.src), "seq", hex.EncodeToString(seqOnly.seq))
			c.logger().Warn("SECURITY: VMOTION-PEER with a wrong secret; closing the new connection, the VM's session is untouched", attrs...)
		} else {
			c.logger().Warn("SECURITY: VMOTION-PEER with an unknown sequence; closing the new connection", attrs...)
		}
		return c.refuseQuietly()
	}
	p := m.port
	p.mu.Lock()
	if p.mig != m || m.state != migGoahead || p.closed {
		busy := m.dst != nil
		p.mu.Unlock()
		s.mu.Unlock()
		c.logger().Warn("VMOTION-PEER for a hand-over that is not waiting for a peer; closing", "busy", busy)
		return c.refuseQuietly()
	}
	m.dst = c
	m.state = migPeerOK
	m.armLocked(s.conf().CompleteTimeout)
	c.port.Store(p)
	c.role.Store(uint32(roleDest))
	c.hsBy = time.Time{}
	c.setDeadline()
	src := addr(m.src)
	p.mu.Unlock()
	s.mu.Unlock()
	c.out = AppendExt(c.out, VMotionPeerOK, m.seq)
	c.askIdentity()
	c.logger().Info("VMOTION-PEER accepted: PEER-OK", "seq", hex.EncodeToString(m.seq), "src", src)
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
	if p == nil || connRole(c.role.Load()) != roleDest {
		c.logger().Warn("VMOTION-COMPLETE without an accepted VMOTION-PEER ignored", "seq", hex.EncodeToString(seq))
		return nil
	}
	if err := c.flush(); err != nil {
		return err
	}
	s := c.srv
	s.mu.Lock()
	p.mu.Lock()
	m := p.mig
	if m == nil || m.dst != c || string(m.seq) != string(seq) {
		p.mu.Unlock()
		s.mu.Unlock()
		c.logger().Warn("VMOTION-COMPLETE with a sequence that does not match; ignored", "seq", hex.EncodeToString(seq))
		return nil
	}
	old := p.active
	p.forgetMigrationLocked(m)
	queued := len(p.q) - p.head
	p.active = c
	c.role.Store(uint32(roleActive))
	if old != nil && old != c {
		old.role.Store(uint32(roleRetired))
		c.waitFor = old.done
	}
	p.vmotions++
	s.counters.VMotionsCompleted++
	p.endMigrationLocked(m, "completed") // resumes the writer on the new connection
	dur := time.Since(m.begun)
	p.mu.Unlock()
	s.mu.Unlock()
	if old != nil && old != c {
		// Let the source's last bytes arrive (it closes at this instant),
		// then close it; its reader forwards them before the new ones.
		old.nc.SetReadDeadline(time.Now().Add(s.conf().DrainTimeout))
	}
	p.logger().Info("vMotion complete: traffic moved to the new connection",
		"src", addr(m.src), "dst", c.nc.RemoteAddr().String(), "duration", dur.Round(time.Millisecond), "buffered", queued,
		"seq", hex.EncodeToString(seq))
	if len(c.pending) > 0 {
		// Data the destination sent before COMPLETE (ESXi sends none):
		// after the source's last bytes, before anything newer.
		pend := c.pending
		c.pending = nil
		return p.fromVM(c, pend)
	}
	return nil
}

// vmotionAbort handles VMOTION-ABORT on the source.
func (c *vmConn) vmotionAbort() error {
	p := c.port.Load()
	if p == nil {
		return nil
	}
	s := c.srv
	s.mu.Lock()
	p.mu.Lock()
	m := p.mig
	if m == nil || m.src != c {
		p.mu.Unlock()
		s.mu.Unlock()
		c.logger().Info("VMOTION-ABORT without a hand-over in flight ignored")
		return nil
	}
	dst := m.dst
	p.forgetMigrationLocked(m)
	s.counters.VMotionsAborted++
	queued := len(p.q) - p.head
	p.endMigrationLocked(m, "aborted")
	p.mu.Unlock()
	s.mu.Unlock()
	if dst != nil {
		dst.nc.Close()
	}
	p.logger().Info("VMOTION-ABORT: resuming on the source connection", "buffered", queued, "seq", hex.EncodeToString(m.seq))
	return nil
}
