package rfc2217

import (
	"strconv"
	"strings"
)

// Command is a COM-PORT-OPTION command code, the first byte of the
// subnegotiation payload (RFC 2217 "Com Port Commands"). Codes 0–12 travel
// client→access server; the access server answers and notifies with the
// same command plus 100 (SIGNATURE 100 … PURGE-DATA 112).
type Command byte

// Client→server command codes. The server→client code is c.Reply().
const (
	Signature          Command = 0  // text; empty = "send me your signature"
	SetBaudrate        Command = 1  // 4 bytes, network order; 0 = query
	SetDatasize        Command = 2  // 1 byte: 0 query, 5, 6, 7, 8
	SetParity          Command = 3  // 1 byte: Parity
	SetStopsize        Command = 4  // 1 byte: StopSize
	SetControl         Command = 5  // 1 byte: Control
	NotifyLinestate    Command = 6  // 1 byte: LineState (server→client); pyserial sends it empty to poll
	NotifyModemstate   Command = 7  // 1 byte: ModemState (server→client); pyserial sends it empty to poll
	FlowControlSuspend Command = 8  // no value: "stop sending me data" (either side)
	FlowControlResume  Command = 9  // no value: "go on"
	SetLinestateMask   Command = 10 // 1 byte: LineState mask, RFC default 0
	SetModemstateMask  Command = 11 // 1 byte: ModemState mask, RFC default 255
	PurgeData          Command = 12 // 1 byte: PurgeTarget

	// ServerOffset is added to a client command code to form the access
	// server's code for the same command.
	ServerOffset Command = 100
)

var commandNames = [...]string{
	"SIGNATURE", "SET-BAUDRATE", "SET-DATASIZE", "SET-PARITY", "SET-STOPSIZE",
	"SET-CONTROL", "NOTIFY-LINESTATE", "NOTIFY-MODEMSTATE", "FLOWCONTROL-SUSPEND",
	"FLOWCONTROL-RESUME", "SET-LINESTATE-MASK", "SET-MODEMSTATE-MASK", "PURGE-DATA",
}

// String returns the RFC name: "SET-BAUDRATE" for 1 and
// "SERVER-SET-BAUDRATE" for 101; unknown codes print as "COMPORT-CMD(n)".
func (c Command) String() string {
	switch {
	case int(c) < len(commandNames):
		return commandNames[c]
	case c >= ServerOffset && int(c-ServerOffset) < len(commandNames):
		return "SERVER-" + commandNames[c-ServerOffset]
	}
	return "COMPORT-CMD(" + strconv.Itoa(int(c)) + ")"
}

// Known reports whether c is one of the 26 codes RFC 2217 defines.
func (c Command) Known() bool {
	return int(c) < len(commandNames) || (c >= ServerOffset && int(c-ServerOffset) < len(commandNames))
}

// IsServer reports whether c is an access-server code (100–112).
func (c Command) IsServer() bool { return c >= ServerOffset && int(c-ServerOffset) < len(commandNames) }

// Reply returns the server code for client code c (c+100). It returns c
// unchanged when c is already a server code or unknown.
func (c Command) Reply() Command {
	if int(c) < len(commandNames) {
		return c + ServerOffset
	}
	return c
}

// Base returns the client code for c: c-100 for a server code, else c.
func (c Command) Base() Command {
	if c.IsServer() {
		return c - ServerOffset
	}
	return c
}

// Parity is the SET-PARITY value.
type Parity uint8

// SET-PARITY values (RFC 2217). Zero is the query / "leave as is".
const (
	ParityQuery Parity = 0
	ParityNone  Parity = 1
	ParityOdd   Parity = 2
	ParityEven  Parity = 3
	ParityMark  Parity = 4
	ParitySpace Parity = 5
)

// Letter returns the one-letter form used in "8N1": N, O, E, M, S, or "?"
// for the query value and unknown values.
func (p Parity) Letter() string {
	if p >= ParityNone && p <= ParitySpace {
		return "NOEMS"[p-1 : p]
	}
	return "?"
}

