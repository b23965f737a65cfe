package configs

import (
	"path"
	"strings"

	"github.com/vspc-bridge/vspc-bridge/devices/target"
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
	// Device is where the VM is joined, as written (a device URI, see
	// package target); Target is its parsed form.
	Device string `toml:"device"`
	// SettingsText is the settings key as written ("115200 8N1"); Settings
	// returns the effective line settings.
	SettingsText string `toml:"settings"`
	// FlowText is the flow key as written (none, xonxoff, rtscts; see
	// rfc2217.ParseFlow).
	FlowText string `toml:"flow"`

	target   target.Target
	settings rfc2217.Settings
}

// Target returns the parsed Device: what the bridge opens. Its Settings
// are those of the device's query, if any; Settings has the route's
// complete line settings.
func (r *Route) Target() target.Target { return r.target }

// Settings returns the route's line settings, every field set: settings
// and flow (default "9600 8N1", no flow control), or the device URI's
// query parameters over that default. For rfc2217://, nport:// (through
// its command port) and serial devices they are applied when the device
// opens; for tcp:// and telnet:// devices, and nport:// without its command
// port, they are what the device server is configured to.
func (r *Route) Settings() rfc2217.Settings { return r.settings }

// SettingsGiven reports whether the route states line settings itself (the
// settings or flow key, or a settings query in the device URI) rather than
// taking the default "9600 8N1": a device that can set the line (an NPort
// through its command port) is only set to what was written.
func (r *Route) SettingsGiven() bool {
	return r.SettingsText != "" || r.FlowText != "" || r.target.Settings != (rfc2217.Settings{})
}

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
