package configs

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/vspc-bridge/vspc-bridge/devices"
	"github.com/vspc-bridge/vspc-bridge/internal/vcuuid"
	"github.com/vspc-bridge/vspc-bridge/rfc2217"
)

// Route is one [[route]] table: which VMs are joined to which device. A
// route matches a VM when every non-empty matcher (Service, VM, UUID)
// matches; Config.MatchRoute returns the first such route.
type Route struct {
	// Name labels the route in logs and status. If the file leaves it out,
	// Parse sets it to the route's matchers: the single non-empty one, or
	// "service=… vm=… uuid=…" when there are several. Names are unique.
	Name string `toml:"name"`
	// Service is a glob (path.Match syntax) on the service URI the VM sent;
	// without wildcards it is an exact comparison. It is tried against the
	// URI as sent and with its "?query" stripped.
	Service string `toml:"service"`
	// VM is a glob on the VM name (VM-NAME).
	VM string `toml:"vm"`
	// UUID is a VC UUID (VM-VC-UUID); Parse normalises it to lower-case
	// 8-4-4-4-12 form (see vcuuid.Normalize).
	UUID string `toml:"uuid"`
	// Device is where the VM is joined, as written; Target is its parsed
	// form.
	Device string `toml:"device"`
	// SettingsText is the settings key as written ("115200 8N1"); Settings
	// returns the effective line settings.
	SettingsText string `toml:"settings"`
	// FlowText is the flow key as written (none, xonxoff, rtscts; see
	// rfc2217.ParseFlow).
	FlowText string `toml:"flow"`

	target   Target
	settings rfc2217.Settings
}

// Target returns the parsed Device.
func (r *Route) Target() Target { return r.target }

// Settings returns the route's line settings, every field set: settings
// and flow (default "9600 8N1", no flow control), or the device's query
// parameters over that default. For rfc2217:// and serial devices they
// are applied when the device opens; for tcp://, nport:// and telnet://
// devices they are what the device server is configured to.
func (r *Route) Settings() rfc2217.Settings { return r.settings }

// defaultSettings are the line settings of a route that sets none: 9600
// baud, 8 data bits, no parity, 1 stop bit, no flow control.
var defaultSettings = rfc2217.Settings{Baud: 9600, DataSize: 8, Parity: rfc2217.ParityNone, StopSize: rfc2217.Stop1, Flow: rfc2217.FlowNone}

// RouteQuery describes a VM looking for a route: the service URI it asked
// for and what it told us about itself. Empty fields match no matcher.
type RouteQuery struct {
	ServiceURI string // from DO-PROXY
	VMName     string // from VM-NAME
	VCUUID     string // from VM-VC-UUID, any form vcuuid.Normalize accepts
}

// MatchRoute returns the first route whose every non-empty matcher matches
// q. The returned Route belongs to c and must not be modified.
func (c *Config) MatchRoute(q RouteQuery) (*Route, bool) {
	uuid, uerr := vcuuid.Normalize(q.VCUUID)
	for i := range c.Routes {
		r := &c.Routes[i]
		if r.Service == "" && r.VM == "" && r.UUID == "" {
			continue // cannot come out of Parse
		}
		if r.Service != "" && !matchService(r.Service, q.ServiceURI) {
			continue
		}
		if r.VM != "" && (q.VMName == "" || !globMatch(r.VM, q.VMName)) {
			continue
		}
		if r.UUID != "" && (uerr != nil || uuid != r.UUID) {
			continue
		}
		return r, true
	}
	return nil, false
}

func matchService(pattern, uri string) bool {
	if uri == "" {
		return false
	}
	if globMatch(pattern, uri) {
		return true
	}
	if i := strings.IndexByte(uri, '?'); i >= 0 {
		return globMatch(pattern, uri[:i])
	}
	return false
}

