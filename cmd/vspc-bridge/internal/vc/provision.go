package vc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"
)

// ProvisionRequest is what "vc provision" is asked to do.
type ProvisionRequest struct {
	VM        string // name or inventory path of exactly one VM
	Direction string // "client" or "server"
	Service   string // service URI
	Proxy     string // proxy URI; "" = the bridge's (see Provision)
	Port      int32  // device key of the port to change; 0 = choose (see Provision)
	DryRun    bool   // check and describe, change nothing
	// Unpinned writes a telnets:// proxy URI to the bridge without the
	// certificate pin Provision otherwise adds (-pin=false).
	Unpinned bool
}

// Change describes what Provision did or would do.
type Change struct {
	VM       string     `json:"vm"`
	Action   string     `json:"action"` // "add" or "edit"
	DryRun   bool       `json:"dryRun"`
	Applied  bool       `json:"applied"` // the VM was reconfigured
	Before   *Port      `json:"before,omitempty"`
	After    Port       `json:"after"`
	Notes    []string   `json:"notes,omitempty"` // what Provision did to the request, e.g. pinned -proxy
	Problems []*Problem `json:"problems"`        // non-empty: refused, nothing written
}

// Provision adds a URI-backed serial port to a VM or changes an existing one
// (ReconfigVM_Task), with the proxy URI defaulting to the bridge's address and
// startConnected and connected set, as "Creating a Virtual Machine with a
// Network Serial Port" (seed 000) describes.
//
// The proxy URI: req.Proxy, or by default Bridge.ProxyURIs()[0]. When the
// bridge has a TLS certificate (Bridge.TLSCert), the default is its
// telnets:// listener with the certificate pinned as ESXi pins it,
// "telnets://host:port#thumbprint=<SHA-1>" (configs.TelnetsURI), and a
// req.Proxy that names that listener without a "#thumbprint=" gets the
// bridge's added, with a note in Change.Notes. req.Unpinned leaves both
// unpinned. A certificate that cannot be read is an error.
//
// Which port: req.Port names one by device key (any backing). Without it, a
// URI-backed port with the same service URI is changed; else the VM's only
// URI-backed port; else a new port is added. A VM with several URI-backed
// ports needs req.Port. File, pipe and device ports are changed only when
// named.
//
// Before writing, the new port goes through the audit's checks (including
// "device claimed by another VM" against every VM in the datacenter). If any
// fails, Change.Problems says why and nothing is written.
func Provision(ctx context.Context, c *vim25.Client, b Bridge, dc string, req ProvisionRequest, configPath string) (*Change, error) {
	if req.Direction != "client" && req.Direction != "server" {
		return nil, fmt.Errorf("vc: -direction must be client or server, not %q", req.Direction)
	}
	if req.Service == "" {
		return nil, errors.New("vc: -service is required")
	}
	br, err := parseBridge(b)
	if err != nil {
		return nil, err
	}
	vmObj, err := findVM(ctx, c, dc, req.VM)
	if err != nil {
		return nil, err
	}
	all, err := collectVMs(ctx, c, dc, nil)
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(all, func(v VM) bool { return v.ref == vmObj.Reference() })
	if i < 0 {
		return nil, fmt.Errorf("vc: VM %q is not in the inventory read", req.VM)
	}
	vm := &all[i]
	if err := uriSupport(ctx, c, all[i:i+1]); err != nil {
		return nil, err
	}

	ch := &Change{VM: vm.Name, Action: "add", DryRun: req.DryRun, Problems: []*Problem{}}
	target := -1
	switch {
	case req.Port != 0:
		target = slices.IndexFunc(vm.Ports, func(p Port) bool { return p.Key == req.Port })
		if target < 0 {
			return nil, fmt.Errorf("vc: VM %s has no serial port with key %d (see vspc-bridge vc audit)", vm.Name, req.Port)
		}
	default:
		var uris []int
		for j, p := range vm.Ports {
			if p.Backing == BackingURI {
				uris = append(uris, j)
			}
		}
		if j := slices.IndexFunc(vm.Ports, func(p Port) bool { return p.Backing == BackingURI && p.ServiceURI == req.Service }); j >= 0 {
			target = j
		} else if len(uris) == 1 {
			target = uris[0]
		} else if len(uris) > 1 {
			return nil, fmt.Errorf("vc: VM %s has %d URI-backed serial ports: choose one with -port KEY", vm.Name, len(uris))
		}
	}
	proxy := req.Proxy
	switch {
	case proxy == "" && req.Unpinned && br.tls != nil:
		proxy = "telnets://" + br.tls.hostPort()
	case proxy == "":
		proxy = br.uri
	case !req.Unpinned:
		if pinned, ok := br.pin(proxy); ok {
			ch.Notes = append(ch.Notes, fmt.Sprintf("-proxy %s pins no certificate: added #thumbprint=%s, the SHA-1 of the bridge's certificate ([vspc] tls_cert), so that ESXi can verify the bridge (-pin=false writes the URI as given)",
				redact(proxy), br.cert.thumbprint))
			proxy = pinned
		}
	}
	after := Port{Name: "(new)", Backing: BackingURI, Direction: req.Direction, ServiceURI: req.Service, ProxyURI: proxy,
		Connected: true, StartConnected: true, YieldOnPoll: true}
	if target >= 0 {
		before := vm.Ports[target]
		ch.Action, ch.Before = "edit", &before
		after.Name, after.Key, after.YieldOnPoll = before.Name, before.Key, before.YieldOnPoll
		vm.Ports[target] = after
	} else {
		vm.Ports = append(vm.Ports, after)
		target = len(vm.Ports) - 1
	}

	// The audit's checks on the port as it would be.
	a := &auditor{b: b, br: br, opts: Options{Config: configPath}}
	a.resolve(all)
	p := &vm.Ports[target]
	ch.Problems = append(ch.Problems, a.checkPort(vm, p)...)
	if vm.URIBacking == URIBackingUnsupported {
		ch.Problems = append(ch.Problems, &Problem{
			Code: CodeNoURIBacking, VM: vm.Name, Host: vm.Host,
			Message: fmt.Sprintf("host %s offers no URI backing for serial ports (QueryConfigOption)", vm.Host),
			Fix:     "move the VM to a host whose backing options include URI backing",
		})
	}
	for _, sp := range sharedDevices(all) {
		if sp.VM == vm.Name && sp.Port == p.Name {
			ch.Problems = append(ch.Problems, sp)
		}
	}
	ch.After = *p
	ch.After.ProxyURI = redact(ch.After.ProxyURI)
	if len(ch.Problems) > 0 || req.DryRun {
		return ch, nil
	}

	if err := reconfigure(ctx, vmObj, ch, req.Direction, req.Service, proxy); err != nil {
		return nil, err
	}
	ch.Applied = true
	return ch, nil
}

