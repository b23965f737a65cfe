package bridge_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/bridge"
	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/devices/devicetest"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/rfc2217"
	"github.com/vspc-bridge/vspc-bridge/vspc"
	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
)

// start runs a vspc server with the real bridge on config text.
func start(t *testing.T, toml string) (addr string, srv *vspc.Server, br *bridge.Bridge) {
	t.Helper()
	return startLogged(t, toml, devicetest.Logger(t))
}

// startLogged is start with the logger of the bridge and the server.
func startLogged(t *testing.T, toml string, log *slog.Logger) (addr string, srv *vspc.Server, br *bridge.Bridge) {
	t.Helper()
	cfg, err := configs.Parse("test.toml", []byte(toml))
	if err != nil {
		t.Fatal(err)
	}
	br = bridge.New(cfg, log)
	srv, addr = serveVMs(t, br, log, 5*time.Second)
	return addr, srv, br
}

// serveVMs runs a vspc server in front of br (with the grace period
// given; 0: the default) on a loopback listener, and returns it and the
// listener's address. Server and bridge close when the test ends.
func serveVMs(t *testing.T, br *bridge.Bridge, log *slog.Logger, grace time.Duration) (*vspc.Server, string) {
	t.Helper()
	srv := vspc.NewServer(vspc.Config{Bridger: br, Logger: log, GracePeriod: grace})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done; srv.Close(); br.Close() })
	return srv, ln.Addr().String()
}

// dialVM connects v to the VM listener at addr, or fails the test; the
// connection closes when the test ends.
func dialVM(t *testing.T, addr string, v vspctest.VM) *vspctest.Conn {
	t.Helper()
	c, err := vspctest.Dial(t.Context(), addr, v)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialRemote connects a direction-client VM named name whose service URI
// names a fresh loopback listener, the remote system. It returns the VM's
// connection, the remote's end of the link the bridge opened, and the
// listener for the bridge's later connections; all close when the test
// ends.
func dialRemote(t *testing.T, addr, name string) (*vspctest.Conn, net.Conn, net.Listener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	c := dialVM(t, addr, vm(name, "tcp://"+ln.Addr().String(), vspc.DirClient))
	remote, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { remote.Close() })
	return c, remote, ln
}

// openTTY opens the test's end of a pty pair (as it is: no mode is set)
// until the test ends.
func openTTY(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func vm(name, service string, dir vspc.Direction) vspctest.VM {
	return vspctest.VM{Name: name, VCUUID: "50112233-4455-6677-8899-aabbccddeeff", Direction: dir, ServiceURI: service}
}

// baud is SET-BAUDRATE with a 4-byte value.
func baud(b uint32) []byte {
	p := []byte{byte(rfc2217.SetBaudrate), 0, 0, 0, 0}
	binary.BigEndian.PutUint32(p[1:], b)
	return p
}

func readFull(t *testing.T, r io.Reader, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	done := make(chan error, 1)
	go func() { _, err := io.ReadFull(r, b); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("read: %v", err)
		}
	case <-time.After(testwait.Timeout):
		t.Fatalf("read %d bytes: nothing within %v", n, testwait.Timeout)
	}
	return b
}

// TestGuestSettingsReachLocalTTY: a route joins the VM to a local tty (one
// end of a socat pty pair); the guest's SET-BAUDRATE and SET-STOPSIZE
// through COM-PORT-OPTION are really on the tty, and data flows both ways
// 8-bit clean.
func TestGuestSettingsReachLocalTTY(t *testing.T) {
	pty := devicetest.StartSocatPTY(t)
	addr, _, br := start(t, fmt.Sprintf(`
[vspc]
listen = "127.0.0.1:0"
[[route]]
name = "lab-router-3"
service = "lab-router-*"
device = "serial://%s"
settings = "115200 8N1"
`, pty.A))
	ctx := t.Context()
	c := dialVM(t, addr, vm("router", "lab-router-3", vspc.DirServer))
	if err := c.EnableComPort(); err != nil {
		t.Fatal(err)
	}
	// The route's device opens in the background. Until it is up the
	// reply would be the request itself, and the termios check below a
	// race.
	waitState(t, br, "router", "up")
	reply, err := c.ComPort(ctx, baud(57600))
	if err != nil {
		t.Fatal(err)
	}
	if got := binary.BigEndian.Uint32(reply[1:]); got != 57600 {
		t.Fatalf("SET-BAUDRATE reply %d", got)
	}
	if reply, err = c.ComPort(ctx, []byte{byte(rfc2217.SetStopsize), 2}); err != nil || reply[1] != 2 {
		t.Fatalf("SET-STOPSIZE reply % x, %v", reply, err)
	}
	st := devicetest.TTY(t, pty.A)
	if st.Speed != 57600 || st.StopBits != 2 {
		t.Fatalf("tty has %+v, want 57600 with 2 stop bits", st)
	}
	// Data both ways, with 255s.
	other := openTTY(t, pty.B)
	msg := []byte("to the router \xff\x00\x11\x13\xff")
	c.Write(msg)
	if got := readFull(t, other, len(msg)); !bytes.Equal(got, msg) {
		t.Fatalf("tty got % x", got)
	}
	back := []byte("router> \xff\xff\r\n")
	other.Write(back)
	if got := readFull(t, c, len(back)); !bytes.Equal(got, back) {
		t.Fatalf("VM got % x", got)
	}
	// Then 115200, and the tty follows.
	if _, err := c.ComPort(ctx, baud(115200)); err != nil {
		t.Fatal(err)
	}
	if st := devicetest.TTY(t, pty.A); st.Speed != 115200 {
		t.Fatalf("tty speed %d after 115200", st.Speed)
	}
}

