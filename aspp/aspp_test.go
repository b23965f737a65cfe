package aspp

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/aspp/aspptest"
	"github.com/vspc-bridge/vspc-bridge/internal/leaktest"
)

// TestMain fails the run if goroutines started by the tests outlive them.
func TestMain(m *testing.M) { leaktest.Main(m, 2*time.Second) }

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// requestVectors: every request the codec encodes, as it goes on the
// wire. Rows from the fact sheet's §4 examples say so.
var requestVectors = []struct {
	name string
	wire string // "% x"
	enc  func([]byte) []byte
	want string // Request.String of the decoded request
}{
	{"PORT_INIT 115200 8N1 DTR RTS (sheet A)", "2c 08 0a 03 01 01 00 00 00 00",
		func(b []byte) []byte {
			return AppendPortInit(b, Init{Baud: IndexOf(115200), Mode: mustMode(8, ParityNone, false), DTR: true, RTS: true})
		}, "PORT_INIT 0a 03 01 01 00 00 00 00"},
	{"PORT_INIT 9600 7E2 RTS/CTS (sheet B)", "2c 08 06 0e 01 01 01 01 00 00",
		func(b []byte) []byte {
			return AppendPortInit(b, Init{Baud: IndexOf(9600), Mode: mustMode(7, ParityEven, true), DTR: true, RTS: true, HWFlow: [2]bool{true, true}})
		}, "PORT_INIT 06 0e 01 01 01 01 00 00"},
	{"PORT_INIT 19200 8O1 XON/XOFF (sheet C)", "2c 08 07 13 01 01 00 00 01 01",
		func(b []byte) []byte {
			return AppendPortInit(b, Init{Baud: IndexOf(19200), Mode: mustMode(8, ParityOdd, false), DTR: true, RTS: true, IXON: true, IXOFF: true})
		}, "PORT_INIT 07 13 01 01 00 00 01 01"},
	{"PORT_INIT by value (sheet D)", "2c 08 ff 03 01 01 00 00 00 00",
		func(b []byte) []byte {
			return AppendPortInit(b, Init{Baud: IndexOf(250000), Mode: mustMode(8, ParityNone, false), DTR: true, RTS: true})
		}, "PORT_INIT ff 03 01 01 00 00 00 00"},
	{"SETBAUD 250000 little-endian (sheet D)", "17 04 90 d0 03 00",
		func(b []byte) []byte { return AppendSetBaud(b, 250000) }, "SETBAUD 90 d0 03 00"},
	{"XONXOFF 11 13 (sheet C)", "18 02 11 13",
		func(b []byte) []byte { return AppendXonXoff(b, 0x11, 0x13) }, "XONXOFF 11 13"},
	{"LINECTRL DTR off RTS on (sheet E)", "12 02 00 01",
		func(b []byte) []byte { return AppendLineCtrl(b, false, true) }, "LINECTRL 00 01"},
	{"LINECTRL DTR on RTS on (sheet E)", "12 02 01 01",
		func(b []byte) []byte { return AppendLineCtrl(b, true, true) }, "LINECTRL 01 01"},
	{"START_BREAK (sheet E)", "21 00", func(b []byte) []byte { return AppendBreak(b, true) }, "START_BREAK "},
	{"STOP_BREAK (sheet E)", "22 00", func(b []byte) []byte { return AppendBreak(b, false) }, "STOP_BREAK "},
	{"FLUSH both (sheet E)", "14 01 02", func(b []byte) []byte { return AppendFlush(b, FlushBoth) }, "FLUSH 02"},
	{"FLUSH rx", "14 01 00", func(b []byte) []byte { return AppendFlush(b, FlushRX) }, "FLUSH 00"},
	{"FLUSH tx", "14 01 01", func(b []byte) []byte { return AppendFlush(b, FlushTX) }, "FLUSH 01"},
	{"TX_FIFO 16 (sheet A)", "30 01 10", func(b []byte) []byte { return AppendTxFIFO(b, 16) }, "TX_FIFO 10"},
	{"ALIVE 5A (sheet E)", "28 01 5a", func(b []byte) []byte { return AppendAlive(b, 0x5a) }, "ALIVE 5a"},
	{"WAIT_OQUEUE 25 (sheet E)", "2f 04 19 00 00 00", func(b []byte) []byte { return AppendWaitOQueue(b, 25) }, "WAIT_OQUEUE 19 00 00 00"},
	{"WAIT_OQUEUE forever (sheet E)", "2f 04 ff ff ff 7f", func(b []byte) []byte { return AppendWaitOQueue(b, 0x7fffffff) }, "WAIT_OQUEUE ff ff ff 7f"},
	{"SETXOFF (sheet E)", "34 00", func(b []byte) []byte { return AppendRequest(b, SetXoff) }, "SETXOFF "},
	{"SETXON (sheet E)", "33 00", func(b []byte) []byte { return AppendRequest(b, SetXon) }, "SETXON "},
	{"LSTATUS (inferred)", "13 00", func(b []byte) []byte { return AppendRequest(b, LStatus) }, "LSTATUS "},
	{"START_NOTIFY (inferred)", "24 00", func(b []byte) []byte { return AppendRequest(b, StartNotify) }, "START_NOTIFY "},
}

