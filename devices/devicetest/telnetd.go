//go:build linux

package devicetest

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// TelnetdEchoScript is the program TelnetdEcho runs for each connection
// instead of login(1). telnetd puts its pty in 7-bit mode (ISTRIP) when
// the client refuses BINARY, so an 8-bit test needs the pty raw again
// after negotiation: the script makes its pty raw, prints "S", waits for
// the three bytes "go!" from the client, makes the pty raw and 8-bit
// again (telnetd has applied the client's BINARY answers by then: they
// were sent before "go!"), prints "R" and echoes everything.
const TelnetdEchoScript = `#!/bin/sh
stty raw -echo
printf S
dd bs=1 count=3 of=/dev/null 2>/dev/null
stty raw -echo -istrip cs8 -parenb -opost
printf R
exec cat
`

// TelnetdEcho starts Debian's telnetd (inetutils-telnetd) behind socat on
// 127.0.0.1, running TelnetdEchoScript for each connection, and returns
// host:port. telnetd negotiates as a real telnet server: it asks for
// terminal type, speed, environment, LINEMODE, ECHO, and for BINARY both
// ways once its pty is raw, and handles CR NUL / CR LF in NVT.
func TelnetdEcho(t testing.TB) (addr string) {
	t.Helper()
	socat := Require(t, "socat")
	telnetd := Require(t, "telnetd")
	script := filepath.Join(t.TempDir(), "echo.sh")
	if err := os.WriteFile(script, []byte(TelnetdEchoScript), 0o700); err != nil {
		t.Fatalf("devicetest: %v", err)
	}
	port := FreePort(t)
	// nofork: the socat child execs telnetd on the TCP socket itself (an
	// inetd-style start; telnetd needs a real socket as stdin). -h: no
	// host banner.
	return launch(t, "telnetd", addrOf(port), listening(port), socat, "-d",
		"TCP-LISTEN:"+strconv.Itoa(port)+",bind=127.0.0.1,reuseaddr,fork",
		"EXEC:"+telnetd+" -h -E "+script+",nofork").Addr
}
