package vc

import (
	"bytes"
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/hashicorp/go-multierror"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/devices/target"
)

// BackingKind names a VirtualSerialPort backing.
type BackingKind string

// Serial port backings (vim.vm.device.VirtualSerialPort.*BackingInfo).
const (
	BackingURI       BackingKind = "uri"       // VirtualSerialPortURIBackingInfo: network, maybe through a proxy
	BackingFile      BackingKind = "file"      // VirtualSerialPortFileBackingInfo: output to a datastore file
	BackingPipe      BackingKind = "pipe"      // VirtualSerialPortPipeBackingInfo: named pipe on the host
	BackingDevice    BackingKind = "device"    // VirtualSerialPortDeviceBackingInfo: the host's physical port
	BackingThinPrint BackingKind = "thinprint" // VirtualSerialPortThinPrintBackingInfo
	BackingOther     BackingKind = "other"
)

// URI backing support of a VM's host, from QueryConfigOptionEx.
const (
	URIBackingSupported   = "supported"
	URIBackingUnsupported = "unsupported"
	URIBackingUnknown     = "unknown" // not asked (no host) or the query failed
)

// Report is the result of Audit.
type Report struct {
	VMs      []VM       `json:"vms"`
	Problems []*Problem `json:"problems"`
}

// Err returns every problem as one *multierror.Error, or nil.
func (r *Report) Err() error {
	var errs *multierror.Error
	for _, p := range r.Problems {
		errs = multierror.Append(errs, p)
	}
	return errs.ErrorOrNil()
}

// VM is one virtual machine and its serial ports.
type VM struct {
	Name         string `json:"name"`
	InstanceUUID string `json:"instanceUuid,omitempty"` // sent by ESXi as VM-VC-UUID
	Host         string `json:"host,omitempty"`
	PowerState   string `json:"powerState,omitempty"`
	URIBacking   string `json:"uriBacking"` // URIBackingSupported, …
	Ports        []Port `json:"ports"`

	ref     types.ManagedObjectReference
	hostRef *types.ManagedObjectReference
	envRef  *types.ManagedObjectReference
}

// Port is one VirtualSerialPort.
type Port struct {
	Name           string      `json:"name"` // govc's device name, "serialport-<key>"
	Key            int32       `json:"key"`
	Backing        BackingKind `json:"backing"`
	Direction      string      `json:"direction,omitempty"` // client|server (URI), client|server (pipe endpoint)
	ServiceURI     string      `json:"serviceURI,omitempty"`
	ProxyURI       string      `json:"proxyURI,omitempty"`
	Path           string      `json:"path,omitempty"` // file name, pipe name or host device
	Connected      bool        `json:"connected"`
	StartConnected bool        `json:"startConnected"`
	YieldOnPoll    bool        `json:"yieldOnPoll"`
	Route          string      `json:"route,omitempty"`  // the bridge route that serves it
	Device         string      `json:"device,omitempty"` // what the port ends up talking to
}

// Options select what Audit looks at.
type Options struct {
	// Datacenter limits the audit to one datacenter (name or path); "" = all,
	// or the only one when VMs are named.
	Datacenter string
	// VMs are names, inventory paths or globs as govc takes them; none = every
	// VM. "Two VMs claim the same device" is checked among the VMs selected.
	VMs []string
	// Config is the bridge config path, repeated in the fix commands.
	Config string
}

