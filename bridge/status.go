package bridge

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/rfc2217"
)

// DeviceStatus is a snapshot of one link: the VM serial port it belongs
// to and the device or remote system it keeps open.
type DeviceStatus struct {
	VMName     string // VM-NAME
	VCUUID     string // VM-VC-UUID, normalised; "" when the VM sent none
	ServiceURI string // from DO-PROXY
	Direction  string // client or server
	Route      bool   // joined through a [[route]] (trusted); false: the VM's service URI under connect_allow

	Device   string // the target, as a URI
	State    string // connecting, up or down
	LastErr  string // why it is down or was last lost; "" when up
	Connects int    // successful connects so far; each after the first is a reconnect
	Backlog  int    // bytes from the VM waiting for the device
	Settings string // line settings the guest set through RFC 2217 ("" if none)
	Mismatch string // settings the guest asked for that the device cannot take (tcp/nport/telnet), if any
}

// Reconnects is how many times the device was connected again after the
// first time.
func (d DeviceStatus) Reconnects() int { return max(d.Connects-1, 0) }

// Devices returns a snapshot of every open link, sorted by VM name and
// service URI. It takes each link's lock briefly and never blocks on I/O.
func (b *Bridge) Devices() []DeviceStatus {
	b.mu.Lock()
	links := make([]*link, 0, len(b.owners))
	for _, l := range b.owners {
		links = append(links, l)
	}
	b.mu.Unlock()
	out := make([]DeviceStatus, 0, len(links))
	for _, l := range links {
		out = append(out, l.deviceStatus())
	}
	slices.SortFunc(out, func(a, b DeviceStatus) int {
		return cmp.Or(cmp.Compare(a.VMName, b.VMName), cmp.Compare(a.ServiceURI, b.ServiceURI), cmp.Compare(a.Device, b.Device))
	})
	return out
}

// DeviceStatus returns the link's snapshot (see Bridge.Devices). A backend
// returned by Open has this method; status code type-asserts for it.
func (l *link) DeviceStatus() DeviceStatus { return l.deviceStatus() }

func (l *link) deviceStatus() DeviceStatus {
	st := DeviceStatus{
		VMName:     l.name,
		VCUUID:     l.uuid,
		ServiceURI: l.service,
		Direction:  l.direction.String(),
		Route:      l.trusted,
		Device:     l.target.String(),
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	st.State, st.LastErr, st.Connects, st.Backlog = l.state.String(), l.lastErr, l.connects, len(l.backlog)
	if l.settings != (rfc2217.Settings{}) {
		st.Settings = l.settings.String()
	}
	// The device's own record when it has one (an NPort's command port
	// knows more); else the fixed line's, which is the same whether or
	// not the device is connected.
	if m, ok := raw(l.dev).(mismatcher); ok {
		st.Mismatch = m.Mismatch()
	} else if l.fixed != nil {
		st.Mismatch = l.fixed.Mismatch()
	}
	return st
}

// Closer is what ApplyConfig needs of a link's VM side to end a port: a
// *vspc.Port has it.
type Closer interface{ Close(reason string) }

// ApplyConfig makes cfg apply to ports opened from now on and closes the
// ports whose route was removed: a port joined through a [[route]] is
// closed when cfg has no route with the name of the route that joined it,
// unless a route of cfg still joins its VM to the same device. Every other
// port keeps its device connection: changed routes, limits and policy
// apply when the VM next connects. The port's VM connection is closed with
// the reason logged; ESXi reconnects and the VM gets whatever cfg gives
// it. It returns the links it closed.
func (b *Bridge) ApplyConfig(cfg *configs.Config) []DeviceStatus {
	b.mu.Lock()
	b.cfg = cfg
	links := make([]*link, 0, len(b.owners))
	for _, l := range b.owners {
		if l.trusted {
			links = append(links, l)
		}
	}
	b.mu.Unlock()
	names := make(map[string]bool, len(cfg.Routes))
	for _, r := range cfg.Routes {
		names[r.Name] = true
	}
	var closed []DeviceStatus
	for _, l := range links {
		if names[l.route] {
			continue
		}
		q := configs.RouteQuery{ServiceURI: l.service, VMName: l.name, VCUUID: l.uuid}
		if r, ok := cfg.MatchRoute(q); ok && r.Target().Key() == l.key {
			continue // renamed, same device
		}
		st := l.deviceStatus()
		reason := fmt.Sprintf("route %q was removed from the config", l.route)
		l.logger().Info("config reload: closing the port of a removed route", "route", l.route, "service_uri", l.service)
		if c, ok := l.vm.(Closer); ok {
			c.Close(reason)
		} else {
			l.Close()
		}
		closed = append(closed, st)
	}
	return closed
}
