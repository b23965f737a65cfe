// Package telnet is a pure telnet codec: a streaming decoder, encoders that
// append to a caller's buffer, and RFC 1143 ("the Q method") option
// negotiation state. It does no I/O, starts no goroutines and does not log.
//
// It implements the parts of these documents that a vSPC and an RFC 2217
// client or access server need:
//
//   - RFC 854 (Telnet protocol): IAC commands, IAC IAC escaping of 255 in
//     data, CR NUL / CR LF when BINARY is off.
//   - RFC 855 (option specification): IAC SB <option> ... IAC SE, with
//     255 escaped as IAC IAC inside the subnegotiation payload too.
//   - RFC 856 (BINARY): with BINARY on every byte is data; NUL and XON are
//     never dropped.
//   - RFC 1143: option negotiation that can never loop.
//
// Protocol flow of the decoder:
//
//	data  ─┬─ IAC IAC ────────────────► data byte 255
//	       ├─ IAC WILL|WONT|DO|DONT o ─► EventNegotiation
//	       ├─ IAC SB o payload IAC SE ─► EventSubnegotiation (payload unescaped)
//	       └─ IAC <other command> ─────► EventCommand
//
// The decoder accepts input split anywhere (IAC at a buffer boundary, SB
// across reads) and allocates nothing per byte: data and payloads are
// unescaped in place and alias the slice passed to Decode.
package telnet