// Audit reads the serial ports of the VMs opts selects and checks them against
// the bridge b. Problems go in the report; the error is for failures to talk to
// vCenter or a bad selection.
func Audit(ctx context.Context, c *vim25.Client, b Bridge, opts Options) (*Report, error) {
	br, err := parseBridge(b)
	if err != nil {
		return nil, err
	}
	vms, err := collectVMs(ctx, c, opts.Datacenter, opts.VMs)
	if err != nil {
		return nil, err
	}
	a := &auditor{b: b, br: br, opts: opts}
	r := &Report{VMs: vms, Problems: []*Problem{}}
	if err := uriSupport(ctx, c, r.VMs); err != nil {
		return nil, err
	}
	for i := range r.VMs {
		vm := &r.VMs[i]
		hasURI := false
		for j := range vm.Ports {
			p := &vm.Ports[j]
			r.Problems = append(r.Problems, a.checkPort(vm, p)...)
			hasURI = hasURI || p.Backing == BackingURI
		}
		if hasURI && vm.URIBacking == URIBackingUnsupported {
			r.Problems = append(r.Problems, &Problem{
				Code: CodeNoURIBacking, VM: vm.Name, Host: vm.Host,
				Message: fmt.Sprintf("host %s offers no URI backing for serial ports (QueryConfigOption lists no VirtualDeviceURIBackingOption under VirtualSerialPortOption): the port cannot connect", vm.Host),
				Fix:     "move the VM to a host whose backing options include URI backing, or use a file or pipe backing",
			})
		}
	}
	r.Problems = append(r.Problems, sharedDevices(r.VMs)...)
	sortProblems(r.Problems)
	return r, nil
}

// bridgeAddr is the bridge's proxy URIs and TLS certificate, read once.
type bridgeAddr struct {
	// uri is what provision writes by default: ProxyURIs()[0], or, when
	// the bridge has a TLS certificate, its first telnets:// URI with the
	// certificate pinned (configs.TelnetsURI).
	uri  string
	eps  []endpoint  // every URI the bridge accepts VMs on
	tls  *endpoint   // the telnets:// listener uri names; nil without a certificate
	cert *bridgeCert // nil: the bridge has no TLS certificate
}

// bridgeCert is what the audit needs of the bridge's TLS certificate.
type bridgeCert struct {
	thumbprint string // configs.Thumbprint form: "AB:CD:…"
	selfSigned bool
}

func parseBridge(b Bridge) (bridgeAddr, error) {
	uris := b.ProxyURIs()
	if len(uris) == 0 || uris[0] == "" {
		return bridgeAddr{}, errors.New("vc: the bridge config names no address for VMs (set [vspc] listen or proxy_uri)")
	}
	br := bridgeAddr{uri: uris[0]}
	for _, uri := range uris {
		ep, err := parseEndpoint(uri)
		if err != nil {
			return bridgeAddr{}, fmt.Errorf("vc: the bridge's proxy URI: %w", err)
		}
		if ep.Scheme != "telnet" && ep.Scheme != "telnets" {
			return bridgeAddr{}, fmt.Errorf("vc: the bridge's proxy URI %q: scheme must be telnet or telnets", uri)
		}
		br.eps = append(br.eps, ep)
	}
	cert, err := b.TLSCert()
	if err != nil {
		return bridgeAddr{}, err
	}
	if cert != nil {
		br.cert = &bridgeCert{thumbprint: configs.Thumbprint(cert.Raw), selfSigned: selfSigned(cert)}
		if i := slices.IndexFunc(br.eps, func(ep endpoint) bool { return ep.Scheme == "telnets" }); i >= 0 {
			br.tls = &br.eps[i]
			br.uri = configs.TelnetsURI(br.tls.hostPort(), br.cert.thumbprint)
		}
	}
	return br, nil
}

// selfSigned reports whether c is issued by itself and signed with its own key.
// (Not CheckSignatureFrom: that also demands c be a CA, which gen-cert's
// certificate is not.)
func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

// pin adds the bridge's certificate thumbprint to a proxy URI that names the
// bridge's telnets:// listener and pins nothing. ok is false when uri is left
// as it is: no certificate, not the bridge's TLS listener, or already pinned.
func (br bridgeAddr) pin(uri string) (pinned string, ok bool) {
	if br.cert == nil {
		return uri, false
	}
	ep, err := parseEndpoint(uri)
	if err != nil || ep.Scheme != "telnets" {
		return uri, false
	}
	if l, ok, _ := br.match(ep); !ok || l.Scheme != "telnets" {
		return uri, false
	}
	if _, has := configs.URIThumbprint(uri); has {
		return uri, false
	}
	sep := "#"
	if u := strings.TrimSuffix(uri, "#"); strings.Contains(u, "#") {
		sep = "&"
	} else {
		uri = u
	}
	return uri + sep + "thumbprint=" + br.cert.thumbprint, true
}

