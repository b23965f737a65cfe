// Package devices opens the serial equipment a VM's serial port is bridged
// to and presents each kind behind one small interface, Device: a byte
// stream (io.ReadWriteCloser) plus RFC 2217 line control (rfc2217.Port).
// It implements item 2 ("Device kinds") and the device side of item 4
// ("Faults") of issue 4.
//
// Open takes a target.Target: a route's device or a VM's service URI,
// parsed by package target, the one grammar of device URIs (tcp://,
// nport://, telnet://, rfc2217://, serial:// and plain /dev paths), which
// the config checker uses too.
//
// # Kinds and what their line control does
//
// tcp (and nport with cmd=none): line settings cannot travel on a raw
// data port, so the settings in effect are whatever the device server's
// console says. Line control is a FixedLine: the route's expectation
// (Options.Initial, or the URI query) is recorded; SetSettings answers with
// it and never fails. Options.Initial must therefore be the configured
// settings, not the guest's last request (that is Options.Guest, which
// these kinds ignore). A request for other settings is logged once per
// FixedLine at warn level (later ones at debug) and kept for status: the
// Device has a Mismatch() string method, for a consumer-side interface{
// Mismatch() string }. A caller that reconnects passes one FixedLine to
// every Open (Options.Line) and answers with it while the device is away,
// so the answer and the mismatch do not depend on the connection (the
// bridge does). A field the settings leave unset is unknown: it is left
// unset in the answer and is never a mismatch. SetDTR, SetRTS, SetBreak
// and ModemState return errors wrapping rfc2217.ErrNotSupported. Purge is
// a no-op that succeeds: the device server's buffers are out of reach,
// the Device keeps none of its own, and guests purge on every open.
//
// nport: a Moxa NPort serial port in TCP Server mode with its command port
// (package aspp, the protocol of Moxa's Real COM driver; the NPort's
// "Allow driver control"). Open connects the command socket (3 s at
// most), then the data socket, and returns: data flows from then on, and
// the settings known at open (Options.Guest over Options.Initial) go out
// beside it as PORT_INIT (+ SETBAUD for a rate outside the index table, +
// XONXOFF for software flow control) and TX_FIFO, as Moxa's driver sends
// them. Port calls wait for that, then send one command at a time and wait
// for its answer at most Options.CommandTimeout (2 s): the guest's
// settings, DTR/RTS (LINECTRL), BREAK, PURGE (FLUSH) are answered with
// what the NPort accepted; a refused PORT_INIT or SETBAUD leaves the old
// settings; a command not answered in time is assumed taken. Either is
// logged (once at warn) and kept for Mismatch until a later request is
// taken in full. The NPort's keep-alive polls are answered from the
// command reader; its NOTIFY frames update ModemState (CTS, DSR, RI, DCD;
// all down until it reported any) and collect line events for LineState
// (parity, framing, overrun, BREAK; cleared by each call). If the NPort
// ends the command session the data connection is closed too, as Moxa's
// daemon does: the owner reconnects both and applies the settings again.
// A command port that does not connect (refused: "Allow driver control"
// is off) is warned about once per Options.Line and leaves the FixedLine
// of tcp. IPv6: the 16-byte exchange of Moxa's daemon precedes the first
// command.
//
// telnet: 8-bit clean where the remote agrees. At connect we offer and
// ask for BINARY both ways (RFC 856) and SUPPRESS-GO-AHEAD both ways,
// accept the remote's own requests for them and refuse every other option
// (RFC 1143, so negotiation never loops). Each direction follows its own
// BINARY state: in BINARY only 255 is doubled; in NVT (a remote that
// refuses BINARY, or Debian's telnetd, which sends NVT while its pty
// post-processes output) a bare CR also travels as CR NUL, both ways, so
// every byte value round-trips in either mode and none of the remote's
// protocol bytes reach Read. A Write holding a CR before the remote has
// answered our WILL BINARY waits for the answer (at most 2 s, then NVT);
// other data never waits. One writer goroutine owns the write side; the
// reader queues its replies for it (bounded), so a slow remote never
// blocks Read behind a Write. Line control as for tcp.
//
// rfc2217: wraps rfc2217.Client (NewClient on the dialed connection in
// Background mode: Open returns once connected, and the negotiation and
// Options.Initial go on beside the data, a CR waiting only for the BINARY
// answer); the guest's settings and DTR/RTS/BREAK/purge are forwarded live
// (after the initial settings) and ModemState reports the server's last
// NOTIFY-MODEMSTATE (ErrNotSupported from a server that sends none).
// Acknowledgements are awaited for at most the Client's AckTimeout and
// never hold up data. LineControl reports whether the server agreed to
// COM-PORT-OPTION; the device has a Client() *rfc2217.Client method for
// reports (the server's signature).
//
// serial: a local tty through go.bug.st/serial v1.8.0, with the settings
// applied. Settings are read back from the tty (TCGETS2), so SetSettings
// reports what is really in effect (a pty forces 8 data bits and no
// parity). go.bug.st/serial has no flow control or BREAK on/off call, so
// those go through golang.org/x/sys/unix on a second descriptor of the
// same tty; writes use that descriptor too, through the runtime poller, so
// a Write stalled by flow control is unblocked by Close. Modem lines come
// from GetModemStatusBits; where the ioctls fail (ptys) DTR, RTS and
// ModemState return ErrNotSupported instead of failing the device.
// ModemState has no delta bits: callers that notify compute changes. A
// value the driver rejects fails SetSettings with ErrBadSetting, and the
// settings returned are still the truth.
// STOPSIZE 1.5 is taken as CSTOPB with 5 data bits (a 16550 then sends 1.5
// stop bits); with more data bits the stop bits are left as they are and
// the value in effect is reported.
//
// # Errors and faults
//
// Open fails fast with an error naming the kind and address; retrying with
// backoff is the bridge's job. Read returns io.EOF (or an error naming the
// device) when the device goes away; a peer's reset wraps io.EOF too, as
// the same event reads as a plain end when a Write took the reset first.
// After Close, errors wrap ErrClosed (which also matches net.ErrClosed). go.bug.st/serial quirks are
// normalised here: its (0, nil) read timeouts never surface, and its
// PortError (which has no Unwrap) becomes io.EOF when the tty hung up or a
// wrapped error naming the device.
//
// # Protocol flow (telnet kind)
//
//	open ──WILL/DO BINARY, WILL/DO SGA──► writer ──► remote
//	remote ──IAC DO/WILL x──► Read: decoder ──► Options.Receive ──► answer queued ──► writer ──► remote
//	remote ──data (IAC IAC; CR NUL in NVT)──► Read: decoder ──► unescaped in place ──► caller
//	caller ──Write(p)──► AppendData (BINARY) or AppendText (NVT: CR → CR NUL) ──► writer ──► remote
//
// Tests run against real peers started by package devicetest: socat pty
// pairs, socat TCP-LISTEN as an NPort stand-in, ser2net raw and RFC 2217
// accepters, pyserial's RFC 2217 server on loop://, Debian's telnetd
// under socat, ser2net's telnet accepter, and an in-test telnet server.
package devices
