package vc

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// ESXi firewall rulesets for VM serial ports (VMware: "Adding a Firewall Rule
// Set for Serial Port Network Connections"; device-peers.md §6).
const (
	// RulesetVSPC is "VM serial port connected to vSPC": outbound TCP to any
	// port. VMs whose serial port names a proxy URI need it.
	RulesetVSPC = "vSPC"
	// RulesetRemoteSerialPort is "VM serial port connected over network":
	// outbound TCP to any port, inbound TCP 23 and 1024-65535. VMs wired
	// straight to the network need it.
	RulesetRemoteSerialPort = "remoteSerialPort"
)

// PreflightOptions select what Preflight looks at and whether it fixes.
type PreflightOptions struct {
	Datacenter string   // "" = all
	Hosts      []string // names, inventory paths or globs; none = every host
	Fix        bool     // enable needed rulesets and refresh the firewall
	Config     string   // bridge config path, repeated in fix commands
}

// PreflightReport is the result of Preflight.
type PreflightReport struct {
	Changes  []string    `json:"changes"` // what -fix did, in order
	Hosts    []HostCheck `json:"hosts"`
	Problems []*Problem  `json:"problems"`
}

// HostCheck is one host's firewall as its VMs need it.
type HostCheck struct {
	Name string `json:"name"`
	// Firewall is "on" when the default policy blocks traffic (ESXi's
	// "Default Action: DROP"), "off" when it passes it, "unknown" when the
	// host does not say. The vSphere API has no separate "enabled" flag for
	// what esxcli network firewall get calls Enabled.
	Firewall string `json:"firewall"`
	Needs    []Need `json:"needs"`
}

// Need is one connection that a host's VMs make (or accept) through the
// firewall, and how the host's rulesets treat it.
type Need struct {
	Ruleset    string   `json:"ruleset"`   // RulesetVSPC or RulesetRemoteSerialPort
	Direction  string   `json:"direction"` // "outbound" or "inbound"
	Peer       string   `json:"peer"`      // host:port; for inbound ":port" (any peer)
	VMs        []string `json:"vms"`       // "VM serialport-N"
	Exists     bool     `json:"exists"`
	Enabled    bool     `json:"enabled"`
	AllowedIPs string   `json:"allowedIPs"` // "all" or the list
	Admits     string   `json:"admits"`     // yes, no, unknown (a name), any (inbound)
	CoveredBy  []string `json:"coveredBy"`  // enabled rulesets with a rule covering the port

	host string
	port int
}

// Preflight checks, for every host (or the hosts named), the firewall
// rulesets its VMs' serial ports need: the ruleset exists and is enabled, its
// allowed-IP list admits the peer, and an enabled TCP rule covers the port
// (object.HostFirewallRulesetList.ByRule: EndPort 0 is the single port Port).
// VMs wired straight to the network are reported with the provision command
// that puts the bridge in between.
//
// With opts.Fix it enables each needed ruleset that is disabled and then
// refreshes the host's firewall (RefreshFirewall), recording each step in
// Changes, and reports the state afterwards. It never rewrites allowed-IP
// lists. If a fix step fails, the report so far comes back with the error.
func Preflight(ctx context.Context, c *vim25.Client, b Bridge, opts PreflightOptions) (*PreflightReport, error) {
	br, err := parseBridge(b)
	if err != nil {
		return nil, err
	}
	hosts, err := collectHosts(ctx, c, opts.Datacenter, opts.Hosts)
	if err != nil {
		return nil, err
	}
	vms, err := collectVMs(ctx, c, opts.Datacenter, nil)
	if err != nil {
		return nil, err
	}
	a := &auditor{b: b, br: br, opts: Options{Config: opts.Config}}
	r := &PreflightReport{Changes: []string{}, Hosts: []HostCheck{}, Problems: []*Problem{}}
	for _, h := range hosts {
		needs, direct := hostNeeds(a, h.Self, vms)
		if opts.Fix {
			if err := fixHost(ctx, c, h, needs, r); err != nil {
				return r, err
			}
		}
		info, err := object.NewHostFirewallSystem(c, *h.ConfigManager.FirewallSystem).Info(ctx)
		if err != nil {
			return r, fmt.Errorf("vc: host %s: read firewall: %w", h.Name, err)
		}
		hc := HostCheck{Name: h.Name, Firewall: firewallState(info), Needs: needs}
		r.Problems = append(r.Problems, direct...)
		for i := range hc.Needs {
			r.Problems = append(r.Problems, checkNeed(h.Name, info, &hc.Needs[i], opts)...)
		}
		r.Hosts = append(r.Hosts, hc)
	}
	return r, nil
}

