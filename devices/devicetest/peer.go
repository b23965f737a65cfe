//go:build linux

package devicetest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
)

// InstallHint says how to get the peers these launchers need.
const InstallHint = "run scripts/install-test-peers.sh (Debian: apt-get install socat ser2net python3-serial sredird inetutils-telnet inetutils-telnetd)"

// StartTimeout bounds how long a launcher waits for its peer to be ready:
// testwait's bound, since a peer that starts slowly on busy cores is not
// a failure, and one that never starts is caught all the same.
const StartTimeout = testwait.Timeout

// CI reports whether the environment says we run under CI (CI=true), where
// a missing peer is a failure, not a skip.
func CI() bool { return os.Getenv("CI") == "true" }

// Require finds the program name (on PATH, or in /usr/sbin and /sbin, where
// Debian puts ser2net and sredird). When it is missing the test is skipped,
// or fails under CI=true.
func Require(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if !strings.Contains(name, "/") {
		for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin"} {
			p := dir + "/" + name
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
				return p
			}
		}
	}
	missing(t, name+" not found")
	return ""
}

func missing(t testing.TB, what string) {
	t.Helper()
	if CI() {
		t.Fatalf("devicetest: %s (CI=true, so this is a failure): %s", what, InstallHint)
	}
	t.Skipf("devicetest: %s; skipping: %s", what, InstallHint)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// (Peers like socat and ser2net cannot report a port they picked.)
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("devicetest: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatalf("devicetest: %v", err)
	}
	return port
}

// Peer is a peer process started by a launcher. Its process group is
// killed when the test ends.
type Peer struct {
	Name string
	Addr string // 127.0.0.1:port for network peers, "" otherwise

	t     testing.TB
	argv  []string
	ready func(ctx context.Context) error // nil: ready when started
	prep  func()                          // nil, or run before each start

	mu   sync.Mutex
	cmd  *exec.Cmd     // guarded by mu: the running process, nil when stopped
	done chan struct{} // guarded by mu: closed when cmd has been waited for
	out  *lockedBuffer
}

// start runs the peer and waits until ready says so (bounded by
// StartTimeout). It fails the test with the peer's output otherwise.
func (p *Peer) start() {
	p.t.Helper()
	if p.prep != nil {
		p.prep()
	}
	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	// Own process group (Stop kills socat's forked children too), and
	// SIGKILL if the test binary dies without running its cleanups
	// (a -timeout panic).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Stdout = p.out
	cmd.Stderr = p.out
	cmd.Dir = p.t.TempDir()
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("devicetest: start %s: %v", p.Name, err)
	}
	done := make(chan struct{})
	go func() { // owner: Stop waits for done
		_ = cmd.Wait()
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	if p.ready == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	var err error
	exited := false
	testwait.Until(p.t, StartTimeout, func() bool {
		select {
		case <-done:
			exited = true
			return true
		default:
		}
		err = p.ready(ctx)
		return err == nil
	})
	switch {
	case exited:
		p.t.Fatalf("devicetest: %s exited before it was ready (%v); output:\n%s", p.Name, cmd.ProcessState, p.out.String())
	case err != nil:
		p.Stop()
		p.t.Fatalf("devicetest: %s not ready after %v: %v; output:\n%s", p.Name, StartTimeout, err, p.out.String())
	}
}

// Stop kills the peer's process group (SIGKILL: sredird ignores SIGTERM)
// and waits for the process. It is idempotent.
func (p *Peer) Stop() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
}

// Restart starts the peer again with the same arguments (same port, same
// paths) and waits until it is ready.
func (p *Peer) Restart(t testing.TB) {
	t.Helper()
	p.Stop()
	p.start()
}

// Output returns what the peer printed so far.
func (p *Peer) Output() string { return p.out.String() }

func launch(t testing.TB, name, addr string, ready func(ctx context.Context) error, argv ...string) *Peer {
	t.Helper()
	return launchPrep(t, name, addr, ready, nil, argv...)
}

func launchPrep(t testing.TB, name, addr string, ready func(ctx context.Context) error, prep func(), argv ...string) *Peer {
	t.Helper()
	p := &Peer{Name: name, Addr: addr, t: t, argv: argv, ready: ready, prep: prep, out: &lockedBuffer{}}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("devicetest: %s output:\n%s", name, p.out.String())
		}
	})
	p.start()
	return p
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer // guarded by mu
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 1<<20 { // keep the first MiB; peers in debug mode are chatty
		return len(p), nil
	}
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// listening returns a ready function that succeeds once a socket listens
// on 127.0.0.1:port. It reads /proc/net/tcp instead of connecting, because
// a probe connection has side effects on these peers (socat forks and
// opens the tty, ser2net opens the device and may kick the real client).
func listening(port int) func(context.Context) error {
	return func(context.Context) error {
		ok, err := isListening(port)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("nothing listens on 127.0.0.1:%d yet", port)
		}
		return nil
	}
}

func isListening(port int) (bool, error) {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return false, err
	}
	defer f.Close()
	return scanListen(f, fmt.Sprintf("0100007F:%04X", port))
}

// scanListen looks for a LISTEN (state 0A) socket with local address want
// in /proc/net/tcp format.
func scanListen(r io.Reader, want string) (bool, error) {
	s := bufio.NewScanner(r)
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) > 3 && f[1] == want && f[3] == "0A" {
			return true, nil
		}
	}
	return false, s.Err()
}

// fileExists returns a ready function that succeeds once every path
// exists.
func fileExists(paths ...string) func(context.Context) error {
	return func(context.Context) error {
		for _, p := range paths {
			if _, err := os.Stat(p); err != nil {
				return err
			}
		}
		return nil
	}
}

func addrOf(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }
