// Package target is the grammar of device URIs: what a [[route]]'s device
// key and a direction-client VM's service URI name, parsed once. It does no
// I/O, so the config layer validates routes with the parser the bridge
// opens them with (package devices) without linking a serial driver.
//
//	tcp://host:port                raw TCP: a Moxa NPort port in TCP Server mode, any raw serial server
//	nport://host[:data][?cmd=port|none]
//	                               a Moxa NPort port in TCP Server mode: data port (default 4001) and
//	                               command port for line control (default 966 + data − 4001)
//	telnet://host[:port]           a telnet remote; the port defaults to 23
//	rfc2217://host:port            an RFC 2217 access server (ser2net, an NPort in RFC 2217 mode)
//	serial:///dev/ttyUSB0          a local tty
//	/dev/ttyUSB0                   a local tty, the path taken verbatim
//
// Every URI form may carry line settings in its query:
// ?baud=…&databits=…&parity=…&stopbits=…&flow=…, each value in the grammar
// of package rfc2217's field parsers (ParseBaud, ParseParity, …).
//
// An nport:// URI may also say where the NPort's command port is
// (?cmd=PORT), or that line control is not to be used (?cmd=none: the
// data port alone, settings fixed as for tcp://). Without it the command
// port is 966 + (data − 4001) for data ports 4001–4032, the NPort's
// defaults for its serial ports 1–32 in TCP Server mode; other data ports
// must say.
//
// Before this package there were two grammars, one in the config checker
// and one in the device layer, and they disagreed. Where they did, this one
// accepts what either accepted, so a config that loaded still loads and a
// service URI that opened still opens, with one exception that can never
// have worked: host names must be DNS names (or IP literals), checked label
// by label, as the config checker did.
package target

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/vspc-bridge/vspc-bridge/rfc2217"
)

// Kind says how a device is reached.
type Kind uint8

// Device kinds. The zero Kind is invalid.
const (
	// KindTCP is a raw TCP byte stream: a Moxa NPort port in TCP Server
	// mode or any other raw serial server. No line control travels on it.
	KindTCP Kind = iota + 1
	// KindNPort is a Moxa NPort serial port in TCP Server mode: raw data
	// on its data port (default 4001), line control through its command
	// port (Target.CmdPort; "Allow driver control" on the NPort). With no
	// command port it is KindTCP with a default port.
	KindNPort
	// KindTelnet is a telnet remote: BINARY is negotiated both ways where
	// the remote agrees (NVT text otherwise), 255 escaped. No line control
	// travels on it.
	KindTelnet
	// KindRFC2217 is an RFC 2217 access server (ser2net, an NPort in
	// RFC 2217 mode, pyserial's example server).
	KindRFC2217
	// KindSerial is a local tty.
	KindSerial
)

var kindNames = [...]string{KindTCP: "tcp", KindNPort: "nport", KindTelnet: "telnet", KindRFC2217: "rfc2217", KindSerial: "serial"}

// String returns the kind's URI scheme.
func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// FixedLine reports whether line settings and modem control cannot travel
// to a device of this kind (tcp, nport, telnet): what is in effect is what
// the device server is configured to, whether or not the device is
// connected. An nport target with a command port can change them: ask the
// Target (Target.FixedLine).
func (k Kind) FixedLine() bool {
	return k == KindTCP || k == KindNPort || k == KindTelnet
}

// Network reports whether the kind is reached over the network (a VM may
// name these itself; a local device needs a route).
func (k Kind) Network() bool {
	return k == KindTCP || k == KindNPort || k == KindTelnet || k == KindRFC2217
}

// Default ports for the schemes that have one.
const (
	// NPortDefaultPort is the data port of an NPort's first serial port in
	// TCP Server mode.
	NPortDefaultPort = 4001
	// TelnetDefaultPort is the well-known telnet port.
	TelnetDefaultPort = 23
	// NPortDefaultCmdPort is the command port of an NPort's first serial
	// port; port n (data 4000+n) has 965+n.
	NPortDefaultCmdPort = 966
	// nportDefaultPorts is how many serial ports have default data and
	// command ports (4001–4032, 966–997).
	nportDefaultPorts = 32
)

// NPortCmdPort returns the default command port for an NPort data port,
// and false for a data port outside 4001–4032, which has none.
func NPortCmdPort(data int) (int, bool) {
	if data < NPortDefaultPort || data >= NPortDefaultPort+nportDefaultPorts {
		return 0, false
	}
	return NPortDefaultCmdPort + data - NPortDefaultPort, true
}

