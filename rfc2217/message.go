package rfc2217

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/vspc-bridge/vspc-bridge/telnet"
)

// Message is one COM-PORT-OPTION subnegotiation: the payload between
// IAC SB 44 and IAC SE. Which field carries the value depends on Command:
//
//	SIGNATURE (0/100)              Text
//	SET-BAUDRATE (1/101)           Baud (4 bytes on the wire, network order)
//	FLOWCONTROL-SUSPEND/RESUME     nothing
//	every other command            Value (1 byte): a DataSize, Parity,
//	                               StopSize, Control, LineState, ModemState
//	                               or PurgeTarget, per the command
//
// A zero value in a client request is a query (RFC 2217). Use the typed
// accessors (Parity, Control, …) to read Value.
type Message struct {
	Command Command
	Baud    uint32
	Value   uint8
	Text    string

	// Poll marks a client NOTIFY-LINESTATE or NOTIFY-MODEMSTATE sent with
	// no value at all: pyserial's poll_modem sends "SB 44 07" to ask the
	// server for its modem state. Ignored for other commands.
	Poll bool

	// Extra counts value bytes past the command's defined length that
	// Parse ignored. sredird 2.2.1 answers SET-BAUDRATE with 8 bytes (the
	// baud then 4 NULs): Parse takes the first 4 and sets Extra to 4, so a
	// session can log the quirk. Append never sends extra bytes.
	Extra int
}

// Sentinel errors wrapped by *ParseError.
var (
	// ErrMalformed: the payload is empty or shorter than its command needs.
	ErrMalformed = errors.New("rfc2217: malformed message")
	// ErrUnknownCommand: the command code is not one RFC 2217 defines
	// (13–99, 113–255). Sessions log and ignore such messages.
	ErrUnknownCommand = errors.New("rfc2217: unknown command")
)

// ParseError describes a payload Parse rejected.
type ParseError struct {
	Err     error   // ErrMalformed or ErrUnknownCommand
	Command Command // the command byte, if there was one
	Len     int     // value bytes present (after the command byte)
	Want    int     // value bytes the command needs
}

func (e *ParseError) Error() string {
	switch {
	case errors.Is(e.Err, ErrUnknownCommand):
		return fmt.Sprintf("rfc2217: unknown command %d (%d value bytes)", byte(e.Command), e.Len)
	case e.Want == 0:
		return "rfc2217: empty COM-PORT-OPTION subnegotiation"
	}
	return fmt.Sprintf("rfc2217: %v value is %d bytes, want %d", e.Command, e.Len, e.Want)
}

func (e *ParseError) Unwrap() error { return e.Err }

// valueLen is the number of value bytes command c carries on the wire
// (-1: the rest of the payload, as text).
func valueLen(c Command) int {
	switch c.Base() {
	case Signature:
		return -1
	case SetBaudrate:
		return 4
	case FlowControlSuspend, FlowControlResume:
		return 0
	}
	return 1
}

// Parse decodes one COM-PORT-OPTION payload (unescaped, without the option
// byte: telnet.Event.Data of an EventSubnegotiation for telnet.ComPort).
// It is strict about lengths it needs and lax about trailing bytes
// (counted in Message.Extra). The returned Message does not alias payload.
func Parse(payload []byte) (Message, error) {
	if len(payload) == 0 {
		return Message{}, &ParseError{Err: ErrMalformed}
	}
	m := Message{Command: Command(payload[0])}
	v := payload[1:]
	if !m.Command.Known() {
		return Message{}, &ParseError{Err: ErrUnknownCommand, Command: m.Command, Len: len(v)}
	}
	n := valueLen(m.Command)
	switch {
	case n < 0:
		m.Text = string(v)
		return m, nil
	case len(v) == 0 && n == 1 && (m.Command == NotifyLinestate || m.Command == NotifyModemstate):
		m.Poll = true
		return m, nil
	case len(v) < n:
		return Message{}, &ParseError{Err: ErrMalformed, Command: m.Command, Len: len(v), Want: n}
	}
	switch n {
	case 4:
		m.Baud = binary.BigEndian.Uint32(v)
	case 1:
		m.Value = v[0]
	}
	m.Extra = len(v) - n
	return m, nil
}

// AppendPayload appends m's payload, unescaped, without the option byte:
// what Parse reads. Only the fields Command uses are sent.
func (m Message) AppendPayload(dst []byte) []byte {
	dst = append(dst, byte(m.Command))
	switch valueLen(m.Command) {
	case -1:
		dst = append(dst, m.Text...)
	case 4:
		dst = binary.BigEndian.AppendUint32(dst, m.Baud)
	case 1:
		if !(m.Poll && (m.Command == NotifyLinestate || m.Command == NotifyModemstate)) {
			dst = append(dst, m.Value)
		}
	}
	return dst
}

// AppendMessage appends m as it goes on the wire,
// IAC SB COM-PORT-OPTION <payload> IAC SE, with every 255 in the payload
// (a baud rate, a mask, signature text) doubled.
func AppendMessage(dst []byte, m Message) []byte {
	var buf [8]byte
	if m.Command.Base() == Signature {
		return telnet.AppendSubnegotiation(dst, telnet.ComPort, []byte{byte(m.Command)}, []byte(m.Text))
	}
	return telnet.AppendSubnegotiation(dst, telnet.ComPort, m.AppendPayload(buf[:0]))
}

// String formats m for logs, e.g. "SET-BAUDRATE 115200",
// "SERVER-SET-CONTROL DTR-ON", "NOTIFY-MODEMSTATE CD|DSR|CTS".
func (m Message) String() string {
	s := m.Command.String()
	switch m.Command.Base() {
	case Signature:
		if m.Text == "" {
			return s + " (request)"
		}
		return fmt.Sprintf("%s %q", s, m.Text)
	case SetBaudrate:
		s = fmt.Sprintf("%s %d", s, m.Baud)
	case SetDatasize, PurgeData:
		if m.Command.Base() == PurgeData {
			s += " " + m.Purge().String()
		} else {
			s = fmt.Sprintf("%s %d", s, m.Value)
		}
	case SetParity:
		s += " " + m.Parity().String()
	case SetStopsize:
		s += " " + m.StopSize().String()
	case SetControl:
		s += " " + m.Control().String()
	case NotifyLinestate, SetLinestateMask:
		if m.Poll {
			return s + " (poll)"
		}
		s += " " + m.LineState().String()
	case NotifyModemstate, SetModemstateMask:
		if m.Poll {
			return s + " (poll)"
		}
		s += " " + m.ModemState().String()
	}
	if m.Extra > 0 {
		s += fmt.Sprintf(" (+%d extra bytes)", m.Extra)
	}
	return s
}

// Parity returns Value as a SET-PARITY value.
func (m Message) Parity() Parity { return Parity(m.Value) }

// StopSize returns Value as a SET-STOPSIZE value.
func (m Message) StopSize() StopSize { return StopSize(m.Value) }

// Control returns Value as a SET-CONTROL value.
func (m Message) Control() Control { return Control(m.Value) }

// LineState returns Value as a NOTIFY-LINESTATE state or mask.
func (m Message) LineState() LineState { return LineState(m.Value) }

// ModemState returns Value as a NOTIFY-MODEMSTATE state or mask.
func (m Message) ModemState() ModemState { return ModemState(m.Value) }

// Purge returns Value as a PURGE-DATA target.
func (m Message) Purge() PurgeTarget { return PurgeTarget(m.Value) }
