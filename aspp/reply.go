package aspp

import (
	"errors"
	"fmt"
)

// Frame is one NPort → host frame: a reply or an unsolicited NOTIFY or
// POLLING. It is a small value (no pointers); Body returns its bytes after
// the opcode. Use the accessors to read a typed payload.
type Frame struct {
	Op   Opcode
	n    uint8   // body length: ReplyLen(Op)-1
	body [4]byte // bytes after the opcode
}

// Body returns the bytes after the opcode (a copy).
func (f Frame) Body() []byte { return append([]byte(nil), f.body[:f.n]...) }

// Len returns the frame's length on the wire, opcode included.
func (f Frame) Len() int { return 1 + int(f.n) }

// AppendTo appends the frame in wire form.
func (f Frame) AppendTo(dst []byte) []byte {
	dst = append(dst, byte(f.Op))
	return append(dst, f.body[:f.n]...)
}

// OK reports a 3-byte reply "op 'O' 'K'": the NPort accepted the request.
func (f Frame) OK() bool { return f.n == 2 && f.body[0] == 'O' && f.body[1] == 'K' }

// ErrRefused is wrapped by Modem when a PORT_INIT reply is 2C 03 FF FF FF:
// the NPort refused the settings (Moxa's driver then restores the previous
// speed; §2.2, §8 item 9).
var ErrRefused = errors.New("aspp: NPort refused the line settings")

// ErrReply is wrapped by the accessors of Frame when the frame does not
// have the layout its opcode calls for.
var ErrReply = errors.New("aspp: malformed reply")

// Modem returns the modem inputs of a PORT_INIT or LSTATUS reply
// (op 03 DSR CTS DCD; non-zero = asserted). A PORT_INIT reply of FF FF FF
// is an error wrapping ErrRefused.
func (f Frame) Modem() (Modem, error) {
	if (f.Op != PortInit && f.Op != LStatus) || f.n != 4 {
		return Modem{}, fmt.Errorf("%w: %v carries no modem inputs", ErrReply, f)
	}
	if f.body[0] != 3 {
		return Modem{}, fmt.Errorf("%w: %v length byte %d (want 3)", ErrReply, f.Op, f.body[0])
	}
	if f.Op == PortInit && f.body[1] == 0xFF && f.body[2] == 0xFF && f.body[3] == 0xFF {
		return Modem{}, ErrRefused
	}
	return Modem{DSR: f.body[1] != 0, CTS: f.body[2] != 0, DCD: f.body[3] != 0}, nil
}

// Notify returns the event and modem bytes of a NOTIFY frame
// (26 events msr x; the fourth byte's meaning is unknown, §8 item 6).
func (f Frame) Notify() (Events, MSR, error) {
	if f.Op != Notify || f.n != 3 {
		return 0, 0, fmt.Errorf("%w: %v is not a NOTIFY", ErrReply, f)
	}
	return Events(f.body[0]), MSR(f.body[1]), nil
}

// PollID returns the token of a POLLING frame (27 ?? id), to echo in
// AppendAlive.
func (f Frame) PollID() (byte, error) {
	if f.Op != Polling || f.n != 2 {
		return 0, fmt.Errorf("%w: %v is not a POLLING", ErrReply, f)
	}
	return f.body[1], nil
}

// Queue returns the byte count of a WAIT_OQUEUE, OQUEUE or IQUEUE reply
// (op 02 lo hi). Moxa's driver computes hi*16+lo, probably a bug (§8 item
// 4); this returns hi*256+lo. Only zero is known to be reliable.
func (f Frame) Queue() (uint16, error) {
	if (f.Op != WaitOQueue && f.Op != OQueue && f.Op != IQueue) || f.n != 3 {
		return 0, fmt.Errorf("%w: %v carries no queue count", ErrReply, f)
	}
	if f.body[0] != 2 {
		return 0, fmt.Errorf("%w: %v length byte %d (want 2)", ErrReply, f.Op, f.body[0])
	}
	return uint16(f.body[1]) | uint16(f.body[2])<<8, nil
}

// String describes the frame: "PORT_INIT DSR|CTS", "SETBAUD OK",
// "NOTIFY MODEM DCD|CTS", or the opcode and bytes when it has no typed
// reading.
func (f Frame) String() string {
	switch {
	case f.OK():
		return f.Op.String() + " OK"
	case f.Op == PortInit || f.Op == LStatus:
		m, err := f.Modem()
		if errors.Is(err, ErrRefused) {
			return f.Op.String() + " REFUSED"
		}
		if err == nil {
			return f.Op.String() + " " + m.String()
		}
	case f.Op == Notify:
		e, m, _ := f.Notify()
		return fmt.Sprintf("NOTIFY %v %v", e, m)
	case f.Op == Polling:
		return fmt.Sprintf("POLLING %#02x", f.body[1])
	case f.Op == WaitOQueue || f.Op == OQueue || f.Op == IQueue:
		if q, err := f.Queue(); err == nil {
			return fmt.Sprintf("%v %d", f.Op, q)
		}
	}
	return fmt.Sprintf("%v % x", f.Op, f.body[:f.n])
}

