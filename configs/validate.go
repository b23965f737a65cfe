package configs

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/vspc-bridge/vspc-bridge/devices/target"
	"github.com/vspc-bridge/vspc-bridge/internal/vcuuid"
	"github.com/vspc-bridge/vspc-bridge/rfc2217"
)

// Limits enforced by validation.
const (
	MaxFlushTimeout   = 5 * time.Second // ESXi's vmotionLimit; flush_timeout must be below it
	MinSubnegotiation = 64
	MaxSubnegotiation = 65536
	MinVMotionBuffer  = 4 * KiB
	MaxVMotionBuffer  = 1 * GiB
	MaxSessionsLimit  = 1_000_000
)

// validate checks the decoded config and fills in the parsed caches.
func (d *decoder) validate(c *Config) {
	d.validateVSPC(&c.VSPC)
	d.validateVMotion(&c.VMotion)
	c.allow = d.validatePolicy(&c.Policy)
	d.validateLog(&c.Log)
	d.validateRoutes(c.Routes)
	d.validateRemote(&c.Remote, c.Users)
	d.validateAdmin(c)
	d.validateWeb(c)
	d.validateCluster(c)
}

func (d *decoder) positive(key string, v Duration) {
	if v.Duration <= 0 {
		d.errorf(key, "must be positive, got %v", v.Duration)
	}
}

func (d *decoder) nonNegative(key string, v Duration) {
	if v.Duration < 0 {
		d.errorf(key, "must not be negative, got %v", v.Duration)
	}
}

func (d *decoder) validateVSPC(v *VSPC) {
	if v.Listen == "" && v.TLSListen == "" && !d.bad["vspc"] && !d.bad["vspc.listen"] && !d.bad["vspc.tls_listen"] {
		d.errorf("vspc.listen", `required: the host:port ESXi hosts connect to, such as "127.0.0.1:13370" (or set tls_listen)`)
	}
	if v.Listen != "" {
		if err := checkListen(v.Listen); err != nil {
			d.fail("vspc.listen", err)
		}
	}
	if v.TLSListen != "" {
		if err := checkListen(v.TLSListen); err != nil {
			d.fail("vspc.tls_listen", err)
		}
		if v.TLSCert == "" {
			d.errorf("vspc.tls_cert", "required with tls_listen")
		}
		if v.TLSKey == "" {
			d.errorf("vspc.tls_key", "required with tls_listen")
		}
	} else {
		if v.TLSCert != "" {
			d.errorf("vspc.tls_cert", "set without tls_listen")
		}
		if v.TLSKey != "" {
			d.errorf("vspc.tls_key", "set without tls_listen")
		}
	}
	if v.ProxyURI != "" {
		if err := checkProxyURI(v.ProxyURI); err != nil {
			d.fail("vspc.proxy_uri", err)
		}
	}
	d.positive("vspc.handshake_timeout", v.HandshakeTimeout)
	d.positive("vspc.identify_timeout", v.IdentifyTimeout)
	if v.MaxSessions < 1 || v.MaxSessions > MaxSessionsLimit {
		d.errorf("vspc.max_sessions", "%d is out of range 1..%d", v.MaxSessions, MaxSessionsLimit)
	}
	if v.MaxSubnegotiation < MinSubnegotiation || v.MaxSubnegotiation > MaxSubnegotiation {
		d.errorf("vspc.max_subnegotiation", "%d bytes is out of range %d..%d", v.MaxSubnegotiation, MinSubnegotiation, MaxSubnegotiation)
	}
	d.nonNegative("vspc.grace_period", v.GracePeriod)
	d.nonNegative("vspc.keepalive", v.Keepalive)
	d.nonNegative("vspc.park_after", v.ParkAfter)
}

// checkListen accepts host:port with an empty host (all interfaces), an IP
// literal or a DNS name, and a port 0..65535 (0: any free port).
func checkListen(hostport string) error {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("want host:port, such as \"127.0.0.1:13370\" or \":13370\": %w", errors.Unwrap(err))
	}
	if host != "" {
		if err := target.CheckHost(host); err != nil {
			return err
		}
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 || port == "" || port[0] == '+' || port[0] == '-' {
		return fmt.Errorf("port %q: want 0..65535", port)
	}
	return nil
}