// match finds the bridge listener a VM's proxy endpoint names. tls reports
// whether the bridge has any telnets listener.
func (br bridgeAddr) match(ep endpoint) (l endpoint, ok, tls bool) {
	for _, b := range br.eps {
		tls = tls || b.Scheme == "telnets"
	}
	for _, b := range br.eps {
		if b.Port == ep.Port && sameHost(b.Host, ep.Host) {
			return b, true, tls
		}
	}
	return endpoint{}, false, tls
}

type auditor struct {
	b    Bridge
	br   bridgeAddr
	opts Options
}

// provisionCmd is the command that rewires port p of vm through the bridge.
func (a *auditor) provisionCmd(vm *VM, p *Port) string {
	dir := p.Direction
	if dir != "client" && dir != "server" {
		dir = "client|server"
	}
	args := []string{"vspc-bridge", "vc", "provision"}
	if a.opts.Config != "" {
		args = append(args, "-config", a.opts.Config)
	}
	args = append(args, "-vm", vm.Name, "-direction", dir, "-service", p.ServiceURI)
	if p.Key != 0 {
		args = append(args, "-port", fmt.Sprint(p.Key))
	}
	return shellJoin(args)
}

// checkPort runs every per-port check. It fills p.Route and p.Device.
func (a *auditor) checkPort(vm *VM, p *Port) []*Problem {
	var ps []*Problem
	add := func(code Code, fix, format string, args ...any) {
		ps = append(ps, &Problem{Code: code, VM: vm.Name, Host: vm.Host, Port: p.Name, Message: fmt.Sprintf(format, args...), Fix: fix})
	}
	if p.Backing != BackingURI {
		return nil
	}
	fix := a.provisionCmd(vm, p)
	if p.Direction != "client" && p.Direction != "server" {
		add(CodeBadDirection, fix, "direction %q is neither client nor server", p.Direction)
	}
	switch {
	case p.ProxyURI == "":
		add(CodeNoProxy, fix+"   (use tcp:// in -service if the device server port is raw TCP, e.g. a Moxa NPort in TCP Server mode)",
			"network backing without a proxy URI: the VM talks to %s itself, ESXi refuses to vMotion it, and the host needs the remoteSerialPort firewall ruleset", orDash(p.ServiceURI))
	default:
		ep, err := parseEndpoint(p.ProxyURI)
		if err != nil || (ep.Scheme != "telnet" && ep.Scheme != "telnets") {
			add(CodeBadURI, fix, "proxy URI %q is not telnet://host:port or telnets://host:port", p.ProxyURI)
			break
		}
		if ep.User {
			add(CodeProxyUserinfo, fix, "proxy URI %q carries a user/password, which a proxy URI may not include (and it is readable by anyone who can read the VM's configuration)", p.ProxyURI)
		}
		l, ok, tls := a.br.match(ep)
		if !ok {
			add(CodeProxyNotBridge, fix+fmt.Sprintf("   (or, if %s is this bridge under another name, set [vspc] proxy_uri in the bridge config to it)", ep.hostPort()),
				"proxy URI %s is not this bridge (%s): the VM connects to another proxy", p.ProxyURI, a.br.uri)
			break
		}
		switch {
		case ep.Scheme == "telnets" && l.Scheme != "telnets":
			how := "the bridge has no TLS"
			if tls {
				how = "the bridge speaks plain telnet on " + l.hostPort()
			}
			add(CodeProxyTLS, fix+"   (or configure TLS on the bridge: [vspc] tls_listen)",
				"proxy URI %s asks for TLS (telnets) but %s: the VM's TLS handshake fails and the port never connects", p.ProxyURI, how)
		case ep.Scheme == "telnet" && l.Scheme == "telnets":
			add(CodeProxyTLS, fix,
				"proxy URI %s is plain telnet but the bridge expects TLS on %s: the connection fails", p.ProxyURI, l.hostPort())
		case ep.Scheme == "telnets" && a.br.cert != nil:
			ps = append(ps, a.checkPin(vm, p, fix)...)
		}
	}
	a.route(vm, p, add)
	if vm.PowerState == string(types.VirtualMachinePowerStatePoweredOn) && !p.Connected {
		add(CodeNotConnected, fix+"   (or: govc device.connect -vm "+shellQuote(vm.Name)+" "+p.Name+")",
			"the port is not connected: the powered-on VM is not talking to anything on it")
	}
	if !p.StartConnected {
		add(CodeNotStartConnected, fix,
			"the port does not start connected: it stays disconnected after the next power-on")
	}
	return ps
}

