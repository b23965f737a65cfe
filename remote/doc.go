// Package remote gives operators out-of-band access to the serial
// consoles of direction-server VM serial ports: the "proxy as a virtual
// serial port concentrator" of the vSphere proxy guide (seed
// 000_922e70095bebb4dc, "Proxy as a Virtual Serial Port Concentrator" and
// "Network Connections Between a Virtual Machine, a Proxy, and a Remote
// System"): the proxy listens for remote systems on behalf of the VM,
// presents the choice of VMs, and is the point of authentication.
//
// A Hub is the vspc.Backend of every such port (Hub.Open). For each it
// keeps a console: the fan-out of the VM's output to the attached
// clients, a scrollback ring, and an optional log file; and a per-VM
// listener on the port the service URI names (telnet://h:p, telnets://h:p,
// tcp://h:p, bound to [remote] bind), or on a port from [remote]
// port_range kept for that VM serial port in the state file when the URI
// is a plain name ("vSPC.py", "web-1?port=com2"). A console lives as long
// as the vspc.Port does: across vMotion and reconnects, until the grace
// period after the VM is gone.
//
// Front doors (Hub.Serve): telnet (and telnets) with a login and a menu
// of the consoles the user may reach, and SSH (golang.org/x/crypto/ssh),
// where "ssh -p PORT user+vm@bridge" lands on the console of vm and
// "ssh user@bridge VM [MODE]" does the same by command.
//
// # Protocol flow
//
//	remote user                         Hub                               VM (vspc.Port)
//	telnet connect  ──────────────────► IAC WILL ECHO, WILL SGA, DO SGA,
//	                                    WILL BINARY, DO BINARY
//	                ◄── "login: " / "password: " (bcrypt; failures
//	                    rate-limited per address and per user name)
//	(front door)    ◄── menu: #, VM/service, VC UUID, state, port, attached
//	"2 ro"          ──► attach in a mode (rw, ro, x, xw)
//	                ◄── banner, scrollback (last [remote] scrollback bytes)
//	data            ──────────────────────────────────────────────────► Sink.Send
//	IAC BRK, ^Ecb   ──────────────────────────────────────────────────► Sink.SendBreak
//	                ◄── output (also to other clients, scrollback, log) ◄ Backend.Write
//	^Ec.            ──► detach (front door: back to the menu)
//
// # Lock modes
//
// read-write (shared), read-only, exclusive (nobody else may attach),
// exclusive-write (the only writer; a read-write request is downgraded to
// read-only while it is held). Users' access lists ([[user]] access, first
// match on VM name or VC UUID) grant "ro" or "rw". Interactive clients
// (telnet, SSH with a pty) are told when someone joins or leaves; an SSH
// session without a pty is a clean 8-bit pipe: no banners, notices or
// escapes, refusals on stderr.
//
// # Escape commands
//
// In interactive sessions the escape sequence ([remote] escape, default
// "^Ec", Ctrl-E then c, as conserver) is followed by a command:
//
//	.  detach            b  send BREAK to the VM
//	w  who is attached   ?  help
//	s  read-only ("spy") a  read-write again (if the user may write)
//	c  (the sequence's last byte) sends the sequence itself
//
// # Flow control and ownership
//
// Every client has a bounded queue (client_queue) drained by a writer
// goroutine that runs only while there is something to write. When a
// client's queue is full, [remote] client_overflow decides:
//
//   - "pause" (default): Backend.Write waits until the client has
//     drained its queue to half, so the VM connection is not read
//     meanwhile and the VM is back-pressured through TCP, as a slow
//     device back-pressures it. Every client gets every byte. A client
//     that takes no output for client_stall while the console waits for
//     it is told and dropped, and the console resumes for the others: the
//     VM waits at most client_stall for any client.
//   - "drop": the client is told and dropped at once; no client ever
//     slows the VM.
//
// The log never holds the VM: a log that falls behind log_buffer loses
// output (counted in ConsoleInfo.LogLost and marked in the file), never
// console bytes. Each connection has one reader (its session goroutine)
// and one writer (the queue's); the hub owns and waits for every
// goroutine it starts, and Close shuts everything down: listeners first,
// then sessions (with a farewell, closed after 2 s if the client does not
// read), then logs.
//
// # Idle consoles cost no goroutine
//
// A per-VM listener that nobody connects to, and an attached per-VM
// telnet (or tcp, telnets) client that types nothing, wait in a parker
// (internal/park: one epoll set) instead of a goroutine each: the
// listener after 200 ms without a connection, the client 200 ms after it
// attached and then after 5 s without input. Data (or a close) wakes
// them on a fresh goroutine that runs the same read loop. A client queue
// has a writer goroutine only while there is output, and no buffer while
// it is empty; the scrollback grows as output arrives. Front-door and SSH
// sessions keep their goroutines.
//
// # Consoles across a cluster
//
// With WithCluster (a [cluster] member), the front doors' menu also lists
// the consoles the other members serve, and a user who picks one is
// attached there over the member link: the front door opens a console
// stream to the owner, whose Hub.ServeForwarded runs the same session code
// as a local login (its [[user]] table, lock modes, escape commands) with
// framed input and output, and the same client queue rule; the front
// door relays the output into its own queue for the user, reading the
// stream only while that queue has room (forward.go).
//
// # Other kinds of client
//
// Telnet, raw TCP and SSH clients are served by the hub itself. Another
// kind (a web console's WebSocket, say) attaches through Hub.Attach, by
// the console's key (ConsoleInfo.Key, its vspc.PortKey as a string), a
// user and a mode, with a ClientConn, the small interface the hub writes
// output to: it gets the same queue, the same pause/drop rule, the same lock modes, notices and
// scrollback as every other client. The caller authenticates its user;
// the user's [[user]] access list decides what it may reach.
package remote
