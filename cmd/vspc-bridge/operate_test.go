package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/admin"
	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/vspc"
	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
)

// syncBuffer is a log sink the test reads while the daemon writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// bridgeUnderTest is "serve -config FILE" running in-process.
type bridgeUnderTest struct {
	t    *testing.T
	path string
	d    *daemon
	logs *syncBuffer
	hup  chan os.Signal
}

// startBridge writes cfg to a file and serves it until the test ends.
// With realSIGHUP the daemon listens for the process's SIGHUP.
func startBridge(t *testing.T, cfg string, realSIGHUP bool) *bridgeUnderTest {
	t.Helper()
	b := &bridgeUnderTest{t: t, path: filepath.Join(t.TempDir(), "bridge.toml"), logs: &syncBuffer{}}
	b.write(cfg)
	c, err := configs.Load(b.path)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(b.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ready := make(chan *daemon, 1)
	opts := serveOptions{path: b.path, ready: ready, version: "test"}
	if !realSIGHUP {
		b.hup = make(chan os.Signal, 1)
		opts.sighup = b.hup
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, c, log, io.Discard, opts) }()
	select {
	case b.d = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("serve: %v\n%s", err, b.logs)
	case <-time.After(testwait.Timeout):
		cancel()
		t.Fatal("serve did not start")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(testwait.Timeout):
			t.Error("serve did not stop")
		}
		if t.Failed() {
			t.Logf("bridge log:\n%s", b.logs)
		}
	})
	return b
}

