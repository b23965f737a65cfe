package aspp

import (
	"fmt"
	"strconv"
)

// Opcode is the first byte of every request and reply (§2.2).
type Opcode byte

// Opcodes (§2.2; Moxa's driver names them ASPP_CMD_…). "Sent by Moxa's
// driver" means the Linux driver uses the request; the others are defined
// by Moxa but their request payloads are inferred (§8 item 3).
const (
	IOCTL       Opcode = 0x10 // 10 02 baudIdx mode; reply 10 4F 4B (inferred)
	FlowCtrl    Opcode = 0x11 // payload unknown; reply 3 bytes
	LineCtrl    Opcode = 0x12 // 12 02 DTR RTS; reply 12 4F 4B (sent by Moxa's driver)
	LStatus     Opcode = 0x13 // 13 00; reply 13 03 DSR CTS DCD (inferred)
	Flush       Opcode = 0x14 // 14 01 sel; reply 14 4F 4B (sent by Moxa's driver)
	IQueue      Opcode = 0x15 // 15 00; reply 15 02 lo hi (inferred)
	OQueue      Opcode = 0x16 // 16 00; reply 16 02 lo hi (inferred)
	SetBaud     Opcode = 0x17 // 17 04 baud as uint32 little-endian; reply 17 4F 4B (sent)
	XonXoff     Opcode = 0x18 // 18 02 xon xoff; reply 18 4F 4B (sent)
	PortReset   Opcode = 0x20 // unknown; avoid
	StartBreak  Opcode = 0x21 // 21 00; reply 21 4F 4B (sent)
	StopBreak   Opcode = 0x22 // 22 00; reply 22 4F 4B (sent)
	StartNotify Opcode = 0x24 // 24 00; reply 3 bytes (inferred)
	StopNotify  Opcode = 0x25 // 25 00; reply 3 bytes (inferred)
	Notify      Opcode = 0x26 // unsolicited 26 events msr x
	Polling     Opcode = 0x27 // unsolicited 27 ?? id: keep-alive, answer with Alive
	Alive       Opcode = 0x28 // 28 01 id, the answer to Polling; no reply
	Host        Opcode = 0x2B // unknown; reply 3 bytes
	PortInit    Opcode = 0x2C // 2C 08 idx mode DTR RTS flow flow ixon ixoff; reply 2C 03 DSR CTS DCD (sent)
	ResentTime  Opcode = 0x2E // unknown
	WaitOQueue  Opcode = 0x2F // 2F 04 timeout (int32 LE, host jiffies); reply 2F 02 lo hi (sent)
	TxFIFO      Opcode = 0x30 // 30 01 n; reply 30 4F 4B (sent)
	SetXon      Opcode = 0x33 // 33 00: resume the NPort's transmitter as if XON came; reply 33 4F 4B (sent)
	SetXoff     Opcode = 0x34 // 34 00: pause it as if XOFF came; reply 34 4F 4B (sent)
)

var opNames = map[Opcode]string{
	IOCTL: "IOCTL", FlowCtrl: "FLOWCTRL", LineCtrl: "LINECTRL", LStatus: "LSTATUS",
	Flush: "FLUSH", IQueue: "IQUEUE", OQueue: "OQUEUE", SetBaud: "SETBAUD",
	XonXoff: "XONXOFF", PortReset: "PORT_RESET", StartBreak: "START_BREAK",
	StopBreak: "STOP_BREAK", StartNotify: "START_NOTIFY", StopNotify: "STOP_NOTIFY",
	Notify: "NOTIFY", Polling: "POLLING", Alive: "ALIVE", Host: "HOST",
	PortInit: "PORT_INIT", ResentTime: "RESENT_TIME", WaitOQueue: "WAIT_OQUEUE",
	TxFIFO: "TX_FIFO", SetXon: "SETXON", SetXoff: "SETXOFF",
}

// String returns Moxa's name for op ("PORT_INIT"), or "OP(0x99)".
func (op Opcode) String() string {
	if s, ok := opNames[op]; ok {
		return s
	}
	return fmt.Sprintf("OP(%#02x)", byte(op))
}

