package vc

import (
	"encoding/json"
	"slices"
	"strconv"
	"testing"

	"github.com/vmware/govmomi/vim25/types"
)

func TestPreflightGolden(t *testing.T) { testGolden(t, "preflight") }

// firewallInfo reads a host's firewall back from the simulator.
func (w *world) firewallInfo(t *testing.T, hostName string) *types.HostFirewallInfo {
	t.Helper()
	h, err := w.finder(t).HostSystem(t.Context(), hostName)
	if err != nil {
		t.Fatal(err)
	}
	fw, err := h.ConfigManager().FirewallSystem(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	info, err := fw.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func ruleset(t *testing.T, info *types.HostFirewallInfo, key string) types.HostFirewallRuleset {
	t.Helper()
	for _, rs := range info.Ruleset {
		if rs.Key == key {
			return rs
		}
	}
	t.Fatalf("no ruleset %s", key)
	return types.HostFirewallRuleset{}
}

func TestPreflightFix(t *testing.T) {
	w := newWorld(t)
	w.scenario(t)
	st, out, errOut := runVC(t, w, "preflight", "-config", "testdata/bridge.toml", "-fix")
	if st != ExitProblems { // allowed-ip and direct-network are left for people
		t.Fatalf("status %d, want %d; stdout:\n%s\nstderr:\n%s", st, ExitProblems, out, errOut)
	}
	golden(t, "preflight-fix.txt", []byte(out))

	// Read the simulator's state back.
	for _, tc := range []struct {
		host, ruleset string
		enabled       bool
	}{
		{"DC0_H0", RulesetRemoteSerialPort, true}, // enabled by -fix
		{"DC0_H1", RulesetVSPC, true},             // enabled by -fix
		{"DC0_H1", RulesetRemoteSerialPort, false},
		{"DC0_C0_H0", RulesetRemoteSerialPort, false}, // no VM needs it: untouched
		{"DC0_C0_H1", RulesetVSPC, true},
	} {
		if got := ruleset(t, w.firewallInfo(t, tc.host), tc.ruleset).Enabled; got != tc.enabled {
			t.Errorf("%s %s enabled = %v, want %v", tc.host, tc.ruleset, got, tc.enabled)
		}
	}
	if got := w.refreshes.Load(); got != 2 {
		t.Errorf("RefreshFirewall called %d times, want 2 (DC0_H0, DC0_H1)", got)
	}
	// The restricted allowed-IP list is reported, never rewritten.
	l := ruleset(t, w.firewallInfo(t, restricted), RulesetVSPC).AllowedHosts
	if l == nil || l.AllIp || len(l.IpNetwork) != 1 || l.IpNetwork[0].Network != "192.0.2.128" {
		t.Errorf("allowed hosts of %s changed: %+v", restricted, l)
	}

	// A second -fix has nothing left to do.
	st, out, _ = runVC(t, w, "preflight", "-config", "testdata/bridge.toml", "-fix", "-json")
	var r PreflightReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if st != ExitProblems || len(r.Changes) != 0 || w.refreshes.Load() != 2 {
		t.Errorf("second -fix: status %d, changes %q, refreshes %d", st, r.Changes, w.refreshes.Load())
	}
	for _, p := range r.Problems {
		if p.Code != CodeAllowedIP && p.Code != CodeDirect {
			t.Errorf("left after -fix: %v", p)
		}
	}
}

// TestPreflightNamedHost checks one host by name; a host whose VMs have all
// they need exits 0.
func TestPreflightNamedHost(t *testing.T) {
	w := newWorld(t)
	w.scenario(t)
	st, out, errOut := runVC(t, w, "preflight", "-config", "testdata/bridge.toml", "-json", "DC0_H2")
	if st != ExitOK {
		t.Fatalf("status %d; stdout:\n%s\nstderr:\n%s", st, out, errOut)
	}
	var r PreflightReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Hosts) != 1 || r.Hosts[0].Name != "DC0_H2" || len(r.Hosts[0].Needs) != 1 || r.Hosts[0].Needs[0].Peer != "192.0.2.10:13370" {
		t.Errorf("report %+v", r)
	}
	if st, _, _ := runVC(t, w, "preflight", "no-such-host"); st != ExitUsage {
		t.Errorf("unknown host: status %d, want %d", st, ExitUsage)
	}
}

// TestCheckNeedRules pins the port-coverage semantics of
// HostFirewallRulesetList.ByRule: EndPort 0 is the single port Port.
func TestCheckNeedRules(t *testing.T) {
	rs := func(enabled bool, rules ...types.HostFirewallRule) *types.HostFirewallInfo {
		return &types.HostFirewallInfo{Ruleset: []types.HostFirewallRuleset{{Key: RulesetVSPC, Enabled: enabled, Rule: rules}}}
	}
	out := func(port, end int32) types.HostFirewallRule {
		return types.HostFirewallRule{Port: port, EndPort: end, Direction: "outbound", PortType: "dst", Protocol: "tcp"}
	}
	for _, tc := range []struct {
		name  string
		info  *types.HostFirewallInfo
		port  int
		codes []Code
	}{
		{"range covers", rs(true, out(0, 65535)), 13370, nil},
		{"single port covers itself", rs(true, out(4001, 0)), 4001, nil},
		{"single port covers nothing else", rs(true, out(4001, 0)), 13370, []Code{CodePortNotCovered}},
		{"range ends below", rs(true, out(1024, 4000)), 4001, []Code{CodePortNotCovered}},
		{"inbound rule does not cover outbound", rs(true, types.HostFirewallRule{Port: 0, EndPort: 65535, Direction: "inbound", PortType: "dst", Protocol: "tcp"}), 4001, []Code{CodePortNotCovered}},
		{"udp rule does not cover tcp", rs(true, types.HostFirewallRule{Port: 0, EndPort: 65535, Direction: "outbound", PortType: "dst", Protocol: "udp"}), 4001, []Code{CodePortNotCovered}},
		{"disabled", rs(false, out(0, 65535)), 4001, []Code{CodeRulesetDisabled}},
		{"missing", &types.HostFirewallInfo{}, 4001, []Code{CodeRulesetMissing}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := &Need{Ruleset: RulesetVSPC, Direction: "outbound", Peer: "192.0.2.10:" + strconv.Itoa(tc.port), VMs: []string{"vm serialport-1"}, host: "192.0.2.10", port: tc.port}
			var got []Code
			for _, p := range checkNeed("h", tc.info, n, PreflightOptions{}) {
				got = append(got, p.Code)
			}
			if !slices.Equal(got, tc.codes) {
				t.Errorf("codes %v, want %v", got, tc.codes)
			}
		})
	}
}