func (b *bridgeUnderTest) write(cfg string) {
	b.t.Helper()
	if err := os.WriteFile(b.path, []byte(cfg), 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// addr returns the bound address of a listener kind.
func (b *bridgeUnderTest) addr(kind string) string {
	b.t.Helper()
	for _, l := range b.d.status().Listeners {
		if l.Kind == kind {
			return l.Addr
		}
	}
	return ""
}

func (b *bridgeUnderTest) client() *admin.Client {
	return &admin.Client{Base: b.addr(kindAdmin), Token: "secret-token"}
}

func (b *bridgeUnderTest) reload() admin.ReloadResult {
	b.t.Helper()
	res, err := b.client().Reload(b.t.Context())
	if err != nil {
		b.t.Fatal(err)
	}
	return res
}

// device is a raw TCP server standing in for a console server port.
type device struct {
	t  *testing.T
	ln net.Listener
}

func newDevice(t *testing.T) *device {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &device{t: t, ln: ln}
}

func (d *device) uri() string { return "tcp://" + d.ln.Addr().String() }

func (d *device) accept() net.Conn {
	d.t.Helper()
	d.ln.(*net.TCPListener).SetDeadline(time.Now().Add(testwait.Timeout))
	c, err := d.ln.Accept()
	if err != nil {
		d.t.Fatalf("device %s: no connection from the bridge: %v", d.uri(), err)
	}
	d.t.Cleanup(func() { c.Close() })
	return c
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func dialVM(t *testing.T, addr, name, service string) *vspctest.Conn {
	t.Helper()
	c, err := vspctest.Dial(t.Context(), addr, vspctest.VM{Name: name, VCUUID: uuidFor(name), Direction: vspc.DirServer, ServiceURI: service})
	if err != nil {
		t.Fatalf("VM %s: %v", name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func uuidFor(name string) string {
	var n uint64
	for _, c := range name {
		n = n*131 + uint64(c)
	}
	return fmt.Sprintf("42000000-0000-0000-0000-%012x", n&0xffffffffffff)
}

// roundTrip checks that data flows both ways between a VM and its device.
func roundTrip(t *testing.T, vm io.ReadWriter, dev net.Conn, tag string) {
	t.Helper()
	if _, err := vm.Write([]byte("to-dev-" + tag)); err != nil {
		t.Fatalf("%s: VM write: %v", tag, err)
	}
	if got := readFull(t, dev, len("to-dev-"+tag)); got != "to-dev-"+tag {
		t.Fatalf("%s: device got %q", tag, got)
	}
	if _, err := dev.Write([]byte("to-vm-" + tag)); err != nil {
		t.Fatalf("%s: device write: %v", tag, err)
	}
	if got := readFull(t, vm, len("to-vm-"+tag)); got != "to-vm-"+tag {
		t.Fatalf("%s: VM got %q", tag, got)
	}
}

func readFull(t *testing.T, r io.Reader, n int) string {
	t.Helper()
	buf := make([]byte, n)
	done := make(chan error, 1)
	go func() { _, err := io.ReadFull(r, buf); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("read: %v (got %q)", err, buf)
		}
	case <-time.After(testwait.Timeout):
		t.Fatalf("read timed out (got %q)", buf)
	}
	return string(buf)
}

// closedByPeer reports whether c was closed by the other side within
// testwait.Timeout.
func closedByPeer(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(testwait.Timeout))
	_, err := c.Read(make([]byte, 1))
	return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
}

func bridgeConfig(extra string) string {
	return `[vspc]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
token = "secret-token"
[policy]
reconnect_min = "20ms"
` + extra
}

func route(name, service, device string) string {
	return fmt.Sprintf("[[route]]\nname = %q\nservice = %q\ndevice = %q\n", name, service, device)
}

// TestReloadRoutes adds a route, removes a route and then breaks the
// config: only the removed route's session is closed, the added route
// serves new VMs, and the broken config changes nothing.
func TestReloadRoutes(t *testing.T) {
	devA, devB, devC := newDevice(t), newDevice(t), newDevice(t)
	v1 := bridgeConfig(route("ra", "svc-a", devA.uri()) + route("rb", "svc-b", devB.uri()))
	b := startBridge(t, v1, false)
	vmAddr := b.addr(kindVSPC)

	vmA, vmB := dialVM(t, vmAddr, "vm-a", "svc-a"), dialVM(t, vmAddr, "vm-b", "svc-b")
	connA, connB := devA.accept(), devB.accept()
	roundTrip(t, vmA, connA, "a1")
	roundTrip(t, vmB, connB, "b1")
	if _, err := vspctest.Dial(t.Context(), vmAddr, vspctest.VM{Name: "vm-c", VCUUID: uuidFor("vm-c"), Direction: vspc.DirServer, ServiceURI: "svc-c"}); !errors.Is(err, vspctest.ErrWontProxy) {
		t.Fatalf("svc-c before its route exists: %v, want WONT-PROXY", err)
	}

	// v2: rb removed, rc added.
	b.write(bridgeConfig(route("ra", "svc-a", devA.uri()) + route("rc", "svc-c", devC.uri())))
	res := b.reload()
	if !res.OK {
		t.Fatalf("reload v2 rejected: %v", res.Errors)
	}
	changes := strings.Join(res.Changes, "\n")
	for _, w := range []string{`route "rc" added`, `route "rb" removed`, "closed VM vm-b port svc-b: its route was removed"} {
		if !strings.Contains(changes, w) {
			t.Errorf("reload changes lack %q:\n%s", w, changes)
		}
	}
	if !closedByPeer(connB) {
		t.Error("the removed route's device connection is still open")
	}
	if !vmB.WaitClosed(testwait.Timeout) {
		t.Error("the removed route's VM connection is still open")
	}
	if !strings.Contains(b.logs.String(), `reason="route \"rb\" was removed from the config"`) {
		t.Errorf("no log line for the closed port:\n%s", b.logs)
	}
	roundTrip(t, vmA, connA, "a2") // untouched: same connections
	vmC := dialVM(t, vmAddr, "vm-c", "svc-c")
	connC := devC.accept()
	roundTrip(t, vmC, connC, "c1")
	if _, err := vspctest.Dial(t.Context(), vmAddr, vspctest.VM{Name: "vm-b", VCUUID: uuidFor("vm-b"), Direction: vspc.DirServer, ServiceURI: "svc-b"}); !errors.Is(err, vspctest.ErrWontProxy) {
		t.Errorf("svc-b after its route was removed: %v, want WONT-PROXY", err)
	}

	// v3: broken in two places; nothing changes.
	b.write(bridgeConfig(route("ra", "svc-a", devA.uri())) + "[vmotion]\nflush_timeout = \"9s\"\n[[route]]\nname = \"rx\"\nservice = \"svc-x\"\n")
	res = b.reload()
	if res.OK || len(res.Errors) != 2 {
		t.Fatalf("broken config: %+v, want 2 errors", res)
	}
	if !strings.Contains(res.Errors[0], "vmotion.flush_timeout") || !strings.Contains(res.Errors[1], "route[1].device: required") {
		t.Errorf("errors: %q", res.Errors)
	}
	logs := b.logs.String()
	for _, e := range res.Errors {
		if e, _, _ = strings.Cut(e, `"`); !strings.Contains(logs, e) { // the log quotes the rest
			t.Errorf("rejected reload's problem %q not logged", e)
		}
	}
	roundTrip(t, vmA, connA, "a3")
	roundTrip(t, vmC, connC, "c2")
	l, err := b.client().Sessions(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range l.Sessions {
		names = append(names, s.VM+"/"+s.State)
	}
	if got := strings.Join(names, " "); got != "vm-a/attached vm-c/attached" {
		t.Errorf("sessions after the rejected reload: %s", got)
	}
	st, err := b.client().Status(t.Context())
	if err != nil || st.Reloads.OK != 1 || st.Reloads.Rejected != 1 || !strings.Contains(st.Reloads.LastError, "flush_timeout") {
		t.Errorf("reload counts: %+v %v", st.Reloads, err)
	}

	// The status command prints them; reload through the CLI reports the
	// rejection with exit status 1; SIGHUP reloads the fixed file.
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"status", "-addr", b.addr(kindAdmin), "-token-file", tokenFile(t)}, nil, &out, &errb); code != 0 {
		t.Fatalf("status: exit %d: %s", code, errb.String())
	}
	for _, w := range []string{"vm-a", "svc-a", devA.uri(), "vm-c", "attached", "reloads: 1 applied, 1 rejected"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("status output lacks %q:\n%s", w, out.String())
		}
	}
	out.Reset()
	if code := run(t.Context(), []string{"reload", "-addr", b.addr(kindAdmin), "-token-file", tokenFile(t)}, nil, &out, &errb); code != 1 || !strings.Contains(out.String(), "config rejected") {
		t.Errorf("reload of the broken file: exit %d\n%s", code, out.String())
	}
	b.write(bridgeConfig(route("ra", "svc-a", devA.uri()) + route("rc", "svc-c", devC.uri())))
	b.hup <- syscall.SIGHUP
	testwait.For(t, "SIGHUP reload", func() bool { st, _ := b.client().Status(t.Context()); return st.Reloads.OK == 2 })
	roundTrip(t, vmA, connA, "a4")
}

func tokenFile(t *testing.T) string {
	f := filepath.Join(t.TempDir(), "token")
	os.WriteFile(f, []byte("secret-token\n"), 0o600)
	return f
}

var thumbRE = regexp.MustCompile(`telnets://[^#\s]+#thumbprint=([0-9A-F:]{59})`)

// genCert runs "vspc-bridge gen-cert" and returns the thumbprint from
// the URI it printed.
func genCert(t *testing.T, dir string, force bool) string {
	t.Helper()
	args := []string{"gen-cert", "-host", "127.0.0.1,localhost", "-cert", filepath.Join(dir, "tls.crt"), "-key", filepath.Join(dir, "tls.key")}
	if force {
		args = append(args, "-force")
	}
	var out, errb bytes.Buffer
	if code := run(t.Context(), args, nil, &out, &errb); code != 0 {
		t.Fatalf("gen-cert: exit %d: %s", code, errb.String())
	}
	m := thumbRE.FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("gen-cert printed no telnets URI with a thumbprint:\n%s", out.String())
	}
	tp, err := configs.CertFileThumbprint(filepath.Join(dir, "tls.crt"))
	if err != nil || tp != m[1] {
		t.Fatalf("printed thumbprint %s, file's %s (%v)", m[1], tp, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "tls.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode: %v %v", fi.Mode(), err)
	}
	return m[1]
}

// TestTLSAndListenerReload: the simulated ESXi host connects over TLS,
// pinning the certificate gen-cert made by its thumbprint, and migrates;
// status prints the pinned URI; a reload swaps the certificate and moves
// the plain and admin listeners while the sessions carry on.
func TestTLSAndListenerReload(t *testing.T) {
	dir := t.TempDir()
	tp1 := genCert(t, dir, false)
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"gen-cert", "-cert", filepath.Join(dir, "tls.crt"), "-key", filepath.Join(dir, "x.key")}, nil, &out, &errb); code != 1 || !strings.Contains(errb.String(), "exists; use -force") {
		t.Errorf("gen-cert over an existing file: exit %d %s", code, errb.String())
	}
	dev := newDevice(t)
	tlsPart := fmt.Sprintf("tls_listen = \"127.0.0.1:0\"\ntls_cert = %q\ntls_key = %q\n", filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	cfg := func(listen, adminListen string) string {
		return fmt.Sprintf("[vspc]\nlisten = %q\n%s[admin]\nlisten = %q\ntoken = \"secret-token\"\n%s", listen, tlsPart, adminListen, route("r", "svc-tls", dev.uri()))
	}
	// The TLS listener keeps its (dynamic) port across reloads: the
	// config names it by a fixed free port.
	tlsAddr := freeAddr(t)
	tlsPart = strings.Replace(tlsPart, "127.0.0.1:0", tlsAddr, 1)
	plain1, admin1 := freeAddr(t), freeAddr(t)
	b := startBridge(t, cfg(plain1, admin1), true)

	vm := vspctest.VM{Name: "vm-tls", VCUUID: uuidFor("vm-tls"), Direction: vspc.DirServer, ServiceURI: "svc-tls"}
	src, err := vspctest.DialTLS(t.Context(), tlsAddr, vspctest.PinnedTLS(tp1), vm)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dc := dev.accept()
	roundTrip(t, src, dc, "tls1")
	dst, err := vspctest.MigrateTLS(t.Context(), src, tlsAddr, vspctest.PinnedTLS(tp1), []byte("seq-tls"))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	roundTrip(t, dst, dc, "tls2")
	if _, err := vspctest.DialTLS(t.Context(), tlsAddr, vspctest.PinnedTLS(strings.Repeat("00:", 19)+"00"), vm); err == nil {
		t.Error("a host pinning another thumbprint connected")
	}

	out.Reset()
	if code := run(t.Context(), []string{"status", "-addr", admin1, "-token-file", tokenFile(t)}, nil, &out, &errb); code != 0 {
		t.Fatalf("status: %d %s", code, errb.String())
	}
	wantURI := configs.TelnetsURI(tlsAddr, tp1)
	if !strings.Contains(out.String(), wantURI) || !strings.Contains(out.String(), "vm-tls") {
		t.Errorf("status lacks %s or the VM:\n%s", wantURI, out.String())
	}
	out.Reset()
	if code := run(t.Context(), []string{"sessions", "-addr", admin1, "-token-file", tokenFile(t), "vm-tls"}, nil, &out, &errb); code != 0 ||
		!strings.Contains(out.String(), "vMotions") || !strings.Contains(out.String(), "last completed") || !strings.Contains(out.String(), dev.uri()) {
		t.Errorf("sessions vm-tls: exit %d\n%s%s", code, out.String(), errb.String())
	}

	// New certificate, new plain and admin addresses; reload by SIGHUP.
	tp2 := genCert(t, dir, true)
	plain2, admin2 := freeAddr(t), freeAddr(t)
	b.write(cfg(plain2, admin2))
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "reload on SIGHUP", func() bool {
		c := &admin.Client{Base: admin2, Token: "secret-token"}
		st, err := c.Status(t.Context())
		return err == nil && st.Reloads.OK == 1
	})
	roundTrip(t, dst, dc, "tls3") // the session carries on
	if _, err := vspctest.DialTLS(t.Context(), tlsAddr, vspctest.PinnedTLS(tp1), vspctest.VM{Name: "x", VCUUID: uuidFor("x"), Direction: vspc.DirServer, ServiceURI: "nope"}); err == nil {
		t.Error("the old thumbprint still matches after the certificate was replaced")
	}
	if _, err := vspctest.DialTLS(t.Context(), tlsAddr, vspctest.PinnedTLS(tp2), vspctest.VM{Name: "x", VCUUID: uuidFor("x"), Direction: vspc.DirServer, ServiceURI: "nope"}); !errors.Is(err, vspctest.ErrWontProxy) {
		t.Errorf("new certificate: %v, want a TLS session answered WONT-PROXY (no route)", err)
	}
	if c, err := net.DialTimeout("tcp", plain1, time.Second); err == nil {
		c.Close()
		t.Error("the old plain listener still accepts")
	}
	if _, err := (&admin.Client{Base: admin1, Token: "secret-token"}).Status(t.Context()); err == nil {
		t.Error("the old admin listener still answers")
	}
	if _, err := vspctest.Dial(t.Context(), plain2, vspctest.VM{Name: "y", VCUUID: uuidFor("y"), Direction: vspc.DirServer, ServiceURI: "nope"}); !errors.Is(err, vspctest.ErrWontProxy) {
		t.Errorf("new plain listener: %v", err)
	}
	st, err := (&admin.Client{Base: admin2, Token: "secret-token"}).Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var tlsURI string
	for _, l := range st.Listeners {
		if l.Kind == kindVSPCTLS {
			tlsURI = l.URI
		}
	}
	if tlsURI != configs.TelnetsURI(tlsAddr, tp2) {
		t.Errorf("status telnets URI %q, want the new thumbprint %s", tlsURI, tp2)
	}
	if !strings.Contains(b.logs.String(), "the telnets certificate changed") {
		t.Error("no warning about the changed thumbprint")
	}

	// A reload that cannot bind its new listener is rejected whole.
	blocker, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Close()
	b.write(cfg(blocker.Addr().String(), admin2))
	res, err := (&admin.Client{Base: admin2, Token: "secret-token"}).Reload(t.Context())
	if err != nil || res.OK || !strings.Contains(strings.Join(res.Errors, " "), "[vspc] listen") {
		t.Errorf("reload onto a taken port: %+v %v", res, err)
	}
	if _, err := vspctest.Dial(t.Context(), plain2, vspctest.VM{Name: "z", VCUUID: uuidFor("z"), Direction: vspc.DirServer, ServiceURI: "nope"}); !errors.Is(err, vspctest.ErrWontProxy) {
		t.Errorf("plain listener after the rejected reload: %v", err)
	}
	roundTrip(t, dst, dc, "tls4")
}

