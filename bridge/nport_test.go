package bridge_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/vspc-bridge/vspc-bridge/aspp"
	"github.com/vspc-bridge/vspc-bridge/bridge"
	"github.com/vspc-bridge/vspc-bridge/devices/devicetest"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/rfc2217"
	"github.com/vspc-bridge/vspc-bridge/vspc"
	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
)

// warnings counts warn-level records and passes every record on.
type warnings struct {
	slog.Handler
	mu   *sync.Mutex
	msgs *[]string // guarded by mu
}

func (w warnings) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		w.mu.Lock()
		*w.msgs = append(*w.msgs, r.Message)
		w.mu.Unlock()
	}
	return w.Handler.Handle(ctx, r)
}

func (w warnings) WithAttrs(a []slog.Attr) slog.Handler {
	return warnings{Handler: w.Handler.WithAttrs(a), mu: w.mu, msgs: w.msgs}
}

func (w warnings) WithGroup(g string) slog.Handler {
	return warnings{Handler: w.Handler.WithGroup(g), mu: w.mu, msgs: w.msgs}
}

func (w warnings) list() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), *w.msgs...)
}

// startCounting is start with a logger that counts warnings.
func startCounting(t *testing.T, toml string) (string, *bridge.Bridge, warnings) {
	t.Helper()
	w := warnings{Handler: devicetest.Logger(t).Handler(), mu: &sync.Mutex{}, msgs: new([]string)}
	addr, _, br := startLogged(t, toml, slog.New(w))
	return addr, br, w
}

// nportVM is routerVM on a bridge with one route, router-*, to a
// simulated NPort, with COM-PORT-OPTION enabled.
type nportVM struct {
	sim   *devicetest.NPort
	br    *bridge.Bridge
	warns warnings // the bridge's
	vm    *vspctest.Conn
	tty   *os.File // the serial device's end of the NPort's line
}

// startNPortVM starts the NPort with opts and the bridge, on a config
// with the tables in extra (such as [policy]) and a route to the NPort's
// data and command ports with the lines in route (such as its settings).
func startNPortVM(t *testing.T, opts devicetest.NPortOptions, extra, route string) nportVM {
	t.Helper()
	sim := devicetest.StartNPort(t, opts)
	_, cmd, _ := net.SplitHostPort(sim.CmdAddr)
	addr, br, warns := startCounting(t, fmt.Sprintf(`
[vspc]
listen = "127.0.0.1:0"
%s
[[route]]
name = "router"
service = "router-*"
device = "nport://%s?cmd=%s"
%s
`, extra, sim.DataAddr, cmd, route))
	c := dialVM(t, addr, routerVM())
	if err := c.EnableComPort(); err != nil {
		t.Fatal(err)
	}
	return nportVM{sim: sim, br: br, warns: warns, vm: c, tty: openTTY(t, sim.TTY)}
}

// routerVM is a VM that identifies itself completely (no warnings about
// its identification to count).
func routerVM() vspctest.VM {
	v := vm("router", "router-1", vspc.DirServer)
	v.BIOSUUID = "42112233-4455-6677-8899-aabbccddeeff"
	v.LocUUID = "56112233-4455-6677-8899-aabbccddeeff"
	return v
}

// setLine sends the four RFC 2217 settings requests and checks that each
// answer is the value asked for.
func setLine(t *testing.T, c *vspctest.Conn, b uint32, data, parity, stop byte) {
	t.Helper()
	ctx := t.Context()
	reply, err := c.ComPort(ctx, baud(b))
	if err != nil || binary.BigEndian.Uint32(reply[1:]) != b {
		t.Fatalf("SET-BAUDRATE %d: % x, %v", b, reply, err)
	}
	for _, req := range [][]byte{
		{byte(rfc2217.SetDatasize), data},
		{byte(rfc2217.SetParity), parity},
		{byte(rfc2217.SetStopsize), stop},
	} {
		reply, err := c.ComPort(ctx, req)
		if err != nil || len(reply) < 2 || reply[1] != req[1] {
			t.Fatalf("%v %d: % x, %v", rfc2217.Command(req[0]), req[1], reply, err)
		}
	}
}

// bothWays checks that bytes flow VM → serial device and back.
func bothWays(t *testing.T, c *vspctest.Conn, tty *os.File, tag string) {
	t.Helper()
	out := []byte(tag + " to the device \xff\x00\r\n")
	if _, err := c.Write(out); err != nil {
		t.Fatal(err)
	}
	if got := readFull(t, tty, len(out)); !bytes.Equal(got, out) {
		t.Fatalf("%s: device got %q", tag, got)
	}
	in := []byte(tag + " to the VM \xff\x13")
	if _, err := tty.Write(in); err != nil {
		t.Fatal(err)
	}
	if got := readFull(t, c, len(in)); !bytes.Equal(got, in) {
		t.Fatalf("%s: VM got %q", tag, got)
	}
}

