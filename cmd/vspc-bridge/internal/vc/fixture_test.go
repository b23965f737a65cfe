package vc

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/simulator/esx"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// Addresses in the test world (documentation ranges, RFC 5737).
const (
	bridgeURI   = "telnet://192.0.2.10:13370"  // the bridge, as VMs name it
	nportA      = "198.51.100.5"               // a device server reached through a route
	nportB      = "198.51.100.6"               // a device server a VM is wired to directly
	elsewhere   = "203.0.113.9"                // a host connect_allow does not permit
	otherProxy  = "telnet://192.0.2.99:13370"  // some other vSPC
	noURIHost   = "DC0_H2"                     // the host whose config option lacks URI backing
	restricted  = "DC0_C0_H1"                  // the host whose vSPC ruleset admits 192.0.2.128/25 only
	disabledFW  = "DC0_H1"                     // the host whose vSPC ruleset is disabled
	firewallOff = "DC0_C0_H2"                  // the host whose firewall passes everything
	telnetsURI  = "telnets://192.0.2.10:13370" // the bridge's address with the wrong scheme
)

// fakeBridge is a Bridge for tests that must not depend on the config file format.
type fakeBridge struct {
	uris   []string
	allow  func(host string, port int) bool
	routes map[string]Route  // service URI → route
	cert   *x509.Certificate // the telnets listener's; nil = no TLS certificate
}

func (b fakeBridge) ProxyURIs() []string { return b.uris }
func (b fakeBridge) Allowed(host string, port int) bool {
	return b.allow != nil && b.allow(host, port)
}
func (b fakeBridge) Route(q RouteQuery) (Route, bool) {
	r, ok := b.routes[q.ServiceURI]
	return r, ok
}
func (b fakeBridge) TLSCert() (*x509.Certificate, error) { return b.cert, nil }

// testBridge mirrors testdata/bridge.toml.
func testBridge() fakeBridge {
	return fakeBridge{
		uris: []string{bridgeURI},
		allow: func(host string, port int) bool {
			return strings.HasPrefix(host, "198.51.100.") && port >= 4001 && port <= 4016
		},
		routes: map[string]Route{"lab-switch": {Name: "lab-switch", Device: "tcp://" + nportA + ":4001"}},
	}
}

// world is a running simulator: VPX model, datacenter DC0 with standalone hosts
// DC0_H0, DC0_H1, DC0_H2 (VMs DC0_Hn_VM0, DC0_Hn_VM1) and cluster DC0_C0 with
// hosts DC0_C0_H0..H2 (DC0_C0_RP0_VM0 pinned to DC0_C0_H1, DC0_C0_RP0_VM1 to
// DC0_C0_H0: the simulator places cluster VMs at random).
//
// The simulator is extended in the test only:
//   - every environment browser answers QueryConfigOption(Ex) with a
//     VirtualSerialPortOption offering file, pipe, device and URI backings;
//     noURIHost's lacks the URI backing. (The stock simulator answers no
//     hardware options at all. Its answer is per environment browser, i.e.
//     per standalone host or per cluster; a real vCenter answers per host.)
//   - each HostFirewallSystem is wrapped so that RefreshFirewall succeeds and is
//     counted (the stock simulator does not implement it; a real host reloads
//     its rulesets and keeps their enabled state);
//   - every host gets its own copy of the firewall rulesets, reset to ESXi's
//     defaults (the stock simulator shares one slice between all hosts and all
//     models in the test binary).
type world struct {
	model     *simulator.Model
	server    *simulator.Server
	client    *vim25.Client
	url       string
	refreshes atomic.Int32
}

func newWorld(t *testing.T) *world {
	t.Helper()
	m := simulator.VPX()
	m.Host = 3
	m.ClusterHost = 3
	m.Machine = 2
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Remove)
	w := &world{model: m}
	w.isolateFirewalls(t)
	w.configOptions(t)
	w.server = m.Service.NewServer()
	t.Cleanup(w.server.Close)
	w.url = w.server.URL.String()
	ctx := t.Context()
	c, err := govmomi.NewClient(ctx, w.server.URL, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Logout(context.Background()) })
	w.client = c.Client
	w.pin(t, "DC0_C0_RP0_VM0", restricted)
	w.pin(t, "DC0_C0_RP0_VM1", "DC0_C0_H0")
	return w
}

// env returns an env for run with GOVC_* pointing at the simulator.
func (w *world) env(stdout, stderr *bytes.Buffer, b Bridge) env {
	vars := map[string]string{"GOVC_URL": w.url, "GOVC_INSECURE": "1"}
	return env{
		stdout: stdout, stderr: stderr,
		getenv: func(k string) string { return vars[k] },
		loadBridge: func(path string) (Bridge, error) {
			if b != nil {
				return b, nil
			}
			return LoadBridge(path)
		},
	}
}

