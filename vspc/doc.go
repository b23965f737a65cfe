// Package vspc is the VM side of the bridge: a virtual serial port
// concentrator (vSPC) that ESXi hosts connect to. It speaks telnet with the
// VMware telnet extension (option 232, "Using a Proxy with vSphere Virtual
// Serial Ports", seed 000), joins each VM serial port to a Backend the
// caller's Bridger opens, keeps the port across vMotion and reconnects, and
// plays the RFC 2217 access server toward the guest (comport.go).
//
// Files by layer:
//
//   - ext.go: the option-232 codec (suboption codes, AppendExt, ParseExt,
//     ParseDoProxy). No I/O.
//   - server.go: Server, its listeners and limits, Request and PortKey,
//     attach (DO-PROXY finds or creates a port).
//   - conn.go: one VM connection's reader: the telnet handshake, option
//     negotiation, identification, and dispatch of option-232 messages.
//   - port.go: Port, the long-lived join between a VM and its Backend: the
//     bounded queue toward the VM, its writer, detach and the grace period.
//   - vmotion.go: the vMotion hand-over between a source and a destination
//     connection.
//   - comport.go: RFC 2217 toward the VM.
//
// The ESXi byte sequences this package is built on are in the notes
// (esxi-wire.md §4) and replayed byte for byte from VMware's capture by the
// tests (../testdata/esxi-capture-*.dialogue).
//
// # Protocol flow: handshake
//
// ESXi speaks first; the server holds its opening offers for a moment
// (offerHold) so that they leave in the same write as its first answers:
//
//	ESXi host                                   vspc
//	  WILL AUTHENTICATION ──────────────────►
//	                      ◄────────────────── WILL BINARY, SGA, ECHO; DO BINARY, SGA, 232;
//	                                          DONT AUTHENTICATION
//	  DO/WILL answers, WILL 232 ────────────► KNOWN-SUBOPTIONS-2 (once 232 is on)
//	  KNOWN-SUBOPTIONS-1, DO-PROXY dir uri ─►
//	                      ◄────────────────── GET-VM-VC-UUID, GET-VM-NAME (and the
//	                                          BIOS and location UUIDs the VM knows)
//	  VM-VC-UUID, VM-NAME … ────────────────► Bridger.Open (or the port that exists
//	                      ◄────────────────── for the key), then WILL-PROXY
//	  WILL COM-PORT-OPTION ─────────────────► DO COM-PORT-OPTION
//	  data ◄────────────────────────────────► data (BINARY both ways; IAC doubled)
//
// WILL-PROXY waits for the identification answers (IdentifyTimeout at
// most) because routes match on VM name and UUID. WONT-PROXY, a bad PEER
// or a protocol error closes the connection; nothing is kept for it.
//
// # Protocol flow: vMotion hand-over
//
// See vmotion.go for the state machine. In short: BEGIN on the source
// sets a barrier (what was accepted for the VM before it is written to the
// source, anything later is held); GOAHEAD seq secret follows the barrier;
// the destination host connects and sends PEER seq‖secret instead of
// DO-PROXY; PEER-OK; COMPLETE on the destination moves the port to it,
// held data first, after the source's last bytes. The remote side never
// sees any of it.
//
// # Ports and keys
//
// A Port is keyed by PortKey: VC UUID (or VM name) and service URI, since a
// VM's serial ports share one VC UUID. A reconnect with the same key gets
// the same port back, and the new connection replaces the old one. A port
// with no connection waits GracePeriod for its VM, then closes its
// Backend.
//
// # Locks
//
// Lock order: Server.mu, then Port.mu; Port.comMu, then Port.mu. No lock is
// held across a network write. Port.comMu is held across the Backend's
// line-control calls (one RFC 2217 request at a time); no other lock is
// held across a call into a Backend.
// Server.mu guards the server's tables (connections, ports, pending
// hand-overs, counters); Port.mu guards a port's queue, connections and
// hand-over state.
package vspc