func (p Parity) String() string {
	switch p {
	case ParityQuery:
		return "query"
	case ParityNone:
		return "none"
	case ParityOdd:
		return "odd"
	case ParityEven:
		return "even"
	case ParityMark:
		return "mark"
	case ParitySpace:
		return "space"
	}
	return "Parity(" + strconv.Itoa(int(p)) + ")"
}

// StopSize is the SET-STOPSIZE value.
type StopSize uint8

// SET-STOPSIZE values (RFC 2217). Zero is the query / "leave as is".
const (
	StopQuery StopSize = 0
	Stop1     StopSize = 1
	Stop2     StopSize = 2
	Stop15    StopSize = 3 // 1.5 stop bits
)

func (s StopSize) String() string {
	switch s {
	case StopQuery:
		return "query"
	case Stop1:
		return "1"
	case Stop2:
		return "2"
	case Stop15:
		return "1.5"
	}
	return "StopSize(" + strconv.Itoa(int(s)) + ")"
}

// FlowControl is the outbound (or both-ways) flow control set with
// SET-CONTROL 1–3; the numbers are the SET-CONTROL values.
type FlowControl uint8

// Flow control values; zero is "unset / leave as is".
const (
	FlowUnset    FlowControl = 0
	FlowNone     FlowControl = 1
	FlowXONXOFF  FlowControl = 2
	FlowHardware FlowControl = 3 // RTS/CTS
)

func (f FlowControl) String() string {
	switch f {
	case FlowUnset:
		return "unset"
	case FlowNone:
		return "none"
	case FlowXONXOFF:
		return "xon/xoff"
	case FlowHardware:
		return "rts/cts"
	}
	return "FlowControl(" + strconv.Itoa(int(f)) + ")"
}

// Control is the SET-CONTROL value.
type Control uint8

// SET-CONTROL values (RFC 2217). The server answers a query or a change
// with the value now in effect.
const (
	ControlFlowQuery      Control = 0 // request outbound (or both) flow control setting
	ControlFlowNone       Control = 1
	ControlFlowXONXOFF    Control = 2
	ControlFlowHardware   Control = 3
	ControlBreakQuery     Control = 4
	ControlBreakOn        Control = 5
	ControlBreakOff       Control = 6
	ControlDTRQuery       Control = 7
	ControlDTROn          Control = 8
	ControlDTROff         Control = 9
	ControlRTSQuery       Control = 10
	ControlRTSOn          Control = 11
	ControlRTSOff         Control = 12
	ControlInFlowQuery    Control = 13 // request inbound flow control setting
	ControlInFlowNone     Control = 14
	ControlInFlowXONXOFF  Control = 15
	ControlInFlowHardware Control = 16
	ControlFlowDCD        Control = 17 // DCD flow control (outbound/both)
	ControlInFlowDTR      Control = 18 // DTR flow control (inbound)
	ControlFlowDSR        Control = 19 // DSR flow control (outbound/both)
	controlLimit          Control = 20
)

// SET-CONTROL value groups: a reply to a DTR request must be in the DTR group.
const (
	groupFlow      = iota // 0–3
	groupBreak            // 4–6
	groupDTR              // 7–9
	groupRTS              // 10–12
	groupInFlow           // 13–16
	groupOtherFlow        // 17–19
	groupUnknown
	numGroups
)

var groupNames = [numGroups]string{"flow", "break", "DTR", "RTS", "inbound-flow", "other-flow", "unknown"}

var controlNames = [controlLimit]string{
	"FLOW-QUERY", "FLOW-NONE", "FLOW-XON/XOFF", "FLOW-HARDWARE",
	"BREAK-QUERY", "BREAK-ON", "BREAK-OFF",
	"DTR-QUERY", "DTR-ON", "DTR-OFF",
	"RTS-QUERY", "RTS-ON", "RTS-OFF",
	"INFLOW-QUERY", "INFLOW-NONE", "INFLOW-XON/XOFF", "INFLOW-HARDWARE",
	"FLOW-DCD", "INFLOW-DTR", "FLOW-DSR",
}