// TestGuestModemLinesThroughRFC2217: a route to pyserial's RFC 2217 server
// on loop:// (CTS follows RTS, DSR follows DTR): the guest's DTR/RTS
// changes come back to the VM as NOTIFY-MODEMSTATE.
func TestGuestModemLinesThroughRFC2217(t *testing.T) {
	dev := devicetest.PyRFC2217Server(t)
	addr, _, _ := start(t, fmt.Sprintf(`
[vspc]
listen = "127.0.0.1:0"
[[route]]
service = "modem-lab"
device = "rfc2217://%s"
settings = "9600 8N1"
`, dev))
	ctx := t.Context()
	c := dialVM(t, addr, vm("modem", "modem-lab", vspc.DirServer))
	c.EnableComPort()
	// Wait for the device link to come up: data echoes on loop://.
	c.Write([]byte("ping"))
	if got := readFull(t, c, 4); string(got) != "ping" {
		t.Fatalf("loop:// echo %q", got)
	}
	if _, err := c.ComPort(ctx, []byte{byte(rfc2217.SetModemstateMask), 0xff}); err != nil {
		t.Fatal(err)
	}
	waitModem := func(want func(rfc2217.ModemState) bool, what string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(ctx, testwait.Timeout)
		defer cancel()
		for {
			m, err := c.NextCom(ctx)
			if err != nil {
				t.Fatalf("no NOTIFY-MODEMSTATE with %s: %v", what, err)
			}
			if len(m) == 2 && m[0] == byte(rfc2217.NotifyModemstate)+100 && want(rfc2217.ModemState(m[1])) {
				return
			}
		}
	}
	c.ComPort(ctx, []byte{byte(rfc2217.SetControl), byte(rfc2217.ControlDTROff)})
	c.ComPort(ctx, []byte{byte(rfc2217.SetControl), byte(rfc2217.ControlRTSOff)})
	waitModem(func(m rfc2217.ModemState) bool { return m&(rfc2217.ModemDSR|rfc2217.ModemCTS) == 0 }, "DSR and CTS off")
	c.ComPort(ctx, []byte{byte(rfc2217.SetControl), byte(rfc2217.ControlDTROn)})
	c.ComPort(ctx, []byte{byte(rfc2217.SetControl), byte(rfc2217.ControlRTSOn)})
	waitModem(func(m rfc2217.ModemState) bool {
		return m&(rfc2217.ModemDSR|rfc2217.ModemCTS) == rfc2217.ModemDSR|rfc2217.ModemCTS
	}, "DSR and CTS on")
}