// TestStatusFromConfig: the CLI finds an HTTPS admin endpoint, its token
// file and its self-signed certificate through -config alone.
func TestStatusFromConfig(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"gen-cert", "-host", "127.0.0.1", "-cert", filepath.Join(dir, "admin.crt"), "-key", filepath.Join(dir, "admin.key")}, nil, &out, &errb); code != 0 {
		t.Fatalf("gen-cert: %s", errb.String())
	}
	tok := tokenFile(t)
	adminAddr := freeAddr(t)
	dev := newDevice(t)
	cfg := fmt.Sprintf("[vspc]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = %q\ntls_cert = %q\ntls_key = %q\ntoken_file = %q\n%s",
		adminAddr, filepath.Join(dir, "admin.crt"), filepath.Join(dir, "admin.key"), tok, route("r", "svc-s", dev.uri()))
	b := startBridge(t, cfg, false)
	vm := dialVM(t, b.addr(kindVSPC), "vm-s", "svc-s")
	roundTrip(t, vm, dev.accept(), "s1")

	out.Reset()
	if code := run(t.Context(), []string{"status", "-json", "-config", b.path}, nil, &out, &errb); code != 0 {
		t.Fatalf("status -json -config: exit %d: %s", code, errb.String())
	}
	var got struct {
		Status   admin.Status    `json:"status"`
		Sessions []admin.Session `json:"sessions"`
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(got.Sessions) != 1 || got.Sessions[0].VM != "vm-s" || got.Sessions[0].Device == nil || got.Sessions[0].Device.State != "up" || got.Sessions[0].BytesFromVM != int64(len("to-dev-s1")) {
		t.Errorf("sessions: %+v", got.Sessions)
	}
	var adminURI string
	for _, l := range got.Status.Listeners {
		if l.Kind == kindAdmin {
			adminURI = l.URI
		}
	}
	if adminURI != "https://"+adminAddr || got.Status.Version != "test" {
		t.Errorf("status: %+v", got.Status)
	}
	out.Reset()
	if code := run(t.Context(), []string{"sessions", "-config", b.path, "-json", "vm-s"}, nil, &out, &errb); code != 0 || !strings.Contains(out.String(), `"service_uri": "svc-s"`) {
		t.Errorf("sessions -json: exit %d\n%s%s", code, out.String(), errb.String())
	}
	bad := filepath.Join(t.TempDir(), "bad")
	os.WriteFile(bad, []byte("nope"), 0o600)
	errb.Reset()
	if code := run(t.Context(), []string{"status", "-config", b.path, "-token-file", bad}, nil, &out, &errb); code != 1 || !strings.Contains(errb.String(), "401") {
		t.Errorf("wrong token: exit %d %s", code, errb.String())
	}
	errb.Reset()
	if code := run(t.Context(), []string{"sessions", "-config", b.path, "no-such-vm"}, nil, &out, &errb); code != 1 || !strings.Contains(errb.String(), "404") {
		t.Errorf("unknown VM: exit %d %s", code, errb.String())
	}
	if code := run(t.Context(), []string{"sessions", "-config", b.path}, nil, &out, &errb); code != 2 {
		t.Errorf("sessions without a VM: exit %d", code)
	}
	for _, cmd := range []string{"status", "sessions", "reload", "gen-cert"} {
		errb.Reset()
		if code := run(t.Context(), []string{cmd, "-h"}, nil, &out, &errb); code != 0 || !strings.Contains(errb.String(), "usage: vspc-bridge "+cmd) {
			t.Errorf("%s -h: exit %d, %q", cmd, code, errb.String())
		}
	}
}

