package vc

import (
	"context"
	"fmt"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
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
	return reconnectPort(ctx, object.NewVirtualMachine(c, ref.Reference()), vcUUID, service)
}

// ReconnectByName is Reconnect for a VM found by its name: the VM of a
// serial port that sent no VC UUID (an older ESXi, or a host that did
// not answer GET-VM-VC-UUID). A name that several VMs share is refused:
// reconnecting the wrong VM's port is worse than none.
func ReconnectByName(ctx context.Context, c *vim25.Client, name, service string) error {
	v, err := view.NewManager(c).CreateContainerView(ctx, c.ServiceContent.RootFolder, []string{"VirtualMachine"}, true)
	if err != nil {
		return fmt.Errorf("vc: finding VM %q: %w", name, err)
	}
	defer v.Destroy(context.Background())
	var vms []mo.VirtualMachine
	if err := v.Retrieve(ctx, []string{"VirtualMachine"}, []string{"name"}, &vms); err != nil {
		return fmt.Errorf("vc: finding VM %q: %w", name, err)
	}
	var found []types.ManagedObjectReference
	for _, vm := range vms {
		if vm.Name == name { // exact: no pattern matching on names
			found = append(found, vm.Reference())
		}
	}
	switch len(found) {
	case 0:
		return fmt.Errorf("vc: no VM is named %q", name)
	case 1:
		return reconnectPort(ctx, object.NewVirtualMachine(c, found[0]), fmt.Sprintf("%q", name), service)
	}
	return fmt.Errorf("vc: %d VMs are named %q: not reconnecting any (send the VC UUID to tell them apart)", len(found), name)
}

// reconnectPort sets the serial port of vm whose service URI is service
// disconnected, then connected. what names the VM in errors.
func reconnectPort(ctx context.Context, vm *object.VirtualMachine, what, service string) error {
	devs, err := vm.Device(ctx)
	if err != nil {
		return fmt.Errorf("vc: reading the devices of VM %s: %w", what, err)
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
		return fmt.Errorf("vc: VM %s has no serial port with service URI %q", what, service)
	}
	if port.Connectable == nil {
		port.Connectable = &types.VirtualDeviceConnectInfo{StartConnected: true}
	}
	for _, on := range []bool{false, true} {
		port.Connectable.Connected = on
		if err := vm.EditDevice(ctx, port); err != nil {
			return fmt.Errorf("vc: setting %s of VM %s connected=%v: %w", devs.Name(port), what, on, err)
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