// Target is a parsed device URI.
type Target struct {
	Kind Kind
	Host string // network kinds: host name or IP address, without brackets
	Port int    // network kinds: 1–65535
	Path string // KindSerial: absolute device path
	// CmdPort is, for KindNPort, the NPort's command port on Host (line
	// control); 0 means none (cmd=none). Zero for other kinds.
	CmdPort int
	// Settings are the line settings given in the URI query (zero =
	// unset). For KindSerial and KindRFC2217 they are applied on Open; for
	// KindTCP, KindNPort and KindTelnet they are the expectation of what the
	// far end is configured to.
	Settings rfc2217.Settings
	Raw      string // the URI as given to Parse
}

// FixedLine reports whether line settings cannot travel to the device: a
// kind with a fixed line, except an nport target with a command port.
func (t Target) FixedLine() bool {
	return t.Kind.FixedLine() && !(t.Kind == KindNPort && t.CmdPort != 0)
}

// CmdAddr returns host:port of an nport target's command port, "" when it
// has none.
func (t Target) CmdAddr() string {
	if t.Kind != KindNPort || t.CmdPort == 0 {
		return ""
	}
	return net.JoinHostPort(t.Host, strconv.Itoa(t.CmdPort))
}

// Addr returns host:port for network kinds and Path for KindSerial.
func (t Target) Addr() string {
	if t.Kind == KindSerial {
		return t.Path
	}
	return net.JoinHostPort(t.Host, strconv.Itoa(t.Port))
}

// Key identifies the device itself, for "one owner per device": settings
// in the URI do not change it, every network kind to the same host:port is
// the same endpoint (tcp, nport, telnet, rfc2217), host names compare
// case-insensitively, and a plain path equals its serial:// form. It does
// not resolve names or symlinks.
func (t Target) Key() string {
	if t.Kind == KindSerial {
		return "serial:" + t.Path
	}
	return "tcp:" + strings.ToLower(t.Addr())
}

// String returns t in canonical URI form; Parse(t.String()) yields t
// again (apart from Raw). A plain device path is written as serial://.
func (t Target) String() string {
	var b strings.Builder
	b.WriteString(t.Kind.String())
	b.WriteString("://")
	if t.Kind == KindSerial {
		b.WriteString((&url.URL{Path: t.Path}).EscapedPath())
	} else {
		b.WriteString(t.Addr())
	}
	q := settingsQuery(t.Settings)
	if t.Kind == KindNPort {
		// The command port when it is not the data port's default.
		def, ok := NPortCmdPort(t.Port)
		switch {
		case t.CmdPort == 0:
			q = joinQuery("cmd=none", q)
		case !ok || def != t.CmdPort:
			q = joinQuery("cmd="+strconv.Itoa(t.CmdPort), q)
		}
	}
	if q != "" {
		b.WriteString("?")
		b.WriteString(q)
	}
	return b.String()
}

func joinQuery(a, b string) string {
	if b == "" {
		return a
	}
	return a + "&" + b
}

// URIError is returned by Parse. Its message names the problem, the URI
// and, where it helps, what was expected:
//
//	target: unknown scheme "foo" in "foo://x" (want tcp, nport, telnet, rfc2217, serial or an absolute device path)
type URIError struct {
	URI     string
	Problem string // e.g. `unknown scheme "foo"`
	Want    string // e.g. "want tcp://host:port"; may be empty
}

func (e *URIError) Error() string {
	s := "target: " + e.Problem + " in " + strconv.Quote(e.URI)
	if e.Want != "" {
		s += " (" + e.Want + ")"
	}
	return s
}

const wantScheme = "want tcp, nport, telnet, rfc2217, serial or an absolute device path"

