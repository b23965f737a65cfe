package remote_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/devices/devicetest"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/remote"
	"github.com/vspc-bridge/vspc-bridge/telnet"
	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// fakeSink stands in for a vspc.Port: it records what clients send to
// the VM, and BREAKs.
type fakeSink struct {
	mu     sync.Mutex
	data   bytes.Buffer
	breaks int
}

func (s *fakeSink) Send(p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data.Write(p)
	return nil
}

func (s *fakeSink) SendBreak() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.breaks++
	return nil
}

func (s *fakeSink) waitBreaks(t *testing.T, n int) {
	t.Helper()
	testwait.For(t, fmt.Sprintf("%d BREAKs at the VM", n), func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.breaks == n
	})
}

func (s *fakeSink) waitData(t *testing.T, want string) {
	t.Helper()
	if !testwait.Until(t, testwait.Timeout, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.data.String() == want
	}) {
		s.mu.Lock()
		defer s.mu.Unlock()
		t.Fatalf("VM got %q, want %q", s.data.String(), want)
	}
}

func openConsole(t *testing.T, hub *remote.Hub, name, uuid, service string) (vspc.Backend, *fakeSink) {
	t.Helper()
	sink := &fakeSink{}
	b, err := hub.Open(t.Context(), vspc.Request{Direction: vspc.DirServer, ServiceURI: service, VMName: name, VCUUID: uuid}, sink)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, sink
}