// checkPin checks the certificate a telnets:// proxy URI to the bridge pins
// (ESXi's "#thumbprint=<SHA-1>" fragment) against the bridge's certificate.
func (a *auditor) checkPin(vm *VM, p *Port, fix string) []*Problem {
	prob := func(code Code, sev Severity, fix, format string, args ...any) []*Problem {
		return []*Problem{{Code: code, Severity: sev, VM: vm.Name, Host: vm.Host, Port: p.Name, Message: fmt.Sprintf(format, args...), Fix: fix}}
	}
	want := a.br.cert.thumbprint
	tp, ok := configs.URIThumbprint(p.ProxyURI)
	if !ok {
		if !a.br.cert.selfSigned {
			return nil // ESXi can verify a CA-signed certificate without a pin
		}
		return prob(CodeProxyUnpinned, SeverityWarning, fix+"   (writes the URI with #thumbprint="+want+")",
			"proxy URI %s pins no certificate (#thumbprint=) and the bridge's certificate is self-signed: ESXi can verify it only if it trusts that certificate some other way (added to the host's trust store); otherwise the TLS handshake fails and the port never connects", p.ProxyURI)
	}
	at, _, _ := strings.Cut(p.ProxyURI, "#")
	refix := fix + "   (writes the URI with #thumbprint=" + want + ")"
	got, err := configs.ParseThumbprint(tp)
	if err != nil {
		return prob(CodeProxyThumbprint, SeverityError, refix,
			"proxy URI %s pins %q, which is not a SHA-1 thumbprint (20 colon-separated hex pairs or 40 hex digits): no certificate matches it and the port never connects", at, tp)
	}
	if got != want {
		return prob(CodeProxyThumbprint, SeverityError, refix,
			"proxy URI %s pins the certificate with SHA-1 thumbprint %s, but the bridge's certificate ([vspc] tls_cert) has %s: ESXi refuses the TLS handshake and the port never connects", at, got, want)
	}
	return nil
}

// route finds what the port talks to: the bridge's route, or for direction
// client the device the service URI names, parsed as the bridge parses it
// (package target). For direction client it adds CodeNoRoute when neither a
// route nor connect_allow lets the bridge accept the port.
func (a *auditor) route(vm *VM, p *Port, add func(Code, string, string, ...any)) {
	if rt, ok := a.b.Route(RouteQuery{ServiceURI: p.ServiceURI, VMName: vm.Name, VCUUID: vm.InstanceUUID}); ok {
		p.Route, p.Device = rt.Name, rt.Device
		return
	}
	if p.Direction != "client" {
		return
	}
	fix := fmt.Sprintf("add a route for service URI %q to the bridge config, or let [policy] connect_allow permit its target", p.ServiceURI)
	t, err := target.Parse(p.ServiceURI)
	if err != nil || !t.Kind.Network() {
		add(CodeNoRoute, fix, "service URI %q matches no route and is not a network device URI (tcp://host:port, nport://host[:port], telnet://host[:port] or rfc2217://host:port), so the bridge will refuse the VM (WONT-PROXY)", p.ServiceURI)
		return
	}
	p.Device = deviceEndpoint(t)
	if !a.b.Allowed(t.Host, t.Port) {
		add(CodeNoRoute, fix, "service URI %q matches no route and connect_allow does not permit %s, so the bridge will refuse the VM (WONT-PROXY)", p.ServiceURI, t.Addr())
	}
}

