package aspp

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Init is the payload of PORT_INIT (§3.3): everything about the line in
// one request.
type Init struct {
	Baud BaudIndex // BaudByValue: SETBAUD with the rate follows
	Mode Mode
	DTR  bool
	RTS  bool
	// HWFlow are bytes 4 and 5, both set for RTS/CTS flow control. Moxa's
	// driver always sends them equal; which one is RTS flow and which CTS
	// flow is unknown (§8 item 2).
	HWFlow [2]bool
	IXON   bool // honour XON/XOFF from the serial line (pauses the NPort's transmitter)
	IXOFF  bool // the NPort sends XON/XOFF when its receive buffer fills
}

func (p Init) String() string {
	return fmt.Sprintf("baud=%v mode=%v dtr=%d rts=%d hwflow=%d,%d ixon=%d ixoff=%d",
		p.Baud, p.Mode, b2i(p.DTR), b2i(p.RTS), b2i(p.HWFlow[0]), b2i(p.HWFlow[1]), b2i(p.IXON), b2i(p.IXOFF))
}

func b2i(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// AppendRequest appends a request: op, the payload length, the payload.
// It panics if the payload is longer than 255 bytes (a programming error:
// no request has more than 8).
func AppendRequest(dst []byte, op Opcode, payload ...byte) []byte {
	if len(payload) > 255 {
		panic("aspp: request payload over 255 bytes")
	}
	dst = append(dst, byte(op), byte(len(payload)))
	return append(dst, payload...)
}

// AppendPortInit appends PORT_INIT: 2C 08 idx mode DTR RTS fl fl ixon ixoff.
func AppendPortInit(dst []byte, p Init) []byte {
	return AppendRequest(dst, PortInit, byte(p.Baud), byte(p.Mode), b2i(p.DTR), b2i(p.RTS),
		b2i(p.HWFlow[0]), b2i(p.HWFlow[1]), b2i(p.IXON), b2i(p.IXOFF))
}

// AppendSetBaud appends SETBAUD with baud as a little-endian uint32
// (§2.1: Moxa's driver copies a host int on little-endian hosts; big-endian
// is an open question, §8 item 1): 17 04 b0 b1 b2 b3.
func AppendSetBaud(dst []byte, baud uint32) []byte {
	dst = append(dst, byte(SetBaud), 4)
	return binary.LittleEndian.AppendUint32(dst, baud)
}

// AppendXonXoff appends XONXOFF with the software flow-control characters:
// 18 02 xon xoff.
func AppendXonXoff(dst []byte, xon, xoff byte) []byte {
	return AppendRequest(dst, XonXoff, xon, xoff)
}

// AppendLineCtrl appends LINECTRL with the absolute DTR and RTS state:
// 12 02 DTR RTS.
func AppendLineCtrl(dst []byte, dtr, rts bool) []byte {
	return AppendRequest(dst, LineCtrl, b2i(dtr), b2i(rts))
}

// AppendFlush appends FLUSH: 14 01 sel.
func AppendFlush(dst []byte, t FlushTarget) []byte {
	return AppendRequest(dst, Flush, byte(t))
}

// AppendBreak appends START_BREAK (21 00) or STOP_BREAK (22 00).
func AppendBreak(dst []byte, on bool) []byte {
	if on {
		return AppendRequest(dst, StartBreak)
	}
	return AppendRequest(dst, StopBreak)
}

// AppendTxFIFO appends TX_FIFO with the UART transmit FIFO depth Moxa's
// driver announces (16 for a 16550A): 30 01 n.
func AppendTxFIFO(dst []byte, n byte) []byte {
	return AppendRequest(dst, TxFIFO, n)
}

// AppendAlive appends ALIVE, the answer to POLLING, echoing its token:
// 28 01 id.
func AppendAlive(dst []byte, id byte) []byte {
	return AppendRequest(dst, Alive, id)
}

// AppendWaitOQueue appends WAIT_OQUEUE with a timeout in the NPort's
// unknown unit (Moxa's driver sends host jiffies; §8 item 5):
// 2F 04 t0 t1 t2 t3, little-endian.
func AppendWaitOQueue(dst []byte, timeout uint32) []byte {
	dst = append(dst, byte(WaitOQueue), 4)
	return binary.LittleEndian.AppendUint32(dst, timeout)
}

// Request is one host → NPort request. Payload aliases the bytes given to
// RequestDecoder.Decode (or the decoder's own buffer for a request split
// across calls): it is valid only until the handler returns.
type Request struct {
	Op      Opcode
	Payload []byte
}

// ErrPayload is wrapped by the errors of Request's accessors when the
// payload does not have the size or values the opcode calls for.
var ErrPayload = errors.New("aspp: bad request payload")

func (r Request) want(op Opcode, n int) error {
	if r.Op != op {
		return fmt.Errorf("%w: %v is not %v", ErrPayload, r.Op, op)
	}
	if len(r.Payload) != n {
		return fmt.Errorf("%w: %v payload of %d bytes (want %d)", ErrPayload, op, len(r.Payload), n)
	}
	return nil
}

// Init returns the PORT_INIT payload. Any non-zero flag byte counts as on.
func (r Request) Init() (Init, error) {
	if err := r.want(PortInit, 8); err != nil {
		return Init{}, err
	}
	p := r.Payload
	return Init{
		Baud: BaudIndex(p[0]), Mode: Mode(p[1]), DTR: p[2] != 0, RTS: p[3] != 0,
		HWFlow: [2]bool{p[4] != 0, p[5] != 0}, IXON: p[6] != 0, IXOFF: p[7] != 0,
	}, nil
}

// Baud returns the rate of a SETBAUD request (little-endian).
func (r Request) Baud() (uint32, error) {
	if err := r.want(SetBaud, 4); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(r.Payload), nil
}

// LineCtrl returns the DTR and RTS state of a LINECTRL request.
func (r Request) LineCtrl() (dtr, rts bool, err error) {
	if err := r.want(LineCtrl, 2); err != nil {
		return false, false, err
	}
	return r.Payload[0] != 0, r.Payload[1] != 0, nil
}

// XonXoff returns the characters of an XONXOFF request.
func (r Request) XonXoff() (xon, xoff byte, err error) {
	if err := r.want(XonXoff, 2); err != nil {
		return 0, 0, err
	}
	return r.Payload[0], r.Payload[1], nil
}

// Flush returns the selector of a FLUSH request.
func (r Request) Flush() (FlushTarget, error) {
	if err := r.want(Flush, 1); err != nil {
		return 0, err
	}
	if t := FlushTarget(r.Payload[0]); t <= FlushBoth {
		return t, nil
	}
	return 0, fmt.Errorf("%w: FLUSH selector %d (want 0–2)", ErrPayload, r.Payload[0])
}

// Byte returns the one-byte payload of TX_FIFO or ALIVE.
func (r Request) Byte() (byte, error) {
	if len(r.Payload) != 1 {
		return 0, fmt.Errorf("%w: %v payload of %d bytes (want 1)", ErrPayload, r.Op, len(r.Payload))
	}
	return r.Payload[0], nil
}

// Uint32 returns the little-endian 4-byte payload of WAIT_OQUEUE or
// SETBAUD.
func (r Request) Uint32() (uint32, error) {
	if len(r.Payload) != 4 {
		return 0, fmt.Errorf("%w: %v payload of %d bytes (want 4)", ErrPayload, r.Op, len(r.Payload))
	}
	return binary.LittleEndian.Uint32(r.Payload), nil
}

func (r Request) String() string { return fmt.Sprintf("%v % x", r.Op, r.Payload) }

// AppendTo appends r in wire form.
func (r Request) AppendTo(dst []byte) []byte { return AppendRequest(dst, r.Op, r.Payload...) }

// RequestDecoder cuts the host → NPort byte stream into requests
// ([opcode][length][payload]); the simulated NPort uses it. Input may be
// split anywhere and several requests may arrive in one read (Moxa's
// session recovery sends them back to back). It holds at most MaxFrame
// bytes of an incomplete request: the length byte bounds it. The zero
// value is ready; it is not safe for concurrent use.
type RequestDecoder struct {
	buf [MaxFrame]byte
	n   int
}

// Decode passes every complete request in p to f, in order, and keeps an
// incomplete tail for the next call. An error from f stops decoding and is
// returned; the unprocessed rest of p is dropped.
func (d *RequestDecoder) Decode(p []byte, f func(Request) error) error {
	for len(p) > 0 {
		if d.n > 0 { // finish the request split across calls
			need := 2
			if d.n >= 2 {
				need = 2 + int(d.buf[1])
			}
			k := copy(d.buf[d.n:need], p)
			d.n += k
			p = p[k:]
			if d.n < 2 || d.n < 2+int(d.buf[1]) {
				continue
			}
			n := d.n
			d.n = 0
			if err := f(Request{Op: Opcode(d.buf[0]), Payload: d.buf[2:n]}); err != nil {
				return err
			}
			continue
		}
		if len(p) < 2 || len(p) < 2+int(p[1]) {
			d.n = copy(d.buf[:], p)
			return nil
		}
		n := 2 + int(p[1])
		if err := f(Request{Op: Opcode(p[0]), Payload: p[2:n:n]}); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// Pending returns how many bytes of an incomplete request are held.
func (d *RequestDecoder) Pending() int { return d.n }
