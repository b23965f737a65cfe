//go:build linux

package devices

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vspc-bridge/vspc-bridge/aspp"
	"github.com/vspc-bridge/vspc-bridge/devices/devicetest"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/rfc2217"
)

func settings(t *testing.T, s string) rfc2217.Settings {
	t.Helper()
	v, err := rfc2217.ParseSettings(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// openSimNPort opens an nport device on the simulator with the options o
// (Open does the same for nport://127.0.0.1:DATA?cmd=CMD).
func openSimNPort(t *testing.T, sim *devicetest.NPort, o nportOpen, log *slog.Logger) *nportDevice {
	t.Helper()
	tg := mustParse(t, "nport://"+sim.DataAddr+"?cmd=none") // the command port is in o
	if o.cmdAddr == "" {
		o.cmdAddr = sim.CmdAddr
	}
	d, err := openNPort(t.Context(), tg, o, &Options{}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// nportExchange checks that bytes flow both ways between the device and the
// serial device on the simulator's line.
func nportExchange(t *testing.T, d Device, tty io.ReadWriter, tag string) {
	t.Helper()
	out := append([]byte(tag+":"), 0x00, 0xFF, '\r', '\n', 0x11, 0x13)
	if _, err := d.Write(out); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, tty, len(out)); !bytes.Equal(got, out) {
		t.Fatalf("%s: to the line % x, want % x", tag, got, out)
	}
	in := append([]byte(tag+"<"), 0xFF, 0x00, 0x80)
	if _, err := tty.Write(in); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, d, len(in)); !bytes.Equal(got, in) {
		t.Fatalf("%s: from the line % x, want % x", tag, got, in)
	}
}

// TestNPortLineControl: the route's settings are applied on open, and the
// guest's 57600 7E2 then 115200 8N1 reach the NPort (the pty's termios,
// read by stty, and the simulator's record of data bits and parity), with
// data flowing both ways at each; rates outside the index table go by
// value; flow control, DTR/RTS, BREAK, purge and the modem lines work.
func TestNPortLineControl(t *testing.T) {
	sim := devicetest.StartNPort(t, devicetest.NPortOptions{Modem: aspp.Modem{DSR: true, CTS: true}})
	d := openSimNPort(t, sim, nportOpen{configured: settings(t, "19200 8N1")}, devicetest.Logger(t))
	tty := openTTY(t, sim.TTY)
	testwait.For(t, "the initial PORT_INIT and TX_FIFO", func() bool { return sim.State().TxFIFO == nportTxFIFO })
	if s := devicetest.TTY(t, sim.UART); s.Speed != 19200 {
		t.Fatalf("initial speed %d, want the route's 19200", s.Speed)
	}
	if !d.LineControl() {
		t.Fatal("LineControl() = false with the command port up")
	}
	if m, err := d.ModemState(t.Context()); err != nil || m != rfc2217.ModemDSR|rfc2217.ModemCTS {
		t.Errorf("ModemState = %v, %v; want DSR|CTS from the PORT_INIT answer", m, err)
	}

	for _, c := range []struct {
		req  string
		stty []string
		mode string
	}{
		{"57600 7E2", []string{"cstopb", "-crtscts"}, "7E2"},
		{"115200 8N1", []string{"-cstopb", "-crtscts"}, "8N1"},
	} {
		want := settings(t, c.req)
		got, err := d.SetSettings(t.Context(), want)
		if err != nil || got != want {
			t.Fatalf("SetSettings(%v) = %v, %v", want, got, err)
		}
		out := devicetest.Stty(t, sim.UART)
		if !strings.Contains(out, "speed "+strings.Fields(c.req)[0]+" baud") || !devicetest.SttyHas(out, c.stty...) {
			t.Errorf("%s: stty on the NPort's pty:\n%s", c.req, out)
		}
		if st := sim.State(); st.Mode.String() != c.mode {
			t.Errorf("%s: the NPort got mode %v", c.req, st.Mode)
		}
		nportExchange(t, d, tty, c.req)
	}

	// Only the baud rate, outside the table: PORT_INIT by value + SETBAUD.
	got, err := d.SetSettings(t.Context(), rfc2217.Settings{Baud: 250000})
	if err != nil || got != settings(t, "250000 8N1") {
		t.Fatalf("SetSettings(250000) = %v, %v", got, err)
	}
	if s := devicetest.TTY(t, sim.UART); s.Speed != 250000 {
		t.Errorf("speed %d, want 250000", s.Speed)
	}
	reqs := sim.State().Requests
	if n := len(reqs); n < 2 || !strings.HasPrefix(reqs[n-2], "2c 08 ff 03") || reqs[n-1] != "17 04 90 d0 03 00" {
		t.Errorf("last requests %q, want PORT_INIT by value then SETBAUD 250000", reqs)
	}

	// Flow control.
	if _, err := d.SetSettings(t.Context(), rfc2217.Settings{Flow: rfc2217.FlowHardware}); err != nil {
		t.Fatal(err)
	}
	if s := devicetest.TTY(t, sim.UART); !s.CRTSCTS || s.IXON {
		t.Errorf("rts/cts: %+v", s)
	}
	if _, err := d.SetSettings(t.Context(), rfc2217.Settings{Flow: rfc2217.FlowXONXOFF}); err != nil {
		t.Fatal(err)
	}
	if st := sim.State(); !st.IXON || !st.IXOFF || st.HWFlow[0] || st.XON != 0x11 || st.XOFF != 0x13 {
		t.Errorf("xon/xoff: %+v", st.NPortLine)
	}
	// 1.5 stop bits: the two-stop bit; with 8 data bits that is 2.
	if got, _ := d.SetSettings(t.Context(), rfc2217.Settings{StopSize: rfc2217.Stop15, Flow: rfc2217.FlowNone}); got.StopSize != rfc2217.Stop2 {
		t.Errorf("1.5 stop bits with 8 data bits answered %v", got)
	}

	// DTR, RTS, BREAK, purge.
	if err := d.SetDTR(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	if err := d.SetRTS(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	if err := d.SetBreak(t.Context(), true); err != nil {
		t.Fatal(err)
	}
	if err := d.SetBreak(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	for _, p := range []rfc2217.PurgeTarget{rfc2217.PurgeRX, rfc2217.PurgeTX, rfc2217.PurgeBoth} {
		if err := d.Purge(t.Context(), p); err != nil {
			t.Fatal(err)
		}
	}
	st := sim.State()
	if st.DTR || st.RTS || st.Breaks != 1 || st.Break ||
		len(st.Flushes) != 3 || st.Flushes[0] != aspp.FlushRX || st.Flushes[1] != aspp.FlushTX || st.Flushes[2] != aspp.FlushBoth {
		t.Errorf("line control: %+v", st)
	}
	// The next PORT_INIT keeps DTR and RTS as set.
	if _, err := d.SetSettings(t.Context(), rfc2217.Settings{Baud: 9600}); err != nil {
		t.Fatal(err)
	}
	if st := sim.State(); st.DTR || st.RTS || st.Baud != 9600 {
		t.Errorf("PORT_INIT after LINECTRL: %+v", st.NPortLine)
	}

	// Modem changes and line events the NPort reports.
	sim.SetModem(aspp.Modem{DCD: true, DSR: true, CTS: true})
	testwait.For(t, "DCD from a NOTIFY", func() bool {
		m, _ := d.ModemState(t.Context())
		return m == rfc2217.ModemCD|rfc2217.ModemDSR|rfc2217.ModemCTS
	})
	sim.InjectEvents(aspp.EventParity | aspp.EventBreak)
	var line rfc2217.LineState
	testwait.For(t, "the line events", func() bool {
		l, _ := d.LineState(t.Context())
		line |= l
		return line == rfc2217.LineParity|rfc2217.LineBreak
	})
	if l, _ := d.LineState(t.Context()); l != 0 {
		t.Errorf("line events not cleared: %v", l)
	}
	if m := d.Mismatch(); m != "" {
		t.Errorf("Mismatch() = %q with every command taken", m)
	}
	nportExchange(t, d, tty, "end")
}

// TestNPortKeepAliveAnswered: the NPort's POLLING is answered with ALIVE,
// so its alive check keeps the session.
func TestNPortKeepAliveAnswered(t *testing.T) {
	sim := devicetest.StartNPort(t, devicetest.NPortOptions{PollInterval: 20 * time.Millisecond, AliveTimeout: 10 * time.Second})
	d := openSimNPort(t, sim, nportOpen{}, devicetest.Logger(t))
	testwait.For(t, "five ALIVE answers", func() bool { return sim.State().Alives >= 5 })
	if sim.State().Sessions != 1 || !d.LineControl() {
		t.Errorf("sessions %d, line control %v", sim.State().Sessions, d.LineControl())
	}
}

// TestNPortCommandPortRefused: with "Allow driver control" off the data
// port works as a tcp:// device, with one warning for the life of the
// caller (the bridge link passes the same flag to every reconnect).
func TestNPortCommandPortRefused(t *testing.T) {
	sim := devicetest.StartNPort(t, devicetest.NPortOptions{NoCommandPort: true})
	rec := &logRecorder{}
	log := slog.New(rec)
	tg := mustParse(t, "nport://"+sim.DataAddr+"?cmd=none")
	o := nportOpen{cmdAddr: sim.CmdAddr, configured: settings(t, "9600 8N1"), line: NewFixedLine(tg, settings(t, "9600 8N1"), log)}
	d := openSimNPort(t, sim, o, log)
	tty := openTTY(t, sim.TTY)
	nportExchange(t, d, tty, "first")
	if got, err := d.SetSettings(t.Context(), settings(t, "57600 7E2")); err != nil || got != settings(t, "9600 8N1") {
		t.Errorf("SetSettings = %v, %v; want the configured 9600 8N1", got, err)
	}
	if m := d.Mismatch(); !strings.Contains(m, "57600 7E2") {
		t.Errorf("Mismatch() = %q", m)
	}
	if d.LineControl() {
		t.Error("LineControl() = true without a command port")
	}
	if err := d.SetDTR(t.Context(), true); !errors.Is(err, rfc2217.ErrNotSupported) {
		t.Errorf("SetDTR: %v", err)
	}
	d.Close()
	d2 := openSimNPort(t, sim, o, log)
	nportExchange(t, d2, tty, "second")
	warns := 0
	rec.mu.Lock()
	for _, r := range rec.recs {
		if r.Level >= slog.LevelWarn {
			warns++
			t.Logf("warning: %s", r.Message)
		}
	}
	rec.mu.Unlock()
	if warns != 1 {
		t.Errorf("%d warnings over two opens and a settings mismatch, want 1", warns)
	}
}

// TestNPortDataNeverWaits: the NPort does not answer PORT_INIT; the data
// flows from the moment both sockets are up, and the missing answer is a
// mismatch.
func TestNPortDataNeverWaits(t *testing.T) {
	sim := devicetest.StartNPort(t, devicetest.NPortOptions{})
	sim.SetFault(aspp.PortInit, devicetest.Fault{Drop: true})
	rec := &logRecorder{}
	d := openSimNPort(t, sim, nportOpen{configured: settings(t, "115200 8N1"), timeout: time.Hour}, slog.New(rec))
	tty := openTTY(t, sim.TTY)
	// PORT_INIT is out and unanswered for an hour; data goes through.
	testwait.For(t, "the PORT_INIT request", func() bool { return len(sim.State().Requests) == 1 })
	nportExchange(t, d, tty, "at once")
	d.Close()

	// With a short timeout the silence becomes a mismatch, logged once.
	d2 := openSimNPort(t, sim, nportOpen{configured: settings(t, "115200 8N1"), timeout: 50 * time.Millisecond}, slog.New(rec))
	got, err := d2.SetSettings(t.Context(), settings(t, "57600 8N1"))
	if err != nil || got != settings(t, "57600 8N1") {
		t.Errorf("SetSettings = %v, %v (no answer: assume it took)", got, err)
	}
	if m := d2.Mismatch(); !strings.Contains(m, "not answered") {
		t.Errorf("Mismatch() = %q", m)
	}
	nportExchange(t, d2, tty, "later")
	if n := rec.count(slog.LevelWarn, "devices: nport command not taken; data keeps flowing"); n != 1 {
		t.Errorf("%d warnings for unanswered commands, want 1", n)
	}
	// The NPort answers again. The first request is not waited for (the
	// last went unanswered); its answer ends the silence, and a request
	// taken in full clears the mismatch.
	sim.SetFault(aspp.PortInit, devicetest.Fault{})
	if _, err := d2.SetSettings(t.Context(), settings(t, "38400 8N1")); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the NPort's answer", func() bool {
		d2.ctl.mu.Lock()
		defer d2.ctl.mu.Unlock()
		return !d2.ctl.silent
	})
	if _, err := d2.SetSettings(t.Context(), settings(t, "19200 8N1")); err != nil {
		t.Fatal(err)
	}
	if m := d2.Mismatch(); m != "" {
		t.Errorf("Mismatch() = %q after the NPort took the settings", m)
	}
}

// TestNPortRefusals: a refused PORT_INIT or SETBAUD leaves the previous
// settings in effect and says so; a refused LINECTRL is an error.
func TestNPortRefusals(t *testing.T) {
	sim := devicetest.StartNPort(t, devicetest.NPortOptions{})
	d := openSimNPort(t, sim, nportOpen{configured: settings(t, "9600 8N1")}, devicetest.Logger(t))
	testwait.For(t, "the initial settings", func() bool { return sim.State().TxFIFO == nportTxFIFO })

	sim.SetFault(aspp.PortInit, devicetest.Fault{Refuse: true})
	if got, err := d.SetSettings(t.Context(), settings(t, "57600 8N1")); err != nil || got != settings(t, "9600 8N1") {
		t.Errorf("refused PORT_INIT: %v, %v", got, err)
	}
	if m := d.Mismatch(); !strings.Contains(m, "refused") {
		t.Errorf("Mismatch() = %q", m)
	}
	sim.SetFault(aspp.PortInit, devicetest.Fault{})

	sim.SetFault(aspp.SetBaud, devicetest.Fault{Error: true})
	if got, err := d.SetSettings(t.Context(), rfc2217.Settings{Baud: 250000}); err != nil || got.Baud != 9600 {
		t.Errorf("refused SETBAUD: %v, %v", got, err)
	}
	sim.SetFault(aspp.LineCtrl, devicetest.Fault{Error: true})
	if err := d.SetDTR(t.Context(), false); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("refused LINECTRL: %v", err)
	}
	// A reply split over two TCP segments is one answer.
	sim.SetFault(aspp.PortInit, devicetest.Fault{Split: true})
	if got, err := d.SetSettings(t.Context(), settings(t, "4800 8N1")); err != nil || got != settings(t, "4800 8N1") {
		t.Errorf("split answer: %v, %v", got, err)
	}
}

// TestNPortCommandConnectionLost: when the NPort ends the command session
// the data connection is closed too (as Moxa's daemon does), and Read
// says why; the owner reconnects both.
func TestNPortCommandConnectionLost(t *testing.T) {
	sim := devicetest.StartNPort(t, devicetest.NPortOptions{})
	d := openSimNPort(t, sim, nportOpen{}, devicetest.Logger(t))
	testwait.For(t, "both connections", func() bool { c, dt := sim.Connected(); return c && dt })
	sim.DropSession()
	err := readErr(t, d)
	if err == nil || errors.Is(err, ErrClosed) {
		t.Fatalf("Read after the session was dropped: %v", err)
	}
	t.Logf("Read: %v", err)
	if d.Close() != nil {
		t.Error("Close after a lost session failed")
	}
}

// v6Conn reports an IPv6 peer, to drive the greeting over a net.Pipe.
type v6Conn struct{ net.Conn }

func (v6Conn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv6loopback, Port: 966} }

// TestNPortIPv6Greeting: over IPv6 Moxa's daemon exchanges 16 bytes on the
// command socket before the first command (fact sheet §1.2).
func TestNPortIPv6Greeting(t *testing.T) {
	if !needsGreeting(&net.TCPAddr{IP: net.ParseIP("2001:db8::1")}) || needsGreeting(&net.TCPAddr{IP: net.ParseIP("::ffff:10.0.0.1")}) ||
		needsGreeting(&net.TCPAddr{IP: net.IPv4(10, 0, 0, 1)}) || needsGreeting(pipeAddr{}) {
		t.Error("needsGreeting")
	}
	synctest.Test(t, func(t *testing.T) {
		a, b := net.Pipe()
		defer b.Close()
		c := newNPortControl(v6Conn{a}, slog.New(slog.DiscardHandler), time.Second, nil)
		defer c.close()
		errc := make(chan error, 1)
		go func() {
			c.reqMu.Lock()
			defer c.reqMu.Unlock()
			_, err := c.call(context.Background(), aspp.AppendBreak(nil, true))
			errc <- err
		}()
		hello := make([]byte, 16)
		if _, err := io.ReadFull(b, hello); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		select { // no command before the greeting came back
		case err := <-errc:
			t.Fatalf("command before the greeting: %v", err)
		default:
		}
		b.Write(make([]byte, 16))
		req := make([]byte, 2)
		if _, err := io.ReadFull(b, req); err != nil || !bytes.Equal(req, []byte{0x21, 0}) {
			t.Fatalf("request % x, %v", req, err)
		}
		b.Write(aspp.AppendOK(nil, aspp.StartBreak))
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	})
}

// requests reads what the control writes to the far end b of its pipe,
// one Read a request (the control writes each in one Write), until b is
// closed.
func requests(b net.Conn) <-chan []byte {
	reqs := make(chan []byte, 8)
	go func() {
		buf := make([]byte, 64)
		for {
			n, err := b.Read(buf)
			if err != nil {
				return
			}
			reqs <- append([]byte(nil), buf[:n]...)
		}
	}()
	return reqs
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// TestNPortControlDesync: a byte that starts no frame ends the session.
func TestNPortControlDesync(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := net.Pipe()
		defer b.Close()
		lost := make(chan error, 1)
		c := newNPortControl(a, slog.New(slog.DiscardHandler), time.Second, func(err error) { lost <- err })
		defer c.close()
		b.Write([]byte{0x99})
		if err := <-lost; !errors.Is(err, aspp.ErrUnknownOpcode) {
			t.Fatalf("lost with %v", err)
		}
		c.reqMu.Lock()
		_, err := c.call(context.Background(), aspp.AppendBreak(nil, true))
		c.reqMu.Unlock()
		if !errors.Is(err, aspp.ErrUnknownOpcode) {
			t.Errorf("call after desync: %v", err)
		}
	})
}