// checkProxyURI accepts telnet://host:port and telnets://host:port (with an
// optional #fragment such as #thumbprint=… on telnets).
func checkProxyURI(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("invalid URI %q: %w", s, errors.Unwrap(err))
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "telnet" && scheme != "telnets" {
		return fmt.Errorf("%q: want telnet://host:port or telnets://host:port", s)
	}
	if u.User != nil {
		return fmt.Errorf("%q: user info is not allowed", s)
	}
	if u.Opaque != "" || u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.ForceQuery {
		return fmt.Errorf("%q: want %s://host:port with no path or query", s, scheme)
	}
	if u.Fragment != "" && scheme != "telnets" {
		return fmt.Errorf("%q: a #fragment is only meaningful on telnets://", s)
	}
	if err := target.CheckHost(u.Hostname()); err != nil {
		return fmt.Errorf("%q: %w", s, err)
	}
	if err := checkPort(u.Port()); err != nil {
		return fmt.Errorf("%q: %w", s, err)
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

func (d *decoder) validateVMotion(v *VMotion) {
	if v.Buffer < MinVMotionBuffer || v.Buffer > MaxVMotionBuffer {
		d.errorf("vmotion.buffer", "%s is out of range %s..%s", v.Buffer, MinVMotionBuffer, MaxVMotionBuffer)
	}
	d.positive("vmotion.flush_timeout", v.FlushTimeout)
	if v.FlushTimeout.Duration >= MaxFlushTimeout {
		d.errorf("vmotion.flush_timeout", "%v must be below %v (ESXi gives up on a vMotion hand-over after 5s)", v.FlushTimeout.Duration, MaxFlushTimeout)
	}
	d.positive("vmotion.peer_timeout", v.PeerTimeout)
	d.positive("vmotion.complete_timeout", v.CompleteTimeout)
}

func (d *decoder) validatePolicy(p *Policy) *Allow {
	a := &Allow{}
	for i, e := range p.ConnectAllow {
		if d.bad[indexKey("policy.connect_allow", i)] {
			continue
		}
		if err := a.add(e); err != nil {
			d.fail(indexKey("policy.connect_allow", i), err)
		}
	}
	if len(p.Directions) == 0 {
		d.errorf("policy.directions", `must list "client", "server" or both`)
	}
	seen := map[string]bool{}
	for i, dir := range p.Directions {
		switch {
		case d.bad[indexKey("policy.directions", i)]:
		case dir != DirectionClient && dir != DirectionServer:
			d.errorf(indexKey("policy.directions", i), `%q: want "client" or "server"`, dir)
		case seen[dir]:
			d.errorf(indexKey("policy.directions", i), "%q is listed twice", dir)
		}
		seen[dir] = true
	}
	d.positive("policy.reconnect_min", p.ReconnectMin)
	d.positive("policy.reconnect_max", p.ReconnectMax)
	if p.ReconnectMax.Duration > 0 && p.ReconnectMax.Duration < p.ReconnectMin.Duration {
		key := "policy.reconnect_max"
		if !d.set[key] {
			key = "policy.reconnect_min"
		}
		d.errorf(key, "reconnect_max %v is below reconnect_min %v", p.ReconnectMax.Duration, p.ReconnectMin.Duration)
	}
	d.positive("policy.dial_timeout", p.DialTimeout)
	return a
}

func (d *decoder) validateLog(l *Log) {
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		d.errorf("log.level", "%q: want debug, info, warn or error", l.Level)
	}
	switch l.Format {
	case "text", "json":
	default:
		d.errorf("log.format", "%q: want text or json", l.Format)
	}
}

func (d *decoder) validateRoutes(routes []Route) {
	names := map[string]int{}
	for i := range routes {
		r := &routes[i]
		rk := indexKey("route", i)
		for _, m := range []struct{ key, pattern string }{{"service", r.Service}, {"vm", r.VM}} {
			if _, err := path.Match(m.pattern, ""); err != nil {
				d.errorf(rk+"."+m.key, "bad pattern %q: %w", m.pattern, err)
			}
		}
		uuidBad := d.bad[rk+".uuid"]
		if r.UUID != "" {
			u, err := vcuuid.Normalize(r.UUID)
			if err != nil {
				d.fail(rk+".uuid", err)
				uuidBad = true
			}
			r.UUID = u
		}
		// uuid = "" means "any VM", like an empty service or vm: it is
		// not a matcher (FuzzParse found a route with only uuid = "").
		if r.Service == "" && r.VM == "" && r.UUID == "" && !uuidBad && !d.bad[rk+".service"] && !d.bad[rk+".vm"] {
			d.errorf(rk, "needs at least one matcher: service, vm or uuid")
		}
		d.validateDevice(rk, r)
		if r.Name == "" {
			r.Name = defaultRouteName(r)
		}
		if j, dup := names[r.Name]; dup && r.Name != "" {
			key := rk + ".name"
			if !d.set[key] {
				key = rk
			}
			d.errorf(key, "duplicate route name %q (also route[%d]); names must be unique", r.Name, j)
		} else {
			names[r.Name] = i
		}
	}
}

// validateDevice parses r.Device and the line settings into r's caches,
// with the parser the bridge opens the device with (package target): a
// device the config accepts is one the bridge can open.
func (d *decoder) validateDevice(rk string, r *Route) {
	l := defaultSettings
	settingsOK := true
	if r.SettingsText != "" {
		s, err := rfc2217.ParseSettings(r.SettingsText)
		if err != nil {
			d.fail(rk+".settings", err)
			settingsOK = false
		} else {
			l = s
		}
	}
	if r.FlowText != "" {
		f, err := rfc2217.ParseFlow(r.FlowText)
		switch {
		case err != nil:
			d.fail(rk+".flow", err)
		case settingsOK && len(strings.Fields(r.SettingsText)) == 3:
			d.errorf(rk+".flow", "flow control is also given in settings %q; give it once", r.SettingsText)
		default:
			l.Flow = f
		}
	}
	// On tcp:// and telnet:// devices (and nport:// with cmd=none, or
	// whose command port is off) settings cannot travel: they record what
	// the device server is configured to, which is what the guest is told
	// is in effect (issue 4). nport:// applies them through the command
	// port (issue 14).
	r.settings = l
	if r.Device == "" {
		if !d.bad[rk+".device"] {
			d.errorf(rk+".device", `required: where to join the VM, such as "tcp://127.0.0.1:4001", "rfc2217://host:port" or "/dev/ttyUSB0"`)
		}
		return
	}
	t, err := target.Parse(r.Device)
	if err != nil {
		var ue *target.URIError
		if errors.As(err, &ue) {
			msg := fmt.Sprintf("device %q: %s", r.Device, ue.Problem)
			if ue.Want != "" {
				msg += " (" + ue.Want + ")"
			}
			err = errors.New(msg)
		}
		d.fail(rk+".device", err)
		return
	}
	r.target = t
	if t.Settings != (rfc2217.Settings{}) {
		if r.SettingsText != "" || r.FlowText != "" {
			d.errorf(rk+".device", "line settings are given both in the device query and in settings/flow; give them in one place")
			return
		}
		r.settings = t.Settings.Merge(defaultSettings)
	}
}

// defaultRouteName names a route after its matchers.
func defaultRouteName(r *Route) string {
	var parts []string
	for _, m := range []struct{ key, val string }{{"service", r.Service}, {"vm", r.VM}, {"uuid", r.UUID}} {
		if m.val != "" {
			parts = append(parts, m.key+"="+m.val)
		}
	}
	if len(parts) == 1 {
		_, v, _ := strings.Cut(parts[0], "=")
		return v
	}
	return strings.Join(parts, " ")
}