// nextNotify returns the next NOTIFY of kind code (106 or 107) from the
// proxy for which ok holds, skipping others.
func nextNotify(t *testing.T, c *vspctest.Conn, code rfc2217.Command, ok func(byte) bool) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testwait.Timeout)
	defer cancel()
	for {
		m, err := c.NextCom(ctx)
		if err != nil {
			t.Fatalf("waiting for %v: %v", code, err)
		}
		if len(m) == 2 && rfc2217.Command(m[0]) == code && ok(m[1]) {
			return m[1]
		}
	}
}

// TestNPortGuestLineControl (issue 14): a guest that sets 57600 7E2, then
// 115200 8N1 through COM-PORT-OPTION on an nport:// device gets the
// NPort's answers; the simulated NPort's pty takes each setting (stty),
// bytes flow both ways at each, and a DCD change and a parity error the
// NPort reports reach the guest as NOTIFY-MODEMSTATE and NOTIFY-LINESTATE.
func TestNPortGuestLineControl(t *testing.T) {
	n := startNPortVM(t, devicetest.NPortOptions{Modem: aspp.Modem{DSR: true, CTS: true}}, "", `settings = "9600 8N1"`)
	testwait.For(t, "the NPort's session with the route's 9600", func() bool {
		cmd, data := n.sim.Connected()
		return cmd && data && n.sim.State().TxFIFO != 0
	})

	for _, step := range []struct {
		baud               uint32
		data, parity, stop byte
		mode, stty         string
	}{
		{57600, 7, byte(rfc2217.ParityEven), byte(rfc2217.Stop2), "7E2", "cstopb"},
		{115200, 8, byte(rfc2217.ParityNone), byte(rfc2217.Stop1), "8N1", "-cstopb"},
	} {
		setLine(t, n.vm, step.baud, step.data, step.parity, step.stop)
		out := devicetest.Stty(t, n.sim.UART)
		if !strings.Contains(out, fmt.Sprintf("speed %d baud", step.baud)) || !devicetest.SttyHas(out, step.stty) {
			t.Errorf("%s: stty on the NPort's pty:\n%s", step.mode, out)
		}
		if st := n.sim.State(); st.Baud != step.baud || st.Mode.String() != step.mode {
			t.Errorf("%s: the NPort has %d %v", step.mode, st.Baud, st.Mode)
		}
		bothWays(t, n.vm, n.tty, step.mode)
	}

	// Modem and line events from the NPort, under the guest's masks
	// (modem: RFC default 255; line: the guest asks for errors).
	// The guest's first report: DSR and CTS from the PORT_INIT answer, no
	// carrier. Then the NPort reports carrier: CD with ΔCD.
	nextNotify(t, n.vm, rfc2217.NotifyModemstate.Reply(), func(v byte) bool {
		return rfc2217.ModemState(v)&rfc2217.ModemLines == rfc2217.ModemDSR|rfc2217.ModemCTS
	})
	n.sim.SetModem(aspp.Modem{DSR: true, CTS: true, DCD: true})
	nextNotify(t, n.vm, rfc2217.NotifyModemstate.Reply(), func(v byte) bool {
		return rfc2217.ModemState(v)&(rfc2217.ModemCD|rfc2217.ModemDeltaCD) == rfc2217.ModemCD|rfc2217.ModemDeltaCD
	})
	if reply, err := n.vm.ComPort(t.Context(), []byte{byte(rfc2217.SetLinestateMask), byte(rfc2217.LineParity | rfc2217.LineBreak)}); err != nil || reply[1] != byte(rfc2217.LineParity|rfc2217.LineBreak) {
		t.Fatalf("SET-LINESTATE-MASK: % x, %v", reply, err)
	}
	n.sim.InjectEvents(aspp.EventParity | aspp.EventFraming)
	if v := nextNotify(t, n.vm, rfc2217.NotifyLinestate.Reply(), func(v byte) bool { return v != 0 }); rfc2217.LineState(v) != rfc2217.LineParity {
		t.Errorf("NOTIFY-LINESTATE %v, want PARITY-ERROR (framing is masked)", rfc2217.LineState(v))
	}

	devs := n.br.Devices()
	if len(devs) != 1 || devs[0].State != "up" || devs[0].Mismatch != "" || devs[0].Settings != "115200 8N1" {
		t.Errorf("status %+v", devs)
	}
	if w := n.warns.list(); len(w) != 0 {
		t.Errorf("warnings: %q", w)
	}
}

