package web_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"

	"github.com/vspc-bridge/vspc-bridge/devices/devicetest"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// updateScreenshot rewrites the README's screenshot from the browser test:
//
//	go test ./web -run TestBrowserConsole -update-screenshot
var updateScreenshot = flag.Bool("update-screenshot", false, "write docs/web-console.png from TestBrowserConsole")

// chromiumPath finds the browser: $CHROME_BIN, else Debian's chromium
// (scripts/install-test-peers.sh installs it). Without it the browser
// tests skip, and fail under CI=true or VSPC_BROWSER_TEST=1.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROME_BIN"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "chromium-headless-shell", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if devicetest.CI() || os.Getenv("VSPC_BROWSER_TEST") == "1" {
		t.Fatalf("no Chromium found (CI=true, so this is a failure): %s", devicetest.InstallHint)
	}
	t.Skip("no Chromium found; scripts/install-test-peers.sh installs Debian's chromium")
	return ""
}

// page is one browser tab with its own cookies (a browser context of its
// own), as one operator's browser.
type page struct {
	t    *testing.T
	name string
	ctx  context.Context
}

// browserEnv is one headless Chromium for a test.
type browserEnv struct {
	t   *testing.T
	ctx context.Context // the browser's
}

func newBrowser(t *testing.T) *browserEnv {
	t.Helper()
	path := chromiumPath(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // tests run as root in CI
		chromedp.DisableGPU,
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1180, 620),
	)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		acancel()
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("starting %s: %v", path, err)
	}
	return &browserEnv{t: t, ctx: ctx}
}

// page opens a new tab in a browser context of its own (separate
// cookies). A failing test saves a screenshot of every page.
func (b *browserEnv) page(name string) *page {
	b.t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext())
	p := &page{t: b.t, name: name, ctx: ctx}
	b.t.Cleanup(func() {
		if b.t.Failed() {
			p.saveScreenshot()
		}
		cancel()
	})
	if err := chromedp.Do(ctx); err != nil {
		b.t.Fatalf("new tab: %v", err)
	}
	return p
}

// saveScreenshot writes the page to $VSPC_ARTIFACTS (or the temp
// directory) for a failed test.
func (p *page) saveScreenshot() {
	dir := os.Getenv("VSPC_ARTIFACTS")
	if dir == "" {
		dir = os.TempDir()
	}
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Logf("screenshot of %s: %v", p.name, err)
		return
	}
	name := filepath.Join(dir, fmt.Sprintf("%s-%s.png", strings.ReplaceAll(p.t.Name(), "/", "_"), p.name))
	if err := os.WriteFile(name, png, 0o644); err != nil {
		p.t.Logf("screenshot of %s: %v", p.name, err)
		return
	}
	text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`window.vspc && window.vspc.screenText ? window.vspc.screenText() : document.body.innerText`))
	p.t.Logf("screenshot of %s: %s\npage text:\n%s", p.name, name, text)
}

// do runs actions with a deadline (the tab stays usable after a timeout).
func (p *page) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, testwait.Timeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("%s: %s: %v", p.name, what, err)
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](p *page, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, testwait.Timeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.t.Fatalf("%s: %s: %v", p.name, expr, err)
	}
	return v
}

// evalAwait evaluates a JavaScript expression whose value is a promise.
func evalAwait[T any](p *page, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, testwait.Timeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		p.t.Fatalf("%s: %s: %v", p.name, expr, err)
	}
	return v
}

// waitJS waits until a JavaScript expression is true in the page.
func (p *page) waitJS(what, expr string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, testwait.Timeout)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(testwait.Timeout))); err != nil {
		p.t.Fatalf("%s: waiting for %s (%s): %v", p.name, what, expr, err)
	}
}

// screen returns the console's terminal buffer as text.
func (p *page) screen() string { return eval[string](p, `window.vspc.screenText()`) }

// waitScreen waits until the terminal shows s.
func (p *page) waitScreen(s string) {
	p.t.Helper()
	p.waitJS("the terminal to show "+s, fmt.Sprintf(`window.vspc.con && window.vspc.screenText().includes(%q)`, s))
}