// collectHosts reads the hosts to check, sorted by name.
func collectHosts(ctx context.Context, c *vim25.Client, dcName string, names []string) ([]mo.HostSystem, error) {
	refs, err := findRefs(ctx, c, dcName, names, "HostSystem", "host", (*find.Finder).HostSystemList)
	if err != nil {
		return nil, err
	}
	var hs []mo.HostSystem
	if len(refs) > 0 {
		if err := property.DefaultCollector(c).Retrieve(ctx, refs, []string{"name", "configManager.firewallSystem"}, &hs); err != nil {
			return nil, fmt.Errorf("vc: read hosts: %w", err)
		}
	}
	for _, h := range hs {
		if h.ConfigManager.FirewallSystem == nil {
			return nil, fmt.Errorf("vc: host %s has no firewall system (disconnected?)", h.Name)
		}
	}
	slices.SortFunc(hs, func(a, b mo.HostSystem) int { return cmp.Compare(a.Name, b.Name) })
	return hs, nil
}

// hostNeeds derives what the VMs running on host need from its firewall, and
// a CodeDirect problem for each port wired straight to the network.
func hostNeeds(a *auditor, host types.ManagedObjectReference, vms []VM) ([]Need, []*Problem) {
	var needs []Need
	var direct []*Problem
	add := func(ruleset, dir, h string, port int, who string) {
		peer := ":" + strconv.Itoa(port)
		if dir == "outbound" {
			peer = endpoint{Host: h, Port: port}.hostPort()
		}
		for i := range needs {
			if n := &needs[i]; n.Ruleset == ruleset && n.Direction == dir && n.Peer == peer {
				n.VMs = append(n.VMs, who)
				return
			}
		}
		needs = append(needs, Need{Ruleset: ruleset, Direction: dir, Peer: peer, VMs: []string{who}, host: h, port: port})
	}
	for i := range vms {
		vm := &vms[i]
		if vm.hostRef == nil || *vm.hostRef != host {
			continue
		}
		for j := range vm.Ports {
			p := &vm.Ports[j]
			if p.Backing != BackingURI {
				continue
			}
			who := vm.Name + " " + p.Name
			if p.ProxyURI != "" {
				if ep, err := parseEndpoint(p.ProxyURI); err == nil {
					add(RulesetVSPC, "outbound", ep.Host, ep.Port, who)
				}
				continue
			}
			ep, err := parseEndpoint(p.ServiceURI)
			if err != nil {
				continue
			}
			dir := "outbound"
			if p.Direction == "server" {
				dir = "inbound"
			}
			add(RulesetRemoteSerialPort, dir, ep.Host, ep.Port, who)
			direct = append(direct, &Problem{
				Code: CodeDirect, VM: vm.Name, Host: vm.Host, Port: p.Name,
				Message: fmt.Sprintf("wired straight to the network (%s %s, no proxy URI): vMotion will be refused: put the bridge in between", p.Direction, p.ServiceURI),
				Fix:     a.provisionCmd(vm, p),
			})
		}
	}
	slices.SortFunc(needs, func(a, b Need) int {
		return cmp.Or(cmp.Compare(a.Ruleset, b.Ruleset), cmp.Compare(a.Direction, b.Direction), cmp.Compare(a.Peer, b.Peer))
	})
	return needs, direct
}

// firewallState reads the default policy: blocked traffic means the firewall
// is on.
func firewallState(info *types.HostFirewallInfo) string {
	in, out := info.DefaultPolicy.IncomingBlocked, info.DefaultPolicy.OutgoingBlocked
	switch {
	case in == nil && out == nil:
		return "unknown"
	case in != nil && *in || out != nil && *out:
		return "on"
	}
	return "off"
}