// findVM finds exactly one VM by name or inventory path.
func findVM(ctx context.Context, c *vim25.Client, dc, name string) (*object.VirtualMachine, error) {
	if name == "" {
		return nil, errors.New("vc: -vm is required")
	}
	f, _, err := newFinder(ctx, c, dc, true)
	if err != nil {
		return nil, err
	}
	vms, err := f.VirtualMachineList(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("vc: VM %q: %w", name, err)
	}
	if len(vms) != 1 {
		return nil, fmt.Errorf("vc: VM %q matches %d VMs, want exactly one", name, len(vms))
	}
	return vms[0], nil
}

// reconfigure writes the change with ReconfigVM_Task and reads the port back
// into ch.After.
func reconfigure(ctx context.Context, vm *object.VirtualMachine, ch *Change, dir, service, proxy string) error {
	devs, err := vm.Device(ctx)
	if err != nil {
		return fmt.Errorf("vc: read devices of %s: %w", ch.VM, err)
	}
	var sp *types.VirtualSerialPort
	if ch.Action == "edit" {
		d := devs.FindByKey(ch.Before.Key)
		var ok bool
		if sp, ok = d.(*types.VirtualSerialPort); !ok {
			return fmt.Errorf("vc: %s: serial port %d is gone", ch.VM, ch.Before.Key)
		}
	} else if sp, err = devs.CreateSerialPort(); err != nil {
		return fmt.Errorf("vc: %s: %w", ch.VM, err)
	}
	sp.Backing = &types.VirtualSerialPortURIBackingInfo{VirtualDeviceURIBackingInfo: types.VirtualDeviceURIBackingInfo{
		Direction: dir, ServiceURI: service, ProxyURI: proxy,
	}}
	if sp.Connectable == nil {
		sp.Connectable = &types.VirtualDeviceConnectInfo{}
	}
	sp.Connectable.StartConnected, sp.Connectable.Connected = true, true
	if ch.Action == "edit" {
		err = vm.EditDevice(ctx, sp)
	} else {
		err = vm.AddDevice(ctx, sp)
	}
	if err != nil {
		return fmt.Errorf("vc: reconfigure %s: %w", ch.VM, err)
	}

	after, err := vm.Device(ctx)
	if err != nil {
		return fmt.Errorf("vc: read back devices of %s: %w", ch.VM, err)
	}
	ports := serialPorts(after)
	key := int32(0)
	if ch.Action == "edit" {
		key = ch.Before.Key
	} else {
		old := serialPorts(devs)
		for _, p := range ports {
			if !slices.ContainsFunc(old, func(o Port) bool { return o.Key == p.Key }) {
				key = p.Key
			}
		}
	}
	i := slices.IndexFunc(ports, func(p Port) bool { return p.Key == key })
	if i < 0 {
		return fmt.Errorf("vc: %s: cannot find the serial port after reconfiguring", ch.VM)
	}
	route, device := ch.After.Route, ch.After.Device
	ch.After = ports[i]
	ch.After.Route, ch.After.Device = route, device
	return nil
}