// TestNPortLateAnswer: an answer that comes after its command timed out
// is dropped, and the next command gets its own answer.
func TestNPortLateAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := net.Pipe()
		defer b.Close()
		c := newNPortControl(a, slog.New(slog.DiscardHandler), time.Second, nil)
		defer c.close()
		reqs := requests(b)
		c.reqMu.Lock()
		defer c.reqMu.Unlock()
		start := time.Now()
		if _, err := c.call(context.Background(), aspp.AppendBreak(nil, true)); !errors.Is(err, errNoAnswer) {
			t.Fatalf("first call: %v", err)
		}
		if waited := time.Since(start); waited != time.Second {
			t.Errorf("gave up after %v, want the 1 s timeout", waited)
		}
		<-reqs
		b.Write([]byte{0x21, 'E', 'R'}) // the late answer to the first call
		synctest.Wait()
		done := make(chan aspp.Frame, 1)
		go func() {
			f, _ := c.call(context.Background(), aspp.AppendBreak(nil, false))
			done <- f
		}()
		if r := <-reqs; !bytes.Equal(r, []byte{0x22, 0}) {
			t.Fatalf("second request % x", r)
		}
		b.Write(aspp.AppendOK(nil, aspp.StopBreak))
		if f := <-done; f.String() != "STOP_BREAK OK" {
			t.Errorf("second call got %v", f)
		}
	})
}

