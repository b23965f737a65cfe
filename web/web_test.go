package web_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/vspc"
	"github.com/vspc-bridge/vspc-bridge/web"
)

func asCloseError(err error, ce *websocket.CloseError) bool { return errors.As(err, ce) }

// waitFromVM waits until the bridge has taken n bytes from VM name (so its
// console, scrollback and log have them).
func (e *env) waitFromVM(name string, n int64) {
	e.t.Helper()
	testwait.For(e.t, "the console to take the VM's output", func() bool {
		for _, p := range e.srv.Ports() {
			if p.VMName == name && p.BytesFromVM >= n {
				return true
			}
		}
		return false
	})
}

func TestLoginSessionAndHeaders(t *testing.T) {
	e := newEnv(t, "")
	c := e.client()

	resp, body := c.do("GET", "/", nil, nil)
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`<script defer src="static/app.js">`)) {
		t.Fatalf("GET /: %s %.200s", resp.Status, body)
	}
	h := resp.Header
	for k, want := range map[string]string{
		"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
		"X-Content-Type-Options":  "nosniff",
		"X-Frame-Options":         "DENY",
		"Referrer-Policy":         "no-referrer",
		"Cache-Control":           "no-store",
		"Content-Type":            "text/html; charset=utf-8",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("GET / %s = %q, want %q", k, got, want)
		}
	}
	if h.Get("Strict-Transport-Security") != "" {
		t.Error("HSTS without TLS")
	}

	if resp, _ := c.do("GET", "api/session", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("session before login: %s", resp.Status)
	}
	if resp, _ := c.do("GET", "api/consoles", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("list before login: %s", resp.Status)
	}
	if resp, b := c.do("POST", "api/login", map[string]string{"user": "alice", "password": "wrong"}, nil); resp.StatusCode != http.StatusUnauthorized || !bytes.Contains(b, []byte("login incorrect")) {
		t.Fatalf("wrong password: %s %s", resp.Status, b)
	}
	if resp, b := c.do("POST", "api/login", map[string]string{"user": "mallory", "password": "x"}, nil); resp.StatusCode != http.StatusUnauthorized || !bytes.Contains(b, []byte("login incorrect")) {
		t.Fatalf("unknown user: %s %s", resp.Status, b)
	}
	// A form post (what a cross-site page could send without a preflight)
	// is not taken.
	if resp, _ := c.do("POST", "api/login", nil, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}); resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Fatalf("form login: %s", resp.Status)
	}

	resp, b := c.do("POST", "api/login", map[string]string{"user": "alice", "password": alicePW}, nil)
	if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte(`"user":"alice"`)) || !bytes.Contains(b, []byte(`"log":true`)) {
		t.Fatalf("login: %s %s", resp.Status, b)
	}
	ck := resp.Cookies()
	if len(ck) != 1 || ck[0].Name != "vspc_session" || !ck[0].HttpOnly || ck[0].SameSite != http.SameSiteStrictMode || ck[0].Path != "/" || ck[0].Secure || len(ck[0].Value) < 40 {
		t.Fatalf("session cookie %+v", ck)
	}
	raw := resp.Header.Get("Set-Cookie")
	if !strings.Contains(raw, "HttpOnly") || !strings.Contains(raw, "SameSite=Strict") {
		t.Fatalf("Set-Cookie %q", raw)
	}
	if resp, b := c.do("GET", "api/session", nil, nil); resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte(`"user":"alice"`)) {
		t.Fatalf("session: %s %s", resp.Status, b)
	}
	if k := e.hub.Counters(); k.Logins != 1 || k.LoginFailures != 2 {
		t.Fatalf("hub counters %+v: web logins count with the others", k)
	}

	if resp, _ := c.do("POST", "api/logout", nil, nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("logout: %s", resp.Status)
	}
	if resp, _ := c.do("GET", "api/session", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("session after logout: %s", resp.Status)
	}
	if resp, b := c.do("GET", "no/such/page", nil, nil); resp.StatusCode != http.StatusNotFound || resp.Header.Get("Content-Security-Policy") == "" {
		t.Fatalf("404: %s %s", resp.Status, b)
	}
}

func TestLoginRateLimited(t *testing.T) {
	e := newEnv(t, "")
	c := e.client()
	for range 5 { // [remote] login_max_failures
		c.do("POST", "api/login", map[string]string{"user": "bob", "password": "nope"}, nil)
	}
	resp, b := c.do("POST", "api/login", map[string]string{"user": "bob", "password": bobPW}, nil)
	if resp.StatusCode != http.StatusTooManyRequests || !bytes.Contains(b, []byte("too many failed logins")) {
		t.Fatalf("login after 5 failures: %s %s", resp.Status, b)
	}
	if k := e.hub.Counters(); k.LoginsRefused != 1 || k.LoginFailures != 5 {
		t.Fatalf("counters %+v", k)
	}
}

