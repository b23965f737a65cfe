package vspc

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// The cells of the hand-over table (handover.go), every state × every
// event. The connections are placeholders: src (the port's active
// connection, where BEGIN came), dst (the destination once PEER-OK is
// out), new (a connection that just sent PEER or DO-PROXY) and other (a
// connection the hand-over does not know: retired, replaced, or not the
// active one). The current hand-over has seq S and secret K; a BEGIN
// carries seq B and the secret K2 the reader generated for it; the armed
// timeout has gen 7.

var (
	hoSrc, hoDst, hoNew, hoOther = &vmConn{}, &vmConn{}, &vmConn{}, &vmConn{}
	seqS, secretK                = []byte{0x76, 0x19, 0xff, 0xe9}, []byte("K-sixteen-bytes!")
	seqB, secretK2               = []byte{0x44, 0xda, 0x87, 0xf1}, []byte("K2-sixteenbytes!")
	seqX                         = []byte{0x61, 0xed, 0x26, 0xa2}
)

func hoFixture(s hoState) handover {
	switch s {
	case hoFlushing, hoGoahead:
		return handover{state: s, seq: seqS, secret: secretK, src: hoSrc, gen: 7}
	case hoPeerOK:
		return handover{state: s, seq: seqS, secret: secretK, src: hoSrc, dst: hoDst, gen: 7}
	}
	return handover{state: s, gen: 7}
}

// hoEvents are the events of the table's columns, by name.
var hoEvents = []struct {
	name string
	ev   event
}{
	{"BEGIN", event{kind: evBegin, conn: hoSrc, seq: seqB, secret: secretK2, queued: 5, active: true}},
	{"BEGIN, nothing queued", event{kind: evBegin, conn: hoSrc, seq: seqB, secret: secretK2, active: true}},
	{"BEGIN on another connection", event{kind: evBegin, conn: hoOther, seq: seqB, secret: secretK2, queued: 5}},
	{"barrier", event{kind: evBarrier}},
	{"PEER ok", event{kind: evPeer, conn: hoNew, ok: true}},
	{"PEER bad", event{kind: evPeer, conn: hoNew}},
	{"COMPLETE", event{kind: evComplete, conn: hoDst, seq: seqS}},
	{"COMPLETE wrong seq", event{kind: evComplete, conn: hoDst, seq: seqX}},
	{"COMPLETE elsewhere", event{kind: evComplete, conn: hoSrc, seq: seqS}},
	{"ABORT", event{kind: evAbort, conn: hoSrc}},
	{"ABORT elsewhere", event{kind: evAbort, conn: hoDst}},
	{"src drops", event{kind: evDrop, conn: hoSrc, active: true}},
	{"dst drops", event{kind: evDrop, conn: hoDst}},
	{"other drops", event{kind: evDrop, conn: hoOther}},
	{"DO-PROXY", event{kind: evDoProxy, conn: hoNew}},
	{"timeout", event{kind: evTimeout, gen: 7}},
	{"stale timeout", event{kind: evTimeout, gen: 6}},
	{"port closes", event{kind: evClose}},
}