// TestReloadWhileScraped reloads over and over while /metrics,
// /api/v1/sessions and /readyz are read and a VM sends data: under -race
// this checks the daemon's locking; the VM's session never breaks.
func TestReloadWhileScraped(t *testing.T) {
	dev, other := newDevice(t), newDevice(t)
	base := route("r", "svc-l", dev.uri())
	b := startBridge(t, bridgeConfig(base), false)
	vm := dialVM(t, b.addr(kindVSPC), "vm-l", "svc-l")
	conn := dev.accept()
	roundTrip(t, vm, conn, "l0")

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	c := b.client()
	for _, get := range []func() error{
		func() error { _, err := c.Sessions(ctx, ""); return err },
		func() error { _, err := c.Status(ctx); return err },
		func() error { _, err := c.Devices(ctx); return err },
		func() error {
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+b.addr(kindAdmin)+"/metrics", nil)
			req.Header.Set("Authorization", "Bearer secret-token")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				return err
			}
			if resp.StatusCode != 200 {
				return fmt.Errorf("/metrics: %s", resp.Status)
			}
			return nil
		},
	} {
		wg.Go(func() {
			for ctx.Err() == nil {
				if err := get(); err != nil && ctx.Err() == nil {
					t.Errorf("admin request during reloads: %v", err)
					return
				}
			}
		})
	}
	for i := range 20 {
		cfg := bridgeConfig(base)
		if i%2 == 0 {
			cfg += route("extra", "svc-extra", other.uri()) + "[[alert]]\npattern = \"boom\"\n"
		}
		b.write(cfg)
		if res := b.reload(); !res.OK {
			t.Fatalf("reload %d: %v", i, res.Errors)
		}
		roundTrip(t, vm, conn, fmt.Sprint("l", i+1))
	}
	cancel()
	wg.Wait()
	if st, err := b.client().Status(t.Context()); err != nil || st.Reloads.OK != 20 {
		t.Errorf("reloads: %+v %v", st.Reloads, err)
	}
}

