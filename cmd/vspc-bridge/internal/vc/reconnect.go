package vc

import (
	"context"
	"fmt"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"
)

// Reconnect makes ESXi open a new proxy connection for one VM serial
// port: it sets the port's connectable.connected to false, then back to
// true, each a device edit (what `govc device.disconnect` and
// `device.connect` do; VMware VIC reconnected its serial ports the same
// way). The VM is found by its VC UUID (vCenter's instance UUID, what ESXi
// sends as VM-VC-UUID), the port by its service URI. A cluster's leader
// calls it for the ports of a dead member that did not come back.
func Reconnect(ctx context.Context, c *vim25.Client, vcUUID, service string) error {
	ref, err := object.NewSearchIndex(c).FindByUuid(ctx, nil, vcUUID, true, types.NewBool(true))
	if err != nil {
		return fmt.Errorf("vc: finding VM %s: %w", vcUUID, err)
	}
	if ref == nil {
		return fmt.Errorf("vc: no VM has VC UUID %s", vcUUID)
	}
	vm := object.NewVirtualMachine(c, ref.Reference())
	devs, err := vm.Device(ctx)
	if err != nil {
		return fmt.Errorf("vc: reading the devices of VM %s: %w", vcUUID, err)
	}
	var port *types.VirtualSerialPort
	for _, d := range devs.SelectByType((*types.VirtualSerialPort)(nil)) {
		sp := d.(*types.VirtualSerialPort)
		if b, ok := sp.Backing.(*types.VirtualSerialPortURIBackingInfo); ok && b.ServiceURI == service {
			port = sp
			break
		}
	}
	if port == nil {
		return fmt.Errorf("vc: VM %s has no serial port with service URI %q", vcUUID, service)
	}
	if port.Connectable == nil {
		port.Connectable = &types.VirtualDeviceConnectInfo{StartConnected: true}
	}
	for _, on := range []bool{false, true} {
		port.Connectable.Connected = on
		if err := vm.EditDevice(ctx, port); err != nil {
			return fmt.Errorf("vc: setting %s of VM %s connected=%v: %w", devs.Name(port), vcUUID, on, err)
		}
	}
	return nil
}

// ConnFromEnv is the connection govc's environment names: GOVC_URL,
// GOVC_USERNAME, GOVC_PASSWORD, GOVC_INSECURE (1 or true).
func ConnFromEnv(getenv func(string) string) Conn {
	insecure := false
	switch strings.ToLower(getenv("GOVC_INSECURE")) {
	case "1", "true":
		insecure = true
	}
	return Conn{URL: getenv("GOVC_URL"), Username: getenv("GOVC_USERNAME"), Password: getenv("GOVC_PASSWORD"), Insecure: insecure}
}