// hoCells is the table. next is the state after the event (see
// fmtHandover), acts the actions in order (fmtActions).
var hoCells = []struct {
	state hoState
	event string
	next  string
	acts  string
	note  note
}{
	{hoIdle, "BEGIN", "Flushing src=src seq=B secret=K2 gen=8", "Register(B,K2) Hold(5) Arm(flush)", noteBegin},
	{hoIdle, "BEGIN, nothing queued", "Goahead src=src seq=B secret=K2 gen=8", "Register(B,K2) Hold(0) Goahead(src,B,K2) Arm(peer)", noteBegin},
	{hoIdle, "BEGIN on another connection", "Idle gen=7", "NotNow(other,B)", noteBeginNotActive},
	{hoIdle, "barrier", "Idle gen=7", "", noteNone},
	{hoIdle, "PEER ok", "Idle gen=7", "Refuse(new)", notePeerNotWaiting},
	{hoIdle, "PEER bad", "Idle gen=7", "Refuse(new)", notePeerBadSecret},
	{hoIdle, "COMPLETE", "Idle gen=7", "", noteCompleteMismatch},
	{hoIdle, "COMPLETE wrong seq", "Idle gen=7", "", noteCompleteMismatch},
	{hoIdle, "COMPLETE elsewhere", "Idle gen=7", "", noteCompleteMismatch},
	{hoIdle, "ABORT", "Idle gen=7", "", noteAbortIgnored},
	{hoIdle, "ABORT elsewhere", "Idle gen=7", "", noteAbortIgnored},
	{hoIdle, "src drops", "Idle gen=7", "Grace", noteDetached},
	{hoIdle, "dst drops", "Idle gen=7", "", noteNone},
	{hoIdle, "other drops", "Idle gen=7", "", noteNone},
	{hoIdle, "DO-PROXY", "Idle gen=7", "", noteNone},
	{hoIdle, "timeout", "Idle gen=7", "", noteNone},
	{hoIdle, "stale timeout", "Idle gen=7", "", noteNone},
	{hoIdle, "port closes", "Closed gen=7", "", noteNone},

	{hoFlushing, "BEGIN", "Flushing src=src seq=S secret=K gen=7", "NotNow(src,B)", noteBeginBusy},
	{hoFlushing, "BEGIN, nothing queued", "Flushing src=src seq=S secret=K gen=7", "NotNow(src,B)", noteBeginBusy},
	{hoFlushing, "BEGIN on another connection", "Flushing src=src seq=S secret=K gen=7", "NotNow(other,B)", noteBeginNotActive},
	{hoFlushing, "barrier", "Goahead src=src seq=S secret=K gen=8", "Goahead(src,S,K) Arm(peer)", noteGoahead},
	{hoFlushing, "PEER ok", "Flushing src=src seq=S secret=K gen=7", "Refuse(new)", notePeerNotWaiting},
	{hoFlushing, "PEER bad", "Flushing src=src seq=S secret=K gen=7", "Refuse(new)", notePeerBadSecret},
	{hoFlushing, "COMPLETE", "Flushing src=src seq=S secret=K gen=7", "", noteCompleteMismatch},
	{hoFlushing, "COMPLETE wrong seq", "Flushing src=src seq=S secret=K gen=7", "", noteCompleteMismatch},
	{hoFlushing, "COMPLETE elsewhere", "Flushing src=src seq=S secret=K gen=7", "", noteCompleteMismatch},
	{hoFlushing, "ABORT", "Idle gen=7", "End(aborted)", noteAbort},
	{hoFlushing, "ABORT elsewhere", "Flushing src=src seq=S secret=K gen=7", "", noteAbortIgnored},
	{hoFlushing, "src drops", "Idle gen=7", "End(failed) Grace", noteSrcDroppedFlushing},
	{hoFlushing, "dst drops", "Flushing src=src seq=S secret=K gen=7", "", noteNone},
	{hoFlushing, "other drops", "Flushing src=src seq=S secret=K gen=7", "", noteNone},
	{hoFlushing, "DO-PROXY", "Idle gen=7", "End(failed)", noteDoProxyEnds},
	{hoFlushing, "timeout", "Idle gen=7", "NotNow(src,S) End()", noteFlushTimeout},
	{hoFlushing, "stale timeout", "Flushing src=src seq=S secret=K gen=7", "", noteNone},
	{hoFlushing, "port closes", "Closed gen=7", "End(failed)", noteClosedInFlight},

	{hoGoahead, "BEGIN", "Goahead src=src seq=S secret=K gen=7", "NotNow(src,B)", noteBeginBusy},
	{hoGoahead, "BEGIN, nothing queued", "Goahead src=src seq=S secret=K gen=7", "NotNow(src,B)", noteBeginBusy},
	{hoGoahead, "BEGIN on another connection", "Goahead src=src seq=S secret=K gen=7", "NotNow(other,B)", noteBeginNotActive},
	{hoGoahead, "barrier", "Goahead src=src seq=S secret=K gen=7", "", noteNone},
	{hoGoahead, "PEER ok", "PeerOK src=src dst=new seq=S secret=K gen=8", "Join(new,S) Arm(complete)", notePeerOK},
	{hoGoahead, "PEER bad", "Goahead src=src seq=S secret=K gen=7", "Refuse(new)", notePeerBadSecret},
	{hoGoahead, "COMPLETE", "Goahead src=src seq=S secret=K gen=7", "", noteCompleteMismatch},
	{hoGoahead, "COMPLETE wrong seq", "Goahead src=src seq=S secret=K gen=7", "", noteCompleteMismatch},
	{hoGoahead, "COMPLETE elsewhere", "Goahead src=src seq=S secret=K gen=7", "", noteCompleteMismatch},
	{hoGoahead, "ABORT", "Idle gen=7", "End(aborted)", noteAbort},
	{hoGoahead, "ABORT elsewhere", "Goahead src=src seq=S secret=K gen=7", "", noteAbortIgnored},
	{hoGoahead, "src drops", "Goahead src=src seq=S secret=K gen=7", "", noteSrcClosed},
	{hoGoahead, "dst drops", "Goahead src=src seq=S secret=K gen=7", "", noteNone},
	{hoGoahead, "other drops", "Goahead src=src seq=S secret=K gen=7", "", noteNone},
	{hoGoahead, "DO-PROXY", "Idle gen=7", "End(failed)", noteDoProxyEnds},
	{hoGoahead, "timeout", "Idle gen=7", "End(timed out) Grace", notePeerTimeout},
	{hoGoahead, "stale timeout", "Goahead src=src seq=S secret=K gen=7", "", noteNone},
	{hoGoahead, "port closes", "Closed gen=7", "End(failed)", noteClosedInFlight},

	{hoPeerOK, "BEGIN", "PeerOK src=src dst=dst seq=S secret=K gen=7", "NotNow(src,B)", noteBeginBusy},
	{hoPeerOK, "BEGIN, nothing queued", "PeerOK src=src dst=dst seq=S secret=K gen=7", "NotNow(src,B)", noteBeginBusy},
	{hoPeerOK, "BEGIN on another connection", "PeerOK src=src dst=dst seq=S secret=K gen=7", "NotNow(other,B)", noteBeginNotActive},
	{hoPeerOK, "barrier", "PeerOK src=src dst=dst seq=S secret=K gen=7", "", noteNone},
	{hoPeerOK, "PEER ok", "PeerOK src=src dst=dst seq=S secret=K gen=7", "Refuse(new)", notePeerNotWaiting},
	{hoPeerOK, "PEER bad", "PeerOK src=src dst=dst seq=S secret=K gen=7", "Refuse(new)", notePeerBadSecret},
	{hoPeerOK, "COMPLETE", "Idle gen=7", "Switch(dst) End(completed)", noteComplete},
	{hoPeerOK, "COMPLETE wrong seq", "PeerOK src=src dst=dst seq=S secret=K gen=7", "", noteCompleteMismatch},
	{hoPeerOK, "COMPLETE elsewhere", "PeerOK src=src dst=dst seq=S secret=K gen=7", "", noteCompleteMismatch},
	{hoPeerOK, "ABORT", "Idle gen=7", "CloseConn(dst) End(aborted)", noteAbort},
	{hoPeerOK, "ABORT elsewhere", "PeerOK src=src dst=dst seq=S secret=K gen=7", "", noteAbortIgnored},
	{hoPeerOK, "src drops", "PeerOK src=src dst=dst seq=S secret=K gen=7", "", noteSrcClosed},
	{hoPeerOK, "dst drops", "Goahead src=src seq=S secret=K gen=8", "Arm(peer)", noteDstDropped},
	{hoPeerOK, "other drops", "PeerOK src=src dst=dst seq=S secret=K gen=7", "", noteNone},
	{hoPeerOK, "DO-PROXY", "Idle gen=7", "CloseConn(dst) End(failed)", noteDoProxyEnds},
	{hoPeerOK, "timeout", "PeerOK src=src dst=dst seq=S secret=K gen=7", "CloseConn(dst)", noteCompleteTimeout},
	{hoPeerOK, "stale timeout", "PeerOK src=src dst=dst seq=S secret=K gen=7", "", noteNone},
	{hoPeerOK, "port closes", "Closed gen=7", "CloseConn(dst) End(failed)", noteClosedInFlight},

	{hoClosed, "BEGIN", "Closed gen=7", "NotNow(src,B)", noteBeginNotActive},
	{hoClosed, "BEGIN, nothing queued", "Closed gen=7", "NotNow(src,B)", noteBeginNotActive},
	{hoClosed, "BEGIN on another connection", "Closed gen=7", "NotNow(other,B)", noteBeginNotActive},
	{hoClosed, "barrier", "Closed gen=7", "", noteNone},
	{hoClosed, "PEER ok", "Closed gen=7", "Refuse(new)", notePeerNotWaiting},
	{hoClosed, "PEER bad", "Closed gen=7", "Refuse(new)", notePeerBadSecret},
	{hoClosed, "COMPLETE", "Closed gen=7", "", noteCompleteMismatch},
	{hoClosed, "COMPLETE wrong seq", "Closed gen=7", "", noteCompleteMismatch},
	{hoClosed, "COMPLETE elsewhere", "Closed gen=7", "", noteCompleteMismatch},
	{hoClosed, "ABORT", "Closed gen=7", "", noteAbortIgnored},
	{hoClosed, "ABORT elsewhere", "Closed gen=7", "", noteAbortIgnored},
	{hoClosed, "src drops", "Closed gen=7", "", noteNone},
	{hoClosed, "dst drops", "Closed gen=7", "", noteNone},
	{hoClosed, "other drops", "Closed gen=7", "", noteNone},
	{hoClosed, "DO-PROXY", "Closed gen=7", "", noteNone},
	{hoClosed, "timeout", "Closed gen=7", "", noteNone},
	{hoClosed, "stale timeout", "Closed gen=7", "", noteNone},
	{hoClosed, "port closes", "Closed gen=7", "", noteNone},
}