// TestNPortSettingsAndOwnership: a Moxa-like raw TCP port (socat
// TCP-LISTEN ↔ pty) configured 115200 8N1 answers the guest's 9600 with
// the settings in effect; a second VM asking for the same device is
// refused (WONT-PROXY); data flows.
func TestNPortSettingsAndOwnership(t *testing.T) {
	pty := devicetest.StartSocatPTY(t)
	nport := devicetest.SocatTCPServer(t, pty.B)
	addr, _, br := start(t, fmt.Sprintf(`
[vspc]
listen = "127.0.0.1:0"
[[route]]
service = "pdu-*"
device = "nport://%s?cmd=none"
settings = "115200 8N1"
`, nport))
	ctx := t.Context()
	c := dialVM(t, addr, vm("pdu", "pdu-1", vspc.DirServer))
	c.EnableComPort()
	reply, err := c.ComPort(ctx, baud(9600))
	if err != nil {
		t.Fatal(err)
	}
	if got := binary.BigEndian.Uint32(reply[1:]); got != 115200 {
		t.Fatalf("NPort port answered baud %d, want the configured 115200", got)
	}
	// Status says what the guest asked for in vain, at once: the answer
	// and the record are one FixedLine, whether the device is up yet or
	// not.
	if devs := br.Devices(); len(devs) != 1 || !strings.Contains(devs[0].Mismatch, "asked for 9600 8N1, line is fixed at 115200 8N1") || devs[0].Settings != "9600 ???" {
		t.Fatalf("status shows no settings mismatch: %+v", devs)
	}
	other := vm("pdu-twin", "pdu-2", vspc.DirServer)
	other.VCUUID = "50000000-0000-0000-0000-00000000beef"
	if _, err := vspctest.Dial(ctx, addr, other); !errors.Is(err, vspctest.ErrWontProxy) {
		t.Fatalf("second VM on the same device: %v, want WONT-PROXY", err)
	}
	tty := openTTY(t, pty.A)
	waitState(t, br, "pdu", "up")
	c.Write([]byte("status\r"))
	if got := readFull(t, tty, 7); string(got) != "status\r" {
		t.Fatalf("device got %q", got)
	}
	tty.Write([]byte("ok\xff"))
	if got := readFull(t, c, 3); string(got) != "ok\xff" {
		t.Fatalf("VM got %q", got)
	}
}

// TestDeviceKilledAndRestarted: ser2net (raw accepter on a pty) is killed
// mid-stream and restarted; the VM session survives and data flows again,
// including what the VM sent while the device was away.
func TestDeviceKilledAndRestarted(t *testing.T) {
	pty := devicetest.StartSocatPTY(t)
	s2n := devicetest.StartSer2net(t, "tcp", pty.B)
	addr, _, br := start(t, fmt.Sprintf(`
[vspc]
listen = "127.0.0.1:0"
[policy]
reconnect_min = "50ms"
reconnect_max = "200ms"
[[route]]
service = "console-1"
device = "tcp://%s"
`, s2n.Addr))
	c := dialVM(t, addr, vm("con", "console-1", vspc.DirServer))
	tty := openTTY(t, pty.A)
	waitState(t, br, "con", "up")
	c.Write([]byte("one"))
	if got := readFull(t, tty, 3); string(got) != "one" {
		t.Fatalf("device got %q", got)
	}
	s2n.Stop()
	testwait.For(t, "the link to see the device gone", func() bool {
		d, ok := deviceOf(br, "con")
		return ok && d.State != "up"
	})
	c.Write([]byte("two")) // held in the backlog while the device is away
	testwait.For(t, "the VM's bytes in the backlog", func() bool {
		d, ok := deviceOf(br, "con")
		return ok && d.Backlog == 3
	})
	s2n.Restart(t)
	if got := readFull(t, tty, 3); string(got) != "two" {
		t.Fatalf("after restart device got %q", got)
	}
	tty.Write([]byte("back"))
	if got := readFull(t, c, 4); string(got) != "back" {
		t.Fatalf("VM got %q", got)
	}
	if c.WaitClosed(0) {
		t.Fatal("VM connection closed")
	}
}

type recObserver struct {
	mu   sync.Mutex
	from map[bool][]byte
	vm   string
}

func (o *recObserver) ObserveConsole(vm, route string, fromDevice bool, p []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.vm = vm
	o.from[fromDevice] = append(o.from[fromDevice], p...)
}

// observedServer runs a VM server on a bridge with a recording observer
// (config: [vspc] on loopback plus extra; setup may wire more in). It
// returns the VM listener's address; everything stops with the test.
func observedServer(t *testing.T, extra string, setup func(*bridge.Bridge)) (string, *recObserver) {
	t.Helper()
	cfg, err := configs.Parse("test.toml", []byte("[vspc]\nlisten = \"127.0.0.1:0\"\n"+extra))
	if err != nil {
		t.Fatal(err)
	}
	br := bridge.New(cfg, devicetest.Logger(t))
	obs := &recObserver{from: map[bool][]byte{}}
	br.SetObserver(obs)
	if setup != nil {
		setup(br)
	}
	_, addr := serveVMs(t, br, devicetest.Logger(t), 0)
	return addr, obs
}