// resolve fills Route and Device of every URI-backed port, without checks.
func (a *auditor) resolve(vms []VM) {
	for i := range vms {
		for j := range vms[i].Ports {
			if p := &vms[i].Ports[j]; p.Backing == BackingURI {
				a.route(&vms[i], p, func(Code, string, string, ...any) {})
			}
		}
	}
}

// sharedDevices reports every port whose device another VM claims too.
func sharedDevices(vms []VM) []*Problem {
	type claim struct {
		vm   *VM
		port *Port
	}
	claims := map[string][]claim{}
	var keys []string
	for i := range vms {
		for j := range vms[i].Ports {
			p := &vms[i].Ports[j]
			if p.Device == "" {
				continue
			}
			k := deviceKey(p.Device)
			if _, ok := claims[k]; !ok {
				keys = append(keys, k)
			}
			claims[k] = append(claims[k], claim{&vms[i], p})
		}
	}
	var ps []*Problem
	for _, k := range keys {
		cs := claims[k]
		for _, c := range cs {
			var others []string
			for _, o := range cs {
				if o.vm.Name != c.vm.Name {
					others = append(others, o.vm.Name+" "+o.port.Name)
				}
			}
			if len(others) == 0 {
				continue
			}
			ps = append(ps, &Problem{
				Code: CodeDeviceShared, VM: c.vm.Name, Host: c.vm.Host, Port: c.port.Name,
				Message: fmt.Sprintf("device %s is also claimed by %s: their output would mix on one serial line", c.port.Device, strings.Join(others, ", ")),
				Fix:     "give each VM its own device (a device server port in TCP Server mode copies its output to every connection and mixes their input)",
			})
		}
	}
	return ps
}

// deviceKey normalises a device for comparison as the bridge does when it
// gives a device to one VM at a time (target.Target.Key): host:port for
// network devices whatever the scheme, the path otherwise.
func deviceKey(d string) string {
	if t, err := target.Parse(d); err == nil {
		return t.Key()
	}
	return d
}

// sortProblems orders problems by VM (or host), then port, keeping the order
// of the checks within one port.
func sortProblems(ps []*Problem) {
	slices.SortStableFunc(ps, func(a, b *Problem) int {
		return cmp.Or(cmp.Compare(a.VM, b.VM), cmp.Compare(a.Host, b.Host), cmp.Compare(a.Port, b.Port))
	})
}

// collectVMs reads the VMs to audit, sorted by name.
func collectVMs(ctx context.Context, c *vim25.Client, dcName string, names []string) ([]VM, error) {
	refs, err := findRefs(ctx, c, dcName, names, "VirtualMachine", "VM", (*find.Finder).VirtualMachineList)
	if err != nil {
		return nil, err
	}
	var mvms []mo.VirtualMachine
	if len(refs) > 0 {
		pc := property.DefaultCollector(c)
		err := pc.Retrieve(ctx, refs, []string{"name", "config.hardware.device", "config.instanceUuid", "runtime.host", "runtime.powerState", "environmentBrowser"}, &mvms)
		if err != nil {
			return nil, fmt.Errorf("vc: read VMs: %w", err)
		}
	}
	hosts, err := hostNames(ctx, c, mvms)
	if err != nil {
		return nil, err
	}
	vms := make([]VM, 0, len(mvms))
	for _, m := range mvms {
		vm := VM{Name: m.Name, PowerState: string(m.Runtime.PowerState), URIBacking: URIBackingUnknown, Ports: []Port{}, ref: m.Self, hostRef: m.Runtime.Host}
		if m.EnvironmentBrowser.Value != "" {
			env := m.EnvironmentBrowser
			vm.envRef = &env
		}
		if m.Runtime.Host != nil {
			vm.Host = hosts[*m.Runtime.Host]
		}
		if m.Config != nil {
			vm.InstanceUUID = m.Config.InstanceUuid
			vm.Ports = serialPorts(object.VirtualDeviceList(m.Config.Hardware.Device))
		}
		vms = append(vms, vm)
	}
	slices.SortFunc(vms, func(a, b VM) int { return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.ref.Value, b.ref.Value)) })
	return vms, nil
}

