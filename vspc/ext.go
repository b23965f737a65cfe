package vspc

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/vspc-bridge/vspc-bridge/telnet"
)

// Subopt is a VMWARE-TELNET-EXT (option 232) suboption code, the first byte
// of an IAC SB 232 ... IAC SE payload (seed, chapter 2, tables 2-2 to 2-6).
type Subopt byte

// VMware telnet extension suboptions. "VM>" marks messages the ESXi host
// sends, "<P" those the proxy sends.
const (
	KnownSuboptions1      Subopt = 0  // VM> codes...            (table 2-2)
	KnownSuboptions2      Subopt = 1  // <P codes...             (table 2-2)
	UnknownSuboptionRcvd1 Subopt = 2  // VM> code                (table 2-3)
	UnknownSuboptionRcvd2 Subopt = 3  // <P code                 (table 2-3)
	VMotionBegin          Subopt = 40 // VM> seq                 (table 2-5)
	VMotionGoahead        Subopt = 41 // <P seq secret
	VMotionNotNow         Subopt = 43 // <P seq
	VMotionPeer           Subopt = 44 // VM> seq secret (destination host)
	VMotionPeerOK         Subopt = 45 // <P seq
	VMotionComplete       Subopt = 46 // VM> seq (destination host)
	VMotionAbort          Subopt = 48 // VM> (source host), no payload
	DoProxy               Subopt = 70 // VM> direction('C'|'S') serviceURI (table 2-4)
	WillProxy             Subopt = 71 // <P
	WontProxy             Subopt = 73 // <P
	VMVCUUID              Subopt = 80 // VM> 47-byte spaced uuid  (table 2-6)
	GetVMVCUUID           Subopt = 81 // <P
	VMName                Subopt = 82 // VM> UTF-8 name
	GetVMName             Subopt = 83 // <P
	VMBIOSUUID            Subopt = 84 // VM> uuid
	GetVMBIOSUUID         Subopt = 85 // <P
	VMLocationUUID        Subopt = 86 // VM> uuid
	GetVMLocationUUID     Subopt = 87 // <P
)

func (s Subopt) String() string {
	switch s {
	case KnownSuboptions1:
		return "KNOWN-SUBOPTIONS-1"
	case KnownSuboptions2:
		return "KNOWN-SUBOPTIONS-2"
	case UnknownSuboptionRcvd1:
		return "UNKNOWN-SUBOPTION-RCVD-1"
	case UnknownSuboptionRcvd2:
		return "UNKNOWN-SUBOPTION-RCVD-2"
	case VMotionBegin:
		return "VMOTION-BEGIN"
	case VMotionGoahead:
		return "VMOTION-GOAHEAD"
	case VMotionNotNow:
		return "VMOTION-NOTNOW"
	case VMotionPeer:
		return "VMOTION-PEER"
	case VMotionPeerOK:
		return "VMOTION-PEER-OK"
	case VMotionComplete:
		return "VMOTION-COMPLETE"
	case VMotionAbort:
		return "VMOTION-ABORT"
	case DoProxy:
		return "DO-PROXY"
	case WillProxy:
		return "WILL-PROXY"
	case WontProxy:
		return "WONT-PROXY"
	case VMVCUUID:
		return "VM-VC-UUID"
	case GetVMVCUUID:
		return "GET-VM-VC-UUID"
	case VMName:
		return "VM-NAME"
	case GetVMName:
		return "GET-VM-NAME"
	case VMBIOSUUID:
		return "VM-BIOS-UUID"
	case GetVMBIOSUUID:
		return "GET-VM-BIOS-UUID"
	case VMLocationUUID:
		return "VM-LOCATION-UUID"
	case GetVMLocationUUID:
		return "GET-VM-LOCATION-UUID"
	}
	return "SUBOPT(" + strconv.Itoa(int(s)) + ")"
}

