package telnet

import (
	"errors"
	"fmt"
)

// The option state of a connection can move to another process: a vSPC
// that negotiated with a host hands the connection on to the bridge that
// serves the VM (package cluster), which must go on exactly where the
// negotiation stands, queued answers included (RFC 1143 WANTNO/WANTYES and
// the OPPOSITE bit), or the two ends disagree on BINARY and every 255 that
// follows is read wrong. AppendState and ParseState carry it:
//
//	version(1) = 1
//	accept: 2 sides × 4 × uint64 bitset, big endian (64 bytes): local, then remote
//	count(1) ≤ 16, then count × { option(1), local qstate(1), remote qstate(1) }
//
// A qstate is NO 0, YES 1, WANTNO 2, WANTYES 3, plus 4 for the OPPOSITE
// queue bit; an entry with both sides NO is not written.
const stateVersion = 1

// ErrBadState: ParseState was given something AppendState did not write.
var ErrBadState = errors.New("telnet: bad option state")

// AppendState appends the negotiation state and policy of o to dst.
func (o *Options) AppendState(dst []byte) []byte {
	dst = append(dst, stateVersion)
	for side := range o.accept {
		for _, w := range o.accept[side] {
			for sh := 56; sh >= 0; sh -= 8 {
				dst = append(dst, byte(w>>sh))
			}
		}
	}
	n := 0
	for i := range o.ent {
		if o.ent[i].used {
			n++
		}
	}
	dst = append(dst, byte(n))
	for i := range o.ent {
		if e := &o.ent[i]; e.used {
			dst = append(dst, byte(e.opt), byte(e.st[Local]), byte(e.st[Remote]))
		}
	}
	return dst
}

// ParseState reads a state AppendState wrote and returns the rest of b.
// On error o is unchanged.
func (o *Options) ParseState(b []byte) (rest []byte, err error) {
	const head = 1 + 64 + 1
	if len(b) < head {
		return nil, fmt.Errorf("%w: %d bytes, want at least %d", ErrBadState, len(b), head)
	}
	if b[0] != stateVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrBadState, b[0], stateVersion)
	}
	var next Options
	off := 1
	for side := range next.accept {
		for i := range next.accept[side] {
			var w uint64
			for _, c := range b[off : off+8] {
				w = w<<8 | uint64(c)
			}
			next.accept[side][i] = w
			off += 8
		}
	}
	n := int(b[off])
	off++
	if n > maxTracked {
		return nil, fmt.Errorf("%w: %d options, at most %d", ErrBadState, n, maxTracked)
	}
	if len(b) < off+3*n {
		return nil, fmt.Errorf("%w: %d option entries need %d bytes, have %d", ErrBadState, n, 3*n, len(b)-off)
	}
	for i := range n {
		opt, l, r := Option(b[off]), qState(b[off+1]), qState(b[off+2])
		off += 3
		if l > qStateMask|qOpposite || r > qStateMask|qOpposite {
			return nil, fmt.Errorf("%w: option %v: state %d/%d out of range", ErrBadState, opt, l, r)
		}
		if l == qNo && r == qNo {
			return nil, fmt.Errorf("%w: option %v: an entry with both sides NO", ErrBadState, opt)
		}
		if next.find(opt) != nil {
			return nil, fmt.Errorf("%w: option %v twice", ErrBadState, opt)
		}
		next.ent[i] = optEntry{opt: opt, st: [2]qState{l, r}, used: true}
	}
	*o = next
	return b[off:], nil
}
