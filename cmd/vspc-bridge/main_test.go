package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/simulator"

	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/vspc"
	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
)

// goroutines returns every goroutine's stack, for a test that found
// something stuck.
func goroutines() string {
	var b strings.Builder
	pprof.Lookup("goroutine").WriteTo(&b, 2)
	return b.String()
}

// dialServe dials a simulated VM into a serve started by run on another
// goroutine, once its listener is up: until then the dial is refused.
func dialServe(t *testing.T, addr string, vm vspctest.VM) *vspctest.Conn {
	t.Helper()
	var c *vspctest.Conn
	var err error
	if !testwait.Until(t, testwait.Timeout, func() bool {
		c, err = vspctest.Dial(t.Context(), addr, vm)
		return err == nil
	}) {
		t.Fatalf("VM %s never joined serve at %s: %v", vm.Name, addr, err)
	}
	return c
}

func TestVersionAndUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"version"}, nil, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "vspc-bridge ") {
		t.Fatalf("version: %d %q", code, out.String())
	}
	if code := run(t.Context(), []string{"bogus"}, nil, &out, &errb); code != 2 {
		t.Fatalf("unknown command exit %d", code)
	}
	errb.Reset()
	if code := run(t.Context(), []string{"version", "-x"}, nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "takes no flags or arguments") {
		t.Fatalf("version -x: exit %d, %q; want 2 and why", code, errb.String())
	}
	for _, cmd := range []string{"serve", "check-config", "simulate-vm", "version"} {
		errb.Reset()
		if code := run(t.Context(), []string{cmd, "-h"}, nil, &out, &errb); code != 0 || !strings.Contains(errb.String(), "usage: vspc-bridge "+cmd) {
			t.Errorf("%s -h: exit %d, %q", cmd, code, errb.String())
		}
	}
}

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("[vspc]\nlisten = \"nonsense\"\nhandshake_timeout = \"10x\"\n[policy]\nconnect_allow = [\"300.1.1.1/8\"]\nbogus = 1\n"), 0o644)
	var out, errb bytes.Buffer
	code := run(t.Context(), []string{"check-config", bad}, nil, &out, &errb)
	if code != 1 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"bad.toml:2", "bad.toml:3", "bad.toml:5", "bad.toml:6"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if code := run(t.Context(), []string{"check-config", "../../configs/example.toml"}, nil, &out, &errb); code != 0 {
		t.Fatalf("example.toml: exit %d: %s", code, out.String())
	}
	// -config FILE, as serve takes it, is the same.
	out.Reset()
	if code := run(t.Context(), []string{"check-config", "-config", "../../configs/example.toml"}, nil, &out, &errb); code != 0 || !strings.Contains(out.String(), "example.toml: OK") {
		t.Fatalf("check-config -config example.toml: exit %d: %s", code, out.String())
	}
	out.Reset()
	if code := run(t.Context(), []string{"check-config", "-config", bad}, nil, &out, &errb); code != 1 {
		t.Fatalf("check-config -config %s: exit %d, want 1: %s", bad, code, out.String())
	}
	if code := run(t.Context(), []string{"check-config", "-config", bad, bad}, nil, &out, &errb); code != 2 {
		t.Fatalf("check-config with -config and FILE: exit %d, want 2 (usage)", code)
	}
}

// TestServeEndToEnd starts "serve -config" on a free port, joins a
// simulated VM to a raw TCP remote through it, and stops it with a signal
// (context cancel): exit status 0.
func TestServeEndToEnd(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	remote, _ := net.Listen("tcp", "127.0.0.1:0")
	defer remote.Close()
	cfg := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(cfg, []byte("[vspc]\nlisten = \""+addr+"\"\n[policy]\nconnect_allow = [\"127.0.0.0/8\"]\n"), 0o644)
	ctx, cancel := context.WithCancel(t.Context())
	var out bytes.Buffer
	var errb syncBuffer // serve's log, read while serve may still write it
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"serve", "-config", cfg, "-log-format", "json"}, nil, &out, &errb) }()
	vm := dialServe(t, addr, vspctest.VM{Name: "e2e", VCUUID: "50000000-0000-0000-0000-000000000001", Direction: vspc.DirClient, ServiceURI: "tcp://" + remote.Addr().String()})
	remote.(*net.TCPListener).SetDeadline(time.Now().Add(testwait.Timeout))
	rc, err := remote.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	vm.Write([]byte("ping\xff"))
	got := make([]byte, 5)
	rc.SetReadDeadline(time.Now().Add(testwait.Timeout))
	if _, err := io.ReadFull(rc, got); err != nil || string(got) != "ping\xff" {
		t.Fatalf("remote got %q %v", got, err)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("serve exit %d: %s", code, errb.String())
		}
	case <-time.After(testwait.Timeout):
		t.Fatalf("serve did not stop; its log:\n%s\n%s", errb.String(), goroutines())
	}
	vm.Close()
	if !strings.Contains(errb.String(), `"msg":"stopped"`) {
		t.Errorf("no stop log line: %s", errb.String())
	}
}