// MakeFrame builds a frame from its wire bytes; b must be exactly
// ReplyLen(Opcode(b[0])) bytes.
func MakeFrame(b []byte) (Frame, error) {
	if len(b) == 0 {
		return Frame{}, fmt.Errorf("%w: empty frame", ErrReply)
	}
	n := ReplyLen(Opcode(b[0]))
	if n == 0 {
		return Frame{}, &OpcodeError{Op: Opcode(b[0])}
	}
	if len(b) != n {
		return Frame{}, fmt.Errorf("%w: %v frame of %d bytes (want %d)", ErrReply, Opcode(b[0]), len(b), n)
	}
	f := Frame{Op: Opcode(b[0]), n: uint8(n - 1)}
	copy(f.body[:], b[1:])
	return f, nil
}

// ErrUnknownOpcode is wrapped by the OpcodeError ReplyDecoder returns for a
// byte that starts no known frame: the stream is out of step (Moxa's
// daemon drops the rest of the read; a client should reconnect).
var ErrUnknownOpcode = errors.New("aspp: unknown opcode in the NPort's command stream")

// OpcodeError names the byte that could not be framed.
type OpcodeError struct {
	Op     Opcode
	Offset int64 // position in the stream since the decoder was made
}

func (e *OpcodeError) Error() string {
	return fmt.Sprintf("aspp: unknown opcode %#02x at byte %d of the NPort's command stream", byte(e.Op), e.Offset)
}

func (e *OpcodeError) Unwrap() error { return ErrUnknownOpcode }

// ReplyDecoder cuts the NPort → host byte stream into frames by the fixed
// per-opcode lengths (§2.3). Input may be split anywhere, including inside
// a frame; several frames may come in one read. It holds at most 4 bytes
// of an incomplete frame. The zero value is ready; it is not safe for
// concurrent use.
type ReplyDecoder struct {
	cur  Frame // the frame being assembled; valid when have > 0
	have int   // bytes of cur received, opcode included
	off  int64 // stream offset of the next input byte
	err  error // sticky: once out of step, always out of step
}

// Decode passes every complete frame in p to f, in order. A byte that
// starts no known frame stops decoding with an *OpcodeError (wrapping
// ErrUnknownOpcode), and every later call returns the same error: the
// stream cannot be resynchronised. An error from f stops decoding and is
// returned as is.
func (d *ReplyDecoder) Decode(p []byte, f func(Frame) error) error {
	if d.err != nil {
		return d.err
	}
	for len(p) > 0 {
		if d.have == 0 {
			op := Opcode(p[0])
			n := ReplyLen(op)
			if n == 0 {
				d.err = &OpcodeError{Op: op, Offset: d.off}
				return d.err
			}
			d.cur = Frame{Op: op, n: uint8(n - 1)}
			d.have = 1
			d.off++
			p = p[1:]
		}
		k := copy(d.cur.body[d.have-1:d.cur.n], p)
		d.have += k
		d.off += int64(k)
		p = p[k:]
		if d.have < d.cur.Len() {
			return nil
		}
		d.have = 0
		if err := f(d.cur); err != nil {
			return err
		}
	}
	return nil
}

// Pending returns how many bytes of an incomplete frame are held.
func (d *ReplyDecoder) Pending() int { return d.have }

// AppendOK appends the acceptance reply "op 'O' 'K'".
func AppendOK(dst []byte, op Opcode) []byte { return append(dst, byte(op), 'O', 'K') }

// AppendModem appends a PORT_INIT or LSTATUS reply: op 03 DSR CTS DCD.
func AppendModem(dst []byte, op Opcode, m Modem) []byte {
	return append(dst, byte(op), 3, b2i(m.DSR), b2i(m.CTS), b2i(m.DCD))
}

// AppendRefused appends the PORT_INIT reply 2C 03 FF FF FF (settings
// refused).
func AppendRefused(dst []byte) []byte { return append(dst, byte(PortInit), 3, 0xFF, 0xFF, 0xFF) }

// AppendNotify appends NOTIFY: 26 events msr 00.
func AppendNotify(dst []byte, e Events, m MSR) []byte {
	return append(dst, byte(Notify), byte(e), byte(m), 0)
}

// AppendPolling appends the keep-alive POLLING 27 01 id (byte 1 is not
// read by Moxa's daemon; 01 is inferred, §8 item 8).
func AppendPolling(dst []byte, id byte) []byte { return append(dst, byte(Polling), 1, id) }

// AppendQueue appends a WAIT_OQUEUE, OQUEUE or IQUEUE reply: op 02 lo hi.
func AppendQueue(dst []byte, op Opcode, n uint16) []byte {
	return append(dst, byte(op), 2, byte(n), byte(n>>8))
}