// configOptions sets the answer of every environment browser's
// QueryConfigOption(Ex); see world.
func (w *world) configOptions(t *testing.T) {
	t.Helper()
	m := w.model.Map()
	noURI := map[types.ManagedObjectReference]bool{}
	for _, e := range m.All("ComputeResource") {
		cr := e.(*mo.ComputeResource)
		for _, h := range cr.Host {
			if m.Get(h).(*simulator.HostSystem).Name == noURIHost {
				noURI[*cr.EnvironmentBrowser] = true
			}
		}
	}
	if len(noURI) != 1 {
		t.Fatalf("found %d environment browsers for %s, want 1", len(noURI), noURIHost)
	}
	for _, r := range m.AllReference("EnvironmentBrowser") {
		eb := r.(*simulator.EnvironmentBrowser)
		backings := []types.BaseVirtualDeviceBackingOption{
			&types.VirtualSerialPortFileBackingOption{},
			&types.VirtualSerialPortPipeBackingOption{},
			&types.VirtualSerialPortDeviceBackingOption{},
		}
		if !noURI[eb.Self] {
			backings = append(backings, &types.VirtualSerialPortURIBackingOption{VirtualDeviceURIBackingOption: types.VirtualDeviceURIBackingOption{
				Directions: types.ChoiceOption{ChoiceInfo: []types.BaseElementDescription{
					&types.ElementDescription{Key: "client"}, &types.ElementDescription{Key: "server"},
				}},
			}})
		}
		eb.QueryConfigOptionResponse.Returnval = &types.VirtualMachineConfigOption{
			Version: esx.HardwareVersion,
			HardwareOptions: types.VirtualHardwareOption{VirtualDeviceOption: []types.BaseVirtualDeviceOption{
				&types.VirtualSerialPortOption{VirtualDeviceOption: types.VirtualDeviceOption{BackingOption: backings}},
			}},
		}
	}
}

// refreshingFirewall is a HostFirewallSystem that implements RefreshFirewall.
type refreshingFirewall struct {
	*simulator.HostFirewallSystem // first field: the property collector digs the mo type out of it
	refreshes                     *atomic.Int32
}

func (f *refreshingFirewall) RefreshFirewall(*types.RefreshFirewall) soap.HasFault {
	f.refreshes.Add(1)
	return &methods.RefreshFirewallBody{Res: new(types.RefreshFirewallResponse)}
}

// isolateFirewalls gives every host its own deep copy of the rulesets with
// vSPC and remoteSerialPort at ESXi's defaults (disabled, all IPs), then sets
// the test's per-host state: vSPC enabled everywhere except on disabledFW,
// and restricted to 192.0.2.128/25 on restricted; firewallOff's default
// policy passes all traffic.
func (w *world) isolateFirewalls(t *testing.T) {
	t.Helper()
	hostOf := map[types.ManagedObjectReference]string{}
	for _, e := range w.model.Map().All("HostSystem") {
		h := e.(*simulator.HostSystem)
		hostOf[*h.ConfigManager.FirewallSystem] = h.Name
	}
	for _, r := range w.model.Map().AllReference("HostFirewallSystem") {
		fw := r.(*simulator.HostFirewallSystem)
		info := *fw.FirewallInfo
		info.Ruleset = make([]types.HostFirewallRuleset, len(esx.HostFirewallInfo.Ruleset))
		for i, rs := range esx.HostFirewallInfo.Ruleset {
			rs.Rule = slices.Clone(rs.Rule)
			rs.AllowedHosts = &types.HostFirewallRulesetIpList{AllIp: true}
			switch rs.Key {
			case "vSPC":
				rs.Enabled = hostOf[r.Reference()] != disabledFW
				if hostOf[r.Reference()] == restricted {
					rs.AllowedHosts = &types.HostFirewallRulesetIpList{IpNetwork: []types.HostFirewallRulesetIpNetwork{{Network: "192.0.2.128", PrefixLength: 25}}}
				}
			case "remoteSerialPort":
				rs.Enabled = false
			}
			info.Ruleset[i] = rs
		}
		if hostOf[r.Reference()] == firewallOff {
			info.DefaultPolicy = types.HostFirewallDefaultPolicy{IncomingBlocked: types.NewBool(false), OutgoingBlocked: types.NewBool(false)}
		}
		fw.FirewallInfo = &info
		w.model.Map().Put(&refreshingFirewall{HostFirewallSystem: fw, refreshes: &w.refreshes})
	}
}

// pin moves a VM to the named host (the simulator places cluster VMs at random).
func (w *world) pin(t *testing.T, vmName, hostName string) {
	t.Helper()
	ctx := t.Context()
	f := w.finder(t)
	vm, err := f.VirtualMachine(ctx, vmName)
	if err != nil {
		t.Fatal(err)
	}
	host, err := f.HostSystem(ctx, hostName)
	if err != nil {
		t.Fatal(err)
	}
	task, err := vm.Relocate(ctx, types.VirtualMachineRelocateSpec{Host: types.NewReference(host.Reference())}, types.VirtualMachineMovePriorityDefaultPriority)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}

