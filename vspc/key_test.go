package vspc_test

import (
	"testing"

	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// TestPortKey: a port is keyed by VC UUID (or VM name) and service URI,
// and the string form is the one the remote hub's state file is keyed by,
// so it must never change.
func TestPortKey(t *testing.T) {
	const uuid = "50112233-4455-6677-8899-aabbccddeeff"
	for _, tt := range []struct {
		name string
		req  vspc.Request
		want vspc.PortKey
		str  string
	}{
		{"uuid", vspc.Request{VCUUID: uuid, VMName: "web-1", ServiceURI: "vSPC.py?port=com2", BIOSUUID: "x", Direction: vspc.DirServer},
			vspc.PortKey{VM: uuid, Service: "vSPC.py?port=com2"}, uuid + " vSPC.py?port=com2"},
		{"name only", vspc.Request{VMName: "web-1", ServiceURI: "vSPC.py"},
			vspc.PortKey{VM: "name:web-1", Service: "vSPC.py"}, "name:web-1 vSPC.py"},
		{"anonymous", vspc.Request{ServiceURI: "vSPC.py"},
			vspc.PortKey{VM: "name:", Service: "vSPC.py"}, "name: vSPC.py"},
	} {
		got := tt.req.PortKey()
		if got != tt.want || got.String() != tt.str {
			t.Errorf("%s: PortKey() = %+v %q, want %+v %q", tt.name, got, got.String(), tt.want, tt.str)
		}
		if k := vspc.PortKeyOf(tt.req.VCUUID, tt.req.VMName, tt.req.ServiceURI); k != got {
			t.Errorf("%s: PortKeyOf = %+v, Request.PortKey = %+v", tt.name, k, got)
		}
	}
	com1 := vspc.Request{VCUUID: uuid, ServiceURI: "vSPC.py?port=com1"}.PortKey()
	com2 := vspc.Request{VCUUID: uuid, ServiceURI: "vSPC.py?port=com2"}.PortKey()
	if com1 == com2 {
		t.Fatal("two serial ports of one VM share a key")
	}
	// The name is only a fallback: a VM renamed in vCenter keeps its port.
	if a, b := (vspc.Request{VCUUID: uuid, VMName: "old", ServiceURI: "s"}).PortKey(), (vspc.Request{VCUUID: uuid, VMName: "new", ServiceURI: "s"}).PortKey(); a != b {
		t.Fatalf("the VM name changed the key: %+v, %+v", a, b)
	}
}
