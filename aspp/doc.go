// Package aspp encodes and decodes the command-port protocol of Moxa NPort
// serial device servers: the protocol Moxa's Real COM / Real TTY driver
// speaks on the NPort's command port (966 for the first serial port), in
// Real COM mode and in TCP Server mode with "Allow driver control" on.
// Moxa's sources call it ASPP. It sets baud rate, data bits, parity, stop
// bits, flow control, DTR/RTS and BREAK, flushes the NPort's buffers, and
// carries the NPort's modem-line and line-error notifications and its
// keep-alive polls.
//
// The package is a codec without I/O: Append… functions append requests
// and replies to a caller's buffer, RequestDecoder and ReplyDecoder cut a
// byte stream (split anywhere) into frames, and typed accessors read their
// payloads. It starts no goroutines, imports nothing from net and does not
// log. The session that drives a real NPort is in package devices; the
// simulated NPort that tests run against is in devices/devicetest.
//
// Every byte layout here comes from the fact sheet
// shared/notes/moxa-aspp.md (Moxa's npreal2 driver and daemon, read, not
// copied); section numbers below refer to it. Facts the sheet marks as
// inferred are marked so here too.
//
// # Framing (§2.1, §2.3)
//
// Host → NPort, every request: [opcode][length][payload × length]. The
// length byte is always there, even when it is 0.
//
// NPort → host: no length byte in general; the frame length is fixed per
// opcode (ReplyLen). Most replies are [opcode] 'O' 'K'. A byte that starts
// no known frame means the stream is out of step: ReplyDecoder reports
// ErrUnknownOpcode and the caller should reconnect.
//
// # Protocol flow
//
// The host connects the command socket, then the data socket; there is no
// greeting over IPv4 (§1.2). Moxa's driver then opens the port like this
// (§2.4, §4 example A):
//
//	host                                          NPort
//	  2C 08 idx mode DTR RTS fl fl ixon ixoff ──►          PORT_INIT
//	                                          ◄── 2C 03 DSR CTS DCD
//	  17 04 b0 b1 b2 b3 (only if idx = FF) ────►          SETBAUD, little-endian
//	                                          ◄── 17 4F 4B
//	  18 02 xon xoff   (only with XON/XOFF) ───►          XONXOFF
//	                                          ◄── 18 4F 4B
//	  30 01 10 ─────────────────────────────────►          TX_FIFO 16
//	                                          ◄── 30 4F 4B
//
// Later: LINECTRL for DTR/RTS, START_BREAK/STOP_BREAK, FLUSH, PORT_INIT
// again for new settings. One request is in flight at a time and replies
// are matched by opcode. Unsolicited, at any time:
//
//	host                                          NPort
//	                                          ◄── 26 events msr 00   NOTIFY
//	                                          ◄── 27 01 id           POLLING (keep-alive)
//	  28 01 id ─────────────────────────────────►                    ALIVE (no reply)
//
// Data travels on the data socket as raw bytes, unescaped and unframed.
package aspp