// TestHandOverTable walks every cell of the hand-over table.
func TestHandOverTable(t *testing.T) {
	events := map[string]event{}
	for _, e := range hoEvents {
		events[e.name] = e.ev
	}
	seen := map[string]bool{}
	for _, c := range hoCells {
		ev, ok := events[c.event]
		if !ok {
			t.Fatalf("cell %v × %q: no such event", c.state, c.event)
		}
		cell := fmt.Sprintf("%v × %s", c.state, c.event)
		if seen[cell] {
			t.Fatalf("cell %s listed twice", cell)
		}
		seen[cell] = true
		next, acts, n := hoFixture(c.state).on(ev)
		if got := fmtHandover(next); got != c.next {
			t.Errorf("%s: next state %q, want %q", cell, got, c.next)
		}
		if got := fmtActions(acts); got != c.acts {
			t.Errorf("%s: actions %q, want %q", cell, got, c.acts)
		}
		if n != c.note {
			t.Errorf("%s: note %d, want %d", cell, n, c.note)
		}
	}
	for s := hoIdle; s <= hoClosed; s++ {
		for _, e := range hoEvents {
			if !seen[fmt.Sprintf("%v × %s", s, e.name)] {
				t.Errorf("cell %v × %s is missing from the table", s, e.name)
			}
		}
	}
}