// checkNeed fills n from the host's rulesets and returns its problems.
func checkNeed(hostName string, info *types.HostFirewallInfo, n *Need, opts PreflightOptions) []*Problem {
	var ps []*Problem
	add := func(code Code, fix, format string, args ...any) {
		ps = append(ps, &Problem{Code: code, Host: hostName, Message: fmt.Sprintf(format, args...), Fix: fix})
	}
	rules := object.HostFirewallRulesetList(info.Ruleset)
	want := types.HostFirewallRule{Port: int32(n.port), Direction: types.HostFirewallRuleDirection(n.Direction), PortType: types.HostFirewallRulePortTypeDst, Protocol: "tcp"}
	n.CoveredBy = rules.ByRule(want).Enabled().Keys()
	if n.CoveredBy == nil {
		n.CoveredBy = []string{}
	}
	i := slices.IndexFunc(info.Ruleset, func(rs types.HostFirewallRuleset) bool { return rs.Key == n.Ruleset })
	what := fmt.Sprintf("%s tcp %s", n.Direction, n.Peer)
	if i < 0 {
		n.AllowedIPs, n.Admits = "-", "-"
		add(CodeRulesetMissing, "add a custom firewall ruleset with an explicit rule for this port (VMware KB 2008226), or use an ESXi release that has the ruleset",
			"host has no %s ruleset, needed for %s by %s", n.Ruleset, what, strings.Join(n.VMs, ", "))
		return ps
	}
	rs := info.Ruleset[i]
	n.Exists, n.Enabled = true, rs.Enabled
	n.AllowedIPs, n.Admits = allowedIPs(rs.AllowedHosts, n)
	if !rs.Enabled {
		args := []string{"vspc-bridge", "vc", "preflight"}
		if opts.Config != "" {
			args = append(args, "-config", opts.Config)
		}
		args = append(args, "-fix", hostName)
		fix := shellJoin(args) + "   (or on the host: esxcli network firewall ruleset set -r " + n.Ruleset + " -e true; esxcli network firewall refresh)"
		if len(n.CoveredBy) == 0 {
			add(CodeRulesetDisabled, fix, "ruleset %s is disabled: the firewall drops %s for %s", n.Ruleset, what, strings.Join(n.VMs, ", "))
		} else {
			add(CodeRulesetDisabled, fix, "ruleset %s is disabled: %s for %s passes only because enabled ruleset(s) %s happen to cover the port",
				n.Ruleset, what, strings.Join(n.VMs, ", "), strings.Join(n.CoveredBy, ", "))
		}
	}
	if n.Admits == "no" {
		add(CodeAllowedIP, "add "+n.host+" to the allowed IP list of "+n.Ruleset+" (vSphere Client: host, Configure, Firewall, Edit), or allow all IP addresses again; VMware advises against narrowing this list, and -fix does not change it",
			"ruleset %s only admits %s, not %s: %s", n.Ruleset, n.AllowedIPs, n.host, strings.Join(n.VMs, ", "))
	}
	if rs.Enabled && len(object.HostFirewallRulesetList{rs}.ByRule(want)) == 0 {
		add(CodePortNotCovered, "add a ruleset with an explicit rule for tcp port "+strconv.Itoa(n.port)+" (VMware KB 2008226)",
			"no rule of ruleset %s covers %s (%s)", n.Ruleset, what, describeRules(rs.Rule))
	}
	return ps
}

// allowedIPs formats a ruleset's allowed-IP list and says whether it admits
// the need's peer.
func allowedIPs(l *types.HostFirewallRulesetIpList, n *Need) (list, admits string) {
	if l == nil || l.AllIp {
		return "all", "yes"
	}
	var entries []string
	var prefixes []netip.Prefix
	for _, a := range l.IpAddress {
		entries = append(entries, a)
		if ip, err := netip.ParseAddr(a); err == nil {
			prefixes = append(prefixes, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
		}
	}
	for _, nw := range l.IpNetwork {
		entries = append(entries, nw.Network+"/"+strconv.Itoa(int(nw.PrefixLength)))
		if ip, err := netip.ParseAddr(nw.Network); err == nil {
			if p, err := ip.Unmap().Prefix(int(nw.PrefixLength)); err == nil {
				prefixes = append(prefixes, p)
			}
		}
	}
	list = strings.Join(entries, ", ")
	if list == "" {
		list = "none"
	}
	if n.Direction == "inbound" {
		return list, "any"
	}
	ip, err := netip.ParseAddr(n.host)
	if err != nil {
		return list, "unknown"
	}
	for _, p := range prefixes {
		if p.Contains(ip.Unmap()) {
			return list, "yes"
		}
	}
	return list, "no"
}

func describeRules(rules []types.HostFirewallRule) string {
	var s []string
	for _, r := range rules {
		port := strconv.Itoa(int(r.Port))
		if r.EndPort != 0 {
			port += "-" + strconv.Itoa(int(r.EndPort))
		}
		s = append(s, fmt.Sprintf("%s %s %s %s", r.Direction, r.Protocol, r.PortType, port))
	}
	if len(s) == 0 {
		return "it has no rules"
	}
	return "its rules: " + strings.Join(s, "; ")
}

// fixHost enables the disabled rulesets the needs name and refreshes the
// firewall, recording each step.
func fixHost(ctx context.Context, c *vim25.Client, h mo.HostSystem, needs []Need, r *PreflightReport) error {
	fw := object.NewHostFirewallSystem(c, *h.ConfigManager.FirewallSystem)
	info, err := fw.Info(ctx)
	if err != nil {
		return fmt.Errorf("vc: host %s: read firewall: %w", h.Name, err)
	}
	var enable []string
	for _, n := range needs {
		i := slices.IndexFunc(info.Ruleset, func(rs types.HostFirewallRuleset) bool { return rs.Key == n.Ruleset })
		if i >= 0 && !info.Ruleset[i].Enabled && !slices.Contains(enable, n.Ruleset) {
			enable = append(enable, n.Ruleset)
		}
	}
	if len(enable) == 0 {
		return nil
	}
	for _, id := range enable {
		if err := fw.EnableRuleset(ctx, id); err != nil {
			return fmt.Errorf("vc: host %s: enable ruleset %s: %w", h.Name, id, err)
		}
		r.Changes = append(r.Changes, fmt.Sprintf("%s: enabled ruleset %s", h.Name, id))
	}
	if err := fw.Refresh(ctx); err != nil {
		return fmt.Errorf("vc: host %s: refresh firewall: %w", h.Name, err)
	}
	r.Changes = append(r.Changes, fmt.Sprintf("%s: refreshed the firewall", h.Name))
	return nil
}
