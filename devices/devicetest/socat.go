//go:build linux

package devicetest

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// SocatPTY starts a socat pty pair and returns the paths of its two ends
// (symlinks in t.TempDir() to /dev/pts/N). Bytes written to one end come
// out of the other unchanged. Termios belongs to each tty: what one side
// sets on a is visible to anyone who opens a again (see ReadTTY), not on
// b. socat is killed when the test ends.
func SocatPTY(t testing.TB) (a, b string) {
	t.Helper()
	p := StartSocatPTY(t)
	return p.A, p.B
}

// PTYPair is a running socat pty pair.
type PTYPair struct {
	*Peer
	A, B string
}

// StartSocatPTY is SocatPTY returning the peer, for tests that kill it.
// After Restart the links point to new ptys.
func StartSocatPTY(t testing.TB) *PTYPair {
	t.Helper()
	socat := Require(t, "socat")
	dir := t.TempDir()
	a, b := filepath.Join(dir, "ttyA"), filepath.Join(dir, "ttyB")
	// A killed socat leaves its links behind; remove them so readiness
	// means the new ones.
	rmLinks := func() { os.Remove(a); os.Remove(b) }
	p := launchPrep(t, "socat pty pair", "", fileExists(a, b), rmLinks, socat, "-d", "-d",
		"pty,raw,echo=0,link="+a, "pty,raw,echo=0,link="+b)
	return &PTYPair{Peer: p, A: a, B: b}
}

// SocatTCPServer starts a stand-in for a Moxa NPort port in TCP Server
// mode: socat listening on 127.0.0.1 (a port picked here) and passing raw
// bytes to and from the tty at ptyPath. Each client gets its own socat
// child on the same tty (like an NPort with several connections, the
// device's output is split between clients, not copied). It returns
// host:port.
func SocatTCPServer(t testing.TB, ptyPath string) (addr string) {
	t.Helper()
	return StartSocatTCPServer(t, ptyPath).Addr
}

// StartSocatTCPServer is SocatTCPServer returning the peer, for tests
// that kill and restart it (the port stays the same).
func StartSocatTCPServer(t testing.TB, ptyPath string) *Peer {
	t.Helper()
	socat := Require(t, "socat")
	port := FreePort(t)
	return launch(t, "socat tcp server", addrOf(port), listening(port), socat, "-d",
		"TCP-LISTEN:"+strconv.Itoa(port)+",bind=127.0.0.1,reuseaddr,fork",
		"FILE:"+ptyPath+",rawer")
}