func mustMode(bits int, p Parity, two bool) Mode {
	m, err := MakeMode(bits, p, two)
	if err != nil {
		panic(err)
	}
	return m
}

func TestRequestVectors(t *testing.T) {
	for _, v := range requestVectors {
		t.Run(v.name, func(t *testing.T) {
			got := v.enc([]byte{0xEE})
			if want := append([]byte{0xEE}, unhex(t, v.wire)...); !bytes.Equal(got, want) {
				t.Fatalf("encode = % x, want % x (must append to dst)", got, want)
			}
			var reqs []string
			var d RequestDecoder
			if err := d.Decode(unhex(t, v.wire), func(r Request) error {
				reqs = append(reqs, r.String())
				if back := r.AppendTo(nil); !bytes.Equal(back, unhex(t, v.wire)) {
					t.Errorf("re-encode = % x", back)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if len(reqs) != 1 || reqs[0] != v.want {
				t.Fatalf("decoded %q, want [%q]", reqs, v.want)
			}
		})
	}
}

func TestRequestAccessors(t *testing.T) {
	req := func(s string) Request {
		b := unhex(t, s)
		return Request{Op: Opcode(b[0]), Payload: b[2:]}
	}
	init, err := req("2c 08 06 0e 01 00 01 01 00 01").Init()
	want := Init{Baud: 6, Mode: 0x0e, DTR: true, HWFlow: [2]bool{true, true}, IXOFF: true}
	if err != nil || init != want {
		t.Errorf("Init = %+v, %v; want %+v", init, err, want)
	}
	if got := init.String(); got != "baud=9600 mode=7E2 dtr=1 rts=0 hwflow=1,1 ixon=0 ixoff=1" {
		t.Errorf("Init.String = %q", got)
	}
	if b, err := req("17 04 90 d0 03 00").Baud(); err != nil || b != 250000 {
		t.Errorf("Baud = %d, %v", b, err)
	}
	if dtr, rts, err := req("12 02 00 01").LineCtrl(); err != nil || dtr || !rts {
		t.Errorf("LineCtrl = %v %v %v", dtr, rts, err)
	}
	if x, y, err := req("18 02 11 13").XonXoff(); err != nil || x != 0x11 || y != 0x13 {
		t.Errorf("XonXoff = %x %x %v", x, y, err)
	}
	if f, err := req("14 01 02").Flush(); err != nil || f != FlushBoth {
		t.Errorf("Flush = %v %v", f, err)
	}
	if n, err := req("30 01 10").Byte(); err != nil || n != 16 {
		t.Errorf("Byte = %d %v", n, err)
	}
	if n, err := req("2f 04 19 00 00 00").Uint32(); err != nil || n != 25 {
		t.Errorf("Uint32 = %d %v", n, err)
	}
	for _, bad := range []struct {
		name string
		err  error
	}{
		{"short PORT_INIT", func() error { _, err := req("2c 07 06 0e 01 00 01 01 00").Init(); return err }()},
		{"Init of SETBAUD", func() error { _, err := req("17 04 90 d0 03 00").Init(); return err }()},
		{"SETBAUD of 3 bytes", func() error { _, err := req("17 03 90 d0 03").Baud(); return err }()},
		{"FLUSH 3", func() error { _, err := req("14 01 03").Flush(); return err }()},
		{"LINECTRL of 1 byte", func() error { _, _, err := req("12 01 00").LineCtrl(); return err }()},
		{"XONXOFF of 0 bytes", func() error { _, _, err := req("18 00").XonXoff(); return err }()},
		{"Byte of 2 bytes", func() error { _, err := req("30 02 10 10").Byte(); return err }()},
		{"Uint32 of 0 bytes", func() error { _, err := req("2f 00").Uint32(); return err }()},
	} {
		if !errors.Is(bad.err, ErrPayload) {
			t.Errorf("%s: err = %v, want ErrPayload", bad.name, bad.err)
		}
	}
}

// replyVectors: every frame the NPort sends, with its reading.
var replyVectors = []struct {
	name string
	wire string
	want string // Frame.String
}{
	{"PORT_INIT reply DSR CTS (sheet A)", "2c 03 01 01 00", "PORT_INIT DSR|CTS"},
	{"PORT_INIT reply all on", "2c 03 01 01 01", "PORT_INIT DCD|DSR|CTS"},
	{"PORT_INIT reply none", "2c 03 00 00 00", "PORT_INIT none"},
	{"PORT_INIT refused (sheet D)", "2c 03 ff ff ff", "PORT_INIT REFUSED"},
	{"PORT_INIT bad length byte", "2c 04 01 01 01", "PORT_INIT 04 01 01 01"},
	{"SETBAUD OK (sheet D)", "17 4f 4b", "SETBAUD OK"},
	{"SETBAUD error", "17 45 52", "SETBAUD 45 52"},
	{"XONXOFF OK (sheet C)", "18 4f 4b", "XONXOFF OK"},
	{"LINECTRL OK (sheet E)", "12 4f 4b", "LINECTRL OK"},
	{"START_BREAK OK", "21 4f 4b", "START_BREAK OK"},
	{"STOP_BREAK OK", "22 4f 4b", "STOP_BREAK OK"},
	{"FLUSH OK", "14 4f 4b", "FLUSH OK"},
	{"TX_FIFO OK", "30 4f 4b", "TX_FIFO OK"},
	{"SETXON OK", "33 4f 4b", "SETXON OK"},
	{"SETXOFF OK", "34 4f 4b", "SETXOFF OK"},
	{"IOCTL OK", "10 4f 4b", "IOCTL OK"},
	{"FLOWCTRL OK", "11 4f 4b", "FLOWCTRL OK"},
	{"START_NOTIFY OK", "24 4f 4b", "START_NOTIFY OK"},
	{"STOP_NOTIFY OK", "25 4f 4b", "STOP_NOTIFY OK"},
	{"HOST OK", "2b 4f 4b", "HOST OK"},
	{"WAIT_OQUEUE 0 (sheet E)", "2f 02 00 00", "WAIT_OQUEUE 0"},
	{"OQUEUE 300", "16 02 2c 01", "OQUEUE 300"},
	{"IQUEUE 1", "15 02 01 00", "IQUEUE 1"},
	{"LSTATUS DCD", "13 03 00 00 01", "LSTATUS DCD"},
	{"POLLING 5A (sheet E)", "27 01 5a", "POLLING 0x5a"},
	{"NOTIFY modem change (sheet E)", "26 20 b0 00", "NOTIFY MODEM DCD|DSR|CTS"},
	{"NOTIFY BREAK received (sheet E)", "26 10 30 00", "NOTIFY BREAK DSR|CTS"},
	{"NOTIFY errors", "26 0f 00 00", "NOTIFY SW-OVERRUN|HW-OVERRUN|FRAMING|PARITY 0"},
}

func TestReplyVectors(t *testing.T) {
	for _, v := range replyVectors {
		t.Run(v.name, func(t *testing.T) {
			wire := unhex(t, v.wire)
			var got []Frame
			var d ReplyDecoder
			if err := d.Decode(wire, func(f Frame) error { got = append(got, f); return nil }); err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0].String() != v.want {
				t.Fatalf("decoded %v, want [%s]", got, v.want)
			}
			if back := got[0].AppendTo(nil); !bytes.Equal(back, wire) {
				t.Errorf("re-encode = % x", back)
			}
			f, err := MakeFrame(wire)
			if err != nil || f != got[0] {
				t.Errorf("MakeFrame = %v, %v", f, err)
			}
		})
	}
}

func TestReplyEncoders(t *testing.T) {
	for _, c := range []struct {
		got  []byte
		want string
	}{
		{AppendOK(nil, SetBaud), "17 4f 4b"},
		{AppendModem(nil, PortInit, Modem{DSR: true, DCD: true}), "2c 03 01 00 01"},
		{AppendModem(nil, LStatus, Modem{CTS: true}), "13 03 00 01 00"},
		{AppendRefused(nil), "2c 03 ff ff ff"},
		{AppendNotify(nil, EventModemChange, MSRDCD|MSRDSR|MSRCTS), "26 20 b0 00"},
		{AppendNotify(nil, EventBreak, 0), "26 10 00 00"},
		{AppendPolling(nil, 0x5a), "27 01 5a"},
		{AppendQueue(nil, WaitOQueue, 0), "2f 02 00 00"},
		{AppendQueue(nil, OQueue, 300), "16 02 2c 01"},
	} {
		if got := fmt.Sprintf("% x", c.got); got != c.want {
			t.Errorf("got %s, want %s", got, c.want)
		}
	}
}

func TestFrameAccessors(t *testing.T) {
	frame := func(s string) Frame {
		f, err := MakeFrame(unhex(t, s))
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	if m, err := frame("2c 03 01 00 01").Modem(); err != nil || m != (Modem{DSR: true, DCD: true}) {
		t.Errorf("Modem = %v, %v", m, err)
	}
	if m, err := frame("2c 03 02 ff 00").Modem(); err != nil || m != (Modem{DSR: true, CTS: true}) {
		t.Errorf("non-zero is asserted: Modem = %v, %v", m, err)
	}
	if _, err := frame("2c 03 ff ff ff").Modem(); !errors.Is(err, ErrRefused) {
		t.Errorf("refused: %v", err)
	}
	if _, err := frame("2c 04 01 01 01").Modem(); !errors.Is(err, ErrReply) {
		t.Errorf("bad length byte: %v", err)
	}
	if _, err := frame("17 4f 4b").Modem(); !errors.Is(err, ErrReply) {
		t.Errorf("Modem of SETBAUD: %v", err)
	}
	if e, m, err := frame("26 21 80 00").Notify(); err != nil || e != EventModemChange|EventParity || m != MSRDCD {
		t.Errorf("Notify = %v %v %v", e, m, err)
	}
	if _, _, err := frame("27 01 5a").Notify(); !errors.Is(err, ErrReply) {
		t.Errorf("Notify of POLLING: %v", err)
	}
	if id, err := frame("27 01 5a").PollID(); err != nil || id != 0x5a {
		t.Errorf("PollID = %x %v", id, err)
	}
	if _, err := frame("26 21 80 00").PollID(); !errors.Is(err, ErrReply) {
		t.Errorf("PollID of NOTIFY: %v", err)
	}
	if q, err := frame("16 02 2c 01").Queue(); err != nil || q != 300 {
		t.Errorf("Queue = %d %v", q, err)
	}
	if _, err := frame("2f 03 00 00").Queue(); !errors.Is(err, ErrReply) {
		t.Errorf("Queue with bad length byte: %v", err)
	}
	if !frame("12 4f 4b").OK() || frame("12 45 52").OK() || frame("2c 03 4f 4b 00").OK() {
		t.Error("OK")
	}
	if _, err := MakeFrame(unhex(t, "17 4f")); !errors.Is(err, ErrReply) {
		t.Errorf("short frame: %v", err)
	}
	if _, err := MakeFrame(nil); !errors.Is(err, ErrReply) {
		t.Errorf("empty frame: %v", err)
	}
	if _, err := MakeFrame([]byte{0x99, 0, 0}); !errors.Is(err, ErrUnknownOpcode) {
		t.Errorf("unknown opcode: %v", err)
	}
}

func TestReplyDecoderUnknownOpcodeIsSticky(t *testing.T) {
	var d ReplyDecoder
	var got []string
	err := d.Decode(unhex(t, "12 4f 4b 99 4f 4b"), func(f Frame) error { got = append(got, f.String()); return nil })
	var oe *OpcodeError
	if !errors.As(err, &oe) || oe.Op != 0x99 || oe.Offset != 3 || !errors.Is(err, ErrUnknownOpcode) {
		t.Fatalf("err = %v", err)
	}
	if want := "aspp: unknown opcode 0x99 at byte 3 of the NPort's command stream"; err.Error() != want {
		t.Errorf("message %q", err)
	}
	if !reflect.DeepEqual(got, []string{"LINECTRL OK"}) {
		t.Errorf("frames before the bad byte: %q", got)
	}
	if err2 := d.Decode(unhex(t, "12 4f 4b"), func(Frame) error { t.Error("frame after desync"); return nil }); err2 != err {
		t.Errorf("second call: %v", err2)
	}
}

func TestDecodersStopOnHandlerError(t *testing.T) {
	stop := errors.New("stop")
	var rd ReplyDecoder
	n := 0
	if err := rd.Decode(unhex(t, "12 4f 4b 12 4f 4b"), func(Frame) error { n++; return stop }); err != stop || n != 1 {
		t.Errorf("reply: err %v after %d frames", err, n)
	}
	var qd RequestDecoder
	n = 0
	if err := qd.Decode(unhex(t, "21 00 22 00"), func(Request) error { n++; return stop }); err != stop || n != 1 {
		t.Errorf("request: err %v after %d requests", err, n)
	}
}

func TestMode(t *testing.T) {
	// §3.2 "Common values".
	for _, c := range []struct {
		bits   int
		parity Parity
		two    bool
		wire   byte
		str    string
	}{
		{8, ParityNone, false, 0x03, "8N1"},
		{8, ParityEven, false, 0x0b, "8E1"},
		{8, ParityOdd, false, 0x13, "8O1"},
		{8, ParityMark, false, 0x1b, "8M1"},
		{8, ParitySpace, false, 0x23, "8S1"},
		{8, ParityNone, true, 0x07, "8N2"},
		{7, ParityEven, false, 0x0a, "7E1"},
		{7, ParityOdd, false, 0x12, "7O1"},
		{7, ParityEven, true, 0x0e, "7E2"},
		{7, ParityNone, true, 0x06, "7N2"},
		{7, ParityOdd, true, 0x16, "7O2"},
		{5, ParityNone, true, 0x04, "5N1.5"},
		{6, ParityNone, false, 0x01, "6N1"},
	} {
		m, err := MakeMode(c.bits, c.parity, c.two)
		if err != nil || byte(m) != c.wire || m.String() != c.str {
			t.Errorf("MakeMode(%d,%v,%v) = %#02x %q %v; want %#02x %q", c.bits, c.parity.Letter(), c.two, byte(m), m, err, c.wire, c.str)
		}
		if m.DataBits() != c.bits || m.Parity() != c.parity || m.TwoStop() != c.two || !m.Valid() {
			t.Errorf("%#02x reads back %d %v %v", c.wire, m.DataBits(), m.Parity(), m.TwoStop())
		}
	}
	if _, err := MakeMode(9, ParityNone, false); err == nil {
		t.Error("9 data bits accepted")
	}
	if _, err := MakeMode(8, 0x28, false); err == nil {
		t.Error("parity 0x28 accepted")
	}
	if m := Mode(0x43); m.Valid() || m.String() != "8N1(0x43)" {
		t.Errorf("Mode(0x43): valid %v, %q", m.Valid(), m)
	}
}

func TestBaudIndex(t *testing.T) {
	// §3.1, the whole table.
	want := map[uint32]BaudIndex{300: 0, 600: 1, 1200: 2, 2400: 3, 4800: 4, 7200: 5, 9600: 6,
		19200: 7, 38400: 8, 57600: 9, 115200: 10, 230400: 11, 460800: 12, 921600: 13,
		150: 14, 134: 15, 110: 16, 75: 17, 50: 18}
	for baud, idx := range want {
		if got := IndexOf(baud); got != idx {
			t.Errorf("IndexOf(%d) = %d, want %d", baud, got, idx)
		}
		if b, ok := idx.Baud(); !ok || b != baud {
			t.Errorf("%d.Baud() = %d %v", idx, b, ok)
		}
	}
	for _, b := range []uint32{0, 1800, 200, 250000, 1000000} {
		if got := IndexOf(b); got != BaudByValue {
			t.Errorf("IndexOf(%d) = %v, want by-value", b, got)
		}
	}
	if _, ok := BaudByValue.Baud(); ok {
		t.Error("BaudByValue has a rate")
	}
	if s := BaudIndex(19).String(); s != "BaudIndex(19)" {
		t.Errorf("String = %q", s)
	}
}

func TestNames(t *testing.T) {
	if PortInit.String() != "PORT_INIT" || Opcode(0x99).String() != "OP(0x99)" {
		t.Errorf("%v %v", PortInit, Opcode(0x99))
	}
	if (EventModemChange|EventBreak).String() != "MODEM|BREAK" || Events(0).String() != "0" || Events(0x80).String() != "bit7" {
		t.Errorf("%v %v %v", EventModemChange|EventBreak, Events(0), Events(0x80))
	}
	if FlushBoth.String() != "rx+tx" || FlushTarget(7).String() != "FlushTarget(7)" {
		t.Error(FlushBoth, FlushTarget(7))
	}
	if ModemOf(MSRDCD|MSRRI) != (Modem{DCD: true}) || (Modem{CTS: true, DSR: true}).MSR() != MSRCTS|MSRDSR {
		t.Error("ModemOf / MSR")
	}
	if !Answered(PortInit) || Answered(Alive) || Answered(Polling) || Answered(PortReset) {
		t.Error("Answered")
	}
}

// TestDialogues checks the hand-written dialogues from the fact sheet's §4
// examples: the host side is exactly what the encoders produce, and the
// NPort side decodes to the frames named in the table. The simulated
// NPort in devices/devicetest replays the same files.
func TestDialogues(t *testing.T) {
	for _, c := range []struct {
		file   string
		host   func([]byte) []byte
		frames []string
	}{
		{"sheet-4a-open-115200-8n1", func(b []byte) []byte {
			b = AppendPortInit(b, Init{Baud: IndexOf(115200), Mode: mustMode(8, ParityNone, false), DTR: true, RTS: true})
			return AppendTxFIFO(b, 16)
		}, []string{"PORT_INIT DSR|CTS", "TX_FIFO OK"}},
		{"sheet-4b-9600-7e2-rtscts", func(b []byte) []byte {
			return AppendPortInit(b, Init{Baud: IndexOf(9600), Mode: mustMode(7, ParityEven, true), DTR: true, RTS: true, HWFlow: [2]bool{true, true}})
		}, []string{"PORT_INIT DCD|DSR|CTS"}},
		{"sheet-4c-19200-8o1-xonxoff", func(b []byte) []byte {
			b = AppendPortInit(b, Init{Baud: IndexOf(19200), Mode: mustMode(8, ParityOdd, false), DTR: true, RTS: true, IXON: true, IXOFF: true})
			return AppendXonXoff(b, 0x11, 0x13)
		}, []string{"PORT_INIT none", "XONXOFF OK"}},
		{"sheet-4d-250000-by-value", func(b []byte) []byte {
			b = AppendPortInit(b, Init{Baud: IndexOf(250000), Mode: mustMode(8, ParityNone, false), DTR: true, RTS: true})
			return AppendSetBaud(b, 250000)
		}, []string{"PORT_INIT DSR|CTS", "SETBAUD OK"}},
		{"sheet-4e-line-control", func(b []byte) []byte {
			b = AppendLineCtrl(b, false, true)
			b = AppendLineCtrl(b, true, true)
			b = AppendBreak(b, true)
			b = AppendBreak(b, false)
			b = AppendFlush(b, FlushBoth)
			b = AppendRequest(b, SetXoff)
			b = AppendRequest(b, SetXon)
			b = AppendWaitOQueue(b, 25)
			return AppendAlive(b, 0x5a)
		}, []string{"LINECTRL OK", "LINECTRL OK", "START_BREAK OK", "STOP_BREAK OK", "FLUSH OK",
			"SETXOFF OK", "SETXON OK", "WAIT_OQUEUE 0", "POLLING 0x5a", "NOTIFY MODEM DCD|DSR|CTS", "NOTIFY BREAK DCD|DSR|CTS"}},
		{"sheet-4f-session-recovery", func(b []byte) []byte {
			b = AppendPortInit(b, Init{Baud: IndexOf(115200), Mode: mustMode(8, ParityNone, false), DTR: true, RTS: true})
			b = AppendTxFIFO(b, 16)
			return AppendLineCtrl(b, true, true)
		}, []string{"PORT_INIT DCD|DSR|CTS", "TX_FIFO OK", "LINECTRL OK"}},
	} {
		t.Run(c.file, func(t *testing.T) {
			steps, err := aspptest.Load(filepath.Join("testdata", c.file+".dialogue"))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := c.host(nil), aspptest.Join(steps, true); !bytes.Equal(got, want) {
				t.Errorf("host bytes\n got % x\nwant % x", got, want)
			}
			var frames []string
			var d ReplyDecoder
			if err := d.Decode(aspptest.Join(steps, false), func(f Frame) error {
				frames = append(frames, f.String())
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(frames, c.frames) {
				t.Errorf("frames\n got %q\nwant %q", frames, c.frames)
			}
			if d.Pending() != 0 {
				t.Errorf("%d bytes left over", d.Pending())
			}
		})
	}
}

// decodeReplies decodes in, split into chunks of size split (0: whole),
// and returns the frames' wire bytes and the error.
func decodeReplies(in []byte, split int) (frames [][]byte, err error) {
	var d ReplyDecoder
	chunks := [][]byte{in}
	if split > 0 {
		chunks = nil
		for len(in) > split {
			chunks = append(chunks, in[:split])
			in = in[split:]
		}
		chunks = append(chunks, in)
	}
	for _, c := range chunks {
		c = append([]byte(nil), c...)
		if err = d.Decode(c, func(f Frame) error {
			frames = append(frames, f.AppendTo(nil))
			return nil
		}); err != nil {
			return frames, err
		}
		if d.Pending() > 4 {
			panic("more than 4 bytes held")
		}
	}
	return frames, nil
}

func decodeRequests(in []byte, split int) (reqs [][]byte, pending int, err error) {
	var d RequestDecoder
	for len(in) > 0 {
		n := len(in)
		if split > 0 {
			n = min(n, split)
		}
		c := append([]byte(nil), in[:n]...)
		in = in[n:]
		if err = d.Decode(c, func(r Request) error {
			reqs = append(reqs, r.AppendTo(nil))
			return nil
		}); err != nil {
			return
		}
		if d.Pending() > MaxFrame {
			panic("more than MaxFrame bytes held")
		}
	}
	return reqs, d.Pending(), nil
}

func TestSplitAnywhere(t *testing.T) {
	steps, err := aspptest.Load("testdata/sheet-4e-line-control.dialogue")
	if err != nil {
		t.Fatal(err)
	}
	replies, requests := aspptest.Join(steps, false), aspptest.Join(steps, true)
	whole, err := decodeReplies(replies, 0)
	if err != nil {
		t.Fatal(err)
	}
	wholeReq, _, _ := decodeRequests(requests, 0)
	for split := 1; split <= 6; split++ {
		if got, err := decodeReplies(replies, split); err != nil || !reflect.DeepEqual(got, whole) {
			t.Errorf("replies split by %d: %x, %v", split, got, err)
		}
		if got, pend, err := decodeRequests(requests, split); err != nil || pend != 0 || !reflect.DeepEqual(got, wholeReq) {
			t.Errorf("requests split by %d: %x, %d, %v", split, got, pend, err)
		}
	}
	if len(wholeReq) != 9 || len(whole) != 11 {
		t.Errorf("%d requests, %d frames", len(wholeReq), len(whole))
	}
}

// FuzzReplyDecoder: the NPort → host stream never panics the decoder,
// which never holds more than 4 bytes; the frames it returns re-encode to
// a prefix of the input, and splitting the input anywhere gives the same
// frames and the same error.
func FuzzReplyDecoder(f *testing.F) {
	for _, v := range replyVectors {
		f.Add(unhex(f, v.wire), uint8(1))
	}
	f.Add(unhex(f, "2c 03 01 01 00 30 4f 4b 12 4f 4b"), uint8(2))
	f.Add(unhex(f, "27 01 5a 26 20 b0 00 99"), uint8(3))
	f.Add(unhex(f, "26 10"), uint8(1))
	f.Fuzz(func(t *testing.T, in []byte, split uint8) {
		whole, err := decodeReplies(in, 0)
		var consumed []byte
		for _, fr := range whole {
			consumed = append(consumed, fr...)
		}
		if !bytes.HasPrefix(in, consumed) {
			t.Fatalf("frames % x are not a prefix of % x", consumed, in)
		}
		if err != nil {
			var oe *OpcodeError
			if !errors.As(err, &oe) || oe.Offset != int64(len(consumed)) || in[len(consumed)] != byte(oe.Op) {
				t.Fatalf("error %v after % x", err, consumed)
			}
		}
		for _, fr := range whole {
			if _, err := MakeFrame(fr); err != nil {
				t.Fatalf("frame % x does not rebuild: %v", fr, err)
			}
		}
		parts, err2 := decodeReplies(in, int(split)%7+1)
		if !reflect.DeepEqual(parts, whole) || (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) {
			t.Fatalf("split decode differs: %x %v vs %x %v", parts, err2, whole, err)
		}
	})
}

// FuzzRequestDecoder: the host → NPort stream (what the simulated NPort
// parses) never panics the decoder, which holds at most MaxFrame bytes;
// the requests re-encode to the input minus the incomplete tail, whatever
// the split.
func FuzzRequestDecoder(f *testing.F) {
	for _, v := range requestVectors {
		f.Add(unhex(f, v.wire), uint8(1))
	}
	f.Add(unhex(f, "2c 08 0a 03 01 01 00 00 00 00 30 01 10 12 02 01 01"), uint8(5))
	f.Add(unhex(f, "17 ff 00"), uint8(1))
	f.Fuzz(func(t *testing.T, in []byte, split uint8) {
		whole, pend, err := decodeRequests(in, 0)
		if err != nil {
			t.Fatal(err)
		}
		var consumed []byte
		for _, r := range whole {
			consumed = append(consumed, r...)
		}
		if !bytes.HasPrefix(in, consumed) || len(consumed)+pend != len(in) {
			t.Fatalf("requests % x + %d pending do not make up % x", consumed, pend, in)
		}
		parts, pend2, err := decodeRequests(in, int(split)%9+1)
		if err != nil || pend2 != pend || !reflect.DeepEqual(parts, whole) {
			t.Fatalf("split decode differs: %x %d %v", parts, pend2, err)
		}
		for _, r := range whole {
			req := Request{Op: Opcode(r[0]), Payload: r[2:]}
			// The accessors never panic, whatever the payload.
			_, _ = req.Init()
			_, _ = req.Baud()
			_, _, _ = req.LineCtrl()
			_, _, _ = req.XonXoff()
			_, _ = req.Flush()
			_, _ = req.Byte()
			_, _ = req.Uint32()
		}
	})
}

// BenchmarkReplyDecoder: the NPort's command stream (answers, NOTIFY,
// POLLING of the sheet's example E, repeated), 4 KiB per op.
func BenchmarkReplyDecoder(b *testing.B) {
	steps, err := aspptest.Load("testdata/sheet-4e-line-control.dialogue")
	if err != nil {
		b.Fatal(err)
	}
	one := aspptest.Join(steps, false)
	var in []byte
	for len(in)+len(one) <= 4096 {
		in = append(in, one...)
	}
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		var d ReplyDecoder
		if err := d.Decode(in, func(Frame) error { n++; return nil }); err != nil {
			b.Fatal(err)
		}
	}
	if n == 0 {
		b.Fatal("no frames")
	}
}

// BenchmarkAppendSetLine: the requests for one settings change by value
// (PORT_INIT by value, SETBAUD, XONXOFF) into a reused buffer.
func BenchmarkAppendSetLine(b *testing.B) {
	p := Init{Baud: IndexOf(250000), Mode: mustMode(7, ParityEven, true), DTR: true, RTS: true, IXON: true, IXOFF: true}
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendPortInit(buf[:0], p)
		buf = AppendSetBaud(buf, 250000)
		buf = AppendXonXoff(buf, 0x11, 0x13)
	}
	if len(buf) != 20 {
		b.Fatalf("%d bytes", len(buf))
	}
}