// ReplyLen returns the length in bytes, opcode included, of a frame the
// NPort sends with opcode op, exactly as Moxa's daemon cuts the command
// stream (§2.3), and 0 for opcodes that never start an NPort frame.
func ReplyLen(op Opcode) int {
	switch op {
	case Polling, FlowCtrl, IOCTL, SetBaud, LineCtrl, StartBreak, StopBreak,
		StartNotify, StopNotify, Flush, Host, TxFIFO, XonXoff, SetXon, SetXoff:
		return 3
	case Notify, WaitOQueue, OQueue, IQueue:
		return 4
	case LStatus, PortInit:
		return 5
	}
	return 0
}

// Answered reports whether the NPort answers a request with opcode op
// (every request but ALIVE and the opcodes with no known reply).
func Answered(op Opcode) bool { return op != Polling && op != Notify && ReplyLen(op) > 0 }

// MaxFrame is the longest frame either side sends: a request with a
// 255-byte payload.
const MaxFrame = 2 + 255

// BaudIndex is the baud-rate byte of PORT_INIT and IOCTL (§3.1). It is an
// index into a fixed table, or BaudByValue.
type BaudIndex byte

// BaudByValue says the rate is not in the table: a SETBAUD request with
// the value follows the PORT_INIT.
const BaudByValue BaudIndex = 0xFF

// baudTable is §3.1: index → rate.
var baudTable = [...]uint32{
	300, 600, 1200, 2400, 4800, 7200, 9600, 19200, 38400, 57600,
	115200, 230400, 460800, 921600, 150, 134, 110, 75, 50,
}

// IndexOf returns the table index of baud, or BaudByValue when the table
// has no such rate (the caller then sends SETBAUD with the value).
func IndexOf(baud uint32) BaudIndex {
	for i, b := range baudTable {
		if b == baud {
			return BaudIndex(i)
		}
	}
	return BaudByValue
}

// Baud returns the rate index i stands for; ok is false for BaudByValue
// and indexes outside the table.
func (i BaudIndex) Baud() (baud uint32, ok bool) {
	if int(i) < len(baudTable) {
		return baudTable[i], true
	}
	return 0, false
}

func (i BaudIndex) String() string {
	if b, ok := i.Baud(); ok {
		return strconv.FormatUint(uint64(b), 10)
	}
	if i == BaudByValue {
		return "by-value"
	}
	return fmt.Sprintf("BaudIndex(%d)", byte(i))
}

// Parity is the parity field of the mode byte, with its wire value (§3.2).
// These are the driver's values, which Moxa's IP Serial Library also uses;
// the PComm library's different constants must not go on the wire.
type Parity byte

// Parity values (mode byte bits 5..3).
const (
	ParityNone  Parity = 0x00
	ParityEven  Parity = 0x08
	ParityOdd   Parity = 0x10
	ParityMark  Parity = 0x18
	ParitySpace Parity = 0x20
)

// Letter returns N, E, O, M or S, or "?" for a value outside the table.
func (p Parity) Letter() string {
	switch p {
	case ParityNone:
		return "N"
	case ParityEven:
		return "E"
	case ParityOdd:
		return "O"
	case ParityMark:
		return "M"
	case ParitySpace:
		return "S"
	}
	return "?"
}

// Mode is the mode byte of PORT_INIT and IOCTL (§3.2): bits 1..0 data
// bits (0 = 5 … 3 = 8), bit 2 two stop bits (1.5 with 5 data bits), bits
// 5..3 parity.
type Mode byte

const (
	modeDataMask   Mode = 0x03
	modeTwoStop    Mode = 0x04
	modeParityMask Mode = 0x38
	modeDefined         = modeDataMask | modeTwoStop | modeParityMask
)

// MakeMode returns the mode byte for dataBits (5–8), parity and stop bits
// (two: 2 stop bits, or 1.5 with 5 data bits). It fails for values the
// byte cannot hold.
func MakeMode(dataBits int, parity Parity, twoStop bool) (Mode, error) {
	if dataBits < 5 || dataBits > 8 {
		return 0, fmt.Errorf("aspp: %d data bits (want 5–8)", dataBits)
	}
	if parity.Letter() == "?" {
		return 0, fmt.Errorf("aspp: parity %#02x is not in the mode byte's table", byte(parity))
	}
	m := Mode(dataBits-5) | Mode(parity)
	if twoStop {
		m |= modeTwoStop
	}
	return m, nil
}

