//go:build linux

package devicetest

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/aspp"
	"github.com/vspc-bridge/vspc-bridge/aspp/aspptest"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
)

// cmdClient is a bare command-port client for the simulator's tests.
type cmdClient struct {
	t    testing.TB
	conn net.Conn
	dec  aspp.ReplyDecoder
	buf  []aspp.Frame
}

func dialCmd(t testing.TB, n *NPort) *cmdClient {
	t.Helper()
	c, err := net.Dial("tcp", n.CmdAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &cmdClient{t: t, conn: c}
}

func (c *cmdClient) send(b []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

// next returns the next frame, failing the test after testwait.Timeout.
func (c *cmdClient) next() aspp.Frame {
	c.t.Helper()
	f, err := c.read(testwait.Timeout)
	if err != nil {
		c.t.Fatalf("reading a frame: %v", err)
	}
	return f
}

func (c *cmdClient) read(d time.Duration) (aspp.Frame, error) {
	c.conn.SetReadDeadline(time.Now().Add(d))
	defer c.conn.SetReadDeadline(time.Time{})
	p := make([]byte, 64)
	for len(c.buf) == 0 {
		k, err := c.conn.Read(p)
		if derr := c.dec.Decode(p[:k], func(f aspp.Frame) error { c.buf = append(c.buf, f); return nil }); derr != nil {
			return aspp.Frame{}, derr
		}
		if err != nil && len(c.buf) == 0 {
			return aspp.Frame{}, err
		}
	}
	f := c.buf[0]
	c.buf = c.buf[1:]
	return f, nil
}

// call sends a request and returns the reply.
func (c *cmdClient) call(req []byte) aspp.Frame {
	c.t.Helper()
	c.send(req)
	return c.next()
}

func openTTY(t testing.TB, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_NOCTTY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func readFull(t testing.TB, r io.Reader, n int) []byte {
	t.Helper()
	if d, ok := r.(interface{ SetReadDeadline(time.Time) error }); ok {
		d.SetReadDeadline(time.Now().Add(testwait.Timeout))
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return b
}

// TestNPortReplaysSheetDialogues runs the fact sheet's §4 examples
// (aspp/testdata) against the simulator: every request gets exactly the
// reply the dialogue says, and the unsolicited frames come when the test
// triggers them.
func TestNPortReplaysSheetDialogues(t *testing.T) {
	dir := filepath.Join("..", "..", "aspp", "testdata")
	for _, c := range []struct {
		file  string
		modem aspp.Modem // the inputs the dialogue's PORT_INIT reply shows
	}{
		{"sheet-4a-open-115200-8n1", aspp.Modem{DSR: true, CTS: true}},
		{"sheet-4b-9600-7e2-rtscts", aspp.Modem{DSR: true, CTS: true, DCD: true}},
		{"sheet-4c-19200-8o1-xonxoff", aspp.Modem{}},
		{"sheet-4d-250000-by-value", aspp.Modem{DSR: true, CTS: true}},
		{"sheet-4e-line-control", aspp.Modem{}},
		{"sheet-4f-session-recovery", aspp.Modem{DSR: true, CTS: true, DCD: true}},
	} {
		t.Run(c.file, func(t *testing.T) {
			steps, err := aspptest.Load(filepath.Join(dir, c.file+".dialogue"))
			if err != nil {
				t.Fatal(err)
			}
			n := StartNPort(t, NPortOptions{Modem: c.modem})
			cl := dialCmd(t, n)
			testwait.For(t, "the command session", func() bool { cmd, _ := n.Connected(); return cmd })
			for _, st := range steps {
				if st.FromHost {
					cl.send(st.Bytes)
					continue
				}
				var d aspp.ReplyDecoder
				var want []aspp.Frame
				if err := d.Decode(st.Bytes, func(f aspp.Frame) error { want = append(want, f); return nil }); err != nil {
					t.Fatalf("line %d: %v", st.Line, err)
				}
				for _, w := range want {
					switch w.Op { // unsolicited: make the simulator send it
					case aspp.Polling:
						id, _ := w.PollID()
						if err := n.SendPolling(id); err != nil {
							t.Fatal(err)
						}
					case aspp.Notify:
						e, m, _ := w.Notify()
						if e == aspp.EventModemChange {
							n.SetModem(aspp.ModemOf(m))
						} else {
							n.InjectEvents(e)
						}
					}
					if got := cl.next(); got != w {
						t.Fatalf("line %d (%s): got %v, want %v", st.Line, st.Comment, got, w)
					}
				}
			}
			if c.file == "sheet-4e-line-control" {
				testwait.For(t, "the ALIVE answer", func() bool { return n.State().Alives == 1 })
			}
		})
	}
}

// TestNPortAppliesSettingsToThePTY: what PORT_INIT and SETBAUD set is in
// the pty's termios (speed, stop bits, flow flags, seen by stty) and in
// State (data bits and parity, which a pty cannot hold).
func TestNPortAppliesSettingsToThePTY(t *testing.T) {
	n := StartNPort(t, NPortOptions{})
	if out := Stty(t, n.UART); !strings.Contains(out, "speed 9600 baud") || !SttyHas(out, "-cstopb") {
		t.Fatalf("before any request (default 9600 8N1):\n%s", out)
	}
	cl := dialCmd(t, n)
	mode, _ := aspp.MakeMode(7, aspp.ParityEven, true)
	f := cl.call(aspp.AppendPortInit(nil, aspp.Init{Baud: aspp.IndexOf(57600), Mode: mode, DTR: true, RTS: true, HWFlow: [2]bool{true, true}}))
	if m, err := f.Modem(); err != nil || m != (aspp.Modem{}) {
		t.Fatalf("PORT_INIT reply %v: %v %v", f, m, err)
	}
	out := Stty(t, n.UART)
	if !strings.Contains(out, "speed 57600 baud") || !SttyHas(out, "cstopb", "crtscts") {
		t.Errorf("after 57600 7E2 rts/cts:\n%s", out)
	}
	if st := n.State(); st.Baud != 57600 || st.Mode.String() != "7E2" || st.HWFlow != [2]bool{true, true} {
		t.Errorf("state %+v", st.NPortLine)
	}
	// A rate outside the table: PORT_INIT FF, then SETBAUD by value.
	mode, _ = aspp.MakeMode(8, aspp.ParityNone, false)
	f = cl.call(aspp.AppendPortInit(nil, aspp.Init{Baud: aspp.BaudByValue, Mode: mode, DTR: true, RTS: true, IXON: true, IXOFF: true}))
	if _, err := f.Modem(); err != nil {
		t.Fatal(f, err)
	}
	if f := cl.call(aspp.AppendSetBaud(nil, 250000)); !f.OK() {
		t.Fatalf("SETBAUD reply %v", f)
	}
	if f := cl.call(aspp.AppendXonXoff(nil, 0x11, 0x13)); !f.OK() {
		t.Fatalf("XONXOFF reply %v", f)
	}
	s := TTY(t, n.UART)
	if s.Speed != 250000 || s.StopBits != 1 || s.CRTSCTS || !s.IXON || !s.IXOFF {
		t.Errorf("after 250000 8N1 xon/xoff: %+v", s)
	}
	// stty reads the old termios: a BOTHER rate prints as speed 0.
	if out := Stty(t, n.UART); !SttyHas(out, "-cstopb", "-crtscts", "ixon", "ixoff") {
		t.Errorf("stty after 250000 8N1 xon/xoff:\n%s", out)
	}
	if f := cl.call(aspp.AppendSetBaud(nil, 0)); f.OK() {
		t.Errorf("SETBAUD 0 accepted: %v", f)
	}
}

func TestNPortDataBothWays(t *testing.T) {
	n := StartNPort(t, NPortOptions{})
	tty := openTTY(t, n.TTY)
	// Line output before anyone connects is kept (≤ 1 KiB) for the host.
	if _, err := tty.Write([]byte("early")); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the early line output", func() bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		return len(n.pending) == 5
	})
	data, err := net.Dial("tcp", n.DataAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer data.Close()
	if got := readFull(t, data, 5); string(got) != "early" {
		t.Fatalf("got %q", got)
	}
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	if _, err := data.Write(all); err != nil {
		t.Fatal(err)
	}
	if got := readFull(t, tty, 256); !bytes.Equal(got, all) {
		t.Fatalf("host → line: % x", got)
	}
	if _, err := tty.Write(all); err != nil {
		t.Fatal(err)
	}
	if got := readFull(t, data, 256); !bytes.Equal(got, all) {
		t.Fatalf("line → host: % x", got)
	}
}

func TestNPortNotify(t *testing.T) {
	n := StartNPort(t, NPortOptions{})
	cl := dialCmd(t, n)
	testwait.For(t, "the command session", func() bool { cmd, _ := n.Connected(); return cmd })
	n.SetModem(aspp.Modem{DCD: true})
	if f := cl.next(); f.String() != "NOTIFY MODEM DCD" {
		t.Fatalf("got %v", f)
	}
	n.SetModem(aspp.Modem{DCD: true}) // no change, no frame
	n.InjectEvents(aspp.EventParity | aspp.EventFraming)
	if f := cl.next(); f.String() != "NOTIFY FRAMING|PARITY DCD" {
		t.Fatalf("got %v", f)
	}

	// Gated: nothing until START_NOTIFY.
	g := StartNPort(t, NPortOptions{NotifyGated: true})
	gc := dialCmd(t, g)
	testwait.For(t, "the command session", func() bool { cmd, _ := g.Connected(); return cmd })
	g.SetModem(aspp.Modem{CTS: true})
	if f := gc.call(aspp.AppendRequest(nil, aspp.StartNotify)); f.String() != "START_NOTIFY OK" {
		t.Fatalf("got %v (a NOTIFY before START_NOTIFY?)", f)
	}
	g.SetModem(aspp.Modem{CTS: true, DSR: true})
	if f := gc.next(); f.String() != "NOTIFY MODEM DSR|CTS" {
		t.Fatalf("got %v", f)
	}
}

func TestNPortKeepAlive(t *testing.T) {
	n := StartNPort(t, NPortOptions{PollInterval: 20 * time.Millisecond, AliveTimeout: 10 * time.Second})
	cl := dialCmd(t, n)
	for i := 0; i < 3; i++ {
		f := cl.next()
		id, err := f.PollID()
		if err != nil {
			t.Fatal(f, err)
		}
		cl.send(aspp.AppendAlive(nil, id))
	}
	testwait.For(t, "three ALIVE answers", func() bool { return n.State().Alives >= 3 })

	// A host that does not answer is cut off.
	m := StartNPort(t, NPortOptions{PollInterval: 20 * time.Millisecond, AliveTimeout: 20 * time.Millisecond})
	mc := dialCmd(t, m)
	for {
		f, err := mc.read(testwait.Timeout)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("want EOF after a missed poll, got %v", err)
			}
			break
		}
		if f.Op != aspp.Polling {
			t.Fatalf("got %v", f)
		}
	}
}

func TestNPortFaults(t *testing.T) {
	n := StartNPort(t, NPortOptions{Modem: aspp.Modem{DSR: true}})
	cl := dialCmd(t, n)

	n.SetFault(aspp.PortInit, Fault{Refuse: true})
	mode, _ := aspp.MakeMode(8, aspp.ParityNone, false)
	if f := cl.call(aspp.AppendPortInit(nil, aspp.Init{Baud: aspp.IndexOf(115200), Mode: mode})); f.String() != "PORT_INIT REFUSED" {
		t.Errorf("refuse: %v", f)
	}
	if st := n.State(); st.Baud != 9600 {
		t.Errorf("a refused PORT_INIT changed the baud to %d", st.Baud)
	}
	n.SetFault(aspp.PortInit, Fault{})

	n.SetFault(aspp.LineCtrl, Fault{Error: true})
	if f := cl.call(aspp.AppendLineCtrl(nil, false, false)); f.String() != "LINECTRL 45 52" {
		t.Errorf("error: %v", f)
	}
	n.SetFault(aspp.StartBreak, Fault{Split: true})
	if f := cl.call(aspp.AppendBreak(nil, true)); f.String() != "START_BREAK OK" {
		t.Errorf("split: %v", f)
	}
	// A dropped reply: the next request's reply is the next frame.
	n.SetFault(aspp.StopBreak, Fault{Drop: true})
	cl.send(aspp.AppendBreak(nil, false))
	if f := cl.call(aspp.AppendFlush(nil, aspp.FlushBoth)); f.String() != "FLUSH OK" {
		t.Errorf("after a dropped reply: %v", f)
	}
	// Unknown opcodes get no reply by default.
	cl.send(aspp.AppendRequest(nil, 0x39))
	if f := cl.call(aspp.AppendRequest(nil, aspp.LStatus)); f.String() != "LSTATUS DSR" {
		t.Errorf("after an unknown opcode: %v", f)
	}
	st := n.State()
	if st.Breaks != 1 || st.Break || len(st.Flushes) != 1 || st.Unknown != 1 || st.DTR || st.RTS {
		t.Errorf("state %+v", st)
	}
	if want := []string{"2c 08 0a 03 00 00 00 00 00 00", "12 02 00 00", "21 00", "22 00", "14 01 02", "39 00", "13 00"}; strings.Join(st.Requests, "|") != strings.Join(want, "|") {
		t.Errorf("requests %q", st.Requests)
	}

	n.SetFault(aspp.TxFIFO, Fault{Disconnect: true})
	cl.send(aspp.AppendTxFIFO(nil, 16))
	if f, err := cl.read(testwait.Timeout); !errors.Is(err, io.EOF) {
		t.Errorf("disconnect: %v %v", f, err)
	}

	// With the command port closed, connections are refused and data works.
	off := StartNPort(t, NPortOptions{NoCommandPort: true})
	if c, err := net.Dial("tcp", off.CmdAddr); err == nil {
		c.Close()
		t.Fatal("the closed command port accepted a connection")
	}
	data, err := net.Dial("tcp", off.DataAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer data.Close()
	tty := openTTY(t, off.TTY)
	if _, err := data.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if got := readFull(t, tty, 4); string(got) != "ping" {
		t.Errorf("got %q", got)
	}
}

// TestNPortSessions: closing either connection ends the session, and a new
// session starts from the port's default settings.
func TestNPortSessions(t *testing.T) {
	n := StartNPort(t, NPortOptions{Default: NPortLine{Baud: 19200}})
	cl := dialCmd(t, n)
	data, err := net.Dial("tcp", n.DataAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer data.Close()
	testwait.For(t, "both connections", func() bool { c, d := n.Connected(); return c && d })
	mode, _ := aspp.MakeMode(8, aspp.ParityNone, true)
	cl.call(aspp.AppendPortInit(nil, aspp.Init{Baud: aspp.IndexOf(115200), Mode: mode}))
	if s := TTY(t, n.UART); s.Speed != 115200 || s.StopBits != 2 {
		t.Fatalf("%+v", s)
	}
	cl.conn.Close()
	data.SetReadDeadline(time.Now().Add(testwait.Timeout))
	if _, err := data.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("data connection after the command connection closed: %v", err)
	}
	cl2 := dialCmd(t, n)
	testwait.For(t, "the second session", func() bool { return n.State().Sessions == 2 })
	if s := TTY(t, n.UART); s.Speed != 19200 || s.StopBits != 1 {
		t.Errorf("a new session did not start from the defaults: %+v", s)
	}
	n.DropSession()
	if _, err := cl2.read(testwait.Timeout); !errors.Is(err, io.EOF) {
		t.Errorf("after DropSession: %v", err)
	}
}