// Parse parses a device URI (see the package documentation for the
// forms). Scheme, query keys and their values are case-insensitive;
// unknown or repeated query keys are errors; a bare trailing slash after
// host:port ("rfc2217://h:2001/") is allowed. A plain path is taken
// verbatim, a "?" in it included. All errors are *URIError.
func Parse(uri string) (Target, error) {
	fail := func(want, format string, args ...any) (Target, error) {
		return Target{}, &URIError{URI: uri, Problem: fmt.Sprintf(format, args...), Want: want}
	}
	if strings.TrimSpace(uri) == "" {
		return fail(wantScheme, "empty URI")
	}
	if strings.HasPrefix(uri, "/") {
		if problem, want := checkPath(uri); problem != "" {
			return fail(want, "%s", problem)
		}
		return Target{Kind: KindSerial, Path: uri, Raw: uri}, nil
	}
	scheme, rest, ok := strings.Cut(uri, "://")
	if !ok {
		return fail("want scheme://… or an absolute /dev path", "no scheme")
	}
	var kind Kind
	switch strings.ToLower(scheme) {
	case "tcp":
		kind = KindTCP
	case "nport":
		kind = KindNPort
	case "telnet":
		kind = KindTelnet
	case "rfc2217":
		kind = KindRFC2217
	case "serial":
		kind = KindSerial
	default:
		return fail(wantScheme, "unknown scheme %q", scheme)
	}
	if strings.Contains(rest, "#") {
		return fail("", "fragment not allowed")
	}
	authority, query, _ := strings.Cut(rest, "?")
	t := Target{Kind: kind, Raw: uri}
	var err error
	var cmd string
	if t.Settings, cmd, err = parseQuery(query); err != nil {
		var qe *queryError
		if errors.As(err, &qe) {
			return fail(qe.want, "%s", qe.problem)
		}
		return fail("", "%v", err)
	}
	if cmd != "" && kind != KindNPort {
		return fail("cmd is for nport://host[:data]?cmd=port|none", "parameter \"cmd\" on a %s URI", kind)
	}
	if kind == KindSerial {
		if !strings.HasPrefix(authority, "/") {
			host, _, _ := strings.Cut(authority, "/")
			return fail("want serial:///dev/ttyUSB0, with three slashes", "host %q in serial URI", host)
		}
		p, err := url.PathUnescape(authority)
		if err != nil {
			return fail("", "bad escape in device path %q", authority)
		}
		if problem, want := checkPath(p); problem != "" {
			return fail(want, "%s", problem)
		}
		t.Path = p
		return t, nil
	}

	want := "want " + kind.String() + "://host:port"
	defPort := 0
	switch kind {
	case KindNPort:
		defPort, want = NPortDefaultPort, "want nport://host[:port], port defaults to 4001"
	case KindTelnet:
		defPort, want = TelnetDefaultPort, "want telnet://host[:port], port defaults to 23"
	}
	hostport, path, _ := strings.Cut(authority, "/")
	if path != "" { // a bare trailing slash ("rfc2217://h:2001/") is fine
		return fail(want, "unexpected path %q", "/"+path)
	}
	if strings.Contains(hostport, "@") {
		return fail(want, "user info not allowed")
	}
	var host, port string
	hasPort := false
	if strings.HasPrefix(hostport, "[") {
		inner, after, ok := strings.Cut(hostport[1:], "]")
		if !ok {
			return fail(want, "missing ']' in host %q", hostport)
		}
		ip, err := netip.ParseAddr(inner)
		if err != nil || !ip.Is6() || ip.Is4In6() || ip.Zone() != "" {
			return fail("want an IPv6 address inside [ ]", "bad IPv6 address %q", inner)
		}
		host = inner
		if after != "" {
			if after[0] != ':' {
				return fail(want, "unexpected %q after ']'", after)
			}
			port, hasPort = after[1:], true
		}
	} else {
		if strings.Count(hostport, ":") > 1 {
			return fail("write IPv6 addresses as [addr]:port", "too many colons in %q", hostport)
		}
		host, port, hasPort = strings.Cut(hostport, ":")
		if host == "" {
			return fail(want, "missing host")
		}
		if err := CheckHost(host); err != nil {
			return fail(want, "%v", err)
		}
	}
	switch {
	case !hasPort && defPort == 0:
		return fail(want, "missing port")
	case !hasPort:
		t.Port = defPort
	default:
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil || p == 0 {
			return fail("want a port number 1–65535", "bad port %q", port)
		}
		t.Port = int(p)
	}
	t.Host = host
	if kind == KindNPort {
		switch def, ok := NPortCmdPort(t.Port); {
		case strings.EqualFold(cmd, "none"):
		case cmd != "":
			p, err := strconv.ParseUint(cmd, 10, 16)
			if err != nil || p == 0 {
				return fail("want cmd=PORT (1–65535) or cmd=none", "bad command port %q", cmd)
			}
			t.CmdPort = int(p)
		case ok:
			t.CmdPort = def
		default:
			return fail("give ?cmd=PORT, the NPort's command port for this serial port, or ?cmd=none for data only",
				"data port %d has no default command port (only 4001–4032 do)", t.Port)
		}
		if t.CmdPort != 0 && t.CmdPort == t.Port {
			return fail("the NPort's command port differs from its data port", "command port %d is the data port", t.CmdPort)
		}
	}
	return t, nil
}

