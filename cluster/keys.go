package cluster

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultPrefix is where the bridge keeps its keys in etcd.
const DefaultPrefix = "/vspc/v1/"

// Key layout under the prefix (every value is JSON):
//
//	members/<id>             MemberInfo                   member lease
//	leader                   member id                    member lease
//	ports/<vm>/<svc>         PortRecord                   member lease; fence = CreateRevision
//	portinfo/<vm>/<svc>      PortInfo                     none (last owner, for the reconnect sweep)
//	vmotion/<sha256 hex>     Migration                    its own lease (TTL = peer timeout)
//	devices/<dev>            DeviceRecord                 member lease
//	devhist/<dev>            deviceHistory                none (last holder; clean release or not)
//	listen/vm/<vm>/<svc>     listener port number         none
//	listen/port/<n>          "<vm>/<svc>"                 none
//	listen/seen/<vm>/<svc>   listenSeen (last attach)     none
//
// <vm> is the VC UUID (or "name:" + VM name), path-escaped; <svc> is the
// first 32 hex digits of SHA-256 of the service URI; <dev> is the first 32
// hex digits of SHA-256 of the device's URI.
const (
	kMembers    = "members/"
	kLeader     = "leader"
	kPorts      = "ports/"
	kPortInfo   = "portinfo/"
	kVMotion    = "vmotion/"
	kDevices    = "devices/"
	kDevHist    = "devhist/"
	kListenVM   = "listen/vm/"
	kListenN    = "listen/port/"
	kListenSeen = "listen/seen/"
)

// PortID names a VM serial port across the cluster: the VM's VC UUID
// (or "name:" + its name when it sent none) and its service URI.
type PortID struct {
	VM      string `json:"vm"`
	Service string `json:"service"`
}

func (p PortID) String() string { return p.VM + " " + p.Service }

// VCUUID is the VM's VC UUID, or "" for a port named by its VM's name.
func (p PortID) VCUUID() string {
	if strings.HasPrefix(p.VM, "name:") {
		return ""
	}
	return p.VM
}

// path is the port's key suffix: "<vm>/<svc>".
func (p PortID) path() string {
	h := sha256.Sum256([]byte(p.Service))
	return url.PathEscape(p.VM) + "/" + hex.EncodeToString(h[:16])
}

// deviceKey is a device's key suffix.
func deviceKey(dev string) string {
	h := sha256.Sum256([]byte(dev))
	return hex.EncodeToString(h[:16])
}

// MemberInfo is what a member publishes about itself in members/<id>.
type MemberInfo struct {
	ID         string    `json:"id"`
	Link       string    `json:"link"`                  // member link address (host:port)
	VSPC       string    `json:"vspc,omitempty"`        // where VMs reach it, for status
	Admin      string    `json:"admin,omitempty"`       // admin endpoint, for status
	CertSHA256 string    `json:"cert_sha256,omitempty"` // hex SHA-256 of its link certificate (DER)
	Version    string    `json:"version,omitempty"`
	Started    time.Time `json:"started"`
}

// PortRecord is the value of ports/<vm>/<svc>: who serves the port.
type PortRecord struct {
	Member    string    `json:"member"`
	Port      PortID    `json:"port"`
	VMName    string    `json:"vm_name,omitempty"`
	Direction string    `json:"direction,omitempty"`
	Since     time.Time `json:"since"`
}

// PortInfo is the value of portinfo/<vm>/<svc>: the port's last owner,
// kept without a lease so that the leader can reconnect ports whose owner
// died and whose VMs did not come back.
type PortInfo struct {
	Port      PortID    `json:"port"`
	VMName    string    `json:"vm_name,omitempty"`
	Direction string    `json:"direction,omitempty"`
	Member    string    `json:"member"`
	Attached  bool      `json:"attached"`
	Seen      time.Time `json:"seen"`
	Swept     time.Time `json:"swept,omitzero"` // reconnected through vCenter by the leader at
}

// Migration is the value of vmotion/<hash>: a pending vMotion hand-over.
// The secret itself is never stored: the key is SHA-256(seq‖secret), so
// a reader of etcd (or of a backup) cannot forge a VMOTION-PEER.
type Migration struct {
	Owner     string    `json:"owner"`
	Port      PortID    `json:"port"`
	SeqLen    int       `json:"seq_len"`
	Fence     int64     `json:"fence"` // the owner's ports/ CreateRevision
	VMName    string    `json:"vm_name,omitempty"`
	Direction string    `json:"direction,omitempty"`
	Created   time.Time `json:"created"`
}

// PeerHash is the key of a pending hand-over: SHA-256 of the VMOTION-PEER
// payload (seq‖secret, unescaped), as hex.
func PeerHash(payload []byte) string {
	h := sha256.Sum256(payload)
	return hex.EncodeToString(h[:])
}

// DeviceRecord is the value of devices/<dev>: who holds the device.
type DeviceRecord struct {
	Member string    `json:"member"`
	Device string    `json:"device"`
	Holder string    `json:"holder,omitempty"` // the port using it, for status
	Since  time.Time `json:"since"`
}

// deviceHistory is the value of devhist/<dev>: the last holder and whether
// it let go cleanly. A holder that vanished by lease expiry (crash,
// partition, pause) may still be writing: the next claimant waits the lock
// delay.
type deviceHistory struct {
	Member   string `json:"member"`
	Lease    int64  `json:"lease"`
	Released bool   `json:"released"`
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("cluster: %v", err)) // only plain structs are marshalled
	}
	return string(b)
}

func itoa(n int) string { return strconv.Itoa(n) }