func TestStaticAssets(t *testing.T) {
	e := newEnv(t, "")
	c := e.client()
	for _, p := range []string{"static/app.js", "static/app.css", "static/csp.js", "static/vendor/xterm.js", "static/vendor/xterm.css",
		"static/vendor/addon-fit.js", "static/vendor/addon-search.js", "static/vendor/LICENSE.xterm", "favicon.ico"} {
		resp, b := c.do("GET", p, nil, nil)
		if resp.StatusCode != http.StatusOK || len(b) == 0 {
			t.Errorf("%s: %s (%d bytes)", p, resp.Status, len(b))
		}
	}
	// xterm.js: gzip for browsers that take it, revalidated by ETag.
	req, _ := http.NewRequest("GET", e.base+"static/vendor/xterm.js", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	zb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Header.Get("Content-Encoding") != "gzip" || resp.Header.Get("Cache-Control") != "no-cache" || resp.Header.Get("Content-Type") != "text/javascript; charset=utf-8" {
		t.Fatalf("xterm.js headers %v", resp.Header)
	}
	zr, err := gzip.NewReader(bytes.NewReader(zb))
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(zr)
	want, _ := os.ReadFile(filepath.Join("static", "vendor", "xterm.js"))
	if !bytes.Equal(plain, want) || len(zb) > len(want)/3 {
		t.Fatalf("gzip body: %d bytes for %d (decoded equal: %v)", len(zb), len(want), bytes.Equal(plain, want))
	}
	etag := resp.Header.Get("ETag")
	if resp, _ := c.do("GET", "static/vendor/xterm.js", nil, map[string]string{"If-None-Match": etag}); resp.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match: %s", resp.Status)
	}
	if resp, _ := c.do("GET", "static/index.html", nil, nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("static/index.html: %s", resp.Status)
	}
}

// TestCrossSiteRefused: the requests a page on another site could make in
// a logged-in operator's browser are refused.
func TestCrossSiteRefused(t *testing.T) {
	e := newEnv(t, "")
	e.vm("web-1", "564d0000-0000-0000-0000-000000000001", "com1")
	c := e.client()
	c.login("alice", alicePW)
	id := c.entry("web-1").ID

	// A cross-site logout (or any POST) is refused, and the session lives.
	for _, hdr := range []map[string]string{
		{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
		{"Origin": "https://evil.example"},
	} {
		if resp, b := c.do("POST", "api/logout", nil, hdr); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("cross-site logout %v: %s %s", hdr, resp.Status, b)
		}
		if resp, b := c.do("POST", "api/login", map[string]string{"user": "alice", "password": alicePW}, hdr); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("cross-site login %v: %s %s", hdr, resp.Status, b)
		}
	}
	if resp, _ := c.do("GET", "api/session", nil, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("session after the cross-site logout: %s", resp.Status)
	}

	// A cross-site WebSocket (the browser sends the cookie along) is
	// refused before the upgrade.
	if _, resp, err := c.dial("ws/console/"+id, "https://evil.example"); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site upgrade: %v %v", resp, err)
	}
	// Same origin works.
	w, _, err := c.dial("ws/console/"+id, strings.TrimSuffix(e.base, "/"))
	if err != nil {
		t.Fatal(err)
	}
	w.expect("hello")
	e.waitClients("web-1", 1)
	w.c.Close(websocket.StatusNormalClosure, "")
	e.waitClients("web-1", 0)

	// No cookie, no console.
	anon := e.client()
	w, _, err = anon.dial("ws/console/"+id, "")
	if err != nil {
		t.Fatal(err)
	}
	if code, reason := w.closed(); code != 4401 {
		t.Fatalf("no cookie: close %d %q, want 4401", code, reason)
	}
	if ci := e.console("web-1"); len(ci.Clients) != 0 {
		t.Fatalf("a client without a session got attached: %+v", ci.Clients)
	}

	// DNS rebinding: a name that is not loopback is refused on a loopback
	// listener.
	if resp, _ := c.do("GET", "/", nil, map[string]string{"Host": "evil.example"}); resp.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("Host evil.example: %s", resp.Status)
	}
	if resp, _ := c.do("GET", "/", nil, map[string]string{"Host": "localhost:1"}); resp.StatusCode != http.StatusOK {
		t.Fatalf("Host localhost: %s", resp.Status)
	}
}

// TestTrustedOrigin: [web] origins admits a reverse proxy's origin on the
// upgrade and on POSTs.
func TestTrustedOrigin(t *testing.T) {
	e := newEnv(t, `origins = ["https://console.example.com"]`)
	e.vm("web-1", "564d0000-0000-0000-0000-000000000001", "com1")
	c := e.client()
	c.login("alice", alicePW)
	id := c.entry("web-1").ID
	w, _, err := c.dial("ws/console/"+id, "https://console.example.com")
	if err != nil {
		t.Fatalf("trusted origin: %v", err)
	}
	w.expect("hello")
	if _, resp, err := c.dial("ws/console/"+id, "https://other.example.com"); err == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("other origin: %v", err)
	}
	if resp, _ := c.do("POST", "api/logout", nil, map[string]string{"Origin": "https://console.example.com", "Sec-Fetch-Site": "cross-site"}); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("logout from the trusted origin: %s", resp.Status)
	}
	if resp, _ := c.do("GET", "/", nil, map[string]string{"Host": "console.example.com"}); resp.StatusCode != http.StatusOK {
		t.Fatalf("Host of a trusted origin: %s", resp.Status)
	}
}