// checkPath accepts an absolute path to a device: not "/" and not a
// directory ("/dev/"), without NUL. It returns a problem and what to
// write instead, or "".
func checkPath(p string) (problem, want string) {
	switch {
	case p == "/":
		return "missing device path", "want a device path such as /dev/ttyUSB0"
	case strings.HasSuffix(p, "/"):
		return fmt.Sprintf("device path %q names a directory", p), "want a device path such as /dev/ttyUSB0"
	case strings.ContainsRune(p, 0):
		return "NUL byte in device path", ""
	}
	return "", ""
}

// CheckHost accepts an IP address without a zone (IPv6 without brackets)
// or a DNS name: dot-separated labels of letters, digits, '-' and '_', each
// 1–63 bytes and not starting or ending with '-', 253 bytes in all, with
// an optional trailing dot. Its errors describe only the host; the caller
// says where it came from.
func CheckHost(h string) error {
	if h == "" {
		return errors.New("missing host")
	}
	if ip, err := netip.ParseAddr(h); err == nil {
		if ip.Zone() != "" {
			return fmt.Errorf("host %q: zones are not allowed", h)
		}
		return nil
	}
	name := strings.TrimSuffix(h, ".")
	if len(name) == 0 || len(name) > 253 {
		return fmt.Errorf("invalid host %q", h)
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("invalid host %q", h)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("invalid host %q", h)
			}
		}
	}
	return nil
}

// queryError is a bad query parameter: the problem and, from rfc2217's
// parsers, what would have been accepted.
type queryError struct{ problem, want string }

func (e *queryError) Error() string { return e.problem }

// parseQuery reads the settings parameters and nport's cmd (returned as
// given, "" when absent; the caller checks it).
func parseQuery(raw string) (s rfc2217.Settings, cmd string, err error) {
	if raw == "" {
		return s, "", nil
	}
	seen := map[string]bool{}
	for part := range strings.SplitSeq(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		key, err := url.QueryUnescape(k)
		if err != nil {
			return s, "", &queryError{problem: fmt.Sprintf("bad parameter %q", k)}
		}
		val, err := url.QueryUnescape(v)
		if err != nil {
			return s, "", &queryError{problem: fmt.Sprintf("bad value %q for %s", v, key)}
		}
		key = strings.ToLower(key)
		if seen[key] {
			return s, "", &queryError{problem: fmt.Sprintf("parameter %q given twice", key)}
		}
		seen[key] = true
		switch key {
		case "cmd":
			if val == "" {
				return s, "", &queryError{problem: "empty cmd", want: "want cmd=PORT or cmd=none"}
			}
			cmd = val
		case "baud":
			s.Baud, err = rfc2217.ParseBaud(val)
		case "parity":
			s.Parity, err = rfc2217.ParseParity(val)
		case "databits":
			s.DataSize, err = rfc2217.ParseDataSize(val)
		case "stopbits":
			s.StopSize, err = rfc2217.ParseStopSize(val)
		case "flow":
			s.Flow, err = rfc2217.ParseFlow(val)
		default:
			return s, "", &queryError{problem: fmt.Sprintf("unknown parameter %q", key), want: "want baud, parity, databits, stopbits, flow, or cmd on nport://"}
		}
		if err != nil {
			qe := &queryError{problem: fmt.Sprintf("bad %s %q", key, val)}
			var se *rfc2217.SettingError
			if errors.As(err, &se) {
				qe.want = se.Want
			}
			return s, "", qe
		}
	}
	return s, cmd, nil
}

// settingsQuery writes the non-zero fields of s as URI query parameters,
// in canonical form.
func settingsQuery(s rfc2217.Settings) string {
	var parts []string
	if s.Baud != 0 {
		parts = append(parts, "baud="+strconv.FormatUint(uint64(s.Baud), 10))
	}
	if s.Parity != 0 {
		parts = append(parts, "parity="+s.Parity.String())
	}
	if s.DataSize != 0 {
		parts = append(parts, "databits="+strconv.Itoa(int(s.DataSize)))
	}
	if s.StopSize != 0 {
		parts = append(parts, "stopbits="+s.StopSize.String())
	}
	if s.Flow != 0 {
		parts = append(parts, "flow="+flowName(s.Flow))
	}
	return strings.Join(parts, "&")
}

// flowName is the URI spelling of a flow control value.
func flowName(f rfc2217.FlowControl) string {
	switch f {
	case rfc2217.FlowNone:
		return "none"
	case rfc2217.FlowXONXOFF:
		return "xonxoff"
	case rfc2217.FlowHardware:
		return "rtscts"
	}
	return f.String()
}
