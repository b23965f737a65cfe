package devices

import (
	"fmt"
	"net"
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
	// KindNPort is KindTCP with the NPort's default data port (4001). It
	// behaves exactly like KindTCP; the name is kept for status output.
	KindNPort
	// KindTelnet is a telnet remote: all its options are refused, data is
	// NVT text with 255 escaped. No line control travels on it.
	KindTelnet
	// KindRFC2217 is an RFC 2217 access server (ser2net, an NPort in
	// RFC 2217 mode, pyserial's example server).
	KindRFC2217
	// KindSerial is a local tty opened through go.bug.st/serial.
	KindSerial
)

var kindNames = [...]string{KindTCP: "tcp", KindNPort: "nport", KindTelnet: "telnet", KindRFC2217: "rfc2217", KindSerial: "serial"}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// FixedLine reports whether line settings and modem control cannot travel
// to a device of this kind (tcp, nport, telnet): what is in effect is what
// the device server is configured to, whether or not the device is
// connected.
func (k Kind) FixedLine() bool {
	return k == KindTCP || k == KindNPort || k == KindTelnet
}

// Default ports for the schemes that have one.
const (
	// NPortDefaultPort is the data port of an NPort's first serial port in
	// TCP Server mode.
	NPortDefaultPort = 4001
	// TelnetDefaultPort is the well-known telnet port.
	TelnetDefaultPort = 23
)

// Target is a parsed device URI.
type Target struct {
	Kind Kind
	Host string // network kinds: host name or IP address, without brackets
	Port int    // network kinds: 1–65535
	Path string // KindSerial: absolute device path
	// Settings are the line settings given in the URI query (zero =
	// unset). For KindSerial and KindRFC2217 they are applied on Open; for
	// KindTCP, KindNPort and KindTelnet they are the expectation of what the
	// far end is configured to, exactly like Options.Initial.
	Settings rfc2217.Settings
	Raw      string // the URI as given to ParseURI
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

// String returns t in canonical URI form; ParseURI(t.String()) yields t
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
	if q := settingsQuery(t.Settings); q != "" {
		b.WriteString("?")
		b.WriteString(q)
	}
	return b.String()
}

// URIError is returned by ParseURI. Its message names the problem, the
// URI and, where it helps, what was expected:
//
//	devices: unknown scheme "foo" in "foo://x" (want tcp, nport, telnet, rfc2217, serial or a /dev path)
type URIError struct {
	URI     string
	Problem string // e.g. `unknown scheme "foo"`
	Want    string // e.g. "want tcp://host:port"; may be empty
}

func (e *URIError) Error() string {
	s := "devices: " + e.Problem + " in " + strconv.Quote(e.URI)
	if e.Want != "" {
		s += " (" + e.Want + ")"
	}
	return s
}

const wantScheme = "want tcp, nport, telnet, rfc2217, serial or a /dev path"