func (c Control) String() string {
	if c < controlLimit {
		return controlNames[c]
	}
	return "Control(" + strconv.Itoa(int(c)) + ")"
}

// group says which setting a SET-CONTROL value queries or changes; a
// server's reply for a DTR request must be in the DTR group.
func (c Control) group() int {
	switch {
	case c <= ControlFlowHardware:
		return groupFlow
	case c <= ControlBreakOff:
		return groupBreak
	case c <= ControlDTROff:
		return groupDTR
	case c <= ControlRTSOff:
		return groupRTS
	case c <= ControlInFlowHardware:
		return groupInFlow
	case c <= ControlFlowDSR:
		return groupOtherFlow
	}
	return groupUnknown
}

// ModemState is the NOTIFY-MODEMSTATE bitmask (and SET-MODEMSTATE-MASK).
type ModemState uint8

// Modem state bits (RFC 2217 NOTIFY-MODEMSTATE).
const (
	ModemCD       ModemState = 0x80 // receive line signal detect (carrier)
	ModemRI       ModemState = 0x40 // ring indicator
	ModemDSR      ModemState = 0x20
	ModemCTS      ModemState = 0x10
	ModemDeltaCD  ModemState = 0x08 // delta receive line signal detect
	ModemTERI     ModemState = 0x04 // trailing edge ring detector
	ModemDeltaDSR ModemState = 0x02
	ModemDeltaCTS ModemState = 0x01

	// ModemLines are the four line bits; the rest are change bits.
	ModemLines ModemState = ModemCD | ModemRI | ModemDSR | ModemCTS
)

var modemBitNames = [8]string{"ΔCTS", "ΔDSR", "TERI", "ΔCD", "CTS", "DSR", "RI", "CD"}

// String lists the set bits from high to low, e.g. "CD|DSR|CTS", or "0".
func (m ModemState) String() string { return bitString(uint8(m), &modemBitNames) }

// LineState is the NOTIFY-LINESTATE bitmask (and SET-LINESTATE-MASK).
type LineState uint8

// Line state bits (RFC 2217 NOTIFY-LINESTATE).
const (
	LineTimeout   LineState = 0x80 // time-out error
	LineTSRE      LineState = 0x40 // transfer shift register empty
	LineTHRE      LineState = 0x20 // transfer holding register empty
	LineBreak     LineState = 0x10 // break-detect error
	LineFraming   LineState = 0x08 // framing error
	LineParity    LineState = 0x04 // parity error
	LineOverrun   LineState = 0x02 // overrun error
	LineDataReady LineState = 0x01
)

var lineBitNames = [8]string{"DATA-READY", "OVERRUN", "PARITY-ERROR", "FRAMING-ERROR", "BREAK", "THRE", "TSRE", "TIMEOUT"}

// String lists the set bits from high to low, e.g. "TSRE|THRE", or "0".
func (l LineState) String() string { return bitString(uint8(l), &lineBitNames) }

func bitString(v uint8, names *[8]string) string {
	if v == 0 {
		return "0"
	}
	var b strings.Builder
	for i := 7; i >= 0; i-- {
		if v&(1<<i) != 0 {
			if b.Len() > 0 {
				b.WriteByte('|')
			}
			b.WriteString(names[i])
		}
	}
	return b.String()
}

// PurgeTarget is the PURGE-DATA value.
type PurgeTarget uint8

// PURGE-DATA values: which access-server buffer to purge.
const (
	PurgeRX   PurgeTarget = 1 // the access server's receive buffer (data from the device)
	PurgeTX   PurgeTarget = 2 // the access server's transmit buffer (data to the device)
	PurgeBoth PurgeTarget = 3
)

func (p PurgeTarget) String() string {
	switch p {
	case PurgeRX:
		return "rx"
	case PurgeTX:
		return "tx"
	case PurgeBoth:
		return "rx+tx"
	}
	return "PurgeTarget(" + strconv.Itoa(int(p)) + ")"
}
