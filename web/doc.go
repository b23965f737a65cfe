// Package web is the web console: a browser door of remote access. It
// serves a single page (embedded in the binary: our HTML, CSS and script,
// and the vendored xterm.js browser build) that lists every VM serial
// port the user may reach and opens its console in a terminal over one
// WebSocket per console.
//
// It uses what remote access uses: the [[user]] tables, bcrypt logins
// with the per-address and per-name rate limits (remote.Hub.Login), the
// users' rights per VM, the lock modes (rw, ro, x, xw), the scrollback
// and the slow-client rule (remote.Hub.Attach). A port joined to a device
// or remote system has no console, but a user with rights to its VM may
// watch its traffic read-only: the watcher taps the link and never holds
// it up. A watch starts with the link's recent traffic ([web]
// watch_scrollback, kept by the bridge: bridge.SetTapHistory) in the
// direction watched, as a console starts with its scrollback.
//
// # Routes
//
//	GET  /                         the page (login, list, console: one document, hash routes)
//	GET  /static/…                 our assets and static/vendor/ (xterm.js, its addons, licences)
//	GET  /api/session              who is logged in (401 when nobody)
//	POST /api/login                {"user","password"} → session cookie
//	POST /api/logout               ends the session and closes its consoles
//	GET  /api/consoles             the list, once
//	GET  /api/events               the list as a server-sent event stream, sent again when it changes
//	GET  /api/consoles/{id}/log    the console's log file (with [remote] log_dir)
//	GET  /ws/console/{id}?mode=M   a console: M is rw, ro, x or xw (default: the user's right)
//	GET  /ws/watch/{id}?dir=D      a watch of a joined port: D is vm, device or both
//
// # Console protocol (sub-protocol vspc.console.v1)
//
// Binary frames carry serial bytes, both ways, 8-bit clean. Text frames
// carry one JSON object each, with a "type":
//
//	browser                                   bridge
//	WebSocket upgrade (cookie, Origin) ──────►  session, rights, Origin checked; attach
//	                                  ◄──────  {"type":"hello", vm, service, mode, can_write, right, replay, …}
//	                                  ◄──────  binary: the scrollback (replay bytes)
//	                                  ◄──────  {"type":"replay-end"}
//	binary: keystrokes, paste ───────────────► the VM (dropped unless the mode writes)
//	{"type":"break"} ────────────────────────► BREAK to the VM
//	{"type":"mode","mode":"ro"|"rw"} ────────► switch, within rights and locks
//	                                  ◄──────  binary: console output, live
//	                                  ◄──────  {"type":"users"|"state"|"mode"|"notice"|"error", …}
//	                                  ◄──────  ping (every [web] ping; the browser answers)
//
// Close codes: 1000 normal; 1013 fell behind (reconnect: the scrollback
// is replayed); 4401 session ended (log in again); 4403 no access; 4404
// no such console (or it is gone); 4409 busy (a lock mode or max_clients);
// 4429 too many consoles open. The page reconnects with backoff after any
// other close.
//
// # Security
//
// A login makes a server-side session: a random token in an HttpOnly,
// SameSite=Strict cookie (Secure and named __Host-vspc_session over TLS
// or with secure_cookie), with idle and absolute expiry; the session ends
// when its user is removed or their password changes. Every POST passes
// http.CrossOriginProtection and must carry JSON; the WebSocket upgrade,
// a GET, has its Origin checked against the Host (and [web] origins). On
// a loopback listener the Host must be a loopback name or address, or
// that of an origin (DNS rebinding). Every answer carries a strict
// Content-Security-Policy (no inline script; inline styles are allowed
// because xterm.js sets them), frame-ancestors 'none', nosniff,
// no-referrer and no-store. Guest output is untrusted: xterm.js is loaded
// without the clipboard addon (no OSC 52 writes), the window title is
// never set from it, links it prints (OSC 8) open only as http(s) after a
// confirmation in a tab without an opener, and input from a client that
// may not write (such as a read-only viewer's terminal answering a query
// in the output) never reaches the VM; the page also drops what its
// terminal answers while it replays the scrollback.
package web
