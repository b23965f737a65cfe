package vspc

import (
	"bytes"
	"time"
)

// The vMotion hand-over (seed "vMotion and Persistent Serial Port
// Connections", table 2-5; traces in notes esxi-wire.md §4.2–4.3;
// ../testdata/esxi-capture-4.2-4.3-vmotion.dialogue replays them):
//
//	source conn                      proxy                         destination conn
//	VMOTION-BEGIN seq      ──►  Flushing: data accepted for the VM before
//	                            BEGIN is written to the source (the
//	                            barrier); anything later is held
//	                  ◄──  VMOTION-GOAHEAD seq secret   (Goahead: still holding)
//	(FIN, any time now)                                  ◄──  handshake, VMOTION-PEER seq secret
//	                            constant-time check  ──►  VMOTION-PEER-OK seq (PeerOK)
//	                                                     ◄──  VMOTION-COMPLETE seq
//	                            switch: the held data goes to the destination
//	                            in order, after the source's last bytes.
//	VMOTION-ABORT          ──►  resume on the source, forget the secret.
//
// The hand-over is a pure transition function, handover.on: a state and an
// event in, the next state and the actions to take out. It takes no lock,
// does no I/O and does not log; the Port executes the actions (vmotion.go)
// and logs what happened (the note). Every cell of the table is a row of
// TestHandOverTable:
//
//	state \ event  BEGIN          barrier   PEER ok/bad       COMPLETE    ABORT(src)     src drops      dst drops          DO-PROXY         timeout              port closes
//	Idle           →Flushing¹     –         refused           ignored     ignored        grace          –                  –                –                    →Closed
//	Flushing       NOTNOW         →Goahead  refused/SECURITY  ignored     end aborted    end failed,    –                  end failed       NOTNOW, end          end failed
//	                              GOAHEAD                                                grace
//	Goahead        NOTNOW         –         →PeerOK PEER-OK   ignored     end aborted    stay           –                  end failed       end timed out,grace  end failed
//	                                        /SECURITY
//	PeerOK         NOTNOW         –         refused/SECURITY  switch,     end aborted,   stay           →Goahead,          end failed,      close dst            end failed,
//	                                                          completed   close dst                     re-arm             close dst                             close dst
//	Closed         NOTNOW         –         refused           ignored     ignored        –              –                  –                –                    –
//
// ¹ straight to Goahead with GOAHEAD when nothing is queued for the VM. BEGIN
// on a connection that is not the port's active one gets NOTNOW in every
// state. Refusals that do not depend on the hand-over (no sequence,
// [vmotion] enabled = false, shutting down, no secret) are answered by the
// connection's reader before it gets here (vmotionBegin). A timeout armed
// for an earlier state (its gen) is ignored in every state.
//
// BEGIN registers the sequence and the secret (which the reader draws) in
// the server's table at once, not when GOAHEAD goes out: registering takes
// the server's lock, and the barrier is reached on the port's writer, which
// holds only the port's. Nobody has the secret before GOAHEAD, so a PEER
// in Flushing is refused all the same (SECURITY, or not waiting).
//
// A port closed in the middle of a hand-over (its route removed, the
// server shutting down) records the hand-over as "failed": it did not
// complete, and the data held for it is dropped with the port.

// hoState is where a port's hand-over stands.
type hoState uint8

const (
	hoIdle     hoState = iota // no hand-over
	hoFlushing                // BEGIN received; writing the data accepted before it
	hoGoahead                 // GOAHEAD queued; holding data; waiting for PEER
	hoPeerOK                  // PEER-OK queued on dst; waiting for COMPLETE
	hoClosed                  // the port is closed: nothing starts again
)

func (s hoState) String() string {
	return [...]string{"Idle", "Flushing", "Goahead", "PeerOK", "Closed"}[s]
}

// inFlight reports a hand-over under way.
func (s hoState) inFlight() bool { return s == hoFlushing || s == hoGoahead || s == hoPeerOK }

