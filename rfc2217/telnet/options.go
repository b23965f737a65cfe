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
// never loop. Options is a plain value (512 bytes); it is not safe for
// concurrent use.
type Options struct {
	st     [2][256]qState
	accept [2][4]uint64 // bitsets: accept[side] has bit opt
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
	return o.st[side][opt]&qStateMask == qYes
}

// Pending reports whether we are waiting for the peer's answer on opt.
func (o *Options) Pending(side Side, opt Option) bool {
	s := o.st[side][opt] & qStateMask
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
	cur := o.st[side][opt]
	q := cur & qOpposite
	set := func(s qState) { o.st[side][opt] = s }
	was := cur&qStateMask == qYes
	if asksYes {
		switch cur & qStateMask {
		case qNo:
			if o.accepts(side, opt) {
				set(qYes)
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
// peer is agreed to.
func (o *Options) Enable(dst []byte, side Side, opt Option) []byte {
	o.Accept(side, opt, true)
	yesVerb, _ := verbs(side)
	cur := o.st[side][opt]
	switch cur & qStateMask {
	case qNo:
		o.st[side][opt] = qWantYes
		dst = AppendNegotiation(dst, yesVerb, opt)
	case qWantNo:
		o.st[side][opt] = qWantNo | qOpposite
	case qWantYes:
		o.st[side][opt] = qWantYes // cancel a queued disable
	}
	return dst
}

// Disable asks the peer to switch opt off for side (sends WONT for Local,
// DONT for Remote) and stops accepting it.
func (o *Options) Disable(dst []byte, side Side, opt Option) []byte {
	o.Accept(side, opt, false)
	_, noVerb := verbs(side)
	cur := o.st[side][opt]
	switch cur & qStateMask {
	case qYes:
		o.st[side][opt] = qWantNo
		dst = AppendNegotiation(dst, noVerb, opt)
	case qWantNo:
		o.st[side][opt] = qWantNo // cancel a queued enable
	case qWantYes:
		o.st[side][opt] = qWantYes | qOpposite
	}
	return dst
}
