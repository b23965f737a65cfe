package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/crypto/bcrypt"

	"github.com/vspc-bridge/vspc-bridge/bridge"
	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/devices/devicetest"
	"github.com/vspc-bridge/vspc-bridge/internal/leaktest"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/remote"
	"github.com/vspc-bridge/vspc-bridge/remote/remotetest"
	"github.com/vspc-bridge/vspc-bridge/vspc"
	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
	"github.com/vspc-bridge/vspc-bridge/web"
)

// TestMain fails the run if goroutines started by the tests outlive them
// (consoles, event streams, the hub's writers).
func TestMain(m *testing.M) { leaktest.Main(m, 5*time.Second) }

// Test users: alice may write to every console; bob may only watch web-*;
// carol may write to db-* only.
const (
	alicePW = "alice-secret"
	bobPW   = "bob-secret"
	carolPW = "carol-secret"
)

func hash(t testing.TB, pw string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// env is a vspc server with the real bridge: direction-server ports get
// consoles from a remote hub, direction-client ports are joined to the
// loopback remotes they name; and the web console in front of it, all on
// 127.0.0.1.
type env struct {
	t        *testing.T
	cfg      *configs.Config
	hub      *remote.Hub
	br       *bridge.Bridge
	srv      *vspc.Server
	web      *web.Server
	vspcAddr string
	base     string // http://127.0.0.1:PORT/
	logDir   string
	cfgText  string            // the config it runs on
	hashes   map[string]string // bcrypt hash of each test user's password in cfgText
}

// newEnv starts the env; extra is TOML added to the [web] table.
func newEnv(t *testing.T, extra string) *env {
	t.Helper()
	return newEnvWith(t, envOptions{web: extra})
}

// envOptions tune an env.
type envOptions struct {
	web, remote string           // TOML added to the [web] and [remote] tables
	sendBuffer  int              // SO_SNDBUF of the web console's connections; 0 leaves it
	now         func() time.Time // the web console's clock; nil: time.Now
}

func newEnvWith(t *testing.T, o envOptions) *env {
	t.Helper()
	logDir := t.TempDir()
	hashes := map[string]string{"alice": hash(t, alicePW), "bob": hash(t, bobPW), "carol": hash(t, carolPW)}
	src := fmt.Sprintf(`
[vspc]
listen = "127.0.0.1:0"
[policy]
connect_allow = ["127.0.0.0/8"]
[remote]
enabled = true
login_delay = "10ms"
log_dir = %q
%s
[web]
listen = "127.0.0.1:0"
%s

[[user]]
name = "alice"
password = %q
access = [{vm = "*", mode = "rw"}]

[[user]]
name = "bob"
password = %q
access = [{vm = "web-*", mode = "ro"}]

[[user]]
name = "carol"
password = %q
access = [{vm = "db-*", mode = "rw"}]
`, logDir, o.remote, o.web, hashes["alice"], hashes["bob"], hashes["carol"])
	cfg, err := configs.Parse("test.toml", []byte(src))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, src)
	}
	log := devicetest.Logger(t)
	hub, err := remote.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, cfg: cfg, hub: hub, logDir: logDir, cfgText: src, hashes: hashes}
	e.br = bridge.New(cfg, log)
	e.br.SetConsoles(hub)
	e.br.SetTapHistory(int(cfg.Web.WatchScrollback))
	e.srv = vspc.NewServer(vspc.Config{Bridger: e.br, Logger: log, GracePeriod: 5 * time.Second})
	e.web, err = web.New(web.Config{Config: cfg, Consoles: web.HubConsoles(hub), Ports: e.srv.Ports, Devices: e.br.Devices, Taps: e.br, Logger: log, Now: o.now})
	if err != nil {
		t.Fatal(err)
	}
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	vln, wln := listen(), listen()
	if o.sendBuffer > 0 {
		wln = smallSendBuffer{wln, o.sendBuffer}
	}
	e.vspcAddr = vln.Addr().String()
	e.base = "http://" + wln.Addr().String() + "/"
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { e.srv.Serve(ctx, vln) })
	wg.Go(func() { e.web.Serve(ctx, wln) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		e.srv.Close()
		hub.Close()
		e.br.Close()
	})
	return e
}

// smallSendBuffer sets SO_SNDBUF on accepted connections, so that a
// client that stops reading holds the server's writes up soon.
type smallSendBuffer struct {
	net.Listener
	size int
}

func (l smallSendBuffer) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(l.size)
	}
	return c, err
}

// vm connects a simulated ESXi host for a direction-server VM port.
func (e *env) vm(name, uuid, service string) *vspctest.Conn {
	e.t.Helper()
	return e.vmDir(name, uuid, service, vspc.DirServer)
}

// vmDir connects a simulated ESXi host for a VM port of either direction.
func (e *env) vmDir(name, uuid, service string, dir vspc.Direction) *vspctest.Conn {
	e.t.Helper()
	return remotetest.VM(e.t, e.vspcAddr, name, uuid, service, dir)
}

// console waits for the hub's console of name.
func (e *env) console(name string) remote.ConsoleInfo {
	e.t.Helper()
	return remotetest.Console(e.t, e.hub, name)
}

// waitClients waits until the console of VM name has n clients.
func (e *env) waitClients(name string, n int) remote.ConsoleInfo {
	e.t.Helper()
	return remotetest.WaitClients(e.t, e.hub, name, n)
}