// TestObserverSeesTraffic: console alerts see both directions of a link.
func TestObserverSeesTraffic(t *testing.T) {
	addr, obs := observedServer(t, "[policy]\nconnect_allow = [\"127.0.0.0/8\"]\n", nil)
	c, rc, _ := dialRemote(t, addr, "watched")
	rc.Write([]byte("Kernel panic - not syncing\r\n"))
	readFull(t, c, len("Kernel panic - not syncing\r\n"))
	c.Write([]byte("reboot\r"))
	readFull(t, rc, len("reboot\r"))
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if string(obs.from[true]) != "Kernel panic - not syncing\r\n" || string(obs.from[false]) != "reboot\r" || obs.vm != "watched" {
		t.Fatalf("observer saw %q / %q for %q", obs.from[true], obs.from[false], obs.vm)
	}
}

// fakeConsoles is a remote-access hub that keeps the Sink it is given and
// records what the VM writes.
type fakeConsoles struct {
	mu   sync.Mutex
	sink vspc.Sink
	got  []byte
}

func (f *fakeConsoles) Open(_ context.Context, _ vspc.Request, vm vspc.Sink) (vspc.Backend, error) {
	f.mu.Lock()
	f.sink = vm
	f.mu.Unlock()
	return fakeConsole{f}, nil
}

type fakeConsole struct{ f *fakeConsoles }

func (c fakeConsole) Write(p []byte) (int, error) {
	c.f.mu.Lock()
	c.f.got = append(c.f.got, p...)
	c.f.mu.Unlock()
	return len(p), nil
}
func (fakeConsole) Close() error { return nil }

// TestObserverSeesConsoles: console alerts see remote-access consoles
// too: what the VM writes, and what users send it. The port's status
// still reaches the hub through the wrapped Sink.
func TestObserverSeesConsoles(t *testing.T) {
	cons := &fakeConsoles{}
	addr, obs := observedServer(t, "", func(br *bridge.Bridge) { br.SetConsoles(cons) })
	c := dialVM(t, addr, vm("console-vm", "console-vm", vspc.DirServer))
	c.Write([]byte("BUG: soft lockup\r\n"))
	testwait.For(t, "the console to get the VM's output", func() bool {
		cons.mu.Lock()
		defer cons.mu.Unlock()
		return string(cons.got) == "BUG: soft lockup\r\n"
	})
	cons.mu.Lock()
	sink := cons.sink
	cons.mu.Unlock()
	if err := sink.Send([]byte("sysrq\r")); err != nil {
		t.Fatal(err)
	}
	readFull(t, c, len("sysrq\r"))
	if pi, ok := sink.(interface{ Info() vspc.PortInfo }); !ok || pi.Info().VMName != "console-vm" {
		t.Errorf("the hub's Sink lost the port's Info")
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if string(obs.from[false]) != "BUG: soft lockup\r\n" || string(obs.from[true]) != "sysrq\r" || obs.vm != "console-vm" {
		t.Fatalf("observer saw %q / %q for %q", obs.from[false], obs.from[true], obs.vm)
	}
}

// TestBurstDevicesConnect: VMs attaching all at once (their first device
// connects held by the dial gate until the burst passes) all get their
// device, and data flows both ways on each.
func TestBurstDevicesConnect(t *testing.T) {
	const n = 40
	addr, _ := observedServer(t, "[policy]\nconnect_allow = [\"127.0.0.0/8\"]\n", nil)
	lns := make([]net.Listener, n)
	for i := range lns {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		lns[i] = ln
	}
	vms := make([]*vspctest.Conn, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			c, err := vspctest.Dial(t.Context(), addr, vm(fmt.Sprintf("burst-%02d", i), "tcp://"+lns[i].Addr().String(), vspc.DirClient))
			if err != nil {
				errs <- err
				return
			}
			vms[i] = c
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i, ln := range lns {
		defer vms[i].Close()
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(testwait.Timeout))
		rc, err := ln.Accept()
		if err != nil {
			t.Fatalf("VM %d: its device never got a connection: %v", i, err)
		}
		defer rc.Close()
		msg := fmt.Sprintf("to vm %d", i)
		rc.Write([]byte(msg))
		if got := readFull(t, vms[i], len(msg)); string(got) != msg {
			t.Fatalf("VM %d got %q", i, got)
		}
		vms[i].Write([]byte("from vm"))
		if got := readFull(t, rc, len("from vm")); string(got) != "from vm" {
			t.Fatalf("device %d got %q", i, got)
		}
	}
}

// deviceOf is the status of the link of VM name.
func deviceOf(br *bridge.Bridge, name string) (bridge.DeviceStatus, bool) {
	for _, d := range br.Devices() {
		if d.VMName == name {
			return d, true
		}
	}
	return bridge.DeviceStatus{}, false
}

// waitState waits until the link of VM name is in state.
func waitState(t *testing.T, br *bridge.Bridge, name, state string) {
	t.Helper()
	testwait.For(t, fmt.Sprintf("the device of %s %s", name, state), func() bool {
		d, ok := deviceOf(br, name)
		return ok && d.State == state
	})
}

// closedAddr returns a loopback address nothing listens on (yet).
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// acceptAll listens on addr and holds every connection until the test
// ends.
func acceptAll(t *testing.T, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	})
}