// newFinder returns a finder for the datacenter dcName (a name or path) and
// the folder to list when nothing is named: that datacenter, or the root
// folder when dcName is "". With dcName "" and named, the finder searches the
// default datacenter when there is one (find.Finder.DefaultDatacenter).
func newFinder(ctx context.Context, c *vim25.Client, dcName string, named bool) (*find.Finder, types.ManagedObjectReference, error) {
	finder := find.NewFinder(c, true)
	root := c.ServiceContent.RootFolder
	if dcName != "" {
		dc, err := finder.Datacenter(ctx, dcName)
		if err != nil {
			return nil, root, fmt.Errorf("vc: datacenter: %w", err)
		}
		finder.SetDatacenter(dc)
		root = dc.Reference()
	} else if named {
		if dc, err := finder.DefaultDatacenter(ctx); err == nil {
			finder.SetDatacenter(dc)
		}
	}
	return finder, root, nil
}

// findRefs returns the managed objects of type kind ("VirtualMachine",
// "HostSystem") in the datacenter dcName ("" = all) that names select through
// list (a find.Finder ...List method: names, inventory paths or globs), each
// once, in the order found; with no names, every one. noun names the kind in
// errors ("VM", "host").
func findRefs[T mo.Reference](ctx context.Context, c *vim25.Client, dcName string, names []string, kind, noun string,
	list func(f *find.Finder, ctx context.Context, path string) ([]T, error)) ([]types.ManagedObjectReference, error) {
	finder, root, err := newFinder(ctx, c, dcName, len(names) > 0)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		v, err := view.NewManager(c).CreateContainerView(ctx, root, []string{kind}, true)
		if err != nil {
			return nil, fmt.Errorf("vc: list %ss: %w", noun, err)
		}
		defer v.Destroy(context.WithoutCancel(ctx))
		refs, err := v.Find(ctx, []string{kind}, nil)
		if err != nil {
			return nil, fmt.Errorf("vc: list %ss: %w", noun, err)
		}
		return refs, nil
	}
	var refs []types.ManagedObjectReference
	seen := map[types.ManagedObjectReference]bool{}
	for _, n := range names {
		l, err := list(finder, ctx, n)
		if err != nil {
			return nil, fmt.Errorf("vc: %s %q: %w", noun, n, err)
		}
		for _, o := range l {
			if ref := o.Reference(); !seen[ref] {
				seen[ref] = true
				refs = append(refs, ref)
			}
		}
	}
	return refs, nil
}

// hostNames maps each VM's runtime.host to the host's name.
func hostNames(ctx context.Context, c *vim25.Client, vms []mo.VirtualMachine) (map[types.ManagedObjectReference]string, error) {
	var refs []types.ManagedObjectReference
	seen := map[types.ManagedObjectReference]bool{}
	for _, vm := range vms {
		if h := vm.Runtime.Host; h != nil && !seen[*h] {
			seen[*h] = true
			refs = append(refs, *h)
		}
	}
	names := map[types.ManagedObjectReference]string{}
	if len(refs) == 0 {
		return names, nil
	}
	var hs []mo.HostSystem
	if err := property.DefaultCollector(c).Retrieve(ctx, refs, []string{"name"}, &hs); err != nil {
		return nil, fmt.Errorf("vc: read hosts: %w", err)
	}
	for _, h := range hs {
		names[h.Self] = h.Name
	}
	return names, nil
}