// client is a non-browser HTTP client with a cookie jar.
type client struct {
	t      *testing.T
	e      *env
	http   *http.Client
	rcvbuf int // SO_RCVBUF of its WebSocket connections; 0 leaves it
	// onPing is called for each ping its WebSocket connections get (the
	// connection answers it while it reads); nil: none.
	onPing func()
}

func (e *env) client() *client {
	jar, _ := cookiejar.New(nil)
	return &client{t: e.t, e: e, http: &http.Client{Jar: jar, Timeout: 30 * time.Second}}
}

// do sends a request with an optional JSON body and headers, and returns
// the response with its body read.
func (c *client) do(method, path string, body any, hdr map[string]string) (*http.Response, []byte) {
	c.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.e.base+strings.TrimPrefix(path, "/"), r)
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func (c *client) login(user, pw string) {
	c.t.Helper()
	resp, b := c.do("POST", "api/login", map[string]string{"user": user, "password": pw}, nil)
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("login %s: %s %s", user, resp.Status, b)
	}
}

func (c *client) list() web.List {
	c.t.Helper()
	resp, b := c.do("GET", "api/consoles", nil, nil)
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("list: %s %s", resp.Status, b)
	}
	var l web.List
	if err := json.Unmarshal(b, &l); err != nil {
		c.t.Fatal(err)
	}
	return l
}

// entry waits for the list entry of VM vm and returns it.
func (c *client) entry(vm string) web.Entry {
	c.t.Helper()
	var e web.Entry
	testwait.For(c.t, "the list to show "+vm, func() bool {
		for _, x := range c.list().Consoles {
			if x.VM == vm {
				e = x
				return true
			}
		}
		return false
	})
	return e
}

// wsConn is a console WebSocket as a test sees it.
type wsConn struct {
	t *testing.T
	c *websocket.Conn
}

// dial opens path (ws/console/ID?…) with the client's cookies and
// origin ("" for none). It returns the HTTP response when the upgrade is
// refused.
func (c *client) dial(path, origin string) (*wsConn, *http.Response, error) {
	c.t.Helper()
	u, _ := url.Parse(c.e.base)
	h := http.Header{}
	for _, ck := range c.http.Jar.Cookies(u) {
		h.Add("Cookie", ck.Name+"="+ck.Value)
	}
	if origin != "" {
		h.Set("Origin", origin)
	}
	ctx, cancel := context.WithTimeout(c.t.Context(), 10*time.Second)
	defer cancel()
	opts := &websocket.DialOptions{HTTPHeader: h, Subprotocols: []string{"vspc.console.v1"}}
	if c.onPing != nil {
		opts.OnPingReceived = func(context.Context, []byte) bool { c.onPing(); return true }
	}
	if c.rcvbuf > 0 {
		d := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, c.rcvbuf)
			})
			return serr
		}}
		opts.HTTPClient = &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	}
	ws, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(c.e.base, "http")+path, opts)
	if err != nil {
		return nil, resp, err
	}
	ws.SetReadLimit(1 << 20)
	w := &wsConn{t: c.t, c: ws}
	c.t.Cleanup(func() { ws.CloseNow() })
	return w, resp, nil
}

// msg is any control message.
type msg map[string]any

// next reads the next frame: a control message or console bytes.
func (w *wsConn) next() (msg, []byte, error) {
	ctx, cancel := context.WithTimeout(w.t.Context(), 20*time.Second)
	defer cancel()
	typ, b, err := w.c.Read(ctx)
	if err != nil {
		return nil, nil, err
	}
	if typ == websocket.MessageBinary {
		return nil, b, nil
	}
	var m msg
	if err := json.Unmarshal(b, &m); err != nil {
		w.t.Fatalf("bad control message %q: %v", b, err)
	}
	return m, nil, nil
}

// expect reads frames until a control message of type typ, collecting
// console bytes on the way.
func (w *wsConn) expect(typ string) (msg, []byte) {
	w.t.Helper()
	var out []byte
	for {
		m, b, err := w.next()
		if err != nil {
			w.t.Fatalf("waiting for %q: %v (console bytes so far %q)", typ, err, out)
		}
		out = append(out, b...)
		if m != nil && m["type"] == typ {
			return m, out
		}
	}
}

// output reads console bytes until they contain want (control messages
// are skipped).
func (w *wsConn) output(want string) string {
	w.t.Helper()
	var out []byte
	for !bytes.Contains(out, []byte(want)) {
		_, b, err := w.next()
		if err != nil {
			w.t.Fatalf("waiting for %q: %v (got %q)", want, err, out)
		}
		out = append(out, b...)
	}
	return string(out)
}

// closed reads until the server closes and returns the close status.
func (w *wsConn) closed() (websocket.StatusCode, string) {
	w.t.Helper()
	for {
		_, _, err := w.next()
		if err != nil {
			var ce websocket.CloseError
			if ok := asCloseError(err, &ce); ok {
				return ce.Code, ce.Reason
			}
			w.t.Fatalf("read: %v, want a close", err)
		}
	}
}

func (w *wsConn) send(m msg) {
	w.t.Helper()
	b, _ := json.Marshal(m)
	if err := w.c.Write(w.t.Context(), websocket.MessageText, b); err != nil {
		w.t.Fatal(err)
	}
}

func (w *wsConn) input(s string) {
	w.t.Helper()
	if err := w.c.Write(w.t.Context(), websocket.MessageBinary, []byte(s)); err != nil {
		w.t.Fatal(err)
	}
}

// readExactly reads r (a VM, a remote system) until it has got want
// (exactly) or times out.
func readExactly(t *testing.T, r io.Reader, want string) {
	t.Helper()
	remotetest.ReadVM(t, r, []byte(want))
}
