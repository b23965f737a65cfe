package telnet

// Side names one direction of an option (RFC 1143 "us" and "him").
type Side uint8

const (
	// Local is an option we perform: we send WILL/WONT, the peer DO/DONT.
	Local Side = iota
	// Remote is an option the peer performs: we send DO/DONT, it WILL/WONT.
	Remote
)

func (s Side) String() string {
	if s == Local {
		return "local"
	}
	return "remote"
}

// qState is the RFC 1143 state of one side of one option, with its queue
// bit: NO, YES, WANTNO, WANTYES; queue EMPTY or OPPOSITE.
type qState uint8

const (
	qNo qState = iota
	qYes
	qWantNo
	qWantYes
	qStateMask qState = 3
	qOpposite  qState = 4 // queue bit
)

// Options is RFC 1143 option negotiation state for one connection, and the
// policy of which options we accept. The zero value refuses everything,
// which is the null-object answer for unknown options: negotiation can
// never loop. Options is a small plain value (about 120 bytes: only
// options whose state is not NO on both sides take a slot, and only
// options we accept or enable can leave NO); it is not safe for
// concurrent use.
type Options struct {
	ent    [maxTracked]optEntry
	accept [2][4]uint64 // bitsets: accept[side] has bit opt
}

// maxTracked bounds the options that can be in a state other than NO at
// once. Only options we accept or ask for get there, so a peer cannot
// exhaust it; should our own policy ever exceed it, further options are
// refused.
const maxTracked = 16

type optEntry struct {
	opt  Option
	st   [2]qState
	used bool
}

func (o *Options) find(opt Option) *optEntry {
	for i := range o.ent {
		if o.ent[i].used && o.ent[i].opt == opt {
			return &o.ent[i]
		}
	}
	return nil
}

func (o *Options) get(side Side, opt Option) qState {
	if e := o.find(opt); e != nil {
		return e.st[side]
	}
	return qNo
}

// set records a state; it reports false when no slot is free.
func (o *Options) set(side Side, opt Option, s qState) bool {
	e := o.find(opt)
	if e == nil {
		if s == qNo {
			return true
		}
		for i := range o.ent {
			if !o.ent[i].used {
				e = &o.ent[i]
				*e = optEntry{opt: opt, used: true}
				break
			}
		}
		if e == nil {
			return false
		}
	}
	e.st[side] = s
	if e.st[0] == qNo && e.st[1] == qNo {
		e.used = false
	}
	return true
}

// Change reports an option that became enabled or disabled.
type Change struct {
	Side    Side
	Option  Option
	Enabled bool
}

// Accept sets whether we agree when the peer asks for opt on side (peer
// WILL for Remote, peer DO for Local).
func (o *Options) Accept(side Side, opt Option, yes bool) {
	if yes {
		o.accept[side][opt/64] |= 1 << (opt % 64)
	} else {
		o.accept[side][opt/64] &^= 1 << (opt % 64)
	}
}

func (o *Options) accepts(side Side, opt Option) bool {
	return o.accept[side][opt/64]&(1<<(opt%64)) != 0
}

// Enabled reports whether opt is on for side.
func (o *Options) Enabled(side Side, opt Option) bool {
	return o.get(side, opt)&qStateMask == qYes
}

// Pending reports whether we are waiting for the peer's answer on opt.
func (o *Options) Pending(side Side, opt Option) bool {
	s := o.get(side, opt) & qStateMask
	return s == qWantNo || s == qWantYes
}

func verbs(side Side) (yes, no Command) {
	if side == Local {
		return WILL, WONT
	}
	return DO, DONT
}

// Receive handles a WILL, WONT, DO or DONT from the peer (RFC 1143 §7). It
// appends the reply, if one is due, to dst and returns it, with the change
// of state if the option was switched on or off. Anything but a
// negotiation verb is ignored.
func (o *Options) Receive(dst []byte, verb Command, opt Option) ([]byte, *Change) {
	var side Side
	var asksYes bool
	switch verb {
	case WILL:
		side, asksYes = Remote, true
	case WONT:
		side, asksYes = Remote, false
	case DO:
		side, asksYes = Local, true
	case DONT:
		side, asksYes = Local, false
	default:
		return dst, nil
	}
	yesVerb, noVerb := verbs(side)
	cur := o.get(side, opt)
	q := cur & qOpposite
	set := func(s qState) { o.set(side, opt, s) }
	was := cur&qStateMask == qYes
	if asksYes {
		switch cur & qStateMask {
		case qNo:
			if o.accepts(side, opt) && o.set(side, opt, qYes) {
				dst = AppendNegotiation(dst, yesVerb, opt)
			} else {
				dst = AppendNegotiation(dst, noVerb, opt)
			}
		case qYes:
			// already on: ignore (this is what stops loops)
		case qWantNo:
			if q == 0 {
				set(qNo) // peer answered our disable with enable: error, settle on NO
			} else {
				set(qYes)
			}
		case qWantYes:
			if q == 0 {
				set(qYes)
			} else {
				set(qWantNo)
				dst = AppendNegotiation(dst, noVerb, opt)
			}
		}
	} else {
		switch cur & qStateMask {
		case qNo:
			// already off: ignore
		case qYes:
			set(qNo)
			dst = AppendNegotiation(dst, noVerb, opt)
		case qWantNo:
			if q == 0 {
				set(qNo)
			} else {
				set(qWantYes)
				dst = AppendNegotiation(dst, yesVerb, opt)
			}
		case qWantYes:
			set(qNo)
		}
	}
	now := o.Enabled(side, opt)
	if now != was {
		return dst, &Change{Side: side, Option: opt, Enabled: now}
	}
	return dst, nil
}

// Enable asks the peer to switch opt on for side (sends WILL for Local, DO
// for Remote) unless it is on or being negotiated already (RFC 1143 §7).
// It also marks the option as accepted, so that a later request from the
// peer is agreed to. With every one of the maxTracked slots taken (our own
// policy asking for more than 16 options at once; a peer cannot cause it)
// it asks nothing and the option stays off: Enabled and Pending tell.
func (o *Options) Enable(dst []byte, side Side, opt Option) []byte {
	o.Accept(side, opt, true)
	yesVerb, _ := verbs(side)
	cur := o.get(side, opt)
	switch cur & qStateMask {
	case qNo:
		if o.set(side, opt, qWantYes) {
			dst = AppendNegotiation(dst, yesVerb, opt)
		}
	case qWantNo:
		o.set(side, opt, qWantNo|qOpposite)
	case qWantYes:
		o.set(side, opt, qWantYes) // cancel a queued disable
	}
	return dst
}

// Disable asks the peer to switch opt off for side (sends WONT for Local,
// DONT for Remote) and stops accepting it.
func (o *Options) Disable(dst []byte, side Side, opt Option) []byte {
	o.Accept(side, opt, false)
	_, noVerb := verbs(side)
	cur := o.get(side, opt)
	switch cur & qStateMask {
	case qYes:
		o.set(side, opt, qWantNo)
		dst = AppendNegotiation(dst, noVerb, opt)
	case qWantNo:
		o.set(side, opt, qWantNo) // cancel a queued enable
	case qWantYes:
		o.set(side, opt, qWantYes|qOpposite)
	}
	return dst
}