func TestAllowedIPs(t *testing.T) {
	l := &types.HostFirewallRulesetIpList{
		IpAddress: []string{"192.0.2.10", "2001:db8::1"},
		IpNetwork: []types.HostFirewallRulesetIpNetwork{{Network: "198.51.100.0", PrefixLength: 24}},
	}
	for _, tc := range []struct {
		peer, dir, admits string
	}{
		{"192.0.2.10", "outbound", "yes"},
		{"192.0.2.11", "outbound", "no"},
		{"198.51.100.200", "outbound", "yes"},
		{"2001:db8::1", "outbound", "yes"},
		{"bridge.example", "outbound", "unknown"},
		{"", "inbound", "any"},
	} {
		list, admits := allowedIPs(l, &Need{Direction: tc.dir, host: tc.peer})
		if list != "192.0.2.10, 2001:db8::1, 198.51.100.0/24" || admits != tc.admits {
			t.Errorf("%s %s: %q %q, want admits %q", tc.dir, tc.peer, list, admits, tc.admits)
		}
	}
	if list, admits := allowedIPs(&types.HostFirewallRulesetIpList{AllIp: true}, &Need{Direction: "outbound", host: "192.0.2.1"}); list != "all" || admits != "yes" {
		t.Errorf("all IPs: %q %q", list, admits)
	}
}