// TestHandOverInvariants checks, over every cell, the rules the Port
// relies on when it executes the actions.
func TestHandOverInvariants(t *testing.T) {
	for s := hoIdle; s <= hoClosed; s++ {
		for _, e := range hoEvents {
			cell := fmt.Sprintf("%v × %s", s, e.name)
			prev := hoFixture(s)
			next, acts, _ := prev.on(e.ev)
			has := func(k actKind) bool {
				return slices.ContainsFunc(acts, func(a action) bool { return a.kind == k })
			}
			// A hand-over that stops being in flight is ended (secret
			// forgotten, timeout stopped, held data released), and End
			// ends only one that was.
			if ended := prev.state.inFlight() && !next.state.inFlight(); ended != has(doEnd) {
				t.Errorf("%s: %v → %v with actions %s: End iff a hand-over stops", cell, prev.state, next.state, fmtActions(acts))
			}
			// Closed is for good, and only closing gets there.
			if (next.state == hoClosed) != (s == hoClosed || e.ev.kind == evClose) {
				t.Errorf("%s: → %v", cell, next.state)
			}
			// The writer steps the barrier holding the port's lock only:
			// its actions must not touch the server's tables.
			if e.ev.kind == evBarrier {
				for _, a := range acts {
					if a.kind != doGoahead && a.kind != doArm {
						t.Errorf("%s: the barrier's action %v needs the server's lock", cell, a.kind)
					}
				}
			}
			// Every state in flight has its timeout: entering one (or
			// losing the destination) arms a new one under a new gen, so
			// no earlier timer can fire into it.
			if next.state.inFlight() && (next.state != prev.state || next.dst != prev.dst) {
				if !has(doArm) || next.gen == prev.gen {
					t.Errorf("%s: %v → %v without a new timeout (%s, gen %d → %d)", cell, prev.state, next.state, fmtActions(acts), prev.gen, next.gen)
				}
			}
			if has(doArm) && next.gen == prev.gen {
				t.Errorf("%s: armed a timeout under the old gen", cell)
			}
			// A PEER is either joined or refused, nothing else.
			if e.ev.kind == evPeer && has(doJoin) == has(doRefuse) {
				t.Errorf("%s: PEER neither joined nor refused (or both): %s", cell, fmtActions(acts))
			}
			// Nothing but BEGIN registers a secret, and GOAHEAD only ever
			// leaves with the registered one.
			for _, a := range acts {
				if a.kind == doRegister && e.ev.kind != evBegin {
					t.Errorf("%s: registered a secret", cell)
				}
				if a.kind == doGoahead && (string(a.secret) != string(next.secret) || a.conn != next.src) {
					t.Errorf("%s: GOAHEAD with secret %q to %s, the hand-over's is %q from %s", cell, a.secret, hoName(a.conn), next.secret, hoName(next.src))
				}
			}
		}
	}
}