func listenPort(t *testing.T, uri string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(hostPort(t, uri))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

// TestBreak: IAC BRK from a telnet user and the escape command b both
// reach the VM as BREAK; a read-only user's BREAK does not.
func TestBreak(t *testing.T) {
	h := newHarness(t, "")
	_, sink := openConsole(t, h.hub, "web-7", "42100000-0000-0000-0000-00000000a007", fmt.Sprintf("telnet://127.0.0.1:%d", freePort(t)))
	addr := hostPort(t, h.console("web-7").Listen)

	c := dialLine(t, addr)
	c.login("alice", alicePW)
	c.expect("attached to web-7")
	c.nc.Write(telnet.AppendCommand(nil, telnet.BRK))
	sink.waitBreaks(t, 1)
	c.nc.Write([]byte("x\x05cby"))
	c.expect("BREAK sent")
	sink.waitBreaks(t, 2)
	sink.waitData(t, "xy")

	// Escape s switches to read-only, a back to read-write.
	c.nc.Write([]byte("\x05cs"))
	c.expect("you are read-only]")
	c.nc.Write([]byte("q"))
	c.expect("you are read-only; input is not sent")
	c.nc.Write([]byte("\x05ca"))
	c.expect("you are read-write]")
	c.nc.Write([]byte("z"))
	sink.waitData(t, "xyz")

	r := dialLine(t, addr)
	r.login("bob", bobPW)
	r.expect("attached to web-7 (read-only)")
	r.nc.Write(telnet.AppendCommand(nil, telnet.BRK))
	r.expect("read-only: BREAK not sent")
	sink.waitBreaks(t, 2)
	r.nc.Write([]byte("\x05ca"))
	r.expect("you have read-only access to this console")
	c.expect("bob joined (read-only")
}

// TestSSHPtyEscapes: OpenSSH with a pty (in tmux): the console escape
// detaches, and OpenSSH's own ~B sends BREAK (RFC 4335).
func TestSSHPtyEscapes(t *testing.T) {
	h := newHarness(t, "")
	_, sink := openConsole(t, h.hub, "web-8", "42100000-0000-0000-0000-00000000a008", "web-8")
	_, port, _ := net.SplitHostPort(h.sshAddr)
	m := startTmux(t, "ssh", "-F", "/dev/null", "-tt", "-i", h.keyFile, "-p", port, "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
		"-o", "EscapeChar=~", "alice+web-8@127.0.0.1")
	m.waitFor("attached to web-8 (read-write); escape ^Ec")
	m.typeText("typed")
	sink.waitData(t, "typed")
	m.typeEnter()
	m.typeText("~B")
	sink.waitBreaks(t, 1)
	m.typeKey("C-e")
	m.typeText("c?")
	m.waitFor("escape commands: ^Ec. detach")
	m.typeKey("C-e")
	m.typeText("c.")
	m.waitFor("detached from web-8")
	h.waitClients("web-8", 0)
}

// TestPortAssignmentPersists: name-only service URIs get ports from
// port_range, kept in the state file across a restart of the hub.
func TestPortAssignmentPersists(t *testing.T) {
	dir := t.TempDir()
	lo := freePort(t)
	if lo > 65000 {
		lo = 40000
	}
	conf := fmt.Sprintf(`[vspc]
listen = "127.0.0.1:0"
[remote]
enabled = true
port_range = "%d-%d"
state_file = %q
[[user]]
name = "alice"
password = %q
access = [{vm = "*", mode = "rw"}]
`, lo, lo+20, filepath.Join(dir, "state", "ports.json"), hash(t, alicePW))
	cfg, err := configs.Parse("test.toml", []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	start := func() *remote.Hub {
		hub, err := remote.New(cfg, devicetest.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		return hub
	}
	hub := start()
	b1, _ := openConsole(t, hub, "web-1", "42100000-0000-0000-0000-0000000000e1", "vSPC.py")
	b2, _ := openConsole(t, hub, "web-2", "42100000-0000-0000-0000-0000000000e2", "vSPC.py")
	ports := map[string]int{}
	for _, ci := range hub.Consoles() {
		ports[ci.VMName] = listenPort(t, ci.Listen)
	}
	if p := ports["web-1"]; p < lo || p > lo+20 || ports["web-2"] == p {
		t.Fatalf("ports %v, range %d-%d", ports, lo, lo+20)
	}
	// A VM naming web-1's port explicitly is refused, naming web-1.
	_, err = hub.Open(t.Context(), vspc.Request{Direction: vspc.DirServer, VMName: "intruder", ServiceURI: fmt.Sprintf("telnet://h:%d", ports["web-1"])}, &fakeSink{})
	if err == nil || !strings.Contains(err.Error(), `console port of VM "web-1"`) {
		t.Fatalf("conflict: %v", err)
	}
	b1.Close()
	b2.Close()
	hub.Close()

	hub = start() // restart: web-2 comes back first and still gets its port
	defer hub.Close()
	openConsole(t, hub, "web-2", "42100000-0000-0000-0000-0000000000e2", "vSPC.py")
	openConsole(t, hub, "web-1", "42100000-0000-0000-0000-0000000000e1", "vSPC.py")
	for _, ci := range hub.Consoles() {
		if got := listenPort(t, ci.Listen); got != ports[ci.VMName] {
			t.Fatalf("%s: port %d after restart, was %d", ci.VMName, got, ports[ci.VMName])
		}
	}
	// A port held by another program is reported with the OS error.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().(*net.TCPAddr).Port
	_, err = hub.Open(t.Context(), vspc.Request{Direction: vspc.DirServer, VMName: "web-3", ServiceURI: fmt.Sprintf("telnet://h:%d", busy)}, &fakeSink{})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf(`VM "web-3" asks for console port %d`, busy)) || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("busy port: %v", err)
	}
}

// selfSigned writes a certificate and key for 127.0.0.1.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "vspc-bridge test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certFile, keyFile
}

