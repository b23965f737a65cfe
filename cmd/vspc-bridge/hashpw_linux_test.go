//go:build linux

package main

import (
	"bytes"
	"os"
	"os/exec"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/vspc-bridge/vspc-bridge/devices/devicetest"
)

// TestHashPasswordTerminal: on a terminal the password is asked twice and
// not echoed. Python's pty module (python3, a test peer) is the terminal.
func TestHashPasswordTerminal(t *testing.T) {
	py := devicetest.Require(t, "python3")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	script := `
import os, pty, select, sys, termios, time
pid, fd = pty.fork()
if pid == 0:
    os.environ["VSPC_BRIDGE_TEST_MAIN"] = "1"
    os.execv(sys.argv[1], [sys.argv[1], "hash-password", "-cost", "4"])
out = b""
def read_until(want, t=10):
    global out
    end = time.time() + t
    while want not in out and time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                d = os.read(fd, 1024)
            except OSError:
                return
            if not d:
                return
            out += d
# Type once the terminal says echo is off (the master shows the slave's
# termios): the command turns it off before it prints the prompt.
def type_line(text):
    end = time.time() + 10
    while termios.tcgetattr(fd)[3] & termios.ECHO and time.time() < end:
        time.sleep(0.01)
    os.write(fd, text.encode() + b"\r")
read_until(b"Password: ")
type_line(sys.argv[2])
read_until(b"Again: ")
type_line(sys.argv[3])
read_until(b"$2a$04$")
read_until(b"\n", 2) if b"$2a$04$" in out else None
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.exit(os.waitstatus_to_exitcode(status))
`
	for _, c := range []struct {
		again string
		ok    bool
	}{{"hunter2", true}, {"hunter3", false}} {
		out, err := exec.Command(py, "-c", script, self, "hunter2", c.again).CombinedOutput()
		if bytes.Contains(out, []byte("hunter")) {
			t.Fatalf("the password was echoed:\n%s", out)
		}
		if !c.ok {
			if err == nil || !bytes.Contains(out, []byte("the two passwords differ")) {
				t.Fatalf("different passwords: err %v, output:\n%s", err, out)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
		i := bytes.Index(out, []byte("$2a$04$"))
		h := bytes.TrimSpace(out[i:])
		if err := bcrypt.CompareHashAndPassword(h, []byte("hunter2")); err != nil {
			t.Fatalf("hash %q: %v", h, err)
		}
	}
}
