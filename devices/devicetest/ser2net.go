//go:build linux

package devicetest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Ser2net starts ser2net (4.x, YAML configuration) with one connection
// serving the tty at ptyPath on 127.0.0.1 and returns host:port.
//
// accepter is the gensio stack in front of TCP: "tcp" for a raw port (a
// Moxa NPort TCP Server look-alike) or "telnet(rfc2217)" for an RFC 2217
// access server. options are extra lines for the connection's options
// block, such as "max-connections: 4"; "kickolduser: true" is always set.
// The connector is serialdev at 9600n81, local (no modem lines: ptys have
// none).
func Ser2net(t testing.TB, accepter, ptyPath string, options ...string) (addr string) {
	t.Helper()
	return StartSer2net(t, accepter, ptyPath, options...).Addr
}

// StartSer2net is Ser2net returning the peer, for tests that kill and
// restart it (the port stays the same).
func StartSer2net(t testing.TB, accepter, ptyPath string, options ...string) *Peer {
	t.Helper()
	bin := Require(t, "ser2net")
	port := FreePort(t)
	stack := strings.TrimSuffix(accepter, ",tcp")
	if stack == "tcp" {
		stack = ""
	} else {
		stack += ","
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%%YAML 1.1\n---\nconnection: &dev\n")
	fmt.Fprintf(&b, "    accepter: %stcp,127.0.0.1,%d\n", stack, port)
	fmt.Fprintf(&b, "    enable: on\n    options:\n      kickolduser: true\n")
	for _, o := range options {
		fmt.Fprintf(&b, "      %s\n", o)
	}
	fmt.Fprintf(&b, "    connector: serialdev,%s,9600n81,local\n", ptyPath)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "ser2net.yaml")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
		t.Fatalf("devicetest: %v", err)
	}
	// -n foreground, -d debug output, -u no UUCP lock files.
	return launch(t, "ser2net "+accepter, addrOf(port), listening(port),
		bin, "-n", "-d", "-u", "-c", cfg, "-P", filepath.Join(dir, "ser2net.pid"))
}

// Sredird starts sredird (RFC 2217 on stdin/stdout) behind socat, serving
// the tty at ptyPath on 127.0.0.1, and returns host:port. sredird is a
// deliberately quirky peer: 8-byte SET-BAUDRATE replies, wrong SET-CONTROL
// acks, NOTIFY-MODEMSTATE noise on ptys.
func Sredird(t testing.TB, ptyPath string) (addr string) {
	t.Helper()
	socat := Require(t, "socat")
	sredird := Require(t, "sredird")
	port := FreePort(t)
	lock := filepath.Join(t.TempDir(), "LCK..tty")
	// sredird <loglevel> <device> <lockfile> [pollms]; 0 = no modem polling.
	exe := fmt.Sprintf("EXEC:%s 7 %s %s 0", sredird, ptyPath, lock)
	return launch(t, "sredird", addrOf(port), listening(port), socat, "-d",
		"TCP-LISTEN:"+strconv.Itoa(port)+",bind=127.0.0.1,reuseaddr,fork", exe).Addr
}