// TestTelnetsPerVMPort: a telnets:// service URI gets a TLS listener.
func TestTelnetsPerVMPort(t *testing.T) {
	cert, key := selfSigned(t, t.TempDir())
	h := newHarness(t, fmt.Sprintf("tls_cert = %q\ntls_key = %q", cert, key))
	_, sink := openConsole(t, h.hub, "web-9", "42100000-0000-0000-0000-00000000a009", fmt.Sprintf("telnets://127.0.0.1:%d", freePort(t)))
	ci := h.console("web-9")
	if !strings.HasPrefix(ci.Listen, "telnets://") {
		t.Fatalf("listen %q", ci.Listen)
	}
	tc, err := tls.Dial("tcp", hostPort(t, ci.Listen), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	c := &lineClient{t: t, nc: tc, r: newReader(tc)}
	t.Cleanup(func() { tc.Close() })
	c.login("alice", alicePW)
	c.expect("attached to web-9")
	c.send("over tls")
	sink.waitData(t, "over tls\r\n")
	if cl := h.console("web-9").Clients; len(cl) != 1 || cl[0].Via != "telnets" {
		t.Fatalf("clients %+v", cl)
	}
}

// TestOpenListener: with open = true on loopback, a per-VM port needs no
// login.
func TestOpenListener(t *testing.T) {
	h := newHarness(t, "open = true")
	b, sink := openConsole(t, h.hub, "web-10", "42100000-0000-0000-0000-00000000a010", fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t)))
	c := dialLine(t, hostPort(t, h.console("web-10").Listen))
	c.nc.Write([]byte("raw\xff bytes"))
	sink.waitData(t, "raw\xff bytes")
	h.waitClients("web-10", 1)
	b.Write([]byte("from the VM\xff\r\n")) // exactly these bytes: no banner, no escaping
	c.expect("from the VM\xff\r\n")
	if got := c.sb.String(); got != "from the VM\xff\r\n" {
		t.Fatalf("raw client got %q", got)
	}
	if cl := h.console("web-10").Clients; len(cl) != 1 || cl[0].Via != "tcp" || !strings.HasPrefix(cl[0].User, "open@127.0.0.1") {
		t.Fatalf("clients %+v", cl)
	}
}

// TestServeReportsPortConflict: a front door that cannot listen is an
// error from Serve at once, naming the key.
func TestServeReportsPortConflict(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg, err := configs.Parse("t.toml", []byte(fmt.Sprintf("[vspc]\nlisten = \"127.0.0.1:0\"\n[remote]\nenabled = true\ntelnet_listen = %q\n", ln.Addr().String())))
	if err != nil {
		t.Fatal(err)
	}
	hub, err := remote.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	err = hub.Serve(ctx)
	if err == nil || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "telnet_listen "+ln.Addr().String()) {
		t.Fatalf("Serve: %v", err)
	}
}