// typeKeys types into the focused element the way a keyboard does: one
// keyDown carrying the text and one keyUp per character (chromedp's
// SendKeys adds a separate char event, which xterm.js takes as a second
// keystroke). "\r" is the Enter key.
func (p *page) typeKeys(s string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, testwait.Timeout)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Action[chromedp.Void](func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		for _, r := range s {
			down := input.DispatchKeyEventParams{Type: input.DispatchKeyEventTypeKeyDown, Text: string(r), Key: string(r)}
			up := input.DispatchKeyEventParams{Type: input.DispatchKeyEventTypeKeyUp, Key: string(r)}
			if r == '\r' {
				down = input.DispatchKeyEventParams{Type: input.DispatchKeyEventTypeKeyDown, Text: "\r", Key: "Enter", Code: "Enter", WindowsVirtualKeyCode: 13, NativeVirtualKeyCode: 13}
				up = input.DispatchKeyEventParams{Type: input.DispatchKeyEventTypeKeyUp, Key: "Enter", Code: "Enter", WindowsVirtualKeyCode: 13, NativeVirtualKeyCode: 13}
			}
			if _, err := cdp.Call(ctx, t, input.DispatchKeyEvent, down); err != nil {
				return chromedp.Void{}, err
			}
			if _, err := cdp.Call(ctx, t, input.DispatchKeyEvent, up); err != nil {
				return chromedp.Void{}, err
			}
		}
		return chromedp.Void{}, nil
	}))
	if err != nil {
		p.t.Fatalf("%s: typing %q: %v", p.name, s, err)
	}
}

// login logs in through the form.
func (p *page) login(base, user, pw string) {
	p.t.Helper()
	p.do("log in as "+user,
		chromedp.Navigate(base),
		chromedp.WaitVisible(chromedp.ID("login-user")),
		chromedp.SendKeys(chromedp.ID("login-user"), user),
		chromedp.SendKeys(chromedp.ID("login-password"), pw),
		chromedp.Click(chromedp.ID("login-submit")),
		chromedp.WaitVisible(chromedp.ID("view-list")),
	)
	if got := eval[string](p, `window.vspc.session.user`); got != user {
		p.t.Fatalf("%s: logged in as %q", p.name, got)
	}
}

// openConsole clicks the "Open" link (or the mode link) of the VM's row
// and waits for the console to be attached and its replay written.
func (p *page) openConsole(vm, mode string) {
	p.t.Helper()
	p.waitJS("the list to show "+vm, fmt.Sprintf(`window.vspc.listReady && window.vspc.list.some(c => c.vm === %q)`, vm))
	link := `a.open`
	if mode != "" {
		link = `a.mode[href$="?mode=` + mode + `"]`
	}
	id := eval[string](p, fmt.Sprintf(`window.vspc.list.find(c => c.vm === %q).id`, vm))
	p.do("open the console of "+vm,
		chromedp.Click(chromedp.CSS(`tr[data-id="`+id+`"] `+link)),
		chromedp.WaitVisible(chromedp.ID("view-console")),
	)
	p.waitJS("the console to be attached and replayed", `window.vspc.con && window.vspc.con.connected && window.vspc.con.replayDone`)
}

// readUntil reads r until the byte end and returns what it read.
func readUntil(t *testing.T, r io.Reader, end byte) string {
	t.Helper()
	done := make(chan string, 1)
	go func() {
		var got []byte
		b := make([]byte, 1)
		for {
			if _, err := r.Read(b); err != nil {
				done <- string(got) + " (" + err.Error() + ")"
				return
			}
			if got = append(got, b[0]); b[0] == end {
				done <- string(got)
				return
			}
		}
	}()
	select {
	case s := <-done:
		return s
	case <-time.After(testwait.Timeout):
		t.Fatalf("no %q from the VM", end)
		return ""
	}
}

// cspViolations returns what the page's CSP listener recorded.
func (p *page) cspViolations() []string { return eval[[]string](p, `window.cspViolations`) }

// proxy is a TCP relay between the browser and the web console that the
// test can cut (a network drop).
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			p.wg.Go(func() { io.Copy(s, c); s.Close() })
			p.wg.Go(func() { io.Copy(c, s); c.Close() })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

// cut drops every connection through the proxy at once.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) url() string { return "http://" + p.ln.Addr().String() + "/" }

