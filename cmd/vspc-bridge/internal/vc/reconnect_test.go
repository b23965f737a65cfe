package vc

import (
	"strings"
	"testing"

	"github.com/vmware/govmomi/event"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

func TestReconnect(t *testing.T) {
	w := newWorld(t)
	w.scenario(t)
	ctx := t.Context()
	vm := w.vm(t, "DC0_H0_VM0")
	var props mo.VirtualMachine
	if err := vm.Properties(ctx, vm.Reference(), []string{"config.instanceUuid"}, &props); err != nil {
		t.Fatal(err)
	}
	uuid := props.Config.InstanceUuid
	// The port is disconnected, as after its proxy went away.
	p := w.readPorts(t, "DC0_H0_VM0")[0]
	p.Connectable.Connected = false
	if err := vm.EditDevice(ctx, p); err != nil {
		t.Fatal(err)
	}
	before := reconfigEvents(t, w, vm.Reference())
	if err := Reconnect(ctx, w.client, uuid, "lab-switch"); err != nil {
		t.Fatal(err)
	}
	if p := w.readPorts(t, "DC0_H0_VM0")[0]; !p.Connectable.Connected {
		t.Errorf("port not connected after Reconnect: %+v", p.Connectable)
	}
	if n := reconfigEvents(t, w, vm.Reference()) - before; n != 2 {
		t.Errorf("%d reconfigurations, want 2 (disconnect, connect)", n)
	}
	if err := Reconnect(ctx, w.client, uuid, "no-such-service"); err == nil {
		t.Error("Reconnect of a service URI the VM does not have succeeded")
	}
	if err := Reconnect(ctx, w.client, "50000000-0000-0000-0000-00000000dead", "lab-switch"); err == nil {
		t.Error("Reconnect of an unknown VM succeeded")
	}
}

// A port whose VM sent no VC UUID is found by the VM's name, exactly;
// a name two VMs share reconnects neither.
func TestReconnectByName(t *testing.T) {
	w := newWorld(t)
	w.scenario(t)
	ctx := t.Context()
	vm := w.vm(t, "DC0_H0_VM0")
	before := reconfigEvents(t, w, vm.Reference())
	if err := ReconnectByName(ctx, w.client, "DC0_H0_VM0", "lab-switch"); err != nil {
		t.Fatal(err)
	}
	if n := reconfigEvents(t, w, vm.Reference()) - before; n != 2 {
		t.Errorf("%d reconfigurations, want 2 (disconnect, connect)", n)
	}
	for _, name := range []string{"DC0_H0_VM*", "no-such-vm"} {
		if err := ReconnectByName(ctx, w.client, name, "lab-switch"); err == nil || !strings.Contains(err.Error(), "no VM is named") {
			t.Errorf("ReconnectByName(%q): %v, want no VM found", name, err)
		}
	}
	// Another VM, in a folder of its own, takes the same name (vCenter
	// allows that across folders).
	folders, err := w.finder(t).DefaultFolder(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := folders.CreateFolder(ctx, "elsewhere")
	if err != nil {
		t.Fatal(err)
	}
	other := w.vm(t, "DC0_C0_RP0_VM0")
	task, err := sub.MoveInto(ctx, []types.ManagedObjectReference{other.Reference()})
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if task, err = other.Rename(ctx, "DC0_H0_VM0"); err != nil {
		t.Fatal(err)
	}
	if err := task.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	before = reconfigEvents(t, w, vm.Reference())
	if err := ReconnectByName(ctx, w.client, "DC0_H0_VM0", "lab-switch"); err == nil || !strings.Contains(err.Error(), `2 VMs are named "DC0_H0_VM0"`) {
		t.Errorf("ambiguous name: %v", err)
	}
	if n := reconfigEvents(t, w, vm.Reference()) - before; n != 0 {
		t.Errorf("%d reconfigurations of an ambiguous name's VM, want none", n)
	}
}

func reconfigEvents(t *testing.T, w *world, vm types.ManagedObjectReference) int {
	t.Helper()
	evs, err := event.NewManager(w.client).QueryEvents(t.Context(), types.EventFilterSpec{
		Entity:      &types.EventFilterSpecByEntity{Entity: vm, Recursion: types.EventFilterSpecRecursionOptionSelf},
		EventTypeId: []string{"VmReconfiguredEvent"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return len(evs)
}