// handover is a port's hand-over state. The Port keeps it under its mu;
// on returns a changed copy.
type handover struct {
	state  hoState
	seq    []byte
	secret []byte
	src    *vmConn // the connection BEGIN came on
	dst    *vmConn // the destination after PEER-OK; nil before (and after it drops)
	gen    uint32  // bumped whenever a timeout is armed; a timeout carries it
}

// evKind is what happened to a port, as far as its hand-over cares.
type evKind uint8

const (
	evBegin    evKind = iota // VMOTION-BEGIN seq on conn
	evBarrier                // the port's writer wrote the last byte accepted before BEGIN
	evPeer                   // VMOTION-PEER on conn, a new connection; ok: the secret matched
	evComplete               // VMOTION-COMPLETE seq on conn
	evAbort                  // VMOTION-ABORT on conn
	evDrop                   // conn's reader ended (the host closed it, or we did)
	evDoProxy                // conn, a new connection, attaches to the port by DO-PROXY
	evTimeout                // the timeout armed with gen fired
	evClose                  // the port closes
)

func (k evKind) String() string {
	return [...]string{"BEGIN", "barrier", "PEER", "COMPLETE", "ABORT", "drop", "DO-PROXY", "timeout", "close"}[k]
}

// event is one input to the hand-over. Fields other than kind are set for
// the kinds that name them.
type event struct {
	kind   evKind
	conn   *vmConn // BEGIN, PEER, COMPLETE, ABORT, drop, DO-PROXY
	seq    []byte  // BEGIN, COMPLETE
	secret []byte  // BEGIN: the secret GOAHEAD will carry (generated by the reader)
	queued int     // BEGIN: bytes accepted for the VM and not yet written
	active bool    // BEGIN, drop: conn is the port's active connection
	ok     bool    // PEER: seq||secret matched this port's hand-over
	size   int     // PEER: the payload's length (for the log)
	gen    uint32  // timeout
}

// actKind is one thing the Port does for a transition.
type actKind uint8

const (
	doNotNow    actKind = iota // queue VMOTION-NOTNOW seq on conn
	doRegister                 // enter seq and secret in the server's table, where PEER finds the port
	doHold                     // set the barrier: write n more bytes to the VM, then hold the rest
	doGoahead                  // queue VMOTION-GOAHEAD seq secret on the source
	doArm                      // (re)arm the timeout: after timeout, carrying the new gen
	doJoin                     // conn becomes the destination: VMOTION-PEER-OK seq is its answer
	doRefuse                   // close conn without a word (a PEER that is not taken)
	doSwitch                   // conn becomes the active connection; the old one drains and retires
	doCloseConn                // close conn (a destination that is not wanted any more)
	doEnd                      // the hand-over is over: result; forget the secret, stop the timeout, release held data
	doGrace                    // a port left without a connection starts its grace period
)

func (k actKind) String() string {
	return [...]string{"NotNow", "Register", "Hold", "Goahead", "Arm", "Join", "Refuse", "Switch", "CloseConn", "End", "Grace"}[k]
}

// timeoutKind names which configured timeout doArm uses.
type timeoutKind uint8

const (
	flushTimeout    timeoutKind = iota + 1 // BEGIN → GOAHEAD (Config.FlushTimeout)
	peerTimeout                            // GOAHEAD → PEER (Config.PeerTimeout)
	completeTimeout                        // PEER-OK → COMPLETE (Config.CompleteTimeout)
)

func (k timeoutKind) duration(c *Config) time.Duration {
	switch k {
	case flushTimeout:
		return c.FlushTimeout
	case peerTimeout:
		return c.PeerTimeout
	}
	return c.CompleteTimeout
}

// result is how a hand-over ended.
type result uint8

