package telnet

import (
	"bytes"
	"errors"
	"fmt"
)

// EventKind says what an Event carries.
type EventKind uint8

// Event kinds.
const (
	// EventData: Data holds data bytes, unescaped.
	EventData EventKind = iota + 1
	// EventCommand: Command holds a command other than SB and the
	// negotiation verbs (NOP, BRK, AYT, GA, ... or an unassigned byte).
	EventCommand
	// EventNegotiation: Command is WILL, WONT, DO or DONT; Option is set.
	EventNegotiation
	// EventSubnegotiation: Option is set and Data holds the payload between
	// IAC SB <option> and IAC SE, unescaped.
	EventSubnegotiation
)

func (k EventKind) String() string {
	switch k {
	case EventData:
		return "data"
	case EventCommand:
		return "command"
	case EventNegotiation:
		return "negotiation"
	case EventSubnegotiation:
		return "subnegotiation"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Event is one decoded element of a telnet stream.
//
// Data aliases memory owned by the caller of Decode (or by the Decoder for
// a subnegotiation that spanned several calls): it is valid only until the
// handler returns. Copy it to keep it.
type Event struct {
	Kind    EventKind
	Command Command
	Option  Option
	Data    []byte
}

// DefaultMaxSubnegotiation is the subnegotiation payload limit used when
// Decoder.MaxSubnegotiation is zero.
const DefaultMaxSubnegotiation = 4096

// ErrSubnegotiationTooLong is returned (wrapped in a *SubnegotiationError)
// when a subnegotiation payload exceeds the decoder's limit.
var ErrSubnegotiationTooLong = errors.New("telnet: subnegotiation too long")

// ErrMalformedSubnegotiation is returned (wrapped in a *SubnegotiationError)
// when a subnegotiation is interrupted by IAC followed by something other
// than SE or IAC.
var ErrMalformedSubnegotiation = errors.New("telnet: malformed subnegotiation")

// SubnegotiationError says which subnegotiation broke a limit or the syntax.
type SubnegotiationError struct {
	Err    error   // ErrSubnegotiationTooLong or ErrMalformedSubnegotiation
	Option Option  // the option being subnegotiated
	Len    int     // payload bytes seen so far
	Limit  int     // the limit in force
	Got    Command // for ErrMalformedSubnegotiation: the byte after IAC
}

func (e *SubnegotiationError) Error() string {
	if errors.Is(e.Err, ErrSubnegotiationTooLong) {
		return fmt.Sprintf("telnet: subnegotiation of %v exceeds %d bytes", e.Option, e.Limit)
	}
	return fmt.Sprintf("telnet: IAC %v inside subnegotiation of %v (after %d bytes)", e.Got, e.Option, e.Len)
}

func (e *SubnegotiationError) Unwrap() error { return e.Err }

type decState uint8

const (
	stData   decState = iota
	stIAC             // saw IAC
	stNeg             // saw IAC WILL/WONT/DO/DONT, need the option
	stSBOpt           // saw IAC SB, need the option
	stSB              // inside SB payload
	stSBIAC           // saw IAC inside SB payload
	stDataCR          // text mode: saw CR in data
)

// Decoder is a streaming telnet decoder. The zero value is ready to use:
// text mode (BINARY off) and a DefaultMaxSubnegotiation limit.
// A Decoder is not safe for concurrent use.
type Decoder struct {
	// MaxSubnegotiation bounds the payload of one subnegotiation, in
	// bytes after unescaping. Zero means DefaultMaxSubnegotiation.
	MaxSubnegotiation int

	// Binary reports that the peer sends in BINARY mode (RFC 856): every
	// byte is data. When false, CR NUL decodes to CR.
	Binary bool

	state   decState
	verb    Command // pending negotiation verb
	sbOpt   Option
	sbBuf   []byte // payload of a subnegotiation spanning Decode calls
	spanned bool   // the current SB payload lives in sbBuf
	sbLen   int
}

func (d *Decoder) limit() int {
	if d.MaxSubnegotiation > 0 {
		return d.MaxSubnegotiation
	}
	return DefaultMaxSubnegotiation
}

// Handler receives decoded events. An error stops decoding and is
// returned by Decode.
type Handler func(Event) error

// Decode decodes p, calling h for each event in stream order. It may
// rewrite p in place (unescaping); event data aliases p. Input may be
// split anywhere: state carries over to the next call.
//
// It returns the first error from h, or a *SubnegotiationError. After a
// *SubnegotiationError the stream is out of sync; the caller should close
// the session.
func (d *Decoder) Decode(p []byte, h Handler) error {
	_, err := d.DecodeN(p, h)
	return err
}

// DecodeN is Decode that also says how much of p it consumed, so that a
// caller whose handler stops decoding (returns an error) can pass the
// rest of the stream on as it came, to another decoder in another
// process: n is the offset in p just past the input of the event h
// refused, p[n:] is input the decoder has not looked at (and not
// rewritten), and the decoder is in the state it had after p[:n]. A data
// event ends where the element after it begins, so stopping at one leaves
// that element in p[n:]. Without a handler error n is len(p); after a
// *SubnegotiationError n is meaningless.
func (d *Decoder) DecodeN(p []byte, h Handler) (n int, err error) {
	w := 0         // write index: in-place unescaping
	dataStart := 0 // start of the pending data run in p[:w]
	sbStart := 0   // start of an SB payload in p[:w] when !d.spanned
	// elem is where the IAC of the element being decoded began, and
	// elemState the state before it: a data event flushed when that
	// element is recognised ends there.
	elem, elemState := 0, stData

	flushData := func() error {
		if w > dataStart {
			err := h(Event{Kind: EventData, Data: p[dataStart:w]})
			dataStart = w
			return err
		}
		return nil
	}
	// dataStop: the handler refused the data run that ended at elem.
	dataStop := func(err error) (int, error) {
		d.state = elemState
		return elem, err
	}

	for r := 0; r < len(p); r++ {
		b := p[r]
		switch d.state {
		case stData:
			if d.Binary {
				// Fast path: copy the run up to the next IAC at once.
				i := bytes.IndexByte(p[r:], byte(IAC))
				if i < 0 {
					i = len(p) - r
				}
				if w != r {
					copy(p[w:], p[r:r+i])
				}
				w += i
				r += i
				if r == len(p) {
					continue
				}
				elem, elemState = r, stData
				d.state = stIAC
				continue
			}
			if b == byte(IAC) {
				elem, elemState = r, stData
				d.state = stIAC
				continue
			}
			p[w] = b
			w++
			if b == '\r' && !d.Binary {
				d.state = stDataCR
			}
		case stDataCR:
			switch b {
			case 0: // CR NUL: the NUL is padding
				d.state = stData
			case byte(IAC):
				elem, elemState = r, stDataCR
				d.state = stIAC // CR IAC ...: the CR was data
			default:
				p[w] = b
				w++
				if b != '\r' {
					d.state = stData
				}
			}
		case stIAC:
			switch c := Command(b); {
			case c == IAC:
				p[w] = b
				w++
				d.state = stData
			case c.IsNegotiation():
				d.verb = c
				d.state = stNeg
			case c == SB:
				d.state = stSBOpt
			default:
				if err := flushData(); err != nil {
					return dataStop(err)
				}
				d.state = stData
				if err := h(Event{Kind: EventCommand, Command: c}); err != nil {
					return r + 1, err
				}
			}
		case stNeg:
			if err := flushData(); err != nil {
				return dataStop(err)
			}
			d.state = stData
			if err := h(Event{Kind: EventNegotiation, Command: d.verb, Option: Option(b)}); err != nil {
				return r + 1, err
			}
		case stSBOpt:
			if err := flushData(); err != nil {
				return dataStop(err)
			}
			d.sbOpt = Option(b)
			d.sbLen = 0
			d.spanned = false
			sbStart = w
			d.state = stSB
		case stSB:
			if b == byte(IAC) {
				d.state = stSBIAC
				continue
			}
			if err := d.sbByte(p, &w, b); err != nil {
				return r, err
			}
		case stSBIAC:
			switch Command(b) {
			case IAC:
				d.state = stSB
				if err := d.sbByte(p, &w, b); err != nil {
					return r, err
				}
			case SE:
				d.state = stData
				payload := p[sbStart:w]
				if d.spanned {
					payload = d.sbBuf
				}
				err := h(Event{Kind: EventSubnegotiation, Option: d.sbOpt, Data: payload})
				// The payload bytes in p are consumed; data restarts here.
				// (A spanned payload began before this call: sbStart == w == 0.)
				w = sbStart
				dataStart = w
				d.spanned = false
				d.sbBuf = d.sbBuf[:0]
				if cap(d.sbBuf) > 512 {
					d.sbBuf = nil // hold no large buffer while idle
				}
				if err != nil {
					return r + 1, err
				}
			default:
				d.state = stData
				return r, &SubnegotiationError{Err: ErrMalformedSubnegotiation, Option: d.sbOpt, Len: d.sbLen, Limit: d.limit(), Got: Command(b)}
			}
		}
	}
	// End of input: hand over pending data; park an open SB payload.
	if d.state == stSB || d.state == stSBIAC {
		if !d.spanned {
			d.sbBuf = append(d.sbBuf[:0], p[sbStart:w]...)
			d.spanned = true
			w = sbStart
		}
	}
	if err := flushData(); err != nil {
		if d.state != stData && d.state != stDataCR {
			// The run ended at an element still incomplete: give that
			// element back, unparsed.
			d.spanned = false
			d.sbBuf = d.sbBuf[:0]
			return dataStop(err)
		}
		return len(p), err
	}
	return len(p), nil
}

// sbByte stores one payload byte, in place or in the spanning buffer.
func (d *Decoder) sbByte(p []byte, w *int, b byte) error {
	d.sbLen++
	if d.sbLen > d.limit() {
		d.state = stData
		return &SubnegotiationError{Err: ErrSubnegotiationTooLong, Option: d.sbOpt, Len: d.sbLen, Limit: d.limit()}
	}
	if d.spanned {
		d.sbBuf = append(d.sbBuf, b)
		return nil
	}
	p[*w] = b
	*w++
	return nil
}

// InSubnegotiation reports whether the decoder is in the middle of a
// subnegotiation (useful to report a truncated SB when the peer closes).
func (d *Decoder) InSubnegotiation() (Option, bool) {
	switch d.state {
	case stSBOpt, stSB, stSBIAC:
		return d.sbOpt, true
	}
	return 0, false
}

// Reset forgets any partial command. Limits and mode are kept.
func (d *Decoder) Reset() {
	d.state = stData
	d.spanned = false
	d.sbBuf = d.sbBuf[:0]
	d.sbLen = 0
}

// Release drops the spanning-subnegotiation buffer so an idle decoder
// holds no memory. It is a no-op while a subnegotiation is open.
func (d *Decoder) Release() {
	if !d.spanned {
		d.sbBuf = nil
	}
}