// TestBrowserConsole is the web console in a real Chromium against the
// real handler and a simulated ESXi VM: log in, read the list, open a
// console and see its scrollback, type a line that reaches the VM exactly
// once, see the answer; a read-only user sees the output and their typing
// reaches nothing; BREAK and paste; the page reconnects after a network
// drop; no CSP violation anywhere.
func TestBrowserConsole(t *testing.T) {
	b := newBrowser(t)
	e := newEnv(t, "")
	// The per-VM listener takes a port that was free a moment ago, so that
	// two test runs beside each other do not collide; the README's
	// screenshot keeps the port a reader would pick.
	listen := fmt.Sprintf("telnet://127.0.0.1:%d", devicetest.FreePort(t))
	if *updateScreenshot {
		listen = "telnet://127.0.0.1:7001"
	}
	vm := e.vm("web-1", "564d0000-0000-0000-0000-000000000001", listen)
	e.vm("db-1", "564d0000-0000-0000-0000-000000000002", "com1")
	swSvc, accept := remoteSystem(t)
	sw := e.vmDir("web-sw", "564d0000-0000-0000-0000-000000000003", swSvc, vspc.DirClient)
	swRemote := accept()
	boot := "boot: old line\r\nweb-1 login: "
	vm.Write([]byte(boot))
	e.waitFromVM("web-1", int64(len(boot)))
	px := newProxy(t, strings.TrimSuffix(strings.TrimPrefix(e.base, "http://"), "/"))
	base := px.url()

	// alice logs in and reads the list.
	alice := b.page("alice")
	alice.login(base, "alice", alicePW)
	alice.waitJS("the three ports in the list", `window.vspc.listReady && window.vspc.list.length === 3 && window.vspc.list[2].device_state === 'up'`)
	rows := eval[[]string](alice, `[...document.querySelectorAll('#consoles-body tr')].map(r => [...r.cells].slice(0, 6).map(c => c.innerText.replace(/\s+/g, ' ').trim()).join(' | '))`)
	if len(rows) != 3 || !strings.HasPrefix(rows[0], "db-1 564d0000-0000-0000-0000-000000000002 | com1 | attached | — |  | rw") ||
		!strings.HasPrefix(rows[1], "web-1 564d0000-0000-0000-0000-000000000001 | "+listen+" | attached") ||
		!strings.HasPrefix(rows[2], "web-sw 564d0000-0000-0000-0000-000000000003 | "+swSvc+" | attached | "+swSvc+" up") {
		t.Fatalf("alice's list:\n%s", strings.Join(rows, "\n"))
	}
	// The filter narrows it.
	alice.do("filter", chromedp.SendKeys(chromedp.ID("filter"), "web"))
	if n := eval[int](alice, `document.querySelectorAll('#consoles-body tr').length`); n != 2 {
		t.Fatalf("filter 'web': %d rows", n)
	}
	// The list is live: a VM that connects now shows without a reload
	// (here hidden by the filter, which applies to what comes).
	e.vm("db-2", "564d0000-0000-0000-0000-000000000004", "com1")
	alice.waitJS("db-2 to come in the list", `window.vspc.list.some(c => c.vm === 'db-2')`)
	if n := eval[int](alice, `document.querySelectorAll('#consoles-body tr').length`); n != 2 {
		t.Fatalf("filter 'web' after db-2 came: %d rows", n)
	}

	// alice opens web-1: the scrollback is there; what she types reaches
	// the VM once; the VM's answer shows.
	alice.openConsole("web-1", "")
	alice.waitScreen("boot: old line")
	if m := eval[string](alice, `window.vspc.con.modeName`); m != "read-write" {
		t.Fatalf("alice's mode %q", m)
	}
	alice.typeKeys("root\r")
	readExactly(t, vm, "root\r")
	vm.Write([]byte("\r\nPassword: \r\nLast login: today\r\n[root@web-1 ~]# "))
	alice.waitScreen("[root@web-1 ~]#")

	// bob (read-only on web-*) watches: he sees the output, his typing
	// reaches nothing, and he cannot send a BREAK.
	bob := b.page("bob")
	bob.login(base, "bob", bobPW)
	bob.waitJS("bob's list", `window.vspc.listReady && window.vspc.list.length === 2 && window.vspc.list.every(c => c.right === 'ro')`)
	bob.openConsole("web-1", "")
	bob.waitScreen("Last login: today")
	if m := eval[string](bob, `window.vspc.con.modeName + ' ' + document.getElementById('btn-break').disabled`); m != "read-only true" {
		t.Fatalf("bob's mode and BREAK button: %q", m)
	}
	bob.typeKeys("reboot\r")
	alice.waitJS("bob in alice's who panel", `[...document.querySelectorAll('#who-list li b')].map(b => b.textContent).join(',') === 'alice,bob'`)
	// Only alice's next line reaches the VM: nothing of bob's came first.
	alice.typeKeys("uptime\r")
	readExactly(t, vm, "uptime\r")
	vm.Write([]byte("uptime\r\n 10:00:00 up 42 days\r\n[root@web-1 ~]# "))
	alice.waitScreen("up 42 days")
	bob.waitScreen("up 42 days")
	if n := eval[int](bob, `window.vspc.con.inputSent`); n != 0 {
		t.Fatalf("bob's page sent %d bytes", n)
	}

	// The VM asks the terminal where its cursor is (DSR): alice's
	// terminal answers, bob's (read-only) answer goes nowhere; the next
	// thing the VM gets after alice's answer is alice's paste below.
	vm.Write([]byte("\x1b[6n"))
	if ans := readUntil(t, vm, 'R'); !strings.HasPrefix(ans, "\x1b[") || !strings.Contains(ans, ";") {
		t.Fatalf("the VM got %q, want a cursor position report", ans)
	}

	// BREAK and paste from alice's toolbar.
	alice.do("send BREAK", chromedp.Click(chromedp.ID("btn-break")))
	testwait.For(t, "the VM to get a BREAK", func() bool { return vm.Breaks() == 1 })
	alice.do("grant the clipboard", chromedp.Action[chromedp.Void](func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		c := chromedp.FromContext(ctx)
		for _, name := range []string{"clipboard-read", "clipboard-write"} {
			if _, err := cdp.Call(ctx, c.Browser, browser.SetPermission, browser.SetPermissionParams{
				Permission: &browser.PermissionDescriptor{Name: name}, Setting: browser.PermissionSettingGranted, BrowserContextID: c.BrowserContextID,
			}); err != nil {
				return chromedp.Void{}, err
			}
		}
		return chromedp.Void{}, nil
	}))
	alice.do("fill the clipboard", chromedp.Evaluate[chromedp.Void](`navigator.clipboard.writeText('echo pasted\n')`, chromedp.EvalAwaitPromise))
	alice.do("paste", chromedp.Click(chromedp.ID("btn-paste")))
	readExactly(t, vm, "echo pasted\r")
	// Guest output is untrusted: an OSC 52 clipboard write and an OSC 0
	// title change do nothing.
	vm.Write([]byte("\x1b]52;c;ZXZpbA==\x07\x1b]0;pwned\x07after escapes\r\n"))
	alice.waitScreen("after escapes")
	if clip := evalAwait[string](alice, `navigator.clipboard.readText()`); clip != "echo pasted\n" {
		t.Fatalf("the clipboard after OSC 52: %q", clip)
	}
	if title := eval[string](alice, `document.title`); title != "web-1 — vspc-bridge" {
		t.Fatalf("the title after OSC 0: %q", title)
	}
	// Copy: what is selected goes to the clipboard (and the keyboard
	// stays with the terminal: alice types there below).
	alice.do("select all and copy", chromedp.Evaluate[chromedp.Void](`window.vspc.con.term.selectAll()`), chromedp.Click(chromedp.ID("btn-copy")))
	testwait.For(t, "the clipboard to hold the screen", func() bool {
		return strings.Contains(evalAwait[string](alice, `navigator.clipboard.readText()`), "up 42 days")
	})
	// Log: the button downloads the console's log (log_dir is set; the
	// log is written behind the console, so it may take a moment).
	var log string
	testwait.For(t, "the log button to give the console's log", func() bool {
		log = evalAwait[string](alice, `(b => b.hidden ? 'hidden' : fetch(b.href).then(r => r.text()))(document.getElementById('btn-log'))`)
		return strings.Contains(log, "up 42 days")
	})
	if !strings.Contains(log, "boot: old line") {
		t.Fatalf("the log button gives %q", log)
	}
	// Resize: the terminal fits the window.
	cols := eval[int](alice, `window.vspc.con.term.cols`)
	alice.do("a narrower window", chromedp.EmulateViewport(700, 500))
	alice.waitJS("the terminal to fit the narrower window", fmt.Sprintf(`window.vspc.con.term.cols < %d`, cols))
	alice.do("the window as it was", chromedp.EmulateViewport(1180, 620))
	alice.waitJS("the terminal to fit the window again", fmt.Sprintf(`window.vspc.con.term.cols === %d`, cols))

	if *updateScreenshot {
		alice.screenshot("web-console.png")
	}

	// A network drop: the page reconnects by itself, replays the
	// scrollback, and typing works again.
	e.waitClients("web-1", 2)
	px.cut()
	alice.waitJS("alice to notice the drop", `!window.vspc.con.connected`)
	alice.waitJS("alice to reconnect", `window.vspc.con.connected && window.vspc.con.replayDone`)
	bob.waitJS("bob to reconnect", `window.vspc.con.connected && window.vspc.con.replayDone`)
	alice.waitScreen("up 42 days")
	// The replayed scrollback holds the DSR query: neither terminal's
	// answer reaches the VM, only what alice types next.
	alice.typeKeys("id\r")
	readExactly(t, vm, "id\r")

	// bob watches the switch joined to web-sw: what the device says
	// shows, both ways when he asks; his typing reaches nothing.
	bob.do("back to the list", chromedp.Click(chromedp.CSS("a.back")), chromedp.WaitVisible(chromedp.ID("view-list")))
	if *updateScreenshot {
		bob.waitJS("the list to show alice attached", `window.vspc.list.find(c => c.vm === 'web-1').users.map(u => u.user).join() === 'alice'`)
		bob.screenshot("web-console-list.png")
	}
	bob.openConsole("web-sw", "") // its "open" link is Watch
	if v := eval[string](bob, `window.vspc.con.modeName + ' ' + document.getElementById('btn-break').hidden + ' ' + document.getElementById('watch-dir').hidden`); v != "watch true false" {
		t.Fatalf("bob's watch view: %q", v)
	}
	swRemote.Write([]byte("Switch> "))
	readExactly(t, sw, "Switch> ")
	sw.Write([]byte("show vlan\r\n"))
	readExactly(t, swRemote, "show vlan\r\n") // the switch gets it
	bob.waitScreen("show vlan")
	if s := bob.screen(); strings.Contains(s, "Switch>") {
		t.Fatalf("watching the VM's output showed the device's: %q", s)
	}
	bob.do("watch both directions", chromedp.SetValue(chromedp.ID("watch-dir"), "both"), chromedp.Evaluate[chromedp.Void](`document.getElementById('watch-dir').dispatchEvent(new Event('change'))`))
	bob.waitJS("the watch of both directions", `window.vspc.con.hello && window.vspc.con.hello.dir === 'both' && window.vspc.con.replayDone`)
	// It starts with the link's recent traffic, both ways.
	bob.waitScreen("Switch> show vlan")
	swRemote.Write([]byte("VLAN 10 up\r\n"))
	readExactly(t, sw, "VLAN 10 up\r\n")
	bob.waitScreen("VLAN 10 up")
	bob.typeKeys("reload\r")
	sw.Write([]byte("!"))
	first := make([]byte, 1)
	if _, err := io.ReadFull(swRemote, first); err != nil || first[0] != '!' {
		t.Fatalf("the switch got %q before the VM's '!' (a watcher's input?): %v", first, err)
	}

	for _, p := range []*page{alice, bob} {
		if v := p.cspViolations(); len(v) != 0 {
			t.Errorf("%s: CSP violations: %q", p.name, v)
		}
	}
}

// screenshot writes the page to docs/NAME (the README's pictures).
func (p *page) screenshot(name string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, testwait.Timeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("..", "docs", name), png, 0o644); err != nil {
		p.t.Fatal(err)
	}
}