// ParseURI parses a device URI:
//
//	tcp://host:port                    raw TCP (Moxa NPort TCP Server mode, any raw serial server)
//	nport://host[:port]                the same, port defaults to 4001
//	telnet://host[:port]               telnet remote, port defaults to 23
//	rfc2217://host:port                RFC 2217 access server
//	serial:///dev/ttyUSB0?baud=115200&parity=none&databits=8&stopbits=1&flow=none
//	/dev/ttyUSB0                       a local tty, settings left as they are
//
// Query parameters (every scheme but a plain path): baud (1–4294967295),
// parity (none, odd, even, mark, space or n, o, e, m, s), databits (5–8),
// stopbits (1, 1.5, 2), flow (none, xonxoff, rtscts; also software,
// hardware). Scheme and parameter values are case-insensitive; unknown
// or repeated parameters are errors. All errors are *URIError.
func ParseURI(uri string) (Target, error) {
	fail := func(want, format string, args ...any) (Target, error) {
		return Target{}, &URIError{URI: uri, Problem: fmt.Sprintf(format, args...), Want: want}
	}
	if strings.TrimSpace(uri) == "" {
		return fail(wantScheme, "empty URI")
	}
	if strings.HasPrefix(uri, "/") {
		switch {
		case uri == "/":
			return fail("want a device path such as /dev/ttyUSB0", "missing device path")
		case strings.ContainsRune(uri, 0):
			return fail("", "NUL byte in device path")
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
	if t.Settings, err = parseSettingsQuery(query); err != nil {
		return fail("", "%v", err)
	}
	if kind == KindSerial {
		if !strings.HasPrefix(authority, "/") {
			host, _, _ := strings.Cut(authority, "/")
			return fail("want serial:///dev/ttyUSB0, with three slashes", "host %q in serial URI", host)
		}
		p, err := url.PathUnescape(authority)
		switch {
		case err != nil:
			return fail("", "bad escape in device path %q", authority)
		case p == "/":
			return fail("want serial:///dev/ttyUSB0", "missing device path")
		case strings.ContainsRune(p, 0):
			return fail("", "NUL byte in device path")
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
		ip := net.ParseIP(inner)
		if ip == nil || ip.To4() != nil || strings.Contains(inner, "%") {
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
		if err := checkHostName(host); err != "" {
			return fail(want, "%s", err)
		}
	}
	if host == "" {
		return fail(want, "missing host")
	}
	switch {
	case !hasPort && defPort == 0:
		return fail(want, "missing port")
	case !hasPort:
		t.Port = defPort
	default:
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil || p == 0 || port[0] == '+' {
			return fail("want a port number 1–65535", "bad port %q", port)
		}
		t.Port = int(p)
	}
	t.Host = host
	return t, nil
}

// checkHostName accepts DNS names and IPv4 literals: letters, digits, '-',
// '_' and '.'. It returns a problem or "".
func checkHostName(h string) string {
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.':
		default:
			return fmt.Sprintf("bad character %q in host %q", c, h)
		}
	}
	return ""
}

func parseSettingsQuery(raw string) (rfc2217.Settings, error) {
	var s rfc2217.Settings
	if raw == "" {
		return s, nil
	}
	seen := map[string]bool{}
	for part := range strings.SplitSeq(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		key, err := url.QueryUnescape(k)
		if err != nil {
			return s, fmt.Errorf("bad parameter %q", k)
		}
		val, err := url.QueryUnescape(v)
		if err != nil {
			return s, fmt.Errorf("bad value %q for %s", v, key)
		}
		key = strings.ToLower(key)
		if seen[key] {
			return s, fmt.Errorf("parameter %q given twice", key)
		}
		seen[key] = true
		lv := strings.ToLower(val)
		switch key {
		case "baud":
			b, err := strconv.ParseUint(val, 10, 32)
			if err != nil || b == 0 {
				return s, fmt.Errorf("bad baud %q (want 1–4294967295)", val)
			}
			s.Baud = uint32(b)
		case "parity":
			p, ok := parseParity(lv)
			if !ok {
				return s, fmt.Errorf("bad parity %q (want none, odd, even, mark or space)", val)
			}
			s.Parity = p
		case "databits":
			switch val {
			case "5", "6", "7", "8":
				s.DataSize = val[0] - '0'
			default:
				return s, fmt.Errorf("bad databits %q (want 5, 6, 7 or 8)", val)
			}
		case "stopbits":
			switch val {
			case "1":
				s.StopSize = rfc2217.Stop1
			case "2":
				s.StopSize = rfc2217.Stop2
			case "1.5":
				s.StopSize = rfc2217.Stop15
			default:
				return s, fmt.Errorf("bad stopbits %q (want 1, 1.5 or 2)", val)
			}
		case "flow":
			f, ok := parseFlow(lv)
			if !ok {
				return s, fmt.Errorf("bad flow %q (want none, xonxoff or rtscts)", val)
			}
			s.Flow = f
		default:
			return s, fmt.Errorf("unknown parameter %q (want baud, parity, databits, stopbits or flow)", key)
		}
	}
	return s, nil
}

func parseParity(s string) (rfc2217.Parity, bool) {
	switch s {
	case "none", "n":
		return rfc2217.ParityNone, true
	case "odd", "o":
		return rfc2217.ParityOdd, true
	case "even", "e":
		return rfc2217.ParityEven, true
	case "mark", "m":
		return rfc2217.ParityMark, true
	case "space", "s":
		return rfc2217.ParitySpace, true
	}
	return 0, false
}

func parseFlow(s string) (rfc2217.FlowControl, bool) {
	switch s {
	case "none":
		return rfc2217.FlowNone, true
	case "xonxoff", "software", "xon/xoff":
		return rfc2217.FlowXONXOFF, true
	case "rtscts", "hardware", "rts/cts":
		return rfc2217.FlowHardware, true
	}
	return 0, false
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