// TestNPortCommandPortClosed (issue 14): with the NPort's command port
// closed ("Allow driver control" off) the VM still exchanges data, the
// guest is answered with the route's settings, and one warning is logged.
func TestNPortCommandPortClosed(t *testing.T) {
	n := startNPortVM(t, devicetest.NPortOptions{NoCommandPort: true}, "", `settings = "9600 8N1"`)
	testwait.For(t, "the device up", func() bool {
		devs := n.br.Devices()
		return len(devs) == 1 && devs[0].State == "up"
	})
	for _, b := range []uint32{57600, 115200} {
		reply, err := n.vm.ComPort(t.Context(), baud(b))
		if err != nil || binary.BigEndian.Uint32(reply[1:]) != 9600 {
			t.Fatalf("SET-BAUDRATE %d answered % x, %v; want the route's 9600", b, reply, err)
		}
		bothWays(t, n.vm, n.tty, fmt.Sprint(b))
	}
	if devs := n.br.Devices(); len(devs) != 1 || !strings.Contains(devs[0].Mismatch, "115200") {
		t.Errorf("status %+v", devs)
	}
	if w := n.warns.list(); len(w) != 1 || !strings.Contains(w[0], "command port") {
		t.Errorf("warnings %q, want one about the command port", w)
	}
}

// TestNPortReconnectAndSilence (issue 14): when the NPort drops the
// session, the link reconnects and the NPort gets the guest's settings
// again, not the route's; when the NPort stops answering commands, the
// VM's data still flows and status shows the unanswered command.
func TestNPortReconnectAndSilence(t *testing.T) {
	const policy = `[policy]
reconnect_min = "20ms"
reconnect_max = "100ms"`
	n := startNPortVM(t, devicetest.NPortOptions{}, policy, `settings = "9600 8N1"`)
	testwait.For(t, "the NPort's first session", func() bool { c, d := n.sim.Connected(); return c && d })
	setLine(t, n.vm, 57600, 7, byte(rfc2217.ParityEven), byte(rfc2217.Stop2))

	n.sim.DropSession()
	testwait.For(t, "the guest's 57600 7E2 on the NPort's second session", func() bool {
		st := n.sim.State()
		return st.Sessions >= 2 && st.Baud == 57600 && st.Mode.String() == "7E2" && st.TxFIFO != 0
	})
	if s := devicetest.TTY(t, n.sim.UART); s.Speed != 57600 || s.StopBits != 2 {
		t.Errorf("pty after the reconnect: %+v", s)
	}
	bothWays(t, n.vm, n.tty, "after reconnect")

	// The NPort stops answering PORT_INIT: data from the device flows
	// while the guest's command waits; the command times out (2 s, once:
	// the next ones do not wait while the NPort stays silent), the
	// guest's own data, which follows the command in its stream, goes
	// after it, and status says so.
	n.sim.SetFault(aspp.PortInit, devicetest.Fault{Drop: true})
	errc := make(chan error, 1)
	go func() { // the guest waits for its answer; the data does not
		_, err := n.vm.ComPort(t.Context(), baud(19200))
		errc <- err
	}()
	testwait.For(t, "the unanswered PORT_INIT", func() bool {
		r := n.sim.State().Requests
		return len(r) > 0 && strings.HasPrefix(r[len(r)-1], "2c 08 07")
	})
	in := []byte("from the device while the command waits")
	if _, err := n.tty.Write(in); err != nil {
		t.Fatal(err)
	}
	if got := readFull(t, n.vm, len(in)); !bytes.Equal(got, in) {
		t.Fatalf("VM got %q", got)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	bothWays(t, n.vm, n.tty, "while the NPort is silent")
	testwait.For(t, "the mismatch in status", func() bool {
		devs := n.br.Devices()
		return len(devs) == 1 && strings.Contains(devs[0].Mismatch, "not answered")
	})
}

// TestNPortRouteWithoutSettings: a route that says nothing about the line
// leaves the NPort as its console set it until the guest sets something.
func TestNPortRouteWithoutSettings(t *testing.T) {
	n := startNPortVM(t, devicetest.NPortOptions{Default: devicetest.NPortLine{Baud: 38400}}, "", "")
	testwait.For(t, "the device up", func() bool {
		devs := n.br.Devices()
		return len(devs) == 1 && devs[0].State == "up"
	})
	bothWays(t, n.vm, n.tty, "untouched")
	if st := n.sim.State(); len(st.Requests) != 0 || st.Baud != 38400 {
		t.Errorf("the NPort was told %q and has %d baud; want nothing sent, its own 38400", st.Requests, st.Baud)
	}
	reply, err := n.vm.ComPort(t.Context(), baud(57600))
	if err != nil || binary.BigEndian.Uint32(reply[1:]) != 57600 {
		t.Fatalf("SET-BAUDRATE: % x, %v", reply, err)
	}
	if st := n.sim.State(); st.Baud != 57600 || st.Mode.String() != "8N1" {
		t.Errorf("the NPort has %d %v, want 57600 8N1", st.Baud, st.Mode)
	}
	if w := n.warns.list(); len(w) != 0 {
		t.Errorf("warnings: %q", w)
	}
}