func hoName(c *vmConn) string {
	switch c {
	case nil:
		return "-"
	case hoSrc:
		return "src"
	case hoDst:
		return "dst"
	case hoNew:
		return "new"
	case hoOther:
		return "other"
	}
	return "?"
}

func hoBytes(b []byte) string {
	switch string(b) {
	case string(seqS):
		return "S"
	case string(seqB):
		return "B"
	case string(seqX):
		return "X"
	case string(secretK):
		return "K"
	case string(secretK2):
		return "K2"
	}
	return fmt.Sprintf("% x", b)
}

// fmtHandover renders h as "State src=… dst=… seq=… secret=… gen=N",
// leaving out what is unset.
func fmtHandover(h handover) string {
	var b strings.Builder
	b.WriteString(h.state.String())
	if h.src != nil {
		b.WriteString(" src=" + hoName(h.src))
	}
	if h.dst != nil {
		b.WriteString(" dst=" + hoName(h.dst))
	}
	if h.seq != nil {
		b.WriteString(" seq=" + hoBytes(h.seq))
	}
	if h.secret != nil {
		b.WriteString(" secret=" + hoBytes(h.secret))
	}
	fmt.Fprintf(&b, " gen=%d", h.gen)
	return b.String()
}

// fmtActions renders actions as "Kind(args) …".
func fmtActions(acts []action) string {
	var out []string
	for _, a := range acts {
		var args []string
		switch a.kind {
		case doNotNow, doJoin:
			args = []string{hoName(a.conn), hoBytes(a.seq)}
		case doGoahead:
			args = []string{hoName(a.conn), hoBytes(a.seq), hoBytes(a.secret)}
		case doRegister:
			args = []string{hoBytes(a.seq), hoBytes(a.secret)}
		case doRefuse, doSwitch, doCloseConn:
			args = []string{hoName(a.conn)}
		case doHold:
			args = []string{fmt.Sprint(a.n)}
		case doArm:
			args = []string{[...]string{"?", "flush", "peer", "complete"}[a.timeout]}
		case doEnd:
			args = []string{a.result.outcome()}
		case doGrace:
			out = append(out, a.kind.String())
			continue
		}
		out = append(out, a.kind.String()+"("+strings.Join(args, ",")+")")
	}
	return strings.Join(out, " ")
}
