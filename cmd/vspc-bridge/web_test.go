package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/crypto/bcrypt"

	"github.com/vspc-bridge/vspc-bridge/admin"
	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
)

// TestServeWebConsole is what `make run` with [web] listen and a user
// gives: the web listener in status, a direction-server VM in the list,
// and its console both ways over the WebSocket; a reload applies [web]
// ping at once and reports a new listen as needing a restart.
func TestServeWebConsole(t *testing.T) {
	pw, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	users := fmt.Sprintf("[[user]]\nname = \"alice\"\npassword = %q\naccess = [{vm = \"*\", mode = \"rw\"}]\n", pw)
	cfg := bridgeConfig("[remote]\nenabled = true\n[web]\nlisten = \"127.0.0.1:0\"\n" + users)
	b := startBridge(t, cfg, false)
	var base string
	for _, l := range b.d.status().Listeners {
		if l.Kind == kindWeb {
			base = l.URI
		}
	}
	if !strings.HasPrefix(base, "http://127.0.0.1:") || !strings.HasSuffix(base, "/") {
		t.Fatalf("web listener %q in %+v", base, b.d.status().Listeners)
	}
	vm := dialVM(t, b.addr(kindVSPC), "web-1", "vSPC.py")

	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: testwait.Timeout}
	resp, err := hc.Post(base+"api/login", "application/json", strings.NewReader(`{"user":"alice","password":"secret"}`))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("login: %v %v", resp, err)
	}
	resp.Body.Close()
	var id string
	testwait.For(t, "web-1 in the list", func() bool {
		resp, err := hc.Get(base + "api/consoles")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var l struct {
			Consoles []struct{ ID, VM, Kind string }
		}
		json.NewDecoder(resp.Body).Decode(&l)
		for _, c := range l.Consoles {
			if c.VM == "web-1" && c.Kind == "console" {
				id = c.ID
			}
		}
		return id != ""
	})

	h := http.Header{}
	for _, c := range jar.Cookies(resp.Request.URL) {
		h.Add("Cookie", c.Name+"="+c.Value)
	}
	ctx, cancel := context.WithTimeout(t.Context(), testwait.Timeout)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"ws/console/"+id, &websocket.DialOptions{HTTPHeader: h, Subprotocols: []string{"vspc.console.v1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	next := func(want string) {
		t.Helper()
		var got []byte
		for !bytes.Contains(got, []byte(want)) {
			typ, p, err := ws.Read(ctx)
			if err != nil {
				t.Fatalf("waiting for %q: %v (got %q)", want, err, got)
			}
			if typ == websocket.MessageBinary || strings.Contains(want, `"type"`) {
				got = append(got, p...)
			}
		}
	}
	next(`"type":"replay-end"`)
	if err := ws.Write(ctx, websocket.MessageBinary, []byte("typed in the browser\r")); err != nil {
		t.Fatal(err)
	}
	if got := readFull(t, vm, len("typed in the browser\r")); got != "typed in the browser\r" {
		t.Fatalf("the VM got %q", got)
	}
	vm.Write([]byte("from the VM\r\n"))
	next("from the VM")

	// A reload applies ping at once; a new listen takes a restart.
	b.write(strings.Replace(cfg, `[web]`, "[web]\nping = \"30s\"", 1))
	res := b.reload()
	if all := strings.Join(res.Changes, "\n"); !res.OK || !strings.Contains(all, "web.ping changed") || strings.Contains(all, "restart") {
		t.Fatalf("reload: %+v", res)
	}
	b.write(strings.Replace(cfg, "[web]\nlisten = \"127.0.0.1:0\"", "[web]\nlisten = \"127.0.0.1:1\"", 1))
	res = b.reload()
	if !res.OK || !slices.Contains(res.Changes, "needs a restart to apply: web.listen") {
		t.Fatalf("reload: %+v", res)
	}
	if !strings.Contains(b.logs.String(), "keys=web.listen") {
		t.Fatalf("the reload's log does not name web.listen:\n%s", b.logs)
	}
	vm.Write([]byte("still here\r\n")) // the console goes on
	next("still here")
}