// TestReloadVMotionAndLimits: [vmotion] and the [vspc] limits apply on
// reload, to what starts after it; nothing asks for a restart and the
// session already up carries on.
func TestReloadVMotionAndLimits(t *testing.T) {
	dev := newDevice(t)
	b := startBridge(t, bridgeConfig(route("ra", "svc-a", dev.uri())), false)
	vm := dialVM(t, b.addr(kindVSPC), "vm-a", "svc-a")
	conn := dev.accept()
	roundTrip(t, vm, conn, "before")

	b.write(bridgeConfig(route("ra", "svc-a", dev.uri())) + "[vmotion]\nenabled = false\n")
	res := b.reload()
	changes := strings.Join(res.Changes, "\n")
	if !res.OK || !strings.Contains(changes, "vmotion changed (hand-overs that begin from now on)") || strings.Contains(changes, "restart") {
		t.Fatalf("reload: %+v", res)
	}
	if _, err := vm.Begin(t.Context(), []byte{1, 2, 3, 4}); !errors.Is(err, vspctest.ErrNotNow) {
		t.Fatalf("BEGIN after [vmotion] enabled = false was reloaded: %v, want NOTNOW", err)
	}
	roundTrip(t, vm, conn, "after")

	b.write(bridgeConfig(route("ra", "svc-a", dev.uri())) + "[vmotion]\nenabled = true\n")
	if res := b.reload(); !res.OK || !strings.Contains(strings.Join(res.Changes, "\n"), "vmotion changed") {
		t.Fatalf("reload back: %+v", res)
	}
	if _, err := vm.Begin(t.Context(), []byte{1, 2, 3, 5}); err != nil {
		t.Fatalf("BEGIN after vMotion was enabled again: %v", err)
	}
}
