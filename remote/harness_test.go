package remote_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
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

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/crypto/ssh"

	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/devices/devicetest"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/remote"
	"github.com/vspc-bridge/vspc-bridge/remote/remotetest"
	"github.com/vspc-bridge/vspc-bridge/vspc"
	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
)

// Test users: alice may write to every console, bob may only watch web-*,
// carol has rights to db-* only, dave logs in by SSH key only.
const (
	alicePW = "alice-secret"
	bobPW   = "bob-secret"
	carolPW = "carol-secret"
)

// bridger opens every VM port through the hub, as the bridge does for a
// direction-server port without a [[route]].
type bridger struct{ h *remote.Hub }

func (b bridger) Open(ctx context.Context, req vspc.Request, vm vspc.Sink) (vspc.Backend, error) {
	return b.h.Open(ctx, req, vm)
}

// clock is the hub's clock in tests: the wall clock, moved forward by
// advance (login windows pass without waiting for them).
type clock struct {
	mu   sync.Mutex
	skew time.Duration
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.skew)
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.skew += d
}

type harness struct {
	t          testing.TB
	clock      *clock
	cfg        *configs.Config
	hub        *remote.Hub
	srv        *vspc.Server
	vspcAddr   string
	telnetAddr string
	sshAddr    string
	keyFile    string // dave's (and alice's) SSH private key
	dir        string
}

func hash(t testing.TB, pw string) string {
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// newHarness starts a vspc server whose direction-server ports go to a
// hub, with the telnet and SSH front doors on 127.0.0.1. extra is TOML
// added to the [remote] table.
func newHarness(t *testing.T, extra string) *harness {
	t.Helper()
	return newHarnessGrace(t, extra, 5*time.Second)
}

// newHarnessOpts is newHarness with options for the hub.
func newHarnessOpts(t *testing.T, extra string, opts ...remote.Option) *harness {
	t.Helper()
	return newHarnessGrace(t, extra, 5*time.Second, opts...)
}

// newHarnessGrace is newHarness with the vspc server's grace period.
func newHarnessGrace(t testing.TB, extra string, grace time.Duration, opts ...remote.Option) *harness {
	t.Helper()
	dir := t.TempDir()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "test key")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	authKey := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))
	toml := fmt.Sprintf(`
[vspc]
listen = "127.0.0.1:0"
[remote]
enabled = true
ssh_host_keys = [%q]
login_delay = "10ms"
%s

[[user]]
name = "alice"
password = %q
ssh_keys = [%q]
access = [{vm = "*", mode = "rw"}]

[[user]]
name = "bob"
password = %q
access = [{vm = "web-*", mode = "ro"}]

[[user]]
name = "carol"
password = %q
access = [{vm = "db-*", mode = "rw"}]

[[user]]
name = "dave"
ssh_keys = [%q]
access = [{vm = "web-*", mode = "rw"}]
`, filepath.Join(dir, "hostkeys", "ssh_host_ed25519_key"), extra, hash(t, alicePW), authKey, hash(t, bobPW), hash(t, carolPW), authKey)
	cfg, err := configs.Parse("test.toml", []byte(toml))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, toml)
	}
	log := devicetest.Logger(t)
	clk := &clock{}
	hub, err := remote.New(cfg, log, append([]remote.Option{remote.WithClock(clk.now)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, clock: clk, cfg: cfg, hub: hub, keyFile: keyFile, dir: dir}
	h.srv = vspc.NewServer(vspc.Config{Bridger: bridger{hub}, Logger: log, GracePeriod: grace})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	vln, tln, sln := listen(), listen(), listen()
	h.vspcAddr, h.telnetAddr, h.sshAddr = vln.Addr().String(), tln.Addr().String(), sln.Addr().String()
	wg.Go(func() { h.srv.Serve(ctx, vln) })
	wg.Go(func() { hub.ServeTelnet(ctx, tln) })
	wg.Go(func() { hub.ServeSSH(ctx, sln) })
	t.Cleanup(func() {
		cancel()
		h.srv.Close()
		hub.Close()
		wg.Wait()
	})
	return h
}

// vm connects a simulated ESXi host for a direction-server VM port.
func (h *harness) vm(name, uuid, service string) *vspctest.Conn {
	h.t.Helper()
	return remotetest.VM(h.t, h.vspcAddr, name, uuid, service, vspc.DirServer)
}

// console waits for the hub's console of VM name and returns its info.
func (h *harness) console(name string) remote.ConsoleInfo {
	h.t.Helper()
	return remotetest.Console(h.t, h.hub, name)
}

// waitClients waits until the console of VM name has n clients.
func (h *harness) waitClients(name string, n int) remote.ConsoleInfo {
	h.t.Helper()
	return remotetest.WaitClients(h.t, h.hub, name, n)
}

// hostPort returns the host:port of a "telnet://host:port" listen URI.
func hostPort(t testing.TB, uri string) string {
	t.Helper()
	_, hp, ok := strings.Cut(uri, "://")
	if !ok {
		t.Fatalf("listen URI %q", uri)
	}
	return hp
}

// readVM reads from the VM until it has got want (exactly, as a prefix
// of what arrives) or times out.
func readVM(t testing.TB, vm io.Reader, want []byte) {
	t.Helper()
	remotetest.ReadVM(t, vm, want)
}

// tmux drives an interactive program (the telnet client) in a detached
// tmux session on its own server socket.
type tmux struct {
	t    testing.TB
	sock string
}

func startTmux(t testing.TB, argv ...string) *tmux {
	t.Helper()
	devicetest.Require(t, "tmux")
	devicetest.Require(t, argv[0])
	m := &tmux{t: t, sock: filepath.Join(t.TempDir(), "tmux.sock")}
	args := append([]string{"-f", "/dev/null", "new-session", "-d", "-s", "s", "-x", "200", "-y", "50"}, argv...)
	// Keep the pane (and its last screen) after the client exits.
	m.run(append(args, ";", "set-option", "-g", "remain-on-exit", "on")...)
	t.Cleanup(func() { exec.Command("tmux", "-S", m.sock, "kill-server").Run() })
	return m
}

func (m *tmux) run(args ...string) string {
	m.t.Helper()
	cmd := exec.Command("tmux", append([]string{"-S", m.sock}, args...)...)
	cmd.Env = append(os.Environ(), "TMUX=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		m.t.Fatalf("tmux %v: %v: %s", args, err, out)
	}
	return string(out)
}

// typeText types s literally; typeEnter presses Enter.
func (m *tmux) typeText(s string) { m.run("send-keys", "-t", "s", "-l", s) }
func (m *tmux) typeEnter()        { m.run("send-keys", "-t", "s", "Enter") }
func (m *tmux) typeKey(k string)  { m.run("send-keys", "-t", "s", k) }

func (m *tmux) screen() string { return m.run("capture-pane", "-p", "-t", "s", "-S", "-200") }

// waitFor waits until the screen shows s.
func (m *tmux) waitFor(s string) string {
	m.t.Helper()
	var scr string
	want := strings.TrimRight(s, " ") // capture-pane drops trailing spaces
	if !testwait.Until(m.t, testwait.Timeout, func() bool {
		scr = m.screen()
		return strings.Contains(scr, want)
	}) {
		m.t.Fatalf("screen never showed %q:\n%s", s, scr)
	}
	return scr
}

// freePort returns a port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int { return devicetest.FreePort(t) }

func errorAs(err error, target any) bool { return errors.As(err, target) }