// TestReloadWebCertificate: with TLS, a reload reads the web console's
// certificate files again (a renewed certificate is served to new
// connections without a restart), and a reload whose files cannot be
// read is rejected whole.
func TestReloadWebCertificate(t *testing.T) {
	dir := t.TempDir()
	first := genCert(t, dir, false)
	cfg := bridgeConfig(fmt.Sprintf("[web]\nlisten = \"127.0.0.1:0\"\ntls_cert = %q\ntls_key = %q\n", filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")))
	b := startBridge(t, cfg, false)
	served := func() string {
		t.Helper()
		c, err := tls.Dial("tcp", b.addr(kindWeb), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return configs.LeafThumbprint(&tls.Certificate{Certificate: [][]byte{c.ConnectionState().PeerCertificates[0].Raw}})
	}
	if got := served(); got != first {
		t.Fatalf("served %s, want %s", got, first)
	}
	second := genCert(t, dir, true)
	res := b.reload()
	if !res.OK || !slices.Contains(res.Changes, "web certificate: thumbprint "+second) {
		t.Fatalf("reload: %+v", res)
	}
	if got := served(); got != second {
		t.Fatalf("served %s after the reload, want %s", got, second)
	}
	// Status (and so the expiry metric) describes the certificate served.
	var web *admin.Listener
	for _, l := range b.d.status().Listeners {
		if l.Kind == kindWeb {
			web = &l
		}
	}
	if web == nil || web.Thumbprint != second || web.CertNotAfter.Before(time.Now()) {
		t.Fatalf("status of the web listener: %+v, want thumbprint %s and a certificate expiry", web, second)
	}
	b.write(strings.Replace(cfg, "tls.key", "missing.key", 1))
	if res := b.reload(); res.OK || !strings.Contains(strings.Join(res.Errors, "\n"), "[web] tls_cert/tls_key") {
		t.Fatalf("reload with a missing key: %+v", res)
	}
	if got := served(); got != second {
		t.Fatalf("served %s after a rejected reload, want %s", got, second)
	}
}

// TestMakeRunWebConsole is issue 15's "done when", literally: the
// embedded config plus [web] listen and one [[user]] (nothing else: the
// web console turns remote access on), served by vspc-bridge as a
// process, shows a VM started with `simulate-vm -direction server` (also
// a process) in the list, and its console works both ways. The only other
// change is port 0 for the VM and admin listeners, so that a `make run`
// on the same machine does not collide with the test.
func TestMakeRunWebConsole(t *testing.T) {
	pw, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(configs.ExampleTOML())
	for _, r := range [][2]string{
		{"\nlisten = \"127.0.0.1:13370\"\n", "\nlisten = \"127.0.0.1:0\"\n"}, // [vspc]
		{"\nlisten = \"127.0.0.1:13372\"\n", "\nlisten = \"127.0.0.1:0\"\n"}, // [admin]
		{"\nlisten = \"\"\n", "\nlisten = \"127.0.0.1:0\"\n"},                // [web]
	} {
		if !strings.Contains(cfg, r[0]) {
			t.Fatalf("example.toml has no %q", r[0])
		}
		cfg = strings.Replace(cfg, r[0], r[1], 1)
	}
	cfg += fmt.Sprintf("\n[[user]]\nname = \"alice\"\npassword = %q\naccess = [{vm = \"*\", mode = \"rw\"}]\n", pw)
	path := filepath.Join(t.TempDir(), "web.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}

	bridge := startProc(t, "serve", "-config", path)
	var vmAddr, base string
	testwait.For(t, "the bridge's hints on stdout", func() bool {
		out := bridge.stdout.String()
		vmAddr = lineAfter(out, "vspc-bridge is listening for ESXi VMs on ")
		base = lineAfter(out, "The web console is at ")
		return vmAddr != "" && base != "" || bridge.exited()
	})
	if bridge.exited() {
		t.Fatalf("vspc-bridge serve exited:\n%s", bridge.stderr)
	}
	vm := startProc(t, "simulate-vm", "-proxy", "telnet://"+vmAddr, "-service", "vSPC.py", "-direction", "server", "-name", "web-1")

	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: testwait.Timeout}
	resp, err := hc.Post(base+"api/login", "application/json", strings.NewReader(`{"user":"alice","password":"secret"}`))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("login: %v %v", resp, err)
	}
	resp.Body.Close()
	var id string
	testwait.For(t, "web-1 in the list", func() bool {
		resp, err := hc.Get(base + "api/consoles")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var l struct {
			Consoles []struct{ ID, VM, Kind, State string }
		}
		json.NewDecoder(resp.Body).Decode(&l)
		for _, c := range l.Consoles {
			if c.VM == "web-1" && c.Kind == "console" && c.State == "attached" {
				id = c.ID
			}
		}
		return id != ""
	})

	h := http.Header{}
	for _, c := range jar.Cookies(resp.Request.URL) {
		h.Add("Cookie", c.Name+"="+c.Value)
	}
	ctx, cancel := context.WithTimeout(t.Context(), testwait.Timeout)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"ws/console/"+id, &websocket.DialOptions{HTTPHeader: h, Subprotocols: []string{"vspc.console.v1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	var got []byte
	until := func(want string) {
		t.Helper()
		for !bytes.Contains(got, []byte(want)) {
			typ, p, err := ws.Read(ctx)
			if err != nil {
				t.Fatalf("waiting for %q: %v (got %q)", want, err, got)
			}
			if typ == websocket.MessageBinary || strings.Contains(want, `"type"`) {
				got = append(got, p...)
			}
		}
	}
	until(`"type":"replay-end"`)
	if err := ws.Write(ctx, websocket.MessageBinary, []byte("typed in the browser\r")); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the browser's line on simulate-vm's stdout", func() bool {
		return strings.Contains(vm.stdout.String(), "typed in the browser\r")
	})
	if n := strings.Count(vm.stdout.String(), "typed in the browser"); n != 1 {
		t.Fatalf("the VM got the line %d times: %q", n, vm.stdout.String())
	}
	if _, err := io.WriteString(vm.stdin, "typed at the VM\r\n"); err != nil {
		t.Fatal(err)
	}
	until("typed at the VM\r\n")
}

// proc is this test binary run as vspc-bridge with some arguments.
type proc struct {
	cmd            *exec.Cmd
	stdin          io.WriteCloser
	stdout, stderr *syncBuffer
	done           chan struct{}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// startProc starts vspc-bridge ARGS; the test's end stops it (SIGTERM,
// then SIGKILL) and waits for it.
func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(exe, args...)
	p.cmd.Env = append(os.Environ(), "VSPC_BRIDGE_TEST_MAIN=1")
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(testwait.Timeout):
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("vspc-bridge %s: stdout:\n%s\nstderr:\n%s", args[0], p.stdout, p.stderr)
		}
	})
	return p
}

// lineAfter returns the first word that follows prefix in out, once its
// line is complete, or "".
func lineAfter(out, prefix string) string {
	_, rest, ok := strings.Cut(out, prefix)
	if !ok {
		return ""
	}
	line, _, ok := strings.Cut(rest, "\n")
	if !ok {
		return ""
	}
	word, _, _ := strings.Cut(line, " ")
	return word
}
