package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// vcFarm is govmomi's vCenter simulator holding n VMs on one host, VM i
// with a serial port proxied to proxy with service URI services[i]. It
// plays ESXi's part for those ports too: when a reconfiguration sets a
// port's connectable.connected back on (the second half of a bridge's
// reconnect), the VM's host dials (onConnect). The simulator sees every
// reconfiguration as it is asked for: following them there, rather than
// polling vCenter's events per VM as followToggles does for one VM, costs
// nothing at 1,000 VMs and misses no toggle.
type vcFarm struct {
	url     string
	uuids   []string       // VM i's instance (VC) UUID
	index   map[string]int // VM managed object id → i
	follow  atomic.Pointer[func(i int)]
	toggles atomic.Int64 // reconfigurations that set a port connected again
}

func newVCFarm(t *testing.T, n int, proxy string, services []string) *vcFarm {
	t.Helper()
	m := simulator.VPX()
	m.Cluster = 0 // one standalone host holds every VM
	m.Machine = n
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Remove)
	f := &vcFarm{index: map[string]int{}}
	m.Map().Handler = func(_ *simulator.Context, meth *simulator.Method) (mo.Reference, types.BaseMethodFault) {
		if meth.Name != "ReconfigVM_Task" {
			return nil, nil
		}
		req, ok := meth.Body.(*types.ReconfigVM_Task)
		fn := f.follow.Load()
		if !ok || fn == nil {
			return nil, nil
		}
		for _, dc := range req.Spec.DeviceChange {
			s := dc.GetVirtualDeviceConfigSpec()
			sp, ok := s.Device.(*types.VirtualSerialPort)
			if !ok || s.Operation != types.VirtualDeviceConfigSpecOperationEdit || sp.Connectable == nil || !sp.Connectable.Connected {
				continue
			}
			if i, ok := f.index[meth.This.Value]; ok {
				f.toggles.Add(1)
				(*fn)(i)
			}
		}
		return nil, nil
	}
	s := m.Service.NewServer()
	t.Cleanup(s.Close)
	f.url = s.URL.String()
	ctx := t.Context()
	c, err := govmomi.NewClient(ctx, s.URL, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Logout(context.Background()) })
	v, err := view.NewManager(c.Client).CreateContainerView(ctx, c.ServiceContent.RootFolder, []string{"VirtualMachine"}, true)
	if err != nil {
		t.Fatal(err)
	}
	var vms []mo.VirtualMachine
	if err := v.Retrieve(ctx, []string{"VirtualMachine"}, []string{"name", "config.instanceUuid"}, &vms); err != nil {
		t.Fatal(err)
	}
	v.Destroy(ctx)
	byName := map[string]mo.VirtualMachine{}
	for _, vm := range vms {
		byName[vm.Name] = vm
	}
	f.uuids = make([]string, n)
	refs := make([]types.ManagedObjectReference, n)
	for i := range n {
		vm, ok := byName[fmt.Sprintf("DC0_H0_VM%d", i)]
		if !ok {
			t.Fatalf("the simulator has no VM DC0_H0_VM%d (%d VMs)", i, len(vms))
		}
		f.uuids[i], refs[i] = vm.Config.InstanceUuid, vm.Reference()
		f.index[vm.Reference().Value] = i
	}
	// A serial port on each VM, four at a time.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	next := atomic.Int64{}
	for range 4 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				vm := object.NewVirtualMachine(c.Client, refs[i])
				devs, err := vm.Device(ctx)
				if err == nil {
					var sp *types.VirtualSerialPort
					if sp, err = devs.CreateSerialPort(); err == nil {
						sp.Backing = &types.VirtualSerialPortURIBackingInfo{VirtualDeviceURIBackingInfo: types.VirtualDeviceURIBackingInfo{Direction: "client", ServiceURI: services[i], ProxyURI: proxy}}
						sp.Connectable = &types.VirtualDeviceConnectInfo{Connected: true, StartConnected: true}
						err = vm.AddDevice(ctx, sp)
					}
				}
				if err != nil {
					errs <- fmt.Errorf("a serial port on VM %d: %w", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return f
}

// onConnect sets what the farm's hosts do when a port is set connected
// again: fn(i) for VM i.
func (f *vcFarm) onConnect(fn func(i int)) { f.follow.Store(&fn) }
