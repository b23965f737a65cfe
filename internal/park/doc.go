// Package park holds idle network connections without a goroutine each.
//
// A goroutine blocked in net.Conn.Read costs 3.6 to 7.6 KiB (its stack, a
// 480 B g, buffers; notes idle-memory.md §1), and a stack that grew once
// never shrinks back to 2 KiB while it waits in Read (§2.1). A console
// concentrator's connections are idle almost all the time, so this package
// lets their owners hand an idle connection to a Parker and end the
// goroutine. When data (or a hang-up) arrives, the Parker starts a fresh
// goroutine that runs the owner's wake function, which resumes the owner's
// ordinary read loop: busy connections run exactly the code they ran
// before, with today's throughput and latency.
//
// # Protocol flow
//
//	owner's reader                    Parker                       kernel
//	Read → deadline expired, n == 0
//	Conn.Park() ───────────────────►  slot i, generation g
//	                                  EPOLL_CTL_MOD/ADD  ────────► armed, level-triggered,
//	(goroutine returns)                                            EPOLLONESHOT
//	                                                               data arrives
//	                                  EpollWait ◄───────────────── event (i, g); disarmed
//	                                  slot i still holds g? claim
//	                                  wait for a wake slot (MaxWaking)
//	wake() on a fresh goroutine ◄──── go
//	Read → data (the wake slot is given back)
//
// # The traps, and what this package does about each
//
//   - Lost wake-ups. Registrations are level-triggered and one-shot, never
//     edge-triggered: arming a descriptor that already has data pending
//     reports it at once, and a woken owner that read only part of it is
//     woken again when it parks again. A connection is marked parked before
//     it is armed, so an event that fires at once finds it.
//   - Descriptor reuse. Events carry a slot index and a generation, never the
//     descriptor: an event for a connection that was closed (and whose
//     number a new connection got) finds a newer generation and is dropped.
//     The descriptor is reached only through syscall.RawConn.Control, which
//     holds it open, and never duplicated (File would double the
//     descriptors per connection).
//   - Stranded TLS plaintext. A crypto/tls connection may hold decrypted
//     bytes that no socket event will announce. Conn.Park is allowed only
//     right after a Read that returned a deadline error and no data: then
//     nothing complete is buffered inside the tls.Conn (a partial record's
//     remainder still has to arrive, and wakes the connection).
//     Conn.ParkNow, which parks without that empty Read (an owner that
//     has nothing to wait for), refuses any connection with a layer above
//     its descriptor.
//   - Wake storms. At most Config.MaxWaking woken connections are between
//     their wake-up and their first Read's return; further events wait in
//     the kernel. A woken owner that then blocks (back-pressure) holds no
//     slot, and handlers never run on the Parker's own goroutine.
//   - Deadlines on the hot path. Idle tells an owner when its connection has
//     been idle for a whole period, with one deadline per period rather than
//     one per Read.
//   - Closing a parked connection. Conn.Close closes the connection and, if
//     it was parked, runs the wake function, so the owner sees the closed
//     connection exactly as a goroutine blocked in Read would have.
//
// # Backends
//
// On Linux the Parker uses one epoll set, itself waited on through the Go
// runtime's poller (no thread blocks in epoll_wait). Elsewhere, or on Linux
// when built with the tag park_goroutine, it uses a goroutine per parked
// connection that waits for readability in syscall.RawConn.Read: it holds
// a fresh 2 KiB stack instead of the reader's grown one, and keeps every
// other behaviour. The tests run both backends on Linux. Connections that
// expose no descriptor (net.Pipe) cannot park: Park returns
// ErrNotParkable and the owner keeps reading with its goroutine.
package park