// TestCheckConfigAudit: check-config -audit runs the vCenter audit with
// the config (govmomi's simulator stands in for vCenter).
func TestCheckConfigAudit(t *testing.T) {
	model := simulator.VPX()
	defer model.Remove()
	if err := model.Create(); err != nil {
		t.Fatal(err)
	}
	s := model.Service.NewServer()
	defer s.Close()
	t.Setenv("GOVC_URL", s.URL.String())
	t.Setenv("GOVC_INSECURE", "1")
	var out, errb bytes.Buffer
	code := run(t.Context(), []string{"check-config", "-audit", "../../configs/example.toml"}, nil, &out, &errb)
	// The simulator's VMs have no serial ports: nothing to flag.
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "OK") || !strings.Contains(out.String(), "DC0_H0_VM0") {
		t.Fatalf("expected the config verdict and the audit table:\n%s", out.String())
	}
}

// TestServeRemoteAccess: with [remote] enabled, a direction-server VM
// without a route gets a console listener on the port its service URI
// names, and a remote system reaches the VM through it.
func TestServeRemoteAccess(t *testing.T) {
	free := func() string {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		defer ln.Close()
		return ln.Addr().String()
	}
	addr, console, adminAddr := free(), free(), free()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.toml")
	os.WriteFile(cfg, []byte("[vspc]\nlisten = \""+addr+"\"\n[admin]\nlisten = \""+adminAddr+"\"\n[remote]\nenabled = true\nbind = \"127.0.0.1\"\nopen = true\nstate_file = \""+filepath.Join(dir, "ports.json")+"\"\nssh_host_keys = [\""+filepath.Join(dir, "ssh_host_ed25519_key")+"\"]\n"), 0o644)
	ctx, cancel := context.WithCancel(t.Context())
	var out, errb bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"serve", "-config", cfg}, nil, &out, &errb) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(testwait.Timeout):
			t.Error("serve did not stop")
		}
	}()
	vm := dialServe(t, addr, vspctest.VM{Name: "console-vm", VCUUID: "50000000-0000-0000-0000-000000000002", Direction: vspc.DirServer, ServiceURI: "tcp://" + console})
	defer vm.Close()
	user, err := net.Dial("tcp", console)
	if err != nil {
		t.Fatalf("console listener: %v\n%s", err, errb.String())
	}
	defer user.Close()
	user.Write([]byte("hello vm\r"))
	got := make([]byte, len("hello vm\r"))
	if _, err := io.ReadFull(vm, got); err != nil || string(got) != "hello vm\r" {
		t.Fatalf("VM got %q %v", got, err)
	}
	vm.Write([]byte("login: "))
	user.SetReadDeadline(time.Now().Add(testwait.Timeout))
	buf := make([]byte, 256)
	var seen []byte
	for !bytes.Contains(seen, []byte("login: ")) {
		n, err := user.Read(buf)
		if err != nil {
			t.Fatalf("user got %q, %v", seen, err)
		}
		seen = append(seen, buf[:n]...)
	}
	// The hub's counters reach /metrics: one console, one remote client.
	resp, err := http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"vspc_bridge_remote_consoles 1\n", "vspc_bridge_remote_sessions 1\n", `vspc_bridge_remote_logins_total{result="failed"} 0` + "\n"} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	var sout, serr bytes.Buffer
	if code := run(t.Context(), []string{"status", "-addr", adminAddr}, nil, &sout, &serr); code != 0 || !strings.Contains(sout.String(), "Remote access: 1 consoles, 1 clients connected. Logins: 0 ok, 0 failed") {
		t.Errorf("status: exit %d\n%s%s", code, sout.String(), serr.String())
	}
}

// TestServeFrontDoorInUse: a remote-access front door whose port is taken
// stops serve at start (exit status 1, the key named), and the VM
// listener never accepts.
func TestServeFrontDoorInUse(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	vmln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := vmln.Addr().String()
	vmln.Close()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.toml")
	os.WriteFile(cfg, []byte("[vspc]\nlisten = \""+addr+"\"\n[remote]\nenabled = true\nbind = \"127.0.0.1\"\nopen = true\ntelnet_listen = \""+taken.Addr().String()+"\"\nstate_file = \""+filepath.Join(dir, "ports.json")+"\"\nssh_host_keys = [\""+filepath.Join(dir, "ssh_host_ed25519_key")+"\"]\n"), 0o644)
	var out, errb bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- run(t.Context(), []string{"serve", "-config", cfg}, nil, &out, &errb) }()
	select {
	case code := <-done:
		if code != 1 || !strings.Contains(errb.String(), "telnet_listen "+taken.Addr().String()) {
			t.Fatalf("exit %d, stderr:\n%s", code, errb.String())
		}
	case <-time.After(testwait.Timeout):
		t.Fatalf("serve kept running with its front door port taken:\n%s", errb.String())
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("the VM listener is still open after a failed start")
	}
}