// TestListRights: each user sees the ports their access list reaches,
// with the modes their right allows, and who is attached.
func TestListRights(t *testing.T) {
	e := newEnv(t, "")
	e.vm("web-1", "564d0000-0000-0000-0000-000000000001", "com1")
	e.vm("db-1", "564d0000-0000-0000-0000-000000000002", "com1")
	alice, bob, carol := e.client(), e.client(), e.client()
	alice.login("alice", alicePW)
	bob.login("bob", bobPW)
	carol.login("carol", carolPW)

	a := alice.entry("web-1")
	alice.entry("db-1")
	if a.Kind != "console" || a.Right != "rw" || !slices.Equal(a.Modes, []string{"rw", "ro", "x", "xw"}) || a.State != "attached" ||
		a.Service != "com1" || a.VCUUID != "564d0000-0000-0000-0000-000000000001" || !a.Log {
		t.Fatalf("alice's web-1: %+v", a)
	}
	b := bob.entry("web-1")
	if b.Right != "ro" || !slices.Equal(b.Modes, []string{"ro"}) || b.ID != a.ID {
		t.Fatalf("bob's web-1: %+v", b)
	}
	if l := bob.list(); len(l.Consoles) != 1 {
		t.Fatalf("bob sees %+v", l.Consoles)
	}
	if l := carol.list(); len(l.Consoles) != 1 || l.Consoles[0].VM != "db-1" {
		t.Fatalf("carol sees %+v", l.Consoles)
	}
	// carol cannot open web-1 even knowing its id.
	w, _, err := carol.dial("ws/console/"+a.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := w.closed(); code != 4404 {
		t.Fatalf("carol on web-1: close %d, want 4404", code)
	}
	// bob cannot ask for read-write.
	w, _, err = bob.dial("ws/console/"+a.ID+"?mode=rw", "")
	if err != nil {
		t.Fatal(err)
	}
	if code, reason := w.closed(); code != 4403 || !strings.Contains(reason, "read-only") {
		t.Fatalf("bob rw: close %d %q, want 4403", code, reason)
	}

	// Attached users show up in the list.
	w, _, err = bob.dial("ws/console/"+a.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	w.expect("hello")
	testwait.For(t, "alice's list to show bob attached", func() bool {
		for _, x := range alice.list().Consoles {
			if x.VM == "web-1" && len(x.Users) == 1 && x.Users[0].User == "bob" && x.Users[0].Via == "web" && x.Users[0].Mode == "read-only" {
				return true
			}
		}
		return false
	})
}

// TestConsoleProtocol drives a console as the page does: scrollback, input
// that reaches the VM once, the answer, a read-only viewer whose input
// reaches nothing, BREAK, mode switches, lock modes and the log download.
func TestConsoleProtocol(t *testing.T) {
	e := newEnv(t, "")
	vm := e.vm("web-1", "564d0000-0000-0000-0000-000000000001", "com1")
	vm.Write([]byte("boot: old line\r\n"))
	e.waitFromVM("web-1", int64(len("boot: old line\r\n")))
	alice, bob := e.client(), e.client()
	alice.login("alice", alicePW)
	bob.login("bob", bobPW)
	id := alice.entry("web-1").ID

	a, _, err := alice.dial("ws/console/"+id, "")
	if err != nil {
		t.Fatal(err)
	}
	if a.c.Subprotocol() != "vspc.console.v1" {
		t.Fatalf("subprotocol %q", a.c.Subprotocol())
	}
	hello, _ := a.expect("hello")
	if hello["vm"] != "web-1" || hello["mode"] != "read-write" || hello["can_write"] != true || hello["right"] != "rw" || hello["replay"] != float64(16) || hello["log"] != true {
		t.Fatalf("hello %v", hello)
	}
	if _, replay := a.expect("replay-end"); string(replay) != "boot: old line\r\n" {
		t.Fatalf("replay %q", replay)
	}
	users, _ := a.expect("users")
	if u := users["users"].([]any); len(u) != 1 || u[0].(map[string]any)["user"] != "alice" {
		t.Fatalf("users %v", users)
	}

	a.input("root\r")
	readExactly(t, vm, "root\r")
	vm.Write([]byte("login: ok\r\n"))
	a.output("login: ok")

	// bob: read-only; he sees the output, and what his terminal sends
	// reaches nothing (he is told once).
	b, _, err := bob.dial("ws/console/"+id, "")
	if err != nil {
		t.Fatal(err)
	}
	hello, _ = b.expect("hello")
	if hello["mode"] != "read-only" || hello["can_write"] != false {
		t.Fatalf("bob's hello %v", hello)
	}
	_, replay := b.expect("replay-end")
	if !bytes.Contains(replay, []byte("login: ok")) {
		t.Fatalf("bob's replay %q", replay)
	}
	b.input("\x1b[12;40R") // a terminal's answer to a cursor position query
	if n, _ := b.expect("notice"); !strings.Contains(n["text"].(string), "read-only") {
		t.Fatalf("notice %v", n)
	}
	b.send(msg{"type": "break"})
	if m, _ := b.expect("error"); !strings.Contains(m["text"].(string), "BREAK not sent") {
		t.Fatalf("bob's BREAK: %v", m)
	}
	b.send(msg{"type": "mode", "mode": "rw"})
	if m, _ := b.expect("error"); !strings.Contains(m["text"].(string), "read-only access") {
		t.Fatalf("bob's mode switch: %v", m)
	}
	// Only alice's next line reaches the VM: nothing of bob's came before.
	a.input("ls\r")
	readExactly(t, vm, "ls\r")
	vm.Write([]byte("bin etc\r\n"))
	b.output("bin etc")

	// alice sends a BREAK and switches to read-only and back.
	a.send(msg{"type": "break"})
	if m, _ := a.expect("notice"); m["text"] != "BREAK sent" {
		t.Fatalf("BREAK: %v", m)
	}
	a.send(msg{"type": "mode", "mode": "ro"})
	if m, _ := a.expect("mode"); m["mode"] != "read-only" || m["can_write"] != false {
		t.Fatalf("mode ro: %v", m)
	}
	a.send(msg{"type": "mode", "mode": "rw"})
	if m, _ := a.expect("mode"); m["mode"] != "read-write" {
		t.Fatalf("mode rw: %v", m)
	}
	a.send(msg{"type": "mode", "mode": "x"})
	if m, _ := a.expect("error"); !strings.Contains(m["text"].(string), "reconnect for x or xw") {
		t.Fatalf("mode x: %v", m)
	}
	a.send(msg{"type": "nonsense"})
	a.expect("error")

	// Lock modes: exclusive-write is refused beside a writer; exclusive
	// beside anyone.
	x, _, err := alice.dial("ws/console/"+id+"?mode=xw", "")
	if err != nil {
		t.Fatal(err)
	}
	if code, reason := x.closed(); code != 4409 || !strings.Contains(reason, "read-write") {
		t.Fatalf("xw beside a writer: %d %q", code, reason)
	}
	x, _, err = alice.dial("ws/console/"+id+"?mode=x", "")
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := x.closed(); code != 4409 {
		t.Fatalf("x beside others: %d", code)
	}

	// The log has what the VM printed (written behind the console: it
	// may take a moment).
	var resp *http.Response
	var body []byte
	testwait.For(t, "the log to have the VM's output", func() bool {
		resp, body = bob.do("GET", "api/consoles/"+id+"/log", nil, nil)
		return bytes.Contains(body, []byte("bin etc"))
	})
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("boot: old line")) || !bytes.Contains(body, []byte("bin etc")) ||
		resp.Header.Get("Content-Type") != "application/octet-stream" || !strings.HasPrefix(resp.Header.Get("Content-Disposition"), "attachment; filename=\"web-1_") {
		t.Fatalf("log: %s %v %q", resp.Status, resp.Header, body)
	}
	if resp, _ := bob.do("GET", "api/consoles/"+id+"/log?n=1", nil, nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("rotated log that does not exist: %s", resp.Status)
	}
	if resp, _ := bob.do("GET", "api/consoles/"+id+"/log?n=../x", nil, nil); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad n: %s", resp.Status)
	}

	// Logging out closes the session's consoles.
	bob.do("POST", "api/logout", nil, nil)
	if code, _ := b.closed(); code != 4401 {
		t.Fatalf("after logout: close %d, want 4401", code)
	}
	e.waitClients("web-1", 1)

	// The VM's port going away closes the console: 4404.
	e.srv.Close()
	if code, _ := a.closed(); code != 4404 {
		t.Fatalf("console gone: close %d, want 4404", code)
	}
}

