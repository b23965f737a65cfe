//go:build linux

package devicetest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Python is Debian's interpreter, which has python3-serial; the python3
// first on PATH may be a pyenv shim without it.
const Python = "/usr/bin/python3"

const pyExample = "/usr/share/doc/python3-serial/examples/rfc2217_server.py"

// PyRFC2217Server starts pyserial's example RFC 2217 server
// (rfc2217_server.py from python3-serial, patched to bind 127.0.0.1) on
// loop:// and returns host:port. Data written comes back; CTS follows
// RTS, DSR follows DTR, CD is on, RI off; the server polls the lines once
// a second and sends NOTIFY-MODEMSTATE. One client at a time.
func PyRFC2217Server(t testing.TB) (addr string) {
	t.Helper()
	if _, err := os.Stat(Python); err != nil {
		missing(t, Python+" not found")
	}
	if out, err := exec.Command(Python, "-c", "import serial.rfc2217").CombinedOutput(); err != nil {
		missing(t, "python3-serial not importable by "+Python+": "+strings.TrimSpace(string(out)))
	}
	src, err := os.ReadFile(pyExample)
	if err != nil {
		missing(t, "pyserial example server: "+err.Error())
	}
	const bindAll = "srv.bind(('', args.localport))"
	if !strings.Contains(string(src), bindAll) {
		t.Fatalf("devicetest: %s no longer contains %q; update the loopback patch", pyExample, bindAll)
	}
	patched := strings.Replace(string(src), bindAll, "srv.bind(('127.0.0.1', args.localport))", 1)
	script := filepath.Join(t.TempDir(), "rfc2217_server_lo.py")
	if err := os.WriteFile(script, []byte(patched), 0o600); err != nil {
		t.Fatalf("devicetest: %v", err)
	}
	port := FreePort(t)
	return launch(t, "pyserial rfc2217_server", addrOf(port), listening(port),
		Python, "-u", script, "-p", strconv.Itoa(port), "-v", "-v", "loop://").Addr
}