// serialPorts extracts the VirtualSerialPort devices, by key.
func serialPorts(devs object.VirtualDeviceList) []Port {
	ports := []Port{}
	for _, d := range devs.SelectByType((*types.VirtualSerialPort)(nil)) {
		sp := d.(*types.VirtualSerialPort)
		p := Port{Name: devs.Name(sp), Key: sp.Key, YieldOnPoll: sp.YieldOnPoll}
		if c := sp.Connectable; c != nil {
			p.Connected, p.StartConnected = c.Connected, c.StartConnected
		}
		switch b := sp.Backing.(type) {
		case *types.VirtualSerialPortURIBackingInfo:
			p.Backing = BackingURI
			p.Direction, p.ServiceURI, p.ProxyURI = b.Direction, b.ServiceURI, redact(b.ProxyURI)
		case *types.VirtualSerialPortFileBackingInfo:
			p.Backing, p.Path = BackingFile, b.FileName
		case *types.VirtualSerialPortPipeBackingInfo:
			p.Backing, p.Path, p.Direction = BackingPipe, b.PipeName, b.Endpoint
		case *types.VirtualSerialPortDeviceBackingInfo:
			p.Backing, p.Path = BackingDevice, b.DeviceName
		case *types.VirtualSerialPortThinPrintBackingInfo:
			p.Backing = BackingThinPrint
		default:
			p.Backing = BackingOther
		}
		ports = append(ports, p)
	}
	slices.SortFunc(ports, func(a, b Port) int { return cmp.Compare(a.Key, b.Key) })
	return ports
}

// uriSupport asks each (environment browser, host) pair once whether it
// offers URI backing for serial ports, and records the answer on the VMs.
// A failed query leaves URIBackingUnknown; it is not fatal.
func uriSupport(ctx context.Context, c *vim25.Client, vms []VM) error {
	type key struct{ env, host types.ManagedObjectReference }
	cache := map[key]string{}
	for i := range vms {
		vm := &vms[i]
		if vm.envRef == nil || vm.hostRef == nil {
			continue
		}
		k := key{*vm.envRef, *vm.hostRef}
		if s, ok := cache[k]; ok {
			vm.URIBacking = s
			continue
		}
		s, err := hostURISupport(ctx, c, k.env, k.host)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			s = URIBackingUnknown
		}
		cache[k] = s
		vm.URIBacking = s
	}
	return nil
}

// hostURISupport implements "Determining Backing Options" (seed 000):
// VirtualMachineConfigOption.hardwareOptions.virtualDeviceOption[] must hold a
// VirtualSerialPortOption whose backingOption[] holds a VirtualDeviceURIBackingOption.
func hostURISupport(ctx context.Context, c *vim25.Client, env, host types.ManagedObjectReference) (string, error) {
	eb := object.NewEnvironmentBrowser(c, env)
	opt, err := eb.QueryConfigOption(ctx, &types.EnvironmentBrowserConfigOptionQuerySpec{Host: &host})
	if err != nil {
		return URIBackingUnknown, fmt.Errorf("vc: QueryConfigOption: %w", err)
	}
	for _, d := range opt.HardwareOptions.VirtualDeviceOption {
		sp, ok := d.(*types.VirtualSerialPortOption)
		if !ok {
			continue
		}
		for _, b := range sp.BackingOption {
			if _, ok := b.(types.BaseVirtualDeviceURIBackingOption); ok {
				return URIBackingSupported, nil
			}
		}
	}
	return URIBackingUnsupported, nil
}

// redact replaces the password in a URI with "xxxxx" so that the audit does
// not print it; the user name stays, which is enough to show the problem.
func redact(uri string) string {
	u, err := url.Parse(uri)
	if err != nil || u.User == nil {
		return uri
	}
	if _, ok := u.User.Password(); !ok {
		return uri
	}
	return u.Redacted()
}