// finder returns a finder set to the simulator's default datacenter, DC0.
func (w *world) finder(t *testing.T) *find.Finder {
	t.Helper()
	f := find.NewFinder(w.client, true)
	dc, err := f.DefaultDatacenter(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	f.SetDatacenter(dc)
	return f
}

func (w *world) vm(t *testing.T, name string) *object.VirtualMachine {
	t.Helper()
	vm, err := w.finder(t).VirtualMachine(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return vm
}

// addPort adds a serial port with backing b and connectable state to a VM.
func (w *world) addPort(t *testing.T, vmName string, b types.BaseVirtualDeviceBackingInfo, connected, start bool) {
	t.Helper()
	ctx := t.Context()
	vm := w.vm(t, vmName)
	devs, err := vm.Device(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := devs.CreateSerialPort()
	if err != nil {
		t.Fatal(err)
	}
	sp.Backing = b
	sp.Connectable = &types.VirtualDeviceConnectInfo{Connected: connected, StartConnected: start}
	if err := vm.AddDevice(ctx, sp); err != nil {
		t.Fatal(err)
	}
	// The simulator connects ports added to a powered-on VM; put the state we asked for back.
	devs, err = vm.Device(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ports := devs.SelectByType((*types.VirtualSerialPort)(nil))
	last := ports[len(ports)-1].(*types.VirtualSerialPort)
	if last.Connectable.Connected != connected || last.Connectable.StartConnected != start {
		last.Connectable.Connected, last.Connectable.StartConnected = connected, start
		if err := vm.EditDevice(ctx, last); err != nil {
			t.Fatal(err)
		}
	}
}

func uriBacking(dir, service, proxy string) *types.VirtualSerialPortURIBackingInfo {
	return &types.VirtualSerialPortURIBackingInfo{VirtualDeviceURIBackingInfo: types.VirtualDeviceURIBackingInfo{Direction: dir, ServiceURI: service, ProxyURI: proxy}}
}

// scenario wires the VMs the golden files describe:
//
//	DC0_H0_VM0      good: client "lab-switch" through the bridge (route → nportA:4001)
//	DC0_H0_VM1      wired straight to nportB:4001, no proxy
//	DC0_H1_VM0      server through the bridge with telnets (bridge has no TLS), plus a file port
//	DC0_H1_VM1      proxy with user/password at another vSPC, service not allowed, not connected
//	DC0_H2_VM0      "lab-switch" as well (same device as DC0_H0_VM0), host without URI backing
//	DC0_H2_VM1      no serial port
//	DC0_C0_RP0_VM0  good: client to nportA:4002 (allowed by connect_allow), on the restricted host
//	DC0_C0_RP0_VM1  no serial port
func (w *world) scenario(t *testing.T) {
	t.Helper()
	w.addPort(t, "DC0_H0_VM0", uriBacking("client", "lab-switch", bridgeURI), true, true)
	w.addPort(t, "DC0_H0_VM1", uriBacking("client", "telnet://"+nportB+":4001", ""), true, true)
	w.addPort(t, "DC0_H1_VM0", uriBacking("server", "vm-console", telnetsURI), true, true)
	w.addPort(t, "DC0_H1_VM0", &types.VirtualSerialPortFileBackingInfo{VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: "[LocalDS_0] DC0_H1_VM0/serial.log"}}, true, true)
	w.addPort(t, "DC0_H1_VM1", uriBacking("client", "telnet://"+elsewhere+":23", "telnet://admin:secret@192.0.2.99:13370"), false, false)
	w.addPort(t, "DC0_H2_VM0", uriBacking("client", "lab-switch", bridgeURI), true, true)
	w.addPort(t, "DC0_C0_RP0_VM0", uriBacking("client", "tcp://"+nportA+":4002", bridgeURI), true, true)
}

// testGolden runs "vc CMD -config testdata/bridge.toml" on the scenario, as a
// table and with -json, and compares the output with testdata/CMD.txt and
// testdata/CMD.json. The scenario has problems: the exit status must be
// ExitProblems.
func testGolden(t *testing.T, cmd string) {
	w := newWorld(t)
	w.scenario(t)
	for _, tc := range []struct {
		name  string
		flags []string
		file  string
	}{
		{"table", nil, cmd + ".txt"},
		{"json", []string{"-json"}, cmd + ".json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, out, errOut := runVC(t, w, append([]string{cmd, "-config", "testdata/bridge.toml"}, tc.flags...)...)
			if st != ExitProblems {
				t.Errorf("status %d, want %d; stderr:\n%s", st, ExitProblems, errOut)
			}
			golden(t, tc.file, []byte(out))
		})
	}
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test -update rewrites it)\n--- got ---\n%s\n--- want ---\n%s", path, got, want)
	}
}

// cmpJSON returns "" when a and b marshal to the same JSON, else both.
func cmpJSON(t *testing.T, a, b any) string {
	t.Helper()
	ja, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	jb, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(ja, jb) {
		return ""
	}
	return "JSON differs:\n" + string(ja) + "\n---\n" + string(jb)
}
