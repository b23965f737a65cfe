//go:build linux

package rfc2217_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
)

// Real peers (device-peers.md §2): socat, ser2net, pyserial, sredird.
// Each helper skips the test when the program is missing, and fails it
// when CI=true. Everything binds 127.0.0.1 and lives in t.TempDir().

func requireProgram(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required under CI: %v", name, err)
		}
		t.Skipf("%s not installed: %v", name, err)
	}
	return p
}

// requirePyserial returns Debian's python3 with pyserial (the pyenv python3
// on PATH has no pyserial).
func requirePyserial(t *testing.T) string {
	t.Helper()
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import serial.rfc2217").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s with pyserial is required under CI: %v", py, err)
		}
		t.Skipf("%s with pyserial not available: %v", py, err)
	}
	return py
}

// peerOutput collects a child's output for failure reports.
type peerOutput struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (o *peerOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(p)
}

func (o *peerOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// startPeer starts a child in its own process group and kills the group
// (SIGKILL: sredird ignores SIGTERM) at cleanup.
func startPeer(t *testing.T, name string, args ...string) *peerOutput {
	t.Helper()
	out := &peerOutput{}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Dir = t.TempDir()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(name), out)
		}
	})
	return out
}

// socatPair starts a socat pty pair and returns the two tty paths.
func socatPair(t *testing.T) (a, b string) {
	t.Helper()
	socat := requireProgram(t, "socat")
	dir := t.TempDir()
	a, b = filepath.Join(dir, "ttyA"), filepath.Join(dir, "ttyB")
	out := startPeer(t, socat, "-d", "-d", "pty,raw,echo=0,link="+a, "pty,raw,echo=0,link="+b)
	testwait.For(t, "socat's ptys", func() bool {
		_, ea := os.Stat(a)
		_, eb := os.Stat(b)
		return ea == nil && eb == nil && strings.Contains(out.String(), "starting data transfer loop")
	})
	return a, b
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// listening reports whether something listens on 127.0.0.1:port, from
// /proc/net/tcp, without connecting (a probe connection would be a client
// to ser2net or pyserial's one-client server).
func listening(port int) bool {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return false
	}
	defer f.Close()
	want := fmt.Sprintf("0100007F:%04X", port)
	want0 := fmt.Sprintf("00000000:%04X", port)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 3 && (fields[1] == want || fields[1] == want0) && fields[3] == "0A" {
			return true
		}
	}
	return false
}

// startSer2net serves tty as an RFC 2217 port on 127.0.0.1 and returns
// the address.
func startSer2net(t *testing.T, tty string) string {
	t.Helper()
	ser2net := requireProgram(t, "ser2net")
	port := freePort(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "ser2net.yaml")
	yaml := fmt.Sprintf(`%%YAML 1.1
---
connection: &rfc
    accepter: telnet(rfc2217),tcp,127.0.0.1,%d
    enable: on
    options:
      kickolduser: true
    connector: serialdev,%s,9600n81,local
`, port, tty)
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	startPeer(t, ser2net, "-n", "-d", "-u", "-c", cfg, "-P", filepath.Join(dir, "ser2net.pid"))
	testwait.For(t, "ser2net to listen", func() bool { return listening(port) })
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// startPyserialServer runs pyserial's example rfc2217_server.py, patched
// to bind 127.0.0.1, on loop:// (CTS follows RTS, DSR follows DTR, CD on;
// it polls the lines every second and notifies changes).
func startPyserialServer(t *testing.T) string {
	t.Helper()
	py := requirePyserial(t)
	src, err := os.ReadFile("/usr/share/doc/python3-serial/examples/rfc2217_server.py")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	patched := bytes.ReplaceAll(src, []byte("srv.bind(('', args.localport))"), []byte("srv.bind(('127.0.0.1', args.localport))"))
	if bytes.Equal(patched, src) {
		t.Fatal("rfc2217_server.py: bind line not found; cannot restrict it to loopback")
	}
	script := filepath.Join(t.TempDir(), "rfc2217_server_lo.py")
	if err := os.WriteFile(script, patched, 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	startPeer(t, py, script, "-p", strconv.Itoa(port), "-v", "-v", "loop://")
	testwait.For(t, "pyserial server to listen", func() bool { return listening(port) })
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// startSredird runs sredird on tty behind socat's TCP-LISTEN (inetd style).
func startSredird(t *testing.T, tty string) string {
	t.Helper()
	sredird := requireProgram(t, "sredird")
	socat := requireProgram(t, "socat")
	port := freePort(t)
	lock := filepath.Join(t.TempDir(), "LCK..tty")
	startPeer(t, socat, fmt.Sprintf("TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork", port),
		fmt.Sprintf("EXEC:%s 7 %s %s 0", sredird, tty, lock))
	testwait.For(t, "socat for sredird to listen", func() bool { return listening(port) })
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// ttyTermios reads the termios of tty (TCGETS2: real ispeed/ospeed). The
// settings belong to the tty, so opening it again shows what another
// process (ser2net, our test server) set.
func ttyTermios(t *testing.T, tty string) *unix.Termios {
	t.Helper()
	fd, err := unix.Open(tty, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	tio, err := unix.IoctlGetTermios(fd, unix.TCGETS2)
	if err != nil {
		t.Fatal(err)
	}
	return tio
}

// openRaw opens a pty end for data, raw, through Go's poller so reads
// can time out.
func openRaw(t *testing.T, tty string) *os.File {
	t.Helper()
	f, err := os.OpenFile(tty, os.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