// TestFixedLineSameAwayOrPresent: a tcp:// device cannot change its line,
// and the guest's answer and the mismatch in status are one decision,
// the same whether the device is away or connected. Through a route the
// answer is the route's settings and a request for others is a mismatch;
// for a target the VM named itself nothing is configured, so nothing is a
// mismatch and the guest is told its request took.
func TestFixedLineSameAwayOrPresent(t *testing.T) {
	routed, named := closedAddr(t), closedAddr(t)
	addr, _, br := start(t, fmt.Sprintf(`
[vspc]
listen = "127.0.0.1:0"
[policy]
connect_allow = ["127.0.0.0/8"]
reconnect_min = "20ms"
reconnect_max = "50ms"
[[route]]
service = "pdu-1"
device = "tcp://%s"
settings = "115200 8N1"
`, routed))
	ctx := t.Context()
	pdu := dialVM(t, addr, vm("pdu", "pdu-1", vspc.DirServer))
	other := vm("named", "tcp://"+named, vspc.DirClient)
	other.VCUUID = "50000000-0000-0000-0000-00000000beef"
	own := dialVM(t, addr, other)
	for _, c := range []*vspctest.Conn{pdu, own} {
		if err := c.EnableComPort(); err != nil {
			t.Fatal(err)
		}
	}
	askBaud := func(c *vspctest.Conn, b uint32) uint32 {
		t.Helper()
		reply, err := c.ComPort(ctx, baud(b))
		if err != nil {
			t.Fatal(err)
		}
		return binary.BigEndian.Uint32(reply[1:])
	}
	const wantMismatch = "asked for 9600 8N1, line is fixed at 115200 8N1 (tcp devices cannot change line settings; change them on the device server)"

	// Away.
	waitState(t, br, "pdu", "down")
	waitState(t, br, "named", "down")
	if got := askBaud(pdu, 9600); got != 115200 {
		t.Errorf("device away: the route's tcp device answered baud %d, want the configured 115200", got)
	}
	if d, _ := deviceOf(br, "pdu"); d.Mismatch != wantMismatch || d.State != "down" {
		t.Errorf("device away: status %+v, want mismatch %q", d, wantMismatch)
	}
	if got := askBaud(own, 9600); got != 9600 {
		t.Errorf("device away: the VM-named tcp device answered baud %d, want the request (nothing configured)", got)
	}
	if d, _ := deviceOf(br, "named"); d.Mismatch != "" {
		t.Errorf("device away: VM-named target shows mismatch %q against settings nobody configured", d.Mismatch)
	}

	// Present.
	acceptAll(t, routed)
	acceptAll(t, named)
	waitState(t, br, "pdu", "up")
	waitState(t, br, "named", "up")
	if d, _ := deviceOf(br, "pdu"); d.Mismatch != wantMismatch {
		t.Errorf("device back: mismatch %q, want the same %q", d.Mismatch, wantMismatch)
	}
	if got := askBaud(pdu, 9600); got != 115200 {
		t.Errorf("device present: answered baud %d, want the configured 115200", got)
	}
	if d, _ := deviceOf(br, "pdu"); d.Mismatch != wantMismatch || d.State != "up" {
		t.Errorf("device present: status %+v, want mismatch %q", d, wantMismatch)
	}
	if got := askBaud(own, 19200); got != 19200 {
		t.Errorf("device present: the VM-named tcp device answered baud %d, want the request", got)
	}
	if d, _ := deviceOf(br, "named"); d.Mismatch != "" || d.Settings != "19200 ???" {
		t.Errorf("device present: VM-named status %+v, want no mismatch and the guest's 19200", d)
	}
}