const (
	resNone      result = iota // refused late (NOTNOW after BEGIN): no HandOver recorded
	resCompleted               // "completed"
	resAborted                 // "aborted"
	resTimedOut                // "timed out" (no PEER)
	resFailed                  // "failed": the VM came back by DO-PROXY, the source dropped while flushing, the port closed
)

// outcome is the HandOver.Outcome for r ("" for resNone).
func (r result) outcome() string {
	return [...]string{"", "completed", "aborted", "timed out", "failed"}[r]
}

// action is one step for the Port to take. The fields other than kind are
// set for the kinds that name them. End concerns the hand-over as it was
// before the transition: its secret is forgotten, its timeout stopped, its
// outcome recorded.
type action struct {
	kind    actKind
	conn    *vmConn     // NotNow, Goahead, Join, Refuse, Switch, CloseConn
	seq     []byte      // NotNow, Register, Goahead, Join
	secret  []byte      // Register, Goahead
	n       int         // Hold
	timeout timeoutKind // Arm
	result  result      // End
}

// note says which cell of the table a transition was, for the log and the
// counters (vmotion.go).
type note uint8

const (
	noteNone               note = iota // nothing to report (ignored, stale timeout)
	noteBegin                          // BEGIN accepted
	noteBeginBusy                      // BEGIN while a hand-over is in flight: NOTNOW
	noteBeginNotActive                 // BEGIN on a connection that is not the active one: NOTNOW
	noteGoahead                        // barrier reached: GOAHEAD
	notePeerOK                         // PEER accepted: PEER-OK
	notePeerBadSecret                  // PEER whose secret does not match: SECURITY
	notePeerNotWaiting                 // PEER with the right secret while no peer is awaited
	noteComplete                       // COMPLETE: switched
	noteCompleteMismatch               // COMPLETE that does not match the hand-over: ignored
	noteAbort                          // ABORT: resumed on the source
	noteAbortIgnored                   // ABORT without a hand-over from that connection
	noteSrcDroppedFlushing             // the source dropped before GOAHEAD: failed
	noteSrcClosed                      // the source closed after GOAHEAD: normal, wait for COMPLETE
	noteDstDropped                     // the destination dropped before COMPLETE: wait for another PEER
	noteDetached                       // the active connection dropped with no hand-over: grace period
	noteDoProxyEnds                    // DO-PROXY ended the hand-over: failed
	noteFlushTimeout                   // no GOAHEAD within the flush timeout: NOTNOW
	notePeerTimeout                    // no PEER within the peer timeout: timed out
	noteCompleteTimeout                // no COMPLETE within the complete timeout: the destination is dropped
	noteClosedInFlight                 // the port closed during a hand-over: failed
)