// knownSuboptions2 is the KNOWN-SUBOPTIONS-2 payload: every suboption this
// proxy generates or accepts, in ascending order, the same every time
// (table 2-2). It is a constant string so it cannot change at run time.
const knownSuboptions2 = "\x00\x01\x02\x03" + // KNOWN-SUBOPTIONS-1/2, UNKNOWN-SUBOPTION-RCVD-1/2
	"\x28\x29\x2b\x2c\x2d\x2e\x30" + // VMOTION-BEGIN GOAHEAD NOTNOW PEER PEER-OK COMPLETE ABORT
	"\x46\x47\x49" + // DO-PROXY WILL-PROXY WONT-PROXY
	"\x50\x51\x52\x53\x54\x55\x56\x57" // VM-VC-UUID .. GET-VM-LOCATION-UUID

// Implemented reports whether the proxy implements suboption s.
func Implemented(s Subopt) bool {
	for i := 0; i < len(knownSuboptions2); i++ {
		if Subopt(knownSuboptions2[i]) == s {
			return true
		}
	}
	return false
}

// AppendExt appends IAC SB 232 <cmd> <parts...> IAC SE with 255 escaped.
func AppendExt(dst []byte, cmd Subopt, parts ...[]byte) []byte {
	dst = append(dst, byte(telnet.IAC), byte(telnet.SB), byte(telnet.VMwareExt))
	dst = telnet.AppendData(dst, []byte{byte(cmd)})
	for _, p := range parts {
		dst = telnet.AppendData(dst, p)
	}
	return append(dst, byte(telnet.IAC), byte(telnet.SE))
}

// AppendKnownSuboptions2 appends our KNOWN-SUBOPTIONS-2.
func AppendKnownSuboptions2(dst []byte) []byte {
	return AppendExt(dst, KnownSuboptions2, []byte(knownSuboptions2))
}

// Direction is the role of the VM's serial port (DO-PROXY, table 2-4).
type Direction byte

const (
	// DirClient: the VM initiates; the service URI names the remote system.
	DirClient Direction = 'C'
	// DirServer: the VM accepts connections from remote systems.
	DirServer Direction = 'S'
)

func (d Direction) String() string {
	switch d {
	case DirClient:
		return "client"
	case DirServer:
		return "server"
	}
	return fmt.Sprintf("Direction(%q)", byte(d))
}

// Errors from parsing extension messages.
var (
	ErrEmptySubopt   = errors.New("vspc: empty VMWARE-TELNET-EXT subnegotiation")
	ErrBadDirection  = errors.New("vspc: DO-PROXY direction is not 'C' or 'S'")
	ErrEmptyURI      = errors.New("vspc: DO-PROXY has an empty service URI")
	ErrBadServiceURI = errors.New("vspc: DO-PROXY service URI has control characters")
)

// Ext is one decoded VMWARE-TELNET-EXT message. Payload aliases the input.
type Ext struct {
	Cmd     Subopt
	Payload []byte
}

// ParseExt splits an option-232 SB payload (unescaped, without the option
// byte) into its suboption and arguments.
func ParseExt(p []byte) (Ext, error) {
	if len(p) == 0 {
		return Ext{}, ErrEmptySubopt
	}
	return Ext{Cmd: Subopt(p[0]), Payload: p[1:]}, nil
}

// ProxyRequest is a parsed DO-PROXY.
type ProxyRequest struct {
	Direction  Direction
	ServiceURI string
}

// ParseDoProxy parses a DO-PROXY payload: one direction byte and the
// service URI, with no separator and no terminator.
func ParseDoProxy(p []byte) (ProxyRequest, error) {
	if len(p) == 0 {
		return ProxyRequest{}, fmt.Errorf("%w (payload empty)", ErrBadDirection)
	}
	d := Direction(p[0])
	if d != DirClient && d != DirServer {
		return ProxyRequest{}, fmt.Errorf("%w (got %q)", ErrBadDirection, p[0])
	}
	uri := p[1:]
	if len(uri) == 0 {
		return ProxyRequest{}, ErrEmptyURI
	}
	for _, b := range uri {
		if b < 0x20 || b == 0x7f {
			return ProxyRequest{}, fmt.Errorf("%w (byte 0x%02x)", ErrBadServiceURI, b)
		}
	}
	return ProxyRequest{Direction: d, ServiceURI: string(uri)}, nil
}