// TestDisabled: with [remote] enabled = false Open refuses, so the VM
// gets WONT-PROXY as before.
func TestDisabled(t *testing.T) {
	hub, err := remote.New(configs.Default(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	if _, err := hub.Open(t.Context(), vspc.Request{Direction: vspc.DirServer, ServiceURI: "x"}, &fakeSink{}); !errors.Is(err, remote.ErrDisabled) {
		t.Fatalf("Open: %v", err)
	}
}

// TestHostKeysGeneratedAndKept: missing host keys are generated with the
// type their names ask for, mode 0600, and a restart keeps them.
func TestHostKeysGeneratedAndKept(t *testing.T) {
	dir := t.TempDir()
	names := map[string]string{"ssh_host_ed25519_key": "ssh-ed25519", "ssh_host_ecdsa_key": "ecdsa-sha2-nistp256", "ssh_host_rsa_key": "ssh-rsa"}
	var paths []string
	for n := range names {
		paths = append(paths, fmt.Sprintf("%q", filepath.Join(dir, "keys", n)))
	}
	cfg, err := configs.Parse("t.toml", []byte(fmt.Sprintf("[vspc]\nlisten = \"127.0.0.1:0\"\n[remote]\nenabled = true\nssh_host_keys = [%s]\n", strings.Join(paths, ", "))))
	if err != nil {
		t.Fatal(err)
	}
	read := func() map[string][]byte {
		out := map[string][]byte{}
		for n, typ := range names {
			p := filepath.Join(dir, "keys", n)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			st, _ := os.Stat(p)
			if st.Mode().Perm() != 0o600 {
				t.Errorf("%s: mode %v", n, st.Mode().Perm())
			}
			s, err := ssh.ParsePrivateKey(b)
			if err != nil || s.PublicKey().Type() != typ {
				t.Fatalf("%s: %v, type %v", n, err, s)
			}
			out[n] = b
		}
		return out
	}
	for range 2 {
		hub, err := remote.New(cfg, devicetest.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		hub.Close()
	}
	first := read()
	hub, err := remote.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	hub.Close()
	for n, b := range read() {
		if !bytes.Equal(b, first[n]) {
			t.Errorf("%s changed on restart", n)
		}
	}
}

// TestClientVanishesMidStream: an SSH client killed while the VM is
// sending does not disturb the VM or the other client.
func TestClientVanishesMidStream(t *testing.T) {
	h := newHarness(t, "")
	vm := h.vm("web-11", "42100000-0000-0000-0000-00000000a011", "web-11")
	h.console("web-11")
	victim := h.ssh(t, "alice+web-11")
	witness := h.ssh(t, "dave+web-11")
	h.waitClients("web-11", 2)
	want := allBytes(4096) // 1 MiB
	streamWithWitness(t, vm, witness, want, func(off int) {
		if off == len(want)/2 {
			victim.cmd.Process.Kill()
		}
	})
	ci := h.waitClients("web-11", 1)
	if ci.Clients[0].User != "dave" {
		t.Fatalf("clients %+v", ci.Clients)
	}
	witness.stdin.Write([]byte("still here"))
	readVM(t, vm, []byte("still here"))
}

// TestServeFrontDoors: Serve opens the configured telnet, telnets and
// SSH front doors, reports them, and returns ctx.Err() when ctx ends.
func TestServeFrontDoors(t *testing.T) {
	dir := t.TempDir()
	cert, key := selfSigned(t, dir)
	cfg, err := configs.Parse("t.toml", []byte(fmt.Sprintf(`[vspc]
listen = "127.0.0.1:0"
[remote]
enabled = true
telnet_listen = "127.0.0.1:0"
telnets_listen = "127.0.0.1:0"
ssh_listen = "127.0.0.1:0"
ssh_host_keys = [%q]
tls_cert = %q
tls_key = %q
[[user]]
name = "alice"
password = %q
access = [{vm = "*", mode = "rw"}]
`, filepath.Join(dir, "hk"), cert, key, hash(t, alicePW))))
	if err != nil {
		t.Fatal(err)
	}
	hub, err := remote.New(cfg, devicetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- hub.Serve(ctx) }()
	var doors []remote.FrontDoor
	testwait.Until(t, testwait.Timeout, func() bool {
		doors = hub.FrontDoors()
		return len(doors) >= 3
	})
	if len(doors) != 3 || doors[0].Kind != "ssh" || doors[1].Kind != "telnet" || doors[2].Kind != "telnets" {
		t.Fatalf("front doors %+v", doors)
	}
	c := dialLine(t, doors[1].Addr)
	c.login("alice", alicePW)
	c.expect("console> ")
	tc, err := tls.Dial("tcp", doors[2].Addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	s := &lineClient{t: t, nc: tc, r: newReader(tc)}
	s.login("alice", alicePW)
	s.expect("console> ")
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(testwait.Timeout):
		t.Fatal("Serve did not return")
	}
	if !c.closed() {
		t.Fatal("front door session survived Serve's end")
	}
}

// TestSessionLimitsAndTimeouts: max_sessions refuses connections over
// it; a connection that does not log in within login_timeout is closed;
// SetUsers applies to the next login.
func TestSessionLimitsAndTimeouts(t *testing.T) {
	h := newHarness(t, "max_sessions = 4\nmax_unauthenticated = 2\nlogin_timeout = \"1s\"")
	in := dialLine(t, h.telnetAddr) // logged in: counts against max_sessions only
	in.login("alice", alicePW)
	in.expect("console> ")
	idle := dialLine(t, h.telnetAddr)
	idle.expect("login: ")
	busy := dialLine(t, h.telnetAddr)
	busy.expect("login: ")
	over := dialLine(t, h.telnetAddr) // a third one not logged in
	over.expect("too many sessions")
	if c := h.hub.Counters(); c.Sessions != 3 || c.LoggingIn != 2 {
		t.Fatalf("counters %+v", c)
	}
	busy.send("alice") // logging in frees a slot for connections logging in
	busy.expect("password: ")
	busy.send(alicePW)
	busy.expect("console> ")
	next := dialLine(t, h.telnetAddr)
	next.expect("login: ")
	over = dialLine(t, h.telnetAddr) // the fifth: over max_sessions
	over.expect("too many sessions")
	next.nc.Close()
	if !idle.closed() {
		t.Fatal("idle connection not closed after login_timeout")
	}
	busy.nc.Close()

	cfg, err := configs.Parse("t.toml", []byte(fmt.Sprintf("[vspc]\nlisten = \"127.0.0.1:0\"\n[[user]]\nname = \"erin\"\npassword = %q\naccess = [{vm = \"*\", mode = \"ro\"}]\n", hash(t, "erin-pw"))))
	if err != nil {
		t.Fatal(err)
	}
	h.hub.SetUsers(cfg)
	in.nc.Close()
	testwait.For(t, "the session slots to be free", func() bool { return h.hub.Counters().Sessions == 0 })
	c := dialLine(t, h.telnetAddr)
	c.expect("login: ")
	c.send("erin")
	c.expect("password: ")
	c.send("erin-pw")
	c.expect("Welcome erin")
	gone := dialLine(t, h.telnetAddr) // alice is not in the new config
	gone.login("alice", alicePW)
	gone.expect("Login incorrect")
}

// TestSSHMenu: `ssh -t alice@bridge` shows the front door menu; picking a
// console attaches, detaching returns to the menu, q logs out.
func TestSSHMenu(t *testing.T) {
	h := newHarness(t, "")
	_, sink := openConsole(t, h.hub, "web-12", "42100000-0000-0000-0000-00000000a012", "web-12")
	openConsole(t, h.hub, "db-12", "42100000-0000-0000-0000-00000000d012", "db-12")
	_, port, _ := net.SplitHostPort(h.sshAddr)
	m := startTmux(t, "ssh", "-F", "/dev/null", "-tt", "-i", h.keyFile, "-p", port, "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
		"alice@127.0.0.1")
	scr := m.waitFor("console>")
	if !strings.Contains(scr, "1  db-12/db-12") || !strings.Contains(scr, "2  web-12/web-12") {
		t.Fatalf("menu:\n%s", scr)
	}
	m.typeText("2 xw")
	m.typeEnter()
	m.waitFor("attached to web-12 (exclusive-write)")
	m.typeText("hi")
	sink.waitData(t, "hi")
	m.typeKey("C-e")
	m.typeText("c.")
	m.waitFor("detached from web-12")
	m.typeText("q")
	m.typeEnter()
	m.waitFor("bye")
}

// TestBindThenClose: front doors bound by Bind and never served are
// released by Close.
func TestBindThenClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg, err := configs.Parse("t.toml", []byte(fmt.Sprintf("[vspc]\nlisten = \"127.0.0.1:0\"\n[remote]\nenabled = true\ntelnet_listen = %q\nstate_file = %q\nssh_host_keys = [%q]\n", addr, filepath.Join(t.TempDir(), "p.json"), filepath.Join(t.TempDir(), "k"))))
	if err != nil {
		t.Fatal(err)
	}
	hub, err := remote.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := hub.Bind(); err != nil {
		t.Fatal(err)
	}
	if c, err := net.Dial("tcp", addr); err != nil {
		t.Fatalf("bound front door: %v", err)
	} else {
		c.Close()
	}
	hub.Close()
	if l2, err := net.Listen("tcp", addr); err != nil {
		t.Fatalf("after Close the front door port is still held: %v", err)
	} else {
		l2.Close()
	}
}