// DataBits returns 5–8.
func (m Mode) DataBits() int { return int(m&modeDataMask) + 5 }

// Parity returns the parity field.
func (m Mode) Parity() Parity { return Parity(m & modeParityMask) }

// TwoStop reports two stop bits (1.5 with 5 data bits).
func (m Mode) TwoStop() bool { return m&modeTwoStop != 0 }

// Valid reports whether m uses only defined bits and a parity from the
// table.
func (m Mode) Valid() bool { return m&^modeDefined == 0 && m.Parity().Letter() != "?" }

// String formats m as "8N1", "7E2" or "5N1.5".
func (m Mode) String() string {
	stop := "1"
	if m.TwoStop() {
		stop = "2"
		if m.DataBits() == 5 {
			stop = "1.5"
		}
	}
	s := strconv.Itoa(m.DataBits()) + m.Parity().Letter() + stop
	if !m.Valid() {
		s += fmt.Sprintf("(%#02x)", byte(m))
	}
	return s
}

// FlushTarget is the FLUSH selector (§2.2).
type FlushTarget byte

// FLUSH selectors. Moxa's driver only ever sends FlushBoth.
const (
	FlushRX   FlushTarget = 0 // the NPort's receive buffer (data from the serial line)
	FlushTX   FlushTarget = 1 // its transmit buffer (data to the serial line)
	FlushBoth FlushTarget = 2
)

func (f FlushTarget) String() string {
	switch f {
	case FlushRX:
		return "rx"
	case FlushTX:
		return "tx"
	case FlushBoth:
		return "rx+tx"
	}
	return fmt.Sprintf("FlushTarget(%d)", byte(f))
}

// MSR is the modem byte of NOTIFY, in 16550 modem status register layout
// (§2.5).
type MSR byte

// MSR bits. RI's position is inferred from the 16550 layout (Moxa's driver
// does not decode it).
const (
	MSRCTS MSR = 0x10
	MSRDSR MSR = 0x20
	MSRRI  MSR = 0x40
	MSRDCD MSR = 0x80
)

func (m MSR) String() string {
	return bitNames(byte(m), [8]string{4: "CTS", 5: "DSR", 6: "RI", 7: "DCD"})
}

// Events is the event byte of NOTIFY (§2.5). Several bits may be set.
type Events byte

// NOTIFY event bits.
const (
	EventParity      Events = 0x01 // parity error
	EventFraming     Events = 0x02 // framing error
	EventHWOverrun   Events = 0x04 // UART overrun
	EventSWOverrun   Events = 0x08 // the NPort's buffer overran
	EventBreak       Events = 0x10 // BREAK received
	EventModemChange Events = 0x20 // modem lines changed: see the MSR byte
)

func (e Events) String() string {
	return bitNames(byte(e), [8]string{"PARITY", "FRAMING", "HW-OVERRUN", "SW-OVERRUN", "BREAK", "MODEM"})
}

func bitNames(v byte, names [8]string) string {
	if v == 0 {
		return "0"
	}
	s := ""
	for i := 7; i >= 0; i-- {
		if v&(1<<i) == 0 {
			continue
		}
		n := names[i]
		if n == "" {
			n = fmt.Sprintf("bit%d", i)
		}
		if s != "" {
			s += "|"
		}
		s += n
	}
	return s
}

// Modem is the modem inputs the PORT_INIT (and, inferred, LSTATUS) reply
// carries: one byte each, non-zero = asserted.
type Modem struct {
	DSR, CTS, DCD bool
}

// MSR returns m in the NOTIFY modem byte's layout.
func (m Modem) MSR() MSR {
	var v MSR
	if m.CTS {
		v |= MSRCTS
	}
	if m.DSR {
		v |= MSRDSR
	}
	if m.DCD {
		v |= MSRDCD
	}
	return v
}

// ModemOf returns the inputs in v (RI is dropped: the reply has no byte
// for it).
func ModemOf(v MSR) Modem {
	return Modem{DSR: v&MSRDSR != 0, CTS: v&MSRCTS != 0, DCD: v&MSRDCD != 0}
}

func (m Modem) String() string {
	if s := m.MSR().String(); s != "0" {
		return s
	}
	return "none"
}