// writeChange prints a Change as a before/after table.
func writeChange(w io.Writer, ch *Change) error {
	var head string
	name := ch.After.Name
	if name == "(new)" {
		name = "a serial port"
	}
	switch {
	case len(ch.Problems) > 0:
		head = fmt.Sprintf("%s: refusing to %s %s: the audit would flag it", ch.VM, ch.Action, name)
	case ch.DryRun:
		head = fmt.Sprintf("%s: would %s %s (dry run, nothing written)", ch.VM, ch.Action, name)
	case ch.Action == "add":
		head = fmt.Sprintf("%s: added %s", ch.VM, name)
	default:
		head = fmt.Sprintf("%s: changed %s", ch.VM, name)
	}
	if _, err := fmt.Fprintln(w, head); err != nil {
		return fmt.Errorf("vc: write: %w", err)
	}
	b := Port{}
	if ch.Before != nil {
		b = *ch.Before
	}
	a := ch.After
	bs := func(s string) string {
		if ch.Before == nil {
			return "-"
		}
		return orDash(s)
	}
	bb := func(v bool) string {
		if ch.Before == nil {
			return "-"
		}
		return yesNo(v)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "\t\tbefore\tafter\n")
	fmt.Fprintf(tw, "\tbacking\t%s\t%s\n", bs(string(b.Backing)), a.Backing)
	fmt.Fprintf(tw, "\tdirection\t%s\t%s\n", bs(b.Direction), a.Direction)
	target := b.ServiceURI
	if b.Backing != BackingURI {
		target = b.Path
	}
	fmt.Fprintf(tw, "\tservice URI\t%s\t%s\n", bs(target), a.ServiceURI)
	fmt.Fprintf(tw, "\tproxy URI\t%s\t%s\n", bs(b.ProxyURI), a.ProxyURI)
	fmt.Fprintf(tw, "\tconnected\t%s\t%s\n", bb(b.Connected), yesNo(a.Connected))
	fmt.Fprintf(tw, "\tstart-connected\t%s\t%s\n", bb(b.StartConnected), yesNo(a.StartConnected))
	fmt.Fprintf(tw, "\tyield-on-poll\t%s\t%s\n", bb(b.YieldOnPoll), yesNo(a.YieldOnPoll))
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("vc: write table: %w", err)
	}
	for _, n := range ch.Notes {
		if _, err := fmt.Fprintf(w, "note: %s\n", n); err != nil {
			return fmt.Errorf("vc: write: %w", err)
		}
	}
	if len(ch.Problems) > 0 {
		return writeProblems(w, ch.Problems)
	}
	return nil
}
