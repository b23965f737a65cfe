// Package configs parses and validates the vspc-bridge configuration file
// (TOML) and holds the commented example configs.
//
// example.toml is embedded (ExampleTOML, Default) and is the config
// `make run` starts with: it listens for ESXi hosts on 127.0.0.1:13370 and
// allows loopback targets only. Every key is documented there, with its
// default and units; production.toml shows a production layout.
//
// # File layout
//
//	[vspc]      listener for ESXi VMs (VMware telnet extension, option 232)
//	[vmotion]   vMotion hand-over limits
//	[policy]    connect_allow, accepted directions, reconnect backoff
//	[log]       level and format
//	[[route]]   zero or more: VM matchers -> device; first match wins
//
// Key names are a contract with operators; do not rename them.
//
// # Parsing
//
// Parse decodes the file into a generic map (so a TOML syntax error is the
// only thing that stops it), copies it key by key into a Config that
// starts out holding every default, then validates the result. Every
// problem is reported at once, as a *multierror.Error of *Error values
// sorted by line:
//
//	configs: bridge.toml:12: vspc.handshake_timeout: time: unknown unit "x" in duration "10x"
//	configs: bridge.toml:40: policy.connect_allow[1]: "nport-*": not an IP or CIDR, and a host pattern needs a port spec (host:N, host:N-M or host:*)
//	configs: bridge.toml:52: route[0].device: required: where to join the VM, …
//
// BurntSushi/toml does not export key positions, so the line of each key
// is found by a small scanner over the text (lines.go) that understands
// tables, arrays of tables ([[route]] elements are route[0], route[1], …),
// dotted keys, inline tables, arrays and multi-line strings.
//
// A Config is immutable after Parse. Derived values are computed once:
// Config.Allow (connect_allow), Route.Target (device), Route.Settings (line
// settings) and the normalised Route.UUID.
//
// # Connect policy
//
// Allow (see its documentation for the grammar) decides which targets a VM
// in the client direction may reach. Callers resolve host names
// themselves: a name is allowed if AllowName(host, port) is true, or if
// every address it resolved to passes AllowAddr. An empty connect_allow
// allows nothing.
package configs
