package bridge

import (
	"cmp"
	"slices"
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
	st := l.Status()
	return DeviceStatus{
		VMName:     l.req.VMName,
		VCUUID:     l.req.VCUUID,
		ServiceURI: l.req.ServiceURI,
		Direction:  l.req.Direction.String(),
		Route:      l.trusted,
		Device:     st.Device,
		State:      st.State,
		LastErr:    st.LastErr,
		Connects:   st.Connects,
		Backlog:    st.Backlog,
	}
}