// globMatch is path.Match, or plain equality when pattern has no wildcard.
func globMatch(pattern, s string) bool {
	if !strings.ContainsAny(pattern, `*?[\`) {
		return pattern == s
	}
	ok, _ := path.Match(pattern, s)
	return ok
}

// TargetKind says how a route's device is reached.
type TargetKind uint8

// Target kinds. The zero value is not a valid kind.
const (
	TargetTCP     TargetKind = iota + 1 // raw TCP: tcp://host:port, nport://host[:port]
	TargetTelnet                        // telnet://host:port
	TargetRFC2217                       // rfc2217://host:port: telnet with COM-PORT-OPTION
	TargetSerial                        // a local tty: serial:///dev/ttyUSB0 or /dev/ttyUSB0
)

// String returns the URI scheme of the kind.
func (k TargetKind) String() string {
	switch k {
	case TargetTCP:
		return "tcp"
	case TargetTelnet:
		return "telnet"
	case TargetRFC2217:
		return "rfc2217"
	case TargetSerial:
		return "serial"
	}
	return "TargetKind(" + strconv.Itoa(int(k)) + ")"
}

// DefaultNPortPort is the port nport:// targets use when none is given: the
// first data port of a Moxa NPort in TCP server mode.
const DefaultNPortPort = 4001

// Target is a parsed route device.
type Target struct {
	Kind TargetKind
	Addr string // host:port (net.JoinHostPort form) for network kinds
	Path string // absolute device path for TargetSerial
}

// String returns the target as a canonical URI ("tcp://10.0.0.5:4001",
// "serial:///dev/ttyUSB0").
func (t Target) String() string {
	if t.Kind == TargetSerial {
		return "serial://" + t.Path
	}
	return t.Kind.String() + "://" + t.Addr
}

// ParseTarget parses a route device: tcp://host:port, nport://host[:port]
// (raw TCP, default port 4001), telnet://host:port, rfc2217://host:port,
// serial:///dev/ttyX[?baud=…&databits=…&parity=…&stopbits=…&flow=…] or a
// plain absolute device path. Hosts are IP literals (IPv6 in brackets) or
// DNS names; ports are 1..65535.
func ParseTarget(s string) (Target, error) {
	t, _, err := parseTarget(s)
	return t, err
}

// parseTarget checks a route's device with the config's own rules, then
// with devices.ParseURI, which the bridge opens it with: what the bridge
// would refuse must be a config error, not a WONT-PROXY for every VM on
// the route (found by comparing the two parsers under go test -fuzz:
// "tcp://h:1/" passed here and failed there).
func parseTarget(s string) (Target, url.Values, error) {
	t, q, err := parseTargetConfig(s)
	if err != nil {
		return t, q, err
	}
	if _, err := devices.ParseURI(s); err != nil {
		var ue *devices.URIError
		if errors.As(err, &ue) {
			msg := fmt.Sprintf("device %q: %s", s, ue.Problem)
			if ue.Want != "" {
				msg += " (" + ue.Want + ")"
			}
			return Target{}, nil, errors.New(msg)
		}
		return Target{}, nil, fmt.Errorf("device %q: %w", s, err)
	}
	return t, q, nil
}

func parseTargetConfig(s string) (Target, url.Values, error) {
	if s == "" {
		return Target{}, nil, errors.New("empty device")
	}
	if strings.HasPrefix(s, "/") {
		if err := checkDevicePath(s); err != nil {
			return Target{}, nil, err
		}
		return Target{Kind: TargetSerial, Path: s}, nil, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return Target{}, nil, fmt.Errorf("invalid device URI %q: %w", s, errors.Unwrap(err))
	}
	if u.Scheme == "" {
		return Target{}, nil, fmt.Errorf("invalid device %q: want a URI (tcp://, nport://, telnet://, rfc2217://, serial://) or an absolute device path", s)
	}
	if u.User != nil {
		return Target{}, nil, fmt.Errorf("device %q: user info is not allowed", s)
	}
	if u.Fragment != "" || strings.Contains(s, "#") {
		return Target{}, nil, fmt.Errorf("device %q: a #fragment is not allowed", s)
	}
	var kind TargetKind
	switch strings.ToLower(u.Scheme) {
	case "tcp", "nport":
		kind = TargetTCP
	case "telnet":
		kind = TargetTelnet
	case "rfc2217":
		kind = TargetRFC2217
	case "serial":
		if u.Opaque != "" || u.Host != "" {
			return Target{}, nil, fmt.Errorf("device %q: want serial:///dev/ttyX (three slashes, absolute path)", s)
		}
		if err := checkDevicePath(u.Path); err != nil {
			return Target{}, nil, fmt.Errorf("device %q: %w", s, err)
		}
		q := u.Query()
		l := defaultSettings
		if err := applyLineQuery(&l, q); err != nil {
			return Target{}, nil, fmt.Errorf("device %q: %w", s, err)
		}
		return Target{Kind: TargetSerial, Path: u.Path}, q, nil
	default:
		return Target{}, nil, fmt.Errorf("device %q: unknown scheme %q (want tcp, nport, telnet, rfc2217, serial or an absolute device path)", s, u.Scheme)
	}
	if u.Opaque != "" {
		return Target{}, nil, fmt.Errorf("device %q: want %s://host:port", s, u.Scheme)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.ForceQuery {
		return Target{}, nil, fmt.Errorf("device %q: a path or query is not allowed on %s:// devices", s, u.Scheme)
	}
	host, port := u.Hostname(), u.Port()
	if err := checkHost(host); err != nil {
		return Target{}, nil, fmt.Errorf("device %q: %w", s, err)
	}
	if port == "" && strings.EqualFold(u.Scheme, "nport") && !strings.HasSuffix(u.Host, ":") {
		port = strconv.Itoa(DefaultNPortPort)
	}
	if err := checkPort(port); err != nil {
		return Target{}, nil, fmt.Errorf("device %q: %w", s, err)
	}
	return Target{Kind: kind, Addr: net.JoinHostPort(host, port)}, nil, nil
}

func checkDevicePath(p string) error {
	if !path.IsAbs(p) || p == "/" || strings.HasSuffix(p, "/") {
		return fmt.Errorf("device path %q is not an absolute path to a device", p)
	}
	if strings.ContainsRune(p, 0) {
		return fmt.Errorf("device path %q contains NUL", p)
	}
	return nil
}

// checkHost accepts IP literals without zones and DNS names.
func checkHost(h string) error {
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

// checkPort accepts a decimal port 1..65535.
func checkPort(p string) error {
	if p == "" {
		return errors.New("missing port")
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 || p[0] == '+' || p[0] == '0' {
		return fmt.Errorf("port %q: want 1..65535", p)
	}
	return nil
}

// applyLineQuery overrides l with the line parameters in a serial:// query.
func applyLineQuery(l *rfc2217.Settings, q url.Values) error {
	for _, k := range slices.Sorted(maps.Keys(q)) {
		vs := q[k]
		if len(vs) != 1 {
			return fmt.Errorf("query parameter %q given %d times", k, len(vs))
		}
		v := vs[0]
		var err error
		switch k {
		case "baud":
			l.Baud, err = rfc2217.ParseBaud(v)
		case "databits":
			l.DataSize, err = rfc2217.ParseDataSize(v)
		case "parity":
			l.Parity, err = rfc2217.ParseParity(v)
		case "stopbits":
			l.StopSize, err = rfc2217.ParseStopSize(v)
		case "flow":
			l.Flow, err = rfc2217.ParseFlow(v)
		default:
			return fmt.Errorf("unknown query parameter %q (want baud, databits, parity, stopbits, flow)", k)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
