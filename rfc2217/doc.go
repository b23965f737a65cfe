// Package rfc2217 implements RFC 2217, the Telnet Com Port Control Option
// (COM-PORT-OPTION, telnet option 44), in both roles:
//
//   - a codec without I/O: Parse and AppendMessage for every command, client
//     codes 0–12 and access-server codes 100–112 (message.go, codes.go);
//   - Client, a session toward an access server (ser2net, a Moxa NPort in
//     RFC 2217 mode, pyserial's PortManager, sredird) that offers the remote
//     UART as a Port plus an io.ReadWriter for the data (client.go: the
//     session I/O; requests.go: Port calls and their acknowledgements);
//   - AccessServer, the transport-agnostic state machine of the server role
//     (what the bridge plays toward ESXi VMs): it takes one client
//     subnegotiation, drives a Port and returns the reply (server.go).
//
// Port is the line-control interface every device offers; Settings are the
// line settings with zero meaning "unset / leave as is".
//
// The telnet layer (IAC escaping, option negotiation) is package
// telnet (top level: RFC 2217 is a telnet option). 255 inside a subnegotiation value (a baud rate of 65535,
// a mask of 255) is sent as IAC IAC, like data.
//
// # Protocol flow
//
// Negotiation (RFC 2217 §2: the client sends WILL 44, the server DO 44;
// real servers also start it themselves):
//
//	client                                   access server
//	  WILL COM-PORT ───────────────────────►                (we always send it)
//	                ◄─────────────────────── DO COM-PORT     (ser2net, sredird send it unasked)
//	                ◄─────────────────────── WILL COM-PORT   (pyserial's server; we answer DO)
//	  WILL/DO BINARY, SGA ◄────────────────► (8-bit clean data)
//
// Commands (client code c, server answers c+100 with the value in effect):
//
//	client                                   access server
//	  SB 44 SIGNATURE ""  ─────────────────► SB 44 100 "ser2net"   ("" asks for the peer's)
//	  SB 44 SET-BAUDRATE 57600 ────────────► SB 44 101 57600       (0 = query; the reply is the truth)
//	  SB 44 SET-DATASIZE/PARITY/STOPSIZE ──► SB 44 102/103/104 v
//	  SB 44 SET-CONTROL 8 (DTR ON) ────────► SB 44 105 8            (ser2net on a pty: no reply;
//	                                                                 sredird: always 105 1)
//	  SB 44 SET-LINESTATE-MASK/MODEMSTATE-MASK ► 110/111 mask      (only sredird answers)
//	  SB 44 PURGE-DATA 3 ──────────────────► SB 44 112 3
//	                ◄─────────────────────── SB 44 107 CD|DSR|CTS  (NOTIFY-MODEMSTATE, per mask)
//	                ◄─────────────────────── SB 44 106 …           (NOTIFY-LINESTATE, per mask)
//	                ◄─────────────────────── SB 44 108 / 109       (FLOWCONTROL-SUSPEND/RESUME:
//	                                                                 stop/resume sending data)
//
// # Who owns what
//
// Client owns its connection and two goroutines: the reader (the only
// caller of conn.Read: decodes, answers negotiation, records
// acknowledgements and notifications, queues data for Read) and the writer
// (the only caller of conn.Write: control bytes first, then data; data is
// held back while the server has suspended us). Close closes the
// connection, which unblocks both, and waits for them. AccessServer owns
// nothing: the caller's session goroutine feeds it and sends its replies.
//
// # Interop facts the code is built on (device-peers.md, and measured here)
//
// Client never waits on an acknowledgement for longer than its AckTimeout
// and never blocks the data path on one: real servers omit acks (ser2net
// on a pty for DTR/RTS), answer wrongly (sredird acks every SET-CONTROL
// as FLOW-NONE) or pad them (sredird's 8-byte SET-BAUDRATE reply; Parse
// takes 4 bytes and reports the rest in Message.Extra). It never sends
// FLOWCONTROL-SUSPEND/RESUME: ser2net (gensio) maps codes 8/9 to
// flow-control changes. Also seen: sredird sends bursts of meaningless
// NOTIFY-MODEMSTATE values on a pty after each command, and drops device
// data when an 0xFF-heavy burst, doubled by escaping, overflows its
// buffer; ser2net sends NOTIFY-MODEMSTATE 0 right after agreeing to the
// option; pyserial's client rejects (rather than accepts) a reply that
// differs from its request, so AccessServer must and does answer with the
// value actually in effect.
package rfc2217
