package remote_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/devices/devicetest"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
)

// sshClient is OpenSSH's ssh, key-based and non-interactive (no pty, so
// the session is a clean 8-bit pipe).
type sshClient struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout io.ReadCloser
	stderr *bytes.Buffer
	done   chan error
}

func (h *harness) ssh(t *testing.T, login string, args ...string) *sshClient {
	t.Helper()
	devicetest.Require(t, "ssh")
	_, port, _ := net.SplitHostPort(h.sshAddr)
	argv := []string{"-F", "/dev/null", "-T", "-i", h.keyFile, "-p", port,
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
		"-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
		login + "@127.0.0.1"}
	cmd := exec.Command("ssh", append(argv, args...)...)
	c := &sshClient{cmd: cmd, stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	var err error
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if c.stdout, err = cmd.StdoutPipe(); err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = c.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-c.done
	})
	return c
}

// readN reads exactly n bytes from the client's stdout.
func (c *sshClient) readN(t *testing.T, n int) []byte {
	t.Helper()
	buf := make([]byte, n)
	errc := make(chan error, 1)
	go func() { _, err := io.ReadFull(c.stdout, buf); errc <- err }()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("ssh stdout: %v (stderr %q)", err, c.stderr.String())
		}
	case <-time.After(testwait.Timeout):
		t.Fatalf("ssh stdout: timeout (stderr %q)", c.stderr.String())
	}
	return buf
}

// exit waits for ssh to end and returns its exit code.
func (c *sshClient) exit(t *testing.T) int {
	t.Helper()
	select {
	case err := <-c.done:
		c.done <- err
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(testwait.Timeout):
		t.Fatal("ssh did not exit")
	}
	return -1
}

// allBytes is every byte value, n times over, in a scrambled order.
func allBytes(n int) []byte {
	b := make([]byte, 0, 256*n)
	for i := range 256 * n {
		b = append(b, byte(i*131+i/256))
	}
	return b
}

// TestSSHUserPlusVM: `ssh alice+web-1@bridge` (key-based, no pty) lands
// on the console of web-1; all 256 byte values pass both ways unchanged.
func TestSSHUserPlusVM(t *testing.T) {
	h := newHarness(t, "")
	vm := h.vm("web-1", webUUID, fmt.Sprintf("telnet://127.0.0.1:%d", freePort(t)))
	h.console("web-1")
	c := h.ssh(t, "alice+web-1")
	h.waitClients("web-1", 1)

	up := allBytes(64) // 16 KiB user → VM, including IAC (255), NUL, CR, Ctrl-E
	if _, err := c.stdin.Write(up); err != nil {
		t.Fatal(err)
	}
	readVM(t, vm, up)

	down := allBytes(256) // 64 KiB VM → user
	if _, err := vm.Write(down); err != nil {
		t.Fatal(err)
	}
	if got := c.readN(t, len(down)); !bytes.Equal(got, down) {
		t.Fatalf("ssh got %d bytes that differ from what the VM sent", len(got))
	}
	ci := h.console("web-1")
	if cl := ci.Clients[0]; cl.User != "alice" || cl.Mode != "read-write" || cl.Via != "ssh" {
		t.Fatalf("client %+v", cl)
	}
	c.stdin.Close() // EOF ends the session normally
	if code := c.exit(t); code != 0 {
		t.Fatalf("ssh exit %d, stderr %q", code, c.stderr.String())
	}
	h.waitClients("web-1", 0)
}

// TestSSHCommandPicksConsoleAndMode: `ssh alice@bridge web-1 ro` attaches
// read-only: output arrives, input is not sent to the VM.
func TestSSHCommandPicksConsoleAndMode(t *testing.T) {
	h := newHarness(t, "")
	vm := h.vm("web-1", webUUID, "web-1")
	c := h.ssh(t, "alice", "web-1", "ro")
	ci := h.waitClients("web-1", 1)
	if ci.Clients[0].Mode != "read-only" {
		t.Fatalf("mode %q", ci.Clients[0].Mode)
	}
	c.stdin.Write([]byte("must not reach the VM"))
	vm.Write([]byte("out"))
	if got := c.readN(t, 3); string(got) != "out" {
		t.Fatalf("got %q", got)
	}
	// What a read-only client typed never arrives: the next VM input is
	// from a writer.
	w := h.ssh(t, "dave+web-1")
	h.waitClients("web-1", 2)
	w.stdin.Write([]byte("from dave"))
	readVM(t, vm, []byte("from dave"))
}

// TestSSHDenied: unknown user, a user without rights to the VM, and an
// unknown console are refused.
func TestSSHDenied(t *testing.T) {
	h := newHarness(t, "")
	h.vm("db-1", "42100000-0000-0000-0000-00000000d001", "db-1")
	h.console("db-1")

	c := h.ssh(t, "mallory+db-1") // unknown user: the key is not hers
	if code := c.exit(t); code != 255 || !strings.Contains(c.stderr.String(), "Permission denied") {
		t.Fatalf("unknown user: exit %d, stderr %q", code, c.stderr.String())
	}
	c = h.ssh(t, "dave+db-1") // dave may reach web-* only
	if code := c.exit(t); code != 1 {
		t.Fatalf("no rights: exit %d, stderr %q", code, c.stderr.String())
	}
	if !strings.Contains(c.stderr.String(), `no console "db-1" that you may reach`) {
		t.Fatalf("no rights: stderr %q", c.stderr.String())
	}
	if n := len(h.console("db-1").Clients); n != 0 {
		t.Fatalf("%d clients attached", n)
	}
}