// TestSlowBrowserPausesThenDropped: a browser is a client like any other
// under [remote] client_overflow = "pause": while one stops reading, the
// console waits (the VM is not read), after client_stall it is dropped,
// and a browser that reads gets every byte of a megabyte.
func TestSlowBrowserPausesThenDropped(t *testing.T) {
	e := newEnvWith(t, envOptions{remote: "client_queue = \"16KiB\"\nclient_stall = \"300ms\"", sendBuffer: 4096})
	vm := e.vm("web-1", "564d0000-0000-0000-0000-000000000001", "com1")
	fast, slow := e.client(), e.client()
	fast.login("alice", alicePW)
	slow.login("alice", alicePW)
	slow.rcvbuf = 4096
	id := fast.entry("web-1").ID
	f, _, err := fast.dial("ws/console/"+id+"?mode=ro", "")
	if err != nil {
		t.Fatal(err)
	}
	f.expect("replay-end")
	s, _, err := slow.dial("ws/console/"+id+"?mode=ro", "")
	if err != nil {
		t.Fatal(err)
	}
	s.expect("replay-end") // then it reads no more
	e.waitClients("web-1", 2)

	want := make([]byte, 1<<20)
	for i := range want {
		want[i] = byte('a' + i%26)
	}
	wrote := make(chan error, 1)
	go func() {
		_, err := vm.Write(want)
		wrote <- err
	}()
	got := make([]byte, 0, len(want))
	for len(got) < len(want) {
		_, b, err := f.next()
		if err != nil {
			t.Fatalf("fast browser after %d bytes: %v", len(got), err)
		}
		got = append(got, b...)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("fast browser got %d bytes, not the VM's megabyte", len(got))
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	ci := e.waitClients("web-1", 1)
	if ci.Stalled != 1 || ci.Pauses == 0 {
		t.Fatalf("console: stalled %d, pauses %d; want the slow browser dropped after a pause", ci.Stalled, ci.Pauses)
	}
	if k := e.hub.Counters(); k.ClientsDropped != 1 {
		t.Fatalf("counters %+v", k)
	}
	// The slow browser's connection ends (after the hub's grace for the
	// last words); reading it now gets what was buffered, then the end.
	for {
		if _, _, err := s.next(); err != nil {
			break
		}
	}
}

// remoteSystem is a loopback TCP remote a direction-client VM is joined to.
func remoteSystem(t *testing.T) (service string, accept func() net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return "tcp://" + ln.Addr().String(), func() net.Conn {
		t.Helper()
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
}

// TestWatchLink: a port joined to a remote system is listed with its
// device and can be watched read-only by users with rights to its VM: the
// watcher sees the direction it asked for, shows up as a watcher, and
// sends nothing.
func TestWatchLink(t *testing.T) {
	e := newEnv(t, "")
	svc, accept := remoteSystem(t)
	vm := e.vmDir("web-2", "564d0000-0000-0000-0000-000000000003", svc, vspc.DirClient)
	rs := accept()
	alice, bob, carol := e.client(), e.client(), e.client()
	alice.login("alice", alicePW)
	bob.login("bob", bobPW)
	carol.login("carol", carolPW)
	var l web.Entry
	testwait.For(t, "the link to be up in the list", func() bool {
		l = alice.entry("web-2")
		return l.DeviceState == "up"
	})
	if l.Kind != "link" || l.Device != svc || l.Direction != "client" || l.State != "attached" || !slices.Equal(l.Modes, []string{"watch"}) {
		t.Fatalf("link entry %+v", l)
	}

	both, _, err := alice.dial("ws/watch/"+l.ID+"?dir=both", "")
	if err != nil {
		t.Fatal(err)
	}
	hello, _ := both.expect("hello")
	if hello["kind"] != "link" || hello["mode"] != "watch" || hello["can_write"] != false || hello["device"] != svc || hello["dir"] != "both" || hello["replay"] != float64(0) {
		t.Fatalf("hello %v", hello)
	}
	both.expect("replay-end")
	vmOnly, _, err := bob.dial("ws/watch/"+l.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := vmOnly.expect("hello"); h["dir"] != "vm" {
		t.Fatalf("bob's hello %v", h)
	}
	vmOnly.expect("replay-end")
	testwait.For(t, "two watchers in the list", func() bool { return len(alice.entry("web-2").Users) == 2 })
	if u := alice.entry("web-2").Users; u[0].User != "alice" || u[0].Mode != "watch (both)" || u[1].Mode != "watch (vm)" {
		t.Fatalf("watchers %+v", u)
	}

	rs.Write([]byte("router> "))
	readExactly(t, vm, "router> ")
	vm.Write([]byte("show version\r"))
	buf := make([]byte, len("show version\r"))
	if _, err := io.ReadFull(rs, buf); err != nil || string(buf) != "show version\r" {
		t.Fatalf("remote got %q, %v", buf, err)
	}
	if got := both.output("show version\r"); got != "router> show version\r" {
		t.Fatalf("both directions: %q", got)
	}
	if got := vmOnly.output("show version\r"); got != "show version\r" {
		t.Fatalf("VM output only: %q", got)
	}
	// A new watch shows the link's recent traffic first, in the
	// direction it watches, then live traffic.
	again, _, err := alice.dial("ws/watch/"+l.ID+"?dir=both", "")
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := again.expect("hello"); h["replay"] != float64(len("router> show version\r")) {
		t.Fatalf("hello of a second watch %v", h)
	}
	if _, replay := again.expect("replay-end"); string(replay) != "router> show version\r" {
		t.Fatalf("replay of both directions %q", replay)
	}
	devOnly, _, err := bob.dial("ws/watch/"+l.ID+"?dir=device", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, replay := devOnly.expect("replay-end"); string(replay) != "router> " {
		t.Fatalf("replay of the device's traffic %q", replay)
	}
	rs.Write([]byte("\r\nVersion 15.2\r\n"))
	readExactly(t, vm, "\r\nVersion 15.2\r\n")
	if got := again.output("Version 15.2"); got != "\r\nVersion 15.2\r\n" {
		t.Fatalf("live after the replay: %q", got)
	}
	devOnly.output("Version 15.2")
	both.output("Version 15.2")
	again.c.Close(websocket.StatusNormalClosure, "")
	devOnly.c.Close(websocket.StatusNormalClosure, "")

	// A watcher's typing reaches nothing.
	both.input("reload\r")
	if m, _ := both.expect("notice"); !strings.Contains(m["text"].(string), "not sent") {
		t.Fatalf("notice %v", m)
	}
	vm.Write([]byte("x"))
	if _, err := io.ReadFull(rs, buf[:1]); err != nil || buf[0] != 'x' {
		t.Fatalf("remote got %q (a watcher's input came first?)", buf[:1])
	}

	// carol has no rights to web-2.
	w, _, err := carol.dial("ws/watch/"+l.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := w.closed(); code != 4404 {
		t.Fatalf("carol: close %d", code)
	}
	// A console cannot be watched, a link cannot be opened as a console.
	w, _, err = alice.dial("ws/console/"+l.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := w.closed(); code != 4404 {
		t.Fatalf("link as a console: close %d", code)
	}

	// The VM's port closing ends the watch.
	e.srv.Close()
	if code, _ := both.closed(); code != 4404 {
		t.Fatalf("port gone: close %d", code)
	}
}

// clock is an injected time for session expiry.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// TestSessionExpiry: a session ends after session_idle without requests
// or open consoles, an open console keeps it alive, and session_max ends
// it and closes its consoles whatever happens.
func TestSessionExpiry(t *testing.T) {
	clk := &clock{now: time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)}
	e := newEnvWith(t, envOptions{web: "session_idle = \"10m\"\nsession_max = \"1h\"", now: clk.Now})
	e.vm("web-1", "564d0000-0000-0000-0000-000000000001", "com1")
	c := e.client()
	c.login("alice", alicePW)
	clk.advance(9 * time.Minute)
	if resp, _ := c.do("GET", "api/session", nil, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("after 9 idle minutes: %s", resp.Status)
	}
	clk.advance(10 * time.Minute) // 10 minutes since the last request
	if resp, _ := c.do("GET", "api/session", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("after 10 idle minutes: %s", resp.Status)
	}

	c.login("alice", alicePW)
	id := c.entry("web-1").ID
	w, _, err := c.dial("ws/console/"+id, "")
	if err != nil {
		t.Fatal(err)
	}
	w.expect("replay-end")
	clk.advance(30 * time.Minute) // idle, but a console is open
	if resp, _ := c.do("GET", "api/session", nil, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("idle with a console open: %s", resp.Status)
	}
	clk.advance(31 * time.Minute) // past session_max
	if code, _ := w.closed(); code != 4401 {
		t.Fatalf("at session_max: close %d, want 4401", code)
	}
	if resp, _ := c.do("GET", "api/session", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("after session_max: %s", resp.Status)
	}
	e.waitClients("web-1", 0)
}

// TestSessionFollowsUsers: a reload that changes a user's password or
// removes the user ends their web sessions and closes their consoles;
// one that narrows their rights downgrades or closes what they have open.
func TestSessionFollowsUsers(t *testing.T) {
	e := newEnv(t, "")
	e.vm("web-1", "564d0000-0000-0000-0000-000000000001", "com1")
	e.vm("db-1", "564d0000-0000-0000-0000-000000000002", "com1")
	alice, carol := e.client(), e.client()
	alice.login("alice", alicePW)
	carol.login("carol", carolPW)
	aw, _, err := alice.dial("ws/console/"+alice.entry("web-1").ID, "")
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := aw.expect("hello"); h["mode"] != "read-write" {
		t.Fatalf("alice's hello %v", h)
	}
	cw, _, err := carol.dial("ws/console/"+carol.entry("db-1").ID, "")
	if err != nil {
		t.Fatal(err)
	}
	cw.expect("replay-end")

	// The reload: alice only watches web-*, carol gets a new password.
	src := strings.Replace(strings.Replace(e.cfgText,
		`access = [{vm = "*", mode = "rw"}]`, `access = [{vm = "web-*", mode = "ro"}]`, 1),
		e.hashes["carol"], hash(t, "carol-new"), 1)
	cfg, err := configs.Parse("reload.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	e.hub.SetUsers(cfg)
	if m, _ := aw.expect("mode"); m["mode"] != "read-only" {
		t.Fatalf("alice after the reload: %v", m)
	}
	if code, _ := cw.closed(); code != 4401 {
		t.Fatalf("carol after her password changed: close %d, want 4401", code)
	}
	if resp, _ := carol.do("GET", "api/consoles", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("carol's session after the reload: %s", resp.Status)
	}
	if l := alice.list(); len(l.Consoles) != 1 || l.Consoles[0].Right != "ro" {
		t.Fatalf("alice's list after the reload: %+v", l.Consoles)
	}
}

// TestMaxConsoles: [web] max_consoles bounds the consoles one user has
// open at once, over all their sessions.
func TestMaxConsoles(t *testing.T) {
	e := newEnv(t, "max_consoles = 2")
	e.vm("web-1", "564d0000-0000-0000-0000-000000000001", "com1")
	a, b := e.client(), e.client()
	a.login("alice", alicePW)
	b.login("alice", alicePW)
	id := a.entry("web-1").ID
	for _, c := range []*client{a, b} {
		w, _, err := c.dial("ws/console/"+id+"?mode=ro", "")
		if err != nil {
			t.Fatal(err)
		}
		w.expect("hello")
	}
	w, _, err := a.dial("ws/console/"+id+"?mode=ro", "")
	if err != nil {
		t.Fatal(err)
	}
	if code, reason := w.closed(); code != 4429 || !strings.Contains(reason, "max_consoles") {
		t.Fatalf("third console: %d %q", code, reason)
	}
}

// TestLockModes: a browser may hold a console exclusively (x: alone) or
// be its only writer (xw: others watch, and one who asks for rw is told
// they are read-only), with the same meaning as on telnet and SSH.
func TestLockModes(t *testing.T) {
	e := newEnv(t, "")
	vm := e.vm("web-1", "564d0000-0000-0000-0000-000000000001", "com1")
	alice, alice2, bob := e.client(), e.client(), e.client()
	alice.login("alice", alicePW)
	alice2.login("alice", alicePW)
	bob.login("bob", bobPW)
	id := alice.entry("web-1").ID

	x, _, err := alice.dial("ws/console/"+id+"?mode=x", "")
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := x.expect("hello"); h["mode"] != "exclusive" || h["can_write"] != true {
		t.Fatalf("x: hello %v", h)
	}
	x.expect("replay-end")
	w, _, err := bob.dial("ws/console/"+id, "")
	if err != nil {
		t.Fatal(err)
	}
	if code, reason := w.closed(); code != 4409 || !strings.Contains(reason, "exclusively") {
		t.Fatalf("a viewer beside x: %d %q", code, reason)
	}
	x.input("only me\r")
	readExactly(t, vm, "only me\r")
	x.c.Close(websocket.StatusNormalClosure, "")
	e.waitClients("web-1", 0)

	xw, _, err := alice.dial("ws/console/"+id+"?mode=xw", "")
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := xw.expect("hello"); h["mode"] != "exclusive-write" || h["can_write"] != true {
		t.Fatalf("xw: hello %v", h)
	}
	xw.expect("replay-end")
	ro, _, err := bob.dial("ws/console/"+id, "")
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := ro.expect("hello"); h["mode"] != "read-only" {
		t.Fatalf("a viewer beside xw: hello %v", h)
	}
	ro.expect("replay-end")
	rw, _, err := alice2.dial("ws/console/"+id+"?mode=rw", "")
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := rw.expect("hello"); h["mode"] != "read-only" || h["can_write"] != false || !strings.Contains(h["note"].(string), "exclusively") {
		t.Fatalf("rw beside xw: hello %v", h)
	}
	rw.expect("replay-end")
	rw.input("not me\r")
	if n, _ := rw.expect("notice"); !strings.Contains(n["text"].(string), "read-only") {
		t.Fatalf("notice %v", n)
	}
	rw.send(msg{"type": "mode", "mode": "rw"})
	if m, _ := rw.expect("error"); m["text"] == "" {
		t.Fatalf("switching to rw beside xw: %v", m)
	}
	xw.input("the writer\r")
	readExactly(t, vm, "the writer\r") // and nothing of the others before it
	vm.Write([]byte("seen by all\r\n"))
	for _, c := range []*wsConn{xw, ro, rw} {
		c.output("seen by all")
	}
}

// TestPings: an open console is pinged every [web] ping (a browser
// answers by itself); one that does not answer within that time is
// disconnected, and the console goes on for the others. (2s: an answer
// that takes longer on a busy machine would be a false failure.)
func TestPings(t *testing.T) {
	e := newEnv(t, "ping = \"2s\"")
	e.vm("web-1", "564d0000-0000-0000-0000-000000000001", "com1")
	alive, mute := e.client(), e.client()
	var pings atomic.Int32
	alive.onPing = func() { pings.Add(1) }
	alive.login("alice", alicePW)
	mute.login("alice", alicePW)
	id := alive.entry("web-1").ID

	a, _, err := alive.dial("ws/console/"+id, "")
	if err != nil {
		t.Fatal(err)
	}
	a.expect("replay-end")
	m, _, err := mute.dial("ws/console/"+id, "")
	if err != nil {
		t.Fatal(err)
	}
	e.waitClients("web-1", 2)
	// alive reads (and so answers pings) until the test ends; mute reads
	// nothing from now on.
	var wg sync.WaitGroup
	defer wg.Wait()
	defer a.c.CloseNow()
	wg.Go(func() {
		for {
			if _, _, err := a.c.Read(context.Background()); err != nil {
				return
			}
		}
	})
	testwait.For(t, "two pings to the browser that answers", func() bool { return pings.Load() >= 2 })
	e.waitClients("web-1", 1) // the mute one is gone
	if code, reason := m.closed(); code != websocket.StatusGoingAway || reason != "no answer to ping" {
		t.Fatalf("the browser that did not answer: %d %q", code, reason)
	}
	if n := len(e.console("web-1").Clients); n != 1 {
		t.Fatalf("%d clients left", n)
	}
}

// TestSetConfig: a reload applies [web] origins, max_sessions,
// max_consoles, ping and secure_cookie at once, and reports listen as
// needing a restart.
func TestSetConfig(t *testing.T) {
	clk := &clock{now: time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)}
	e := newEnvWith(t, envOptions{now: clk.Now})
	e.vm("web-1", "564d0000-0000-0000-0000-000000000001", "com1")
	alice, bob := e.client(), e.client()
	alice.login("alice", alicePW)
	clk.advance(time.Second)
	bob.login("bob", bobPW)
	id := bob.entry("web-1").ID
	if _, resp, err := bob.dial("ws/console/"+id, "https://console.example.com"); err == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("an origin not yet trusted: %v", err)
	}

	reload := func(web string) ([]string, []string) {
		t.Helper()
		src := strings.Replace(e.cfgText, "[web]\nlisten = \"127.0.0.1:0\"\n", "[web]\n"+web+"\n", 1)
		cfg, err := configs.Parse("reload.toml", []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		return e.web.SetConfig(cfg)
	}
	applied, restart := reload("listen = \"127.0.0.1:13380\"\norigins = [\"https://console.example.com\"]\nmax_sessions = 1\nmax_consoles = 1\nping = \"30s\"")
	if !slices.Equal(applied, []string{"web.origins", "web.max_sessions", "web.max_consoles", "web.ping"}) || !slices.Equal(restart, []string{"web.listen"}) {
		t.Fatalf("applied %q, restart %q", applied, restart)
	}
	// max_sessions = 1: alice's session, the oldest, ended.
	if resp, _ := alice.do("GET", "api/consoles", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("alice's session past max_sessions: %s", resp.Status)
	}
	// The new origin is trusted; max_consoles = 1.
	w, _, err := bob.dial("ws/console/"+id, "https://console.example.com")
	if err != nil {
		t.Fatalf("the origin trusted now: %v", err)
	}
	w.expect("replay-end")
	if resp, _ := bob.do("POST", "api/logout", nil, map[string]string{"Origin": "https://other.example.com", "Sec-Fetch-Site": "cross-site"}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a cross-site logout: %s", resp.Status)
	}
	w2, _, err := bob.dial("ws/console/"+id, "")
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := w2.closed(); code != 4429 {
		t.Fatalf("a second console past max_consoles = 1: %d", code)
	}

	// secure_cookie: the cookie's name changes, so every session ends
	// (its consoles close) and the next login sets the new cookie.
	applied, restart = reload("listen = \"127.0.0.1:0\"\norigins = [\"https://console.example.com\"]\nmax_sessions = 1\nmax_consoles = 1\nping = \"30s\"\nsecure_cookie = true")
	if !slices.Equal(applied, []string{"web.secure_cookie"}) || len(restart) != 0 {
		t.Fatalf("applied %q, restart %q", applied, restart)
	}
	if code, _ := w.closed(); code != 4401 {
		t.Fatalf("bob's console after secure_cookie: %d", code)
	}
	resp, _ := alice.do("POST", "api/login", map[string]string{"user": "alice", "password": alicePW}, nil)
	if c := resp.Cookies(); len(c) != 1 || c[0].Name != "__Host-vspc_session" || !c[0].Secure {
		t.Fatalf("cookie after secure_cookie: %v", resp.Header["Set-Cookie"])
	}
}

// TestLiveState: the list's event stream sends the list again when it
// changes, and an open console is told the VM port's state: here the
// VM's connection drops (detached, the port kept for the grace period);
// a logout ends the stream with a logout event.
func TestLiveState(t *testing.T) {
	e := newEnv(t, "")
	vm := e.vm("web-1", "564d0000-0000-0000-0000-000000000001", "com1")
	c := e.client()
	c.login("alice", alicePW)
	id := c.entry("web-1").ID

	resp, err := c.http.Get(e.base + "api/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %s %v", resp.Status, resp.Header)
	}
	events := bufio.NewReader(resp.Body)
	next := func() (string, web.List) {
		t.Helper()
		var name string
		var l web.List
		for {
			line, err := events.ReadString('\n')
			if err != nil {
				t.Fatalf("event stream: %v", err)
			}
			switch {
			case strings.HasPrefix(line, "event: "):
				name = strings.TrimSpace(strings.TrimPrefix(line, "event: "))
			case strings.HasPrefix(line, "data: "):
				json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &l)
			case line == "\n" && name != "":
				return name, l
			}
		}
	}
	// until reads list events until one satisfies ok.
	until := func(what string, ok func(web.Entry) bool) {
		t.Helper()
		for {
			name, l := next()
			if name != "consoles" {
				t.Fatalf("waiting for %s: event %q", what, name)
			}
			if len(l.Consoles) == 1 && ok(l.Consoles[0]) {
				return
			}
		}
	}
	until("web-1 attached", func(x web.Entry) bool { return x.State == "attached" && len(x.Users) == 0 })

	w, _, err := c.dial("ws/console/"+id, "")
	if err != nil {
		t.Fatal(err)
	}
	w.expect("replay-end")
	until("alice in the list", func(x web.Entry) bool {
		return len(x.Users) == 1 && x.Users[0].User == "alice" && x.Users[0].Via == "web"
	})

	vm.Close()
	if m, _ := w.expect("state"); m["state"] != "detached" {
		t.Fatalf("state %v", m)
	}
	until("web-1 detached", func(x web.Entry) bool { return x.State == "detached" })

	c.do("POST", "api/logout", nil, nil)
	for {
		// (A list computed as the logout came may still come first.)
		if name, _ := next(); name == "logout" {
			break
		} else if name != "consoles" {
			t.Fatalf("after the logout: event %q", name)
		}
	}
	if _, err := events.ReadString('\n'); err != io.EOF {
		t.Fatalf("the event stream after its logout event: %v", err)
	}
}
