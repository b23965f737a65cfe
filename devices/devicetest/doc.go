// Package devicetest starts the real peers that device tests run against
// and reads back what they did to a tty.
//
// Launchers (each calls t.Helper, kills its process group in t.Cleanup,
// waits for readiness with a bounded retry, and skips the test when its
// program is missing — or fails it when CI=true, with an install hint):
//
//   - SocatPTY: a socat pty pair, links in t.TempDir().
//   - SocatTCPServer: socat TCP-LISTEN ↔ tty, a Moxa NPort TCP Server
//     stand-in.
//   - Ser2net: ser2net 4.x with a raw ("tcp") or RFC 2217
//     ("telnet(rfc2217)") accepter on a tty.
//   - PyRFC2217Server: pyserial's example RFC 2217 server on loop://,
//     patched to bind 127.0.0.1.
//   - Sredird: sredird behind socat, a quirky RFC 2217 server on a tty.
//   - StartNPort: a simulated Moxa NPort port in TCP Server mode with its
//     command port (package aspp): data listener ↔ a socat pty, command
//     listener applying PORT_INIT/SETBAUD/XONXOFF to the pty's termios,
//     NOTIFY and POLLING on demand, fault injection, a state recorder.
//     Not a process: it runs in the test binary.
//
// The Start… variants return a *Peer that tests can Stop and Restart (same
// port) to play a device that goes away and comes back.
//
// Network peers listen on 127.0.0.1 on a port picked with FreePort;
// readiness is read from /proc/net/tcp rather than probed by connecting,
// because a probe connection has side effects on these peers.
//
// ReadTTY and TTY read a tty's termios; Stty runs stty -a -F on it (speed via TCGETS2, CSTOPB, CSIZE,
// PARENB, flow flags). A Linux pty forces 8 data bits and no parity, so
// tests can check speed and stop bits on a pty, not data bits or parity.
//
// The launchers and termios helpers are Linux-only.
package devicetest
