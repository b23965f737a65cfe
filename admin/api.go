package admin

import (
	"time"

	"github.com/vspc-bridge/vspc-bridge/bridge"
	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// The JSON documents of the API. Field names are a contract with scripts
// and the status command: add fields, never rename them.

// SessionList is the body of GET /api/v1/sessions.
type SessionList struct {
	Time     time.Time `json:"time"`
	Sessions []Session `json:"sessions"`
	// Elsewhere lists the VM's serial ports that other cluster members
	// serve (from etcd), when a VM was asked for; empty on a single
	// node.
	Elsewhere []PortOwner `json:"elsewhere,omitempty"`
}

// PortOwner is a VM serial port and the cluster member that serves it.
type PortOwner struct {
	VM          string    `json:"vm"`
	VCUUID      string    `json:"vc_uuid,omitempty"`
	ServiceURI  string    `json:"service_uri"`
	Member      string    `json:"member"`
	MemberAdmin string    `json:"member_admin,omitempty"` // that member's [admin] listen
	Since       time.Time `json:"since"`
}

// Session is one VM serial port.
type Session struct {
	VM           string    `json:"vm"`
	VCUUID       string    `json:"vc_uuid"`
	BIOSUUID     string    `json:"bios_uuid,omitempty"`
	LocationUUID string    `json:"location_uuid,omitempty"`
	Direction    string    `json:"direction"`     // client or server
	ServiceURI   string    `json:"service_uri"`   // from DO-PROXY
	State        string    `json:"state"`         // attached, detached, vmotion, closed
	Peer         string    `json:"peer"`          // the ESXi host connection carrying it; "" when detached
	Via          string    `json:"via,omitempty"` // the cluster member relaying that connection, when another member accepted it
	Since        time.Time `json:"since"`         // when the port was opened (it survives vMotion and reconnects)
	BytesToVM    int64     `json:"bytes_to_vm"`   // telnet-escaped bytes written to the VM
	BytesFromVM  int64     `json:"bytes_from_vm"`
	Queued       int       `json:"queued"` // bytes waiting for the VM (buffer occupancy)
	VMotions     int       `json:"vmotions"`
	LastHandOver *HandOver `json:"last_handover"`
	// Device is the device or remote system the port is joined to; nil
	// for ports with no device (remote console access).
	Device *Device `json:"device"`
	// RemoteListen is where remote users reach this port's console
	// (telnet://127.0.0.1:7001); "" when it has no per-VM listener.
	RemoteListen string `json:"remote_listen,omitempty"`
	// RemoteUsers are the users attached to a direction-server port's
	// console (remote access); empty otherwise.
	RemoteUsers []RemoteUser `json:"remote_users"`
}

// HandOver is a finished vMotion hand-over.
type HandOver struct {
	Outcome    string    `json:"outcome"` // completed, aborted, timed out, failed
	From       string    `json:"from"`
	To         string    `json:"to"`
	At         time.Time `json:"at"`
	Duration   string    `json:"duration"`
	DurationMS int64     `json:"duration_ms"`
	Buffered   int       `json:"buffered"`
}

// DeviceList is the body of GET /api/v1/devices.
type DeviceList struct {
	Time    time.Time `json:"time"`
	Devices []Device  `json:"devices"`
}

// Device is the far side of a port.
type Device struct {
	VM         string `json:"vm"`
	VCUUID     string `json:"vc_uuid"`
	ServiceURI string `json:"service_uri"`
	URI        string `json:"uri"`        // tcp://…, rfc2217://…, serial:///dev/…
	Via        string `json:"via"`        // route or connect_allow
	State      string `json:"state"`      // connecting, up, down
	LastError  string `json:"last_error"` // why it is down
	Connects   int    `json:"connects"`
	Reconnects int    `json:"reconnects"`
	Backlog    int    `json:"backlog"`            // bytes from the VM waiting for the device
	Settings   string `json:"settings,omitempty"` // line settings the guest set (RFC 2217)
	Mismatch   string `json:"mismatch,omitempty"` // settings the guest asked for that the device cannot take
}

// RemoteUser is a remote client attached to a VM console.
type RemoteUser struct {
	User  string    `json:"user"`
	Mode  string    `json:"mode"`
	Peer  string    `json:"peer"`
	Via   string    `json:"via"`
	Since time.Time `json:"since"`
}

// Console is a remote-access console of a VM serial port, for
// Config.Consoles.
type Console struct {
	VMName, VCUUID, ServiceURI string
	Listen                     string // per-VM listener URI; "" none
	Users                      []RemoteUser
}

// Status is the body of GET /api/v1/status: the bridge as a whole.
type Status struct {
	Time      time.Time  `json:"time"`
	Version   string     `json:"version"`
	Started   time.Time  `json:"started"`
	Config    string     `json:"config"` // the file the config came from
	Listeners []Listener `json:"listeners"`
	Reloads   Reloads    `json:"reloads"`
	Ports     int        `json:"ports"`          // VM serial ports (attached or not)
	Conns     int        `json:"vm_connections"` // open ESXi connections
	Counters  Counters   `json:"counters"`
	Alerts    []string   `json:"alert_rules"`
	// Remote is present when remote access is wired in.
	Remote *RemoteCounters `json:"remote,omitempty"`
	// Cluster is present when the bridge is a cluster member ([cluster]).
	Cluster *ClusterStatus `json:"cluster,omitempty"`
}

// ClusterStatus is a cluster member's view: the members, who owns what,
// etcd's health and the member's own lease.
type ClusterStatus struct {
	Name      string          `json:"name"`
	Member    string          `json:"member"`       // this bridge's member id
	Leader    string          `json:"leader"`       // the leader's member id ("" none or unknown)
	IsLeader  bool            `json:"is_leader"`    // this member leads (runs the reconnect sweep)
	Healthy   bool            `json:"etcd_healthy"` // etcd confirmed the lease at the last renewal
	Valid     bool            `json:"lease_valid"`  // the lease is valid on this member's clock (or the failsafe holds)
	Fenced    bool            `json:"fenced"`       // devices closed: lease lapsed, failsafe did not hold
	Failsafe  bool            `json:"failsafe"`     // lease lapsed, every member confirmed etcd is down for all
	LastError string          `json:"etcd_error,omitempty"`
	Members   []ClusterMember `json:"members"`      // live members, with what each holds
	Orphans   int             `json:"orphan_ports"` // ports of dead members that nobody claimed since
	Etcd      []EtcdEndpoint  `json:"etcd"`         // each endpoint's answer
	Counters  ClusterCounters `json:"counters"`     // this member's
}

// ClusterMember is one live member.
type ClusterMember struct {
	ID      string    `json:"id"`
	Link    string    `json:"link"`
	VSPC    string    `json:"vspc,omitempty"`
	Admin   string    `json:"admin,omitempty"`
	Version string    `json:"version,omitempty"`
	Started time.Time `json:"started"`
	Ports   int       `json:"ports"`   // VM serial ports it holds
	Devices int       `json:"devices"` // devices it holds
}

// EtcdEndpoint is one etcd endpoint's status.
type EtcdEndpoint struct {
	Endpoint string `json:"endpoint"`
	OK       bool   `json:"ok"`
	Leader   bool   `json:"leader,omitempty"` // this endpoint is the raft leader
	Version  string `json:"version,omitempty"`
	DBSize   int64  `json:"db_size,omitempty"`
	Error    string `json:"error,omitempty"`
}

// ClusterCounters are a member's cumulative cluster counts.
type ClusterCounters struct {
	Ops                  int64   `json:"etcd_ops"`
	Claims               int64   `json:"claims"`
	ClaimConflicts       int64   `json:"claim_conflicts"`
	Releases             int64   `json:"releases"`
	LeaseLosses          int64   `json:"lease_losses"`
	Fences               int64   `json:"fences"`
	FailsafeHolds        int64   `json:"failsafe_holds"`
	KeepaliveFailures    int64   `json:"keepalive_failures"`
	Takeovers            int64   `json:"takeovers"`
	LockDelays           int64   `json:"lock_delays"`
	ClaimsLost           int64   `json:"claims_lost"`
	CameBack             int64   `json:"came_back"`       // dead members' ports whose VM came back here by itself
	SweptBack            int64   `json:"swept_back"`      // … after the leader reconnected them
	Forwarded            int64   `json:"forwarded"`       // VM connections carried to the member that serves their port
	HandedIn             int64   `json:"handed_in"`       // VM connections other members carried here
	Held                 int64   `json:"held"`            // VM connections held while their port's owner did not answer
	HoldFailed           int64   `json:"hold_failed"`     // … given up after owner_wait
	ListenReclaims       int64   `json:"listen_reclaims"` // console ports of a full port_range reclaimed
	Toggled              int64   `json:"reconnects_toggled"`
	Reconnected          int64   `json:"reconnects_back"`
	ReconnectFailed      int64   `json:"reconnects_failed"`
	LastReconnectSeconds float64 `json:"last_reconnect_seconds"`
	MaxReconnectSeconds  float64 `json:"max_reconnect_seconds"`
}

// RemoteCounters are the remote-access counters (remote.Counters).
type RemoteCounters struct {
	Logins         int64 `json:"logins"`          // successful logins (telnet, SSH)
	LoginFailures  int64 `json:"login_failures"`  // wrong password, unknown user, no accepted key
	LoginsRefused  int64 `json:"logins_refused"`  // attempts refused while rate-limited
	ClientsDropped int64 `json:"clients_dropped"` // clients that fell more than client_queue behind
	Sessions       int   `json:"sessions"`        // remote connections open now
	Consoles       int   `json:"consoles"`        // direction-server ports with a console
}

// Listener is one listening socket of the bridge.
type Listener struct {
	Kind string `json:"kind"` // vspc (telnet), vspc-tls (telnets), admin, web (the web console)
	Addr string `json:"addr"` // the bound address
	// URI is what ESXi is given as the proxy URI for this listener; for a
	// TLS listener it carries the certificate's thumbprint
	// (telnets://host:port#thumbprint=AB:CD:…, the form OpenStack Nova
	// uses). For admin it is the base URL.
	URI          string    `json:"uri"`
	Thumbprint   string    `json:"thumbprint,omitempty"` // SHA-1 of the certificate, colon-separated
	CertNotAfter time.Time `json:"cert_not_after,omitzero"`
}

// Reloads summarises configuration reloads.
type Reloads struct {
	OK        int64     `json:"ok"`
	Rejected  int64     `json:"rejected"`
	Last      time.Time `json:"last,omitzero"`
	LastError string    `json:"last_error,omitempty"`
}

// Counters are the VM-side event counters (vspc.Counters).
type Counters struct {
	Accepted          int64 `json:"accepted"`
	Refused           int64 `json:"refused"`
	HandshakeFailures int64 `json:"handshake_failures"`
	VMotionsCompleted int64 `json:"vmotions_completed"`
	VMotionsAborted   int64 `json:"vmotions_aborted"`
	VMotionsNotNow    int64 `json:"vmotions_notnow"`
	VMotionsBadSecret int64 `json:"vmotions_bad_secret"`
	VMotionsTimedOut  int64 `json:"vmotions_timed_out"`
	Reconnects        int64 `json:"reconnects"`
}

// ReloadResult is the body of POST /api/v1/reload.
type ReloadResult struct {
	OK      bool     `json:"ok"`
	Errors  []string `json:"errors,omitempty"`  // why the new config was rejected
	Changes []string `json:"changes,omitempty"` // what the reload changed
}

// ErrorBody is the body of an error answer.
type ErrorBody struct {
	Error string `json:"error"`
}

func countersFrom(c vspc.Counters) Counters {
	return Counters{
		Accepted: c.Accepted, Refused: c.Refused, HandshakeFailures: c.HandshakeFailures,
		VMotionsCompleted: c.VMotionsCompleted, VMotionsAborted: c.VMotionsAborted, VMotionsNotNow: c.VMotionsNotNow,
		VMotionsBadSecret: c.VMotionsBadSecret, VMotionsTimedOut: c.VMotionsTimedOut, Reconnects: c.Reconnects,
	}
}

func deviceFrom(d bridge.DeviceStatus) Device {
	via := "connect_allow"
	if d.Route {
		via = "route"
	}
	return Device{
		VM: d.VMName, VCUUID: d.VCUUID, ServiceURI: d.ServiceURI, URI: d.Device, Via: via,
		State: d.State, LastError: d.LastErr, Connects: d.Connects, Reconnects: d.Reconnects(), Backlog: d.Backlog,
		Settings: d.Settings, Mismatch: d.Mismatch,
	}
}

func sessionFrom(p vspc.PortInfo) Session {
	s := Session{
		VM: p.VMName, VCUUID: p.VCUUID, BIOSUUID: p.BIOSUUID, LocationUUID: p.LocationUUID,
		Direction: p.Direction, ServiceURI: p.ServiceURI, State: p.State, Peer: p.Peer, Via: p.Via, Since: p.Since,
		BytesToVM: p.BytesToVM, BytesFromVM: p.BytesFromVM, Queued: p.Queued, VMotions: p.VMotions,
		RemoteUsers: []RemoteUser{},
	}
	if h := p.LastHandOver; h != nil {
		s.LastHandOver = &HandOver{Outcome: h.Outcome, From: h.From, To: h.To, At: h.At, Duration: h.Duration.String(), DurationMS: h.Duration.Milliseconds(), Buffered: h.Buffered}
	}
	return s
}