// TestNPortOpen: Open on nport://HOST:DATA?cmd=CMD connects the command
// port, and the guest's settings from before a reconnect (Options.Guest)
// go out over the route's; a closed command port leaves the data port
// working, with one warning per Options.Line (per bridge link).
func TestNPortOpen(t *testing.T) {
	sim := devicetest.StartNPort(t, devicetest.NPortOptions{})
	_, cmdPort, _ := net.SplitHostPort(sim.CmdAddr)
	tg := mustParse(t, "nport://"+sim.DataAddr+"?cmd="+cmdPort)
	dev, err := Open(t.Context(), tg, Options{Initial: settings(t, "9600 8N1"), Guest: settings(t, "57600 7E2"), Logger: devicetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	testwait.For(t, "the guest's settings on the NPort", func() bool {
		st := sim.State()
		return st.Baud == 57600 && st.Mode.String() == "7E2"
	})
	if reqs := sim.State().Requests; len(reqs) < 1 || reqs[0] != "2c 08 09 0e 01 01 00 00 00 00" {
		t.Errorf("first request %q, want PORT_INIT 57600 7E2", reqs)
	}
	if lc := dev.(interface{ LineControl() bool }); !lc.LineControl() {
		t.Error("LineControl() = false")
	}
	nportExchange(t, dev, openTTY(t, sim.TTY), "open")

	off := devicetest.StartNPort(t, devicetest.NPortOptions{NoCommandPort: true})
	_, closed, _ := net.SplitHostPort(off.CmdAddr)
	tg = mustParse(t, "nport://"+off.DataAddr+"?cmd="+closed)
	rec := &logRecorder{}
	opts := Options{Initial: settings(t, "9600 8N1"), Logger: slog.New(rec)}
	opts.Line = NewFixedLine(tg, opts.Initial, opts.Logger)
	tty := openTTY(t, off.TTY)
	for i := range 2 {
		d, err := Open(t.Context(), tg, opts)
		if err != nil {
			t.Fatal(err)
		}
		nportExchange(t, d, tty, "fallback")
		if got, _ := d.SetSettings(t.Context(), settings(t, "115200 8N1")); got != settings(t, "9600 8N1") {
			t.Errorf("open %d: SetSettings answered %v", i, got)
		}
		d.Close()
	}
	warns := 0
	rec.mu.Lock()
	for _, r := range rec.recs {
		if r.Level >= slog.LevelWarn {
			warns++
		}
	}
	rec.mu.Unlock()
	if warns != 1 {
		t.Errorf("%d warnings over two opens with the command port closed, want 1", warns)
	}
	if m := opts.Line.Mismatch(); !strings.Contains(m, "115200") {
		t.Errorf("Mismatch() = %q", m)
	}
}

// TestNPortSilentCommandPort: once a command went unanswered, the next
// ones do not wait (the guest's data is behind them in its stream), until
// the NPort answers something again.
func TestNPortSilentCommandPort(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := net.Pipe()
		defer b.Close()
		c := newNPortControl(a, slog.New(slog.DiscardHandler), 2*time.Second, nil)
		defer c.close()
		reqs := requests(b)
		c.reqMu.Lock()
		defer c.reqMu.Unlock()
		call := func(on bool) (time.Duration, error) {
			start := time.Now()
			_, err := c.call(context.Background(), aspp.AppendBreak(nil, on))
			<-reqs
			return time.Since(start), err
		}
		if d, err := call(true); !errors.Is(err, errNoAnswer) || d != 2*time.Second {
			t.Fatalf("first: %v after %v", err, d)
		}
		for range 3 {
			if d, err := call(false); !errors.Is(err, errNoAnswer) || d != 0 {
				t.Fatalf("while silent: %v after %v, want no wait", err, d)
			}
		}
		b.Write(aspp.AppendOK(nil, aspp.StopBreak)) // a late answer: it is alive
		synctest.Wait()
		done := make(chan error, 1)
		go func() { _, err := call(true); done <- err }()
		synctest.Wait()
		b.Write(aspp.AppendOK(nil, aspp.StartBreak))
		if err := <-done; err != nil {
			t.Fatalf("after it answered again: %v", err)
		}
	})
}