// on is the transition function of the hand-over: see the table above.
func (h handover) on(ev event) (handover, []action, note) {
	switch ev.kind {
	case evBegin:
		switch {
		case h.state == hoClosed || !ev.active:
			return h, []action{{kind: doNotNow, conn: ev.conn, seq: ev.seq}}, noteBeginNotActive
		case h.state != hoIdle:
			return h, []action{{kind: doNotNow, conn: ev.conn, seq: ev.seq}}, noteBeginBusy
		}
		h = handover{state: hoFlushing, seq: ev.seq, secret: ev.secret, src: ev.conn, gen: h.gen + 1}
		acts := []action{{kind: doRegister, seq: h.seq, secret: h.secret}, {kind: doHold, n: ev.queued}}
		if ev.queued == 0 {
			// Nothing to flush: the barrier is already behind us.
			h.state = hoGoahead
			return h, append(acts, h.goahead(), action{kind: doArm, timeout: peerTimeout}), noteBegin
		}
		return h, append(acts, action{kind: doArm, timeout: flushTimeout}), noteBegin

	case evBarrier:
		if h.state != hoFlushing {
			return h, nil, noteNone
		}
		h.state = hoGoahead
		h.gen++
		return h, []action{h.goahead(), {kind: doArm, timeout: peerTimeout}}, noteGoahead

	case evPeer:
		switch {
		case !ev.ok:
			return h, []action{{kind: doRefuse, conn: ev.conn}}, notePeerBadSecret
		case h.state != hoGoahead:
			return h, []action{{kind: doRefuse, conn: ev.conn}}, notePeerNotWaiting
		}
		h.state = hoPeerOK
		h.dst = ev.conn
		h.gen++
		return h, []action{{kind: doJoin, conn: ev.conn, seq: h.seq}, {kind: doArm, timeout: completeTimeout}}, notePeerOK

	case evComplete:
		if h.state != hoPeerOK || ev.conn != h.dst || !bytes.Equal(ev.seq, h.seq) {
			return h, nil, noteCompleteMismatch
		}
		return handover{gen: h.gen}, []action{{kind: doSwitch, conn: ev.conn}, {kind: doEnd, result: resCompleted}}, noteComplete

	case evAbort:
		if !h.state.inFlight() || ev.conn != h.src {
			return h, nil, noteAbortIgnored
		}
		return handover{gen: h.gen}, closeDst(h, nil, action{kind: doEnd, result: resAborted}), noteAbort

	case evDrop:
		switch {
		case h.state == hoPeerOK && ev.conn == h.dst:
			// Wait for another PEER (or ABORT on the source) until the
			// peer timeout.
			h.state = hoGoahead
			h.dst = nil
			h.gen++
			return h, []action{{kind: doArm, timeout: peerTimeout}}, noteDstDropped
		case !ev.active || h.state == hoClosed:
			return h, nil, noteNone
		case h.state == hoIdle:
			return h, []action{{kind: doGrace}}, noteDetached
		case h.state == hoFlushing:
			return handover{gen: h.gen}, []action{{kind: doEnd, result: resFailed}, {kind: doGrace}}, noteSrcDroppedFlushing
		}
		// Goahead, PeerOK: the source host lets go once the VM runs
		// elsewhere; COMPLETE comes on the destination.
		return h, nil, noteSrcClosed

	case evDoProxy:
		if !h.state.inFlight() {
			return h, nil, noteNone
		}
		// The VM came back by DO-PROXY: whatever hand-over was in flight
		// is over.
		return handover{gen: h.gen}, closeDst(h, ev.conn, action{kind: doEnd, result: resFailed}), noteDoProxyEnds

	case evTimeout:
		if ev.gen != h.gen {
			return h, nil, noteNone // armed for an earlier state
		}
		switch h.state {
		case hoFlushing:
			return handover{gen: h.gen}, []action{{kind: doNotNow, conn: h.src, seq: h.seq}, {kind: doEnd, result: resNone}}, noteFlushTimeout
		case hoGoahead:
			return handover{gen: h.gen}, []action{{kind: doEnd, result: resTimedOut}, {kind: doGrace}}, notePeerTimeout
		case hoPeerOK:
			// Dropping the destination brings its drop event: back to
			// Goahead, waiting for another PEER.
			return h, []action{{kind: doCloseConn, conn: h.dst}}, noteCompleteTimeout
		}
		return h, nil, noteNone

	case evClose:
		if h.state == hoClosed {
			return h, nil, noteNone
		}
		closed := handover{state: hoClosed, gen: h.gen}
		if !h.state.inFlight() {
			return closed, nil, noteNone
		}
		return closed, closeDst(h, nil, action{kind: doEnd, result: resFailed}), noteClosedInFlight
	}
	panic("vspc: unknown hand-over event")
}

// goahead is the action that sends h's GOAHEAD.
func (h handover) goahead() action {
	return action{kind: doGoahead, conn: h.src, seq: h.seq, secret: h.secret}
}

// closeDst is end preceded by closing h's destination, if it has one that
// is not keep.
func closeDst(h handover, keep *vmConn, end action) []action {
	if h.dst != nil && h.dst != keep {
		return []action{{kind: doCloseConn, conn: h.dst}, end}
	}
	return []action{end}
}
