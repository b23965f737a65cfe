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
//     The reader (serve) keeps no state on its stack: after the handshake
//     it goes on on a fresh goroutine (a small stack), and an idle
//     connection parks with Config.Parker (internal/park) and its
//     goroutine ends; a wake-up runs serve again.
//   - port.go: Port, the long-lived join between a VM and its Backend: the
//     bounded queue toward the VM, the control lane, the single writer,
//     detach and the grace period.
//   - handover.go: the vMotion hand-over as a table, with no I/O;
//     vmotion.go: its execution (events in, actions carried out), the
//     server's table of hand-overs waiting for their destination.
//   - comport.go: RFC 2217 toward the VM.
//   - forward.go: a connection whose port another bridge serves (package
//     cluster) is handed over there at its DO-PROXY or VMOTION-PEER
//     (Handoff, ServeHandoff) and relayed byte for byte.
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
// BEGIN on the source sets a barrier (what was accepted for the VM before
// it is written to the source, anything later is held); GOAHEAD seq secret
// follows the barrier; the destination host connects and sends PEER
// seq‖secret instead of DO-PROXY; PEER-OK; COMPLETE on the destination
// moves the port to it, held data first, after the source's last bytes.
// The remote side never sees any of it. The hand-over is a table
// (handover.go): a pure function from a state and an event to the next
// state and the actions, with a test per cell; vmotion.go executes it.
//
// # Ports and keys
//
// A Port is keyed by PortKey: VC UUID (or VM name) and service URI, since a
// VM's serial ports share one VC UUID. A reconnect with the same key gets
// the same port back, and the new connection replaces the old one. A port
// with no connection waits GracePeriod for its VM, then closes its
// Backend.
//
// # Who owns what
//
// Goroutines, all counted in the server's WaitGroup, so that Close (cancel,
// close every connection and port, wait) returns only when they are gone:
//
//   - one reader per connection (run): it decodes, answers, and forwards
//     the VM's data to the Backend;
//   - at most one writer per port, started when there is something to
//     write and gone when there is not (an idle port has none). Once a
//     connection has joined a port it is the only goroutine that writes to
//     it: replies, WILL-PROXY and the vMotion messages go through the
//     port's control lane, ahead of the queued data (port.go);
//   - the modem-state poller of a port whose guest negotiated RFC 2217
//     with a device that can tell (comport.go);
//   - timer callbacks: the grace period, the queue trim and the hand-over's
//     timeout. Each is added to the WaitGroup before time.AfterFunc and
//     done when it has run, or when Stop wins.
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
