package vc

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/vmware/govmomi/vim25/types"
)

// readPorts reads a VM's serial ports straight from the simulator.
func (w *world) readPorts(t *testing.T, vmName string) []*types.VirtualSerialPort {
	t.Helper()
	devs, err := w.vm(t, vmName).Device(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var ps []*types.VirtualSerialPort
	for _, d := range devs.SelectByType((*types.VirtualSerialPort)(nil)) {
		ps = append(ps, d.(*types.VirtualSerialPort))
	}
	return ps
}

func runVC(t *testing.T, w *world, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	st := run(t.Context(), args, w.env(&stdout, &stderr, nil))
	return st, stdout.String(), stderr.String()
}

func TestProvisionDirectVM(t *testing.T) {
	w := newWorld(t)
	w.scenario(t)
	args := []string{"provision", "-config", "testdata/bridge.toml", "-vm", "DC0_H0_VM1", "-direction", "client", "-service", "tcp://198.51.100.6:4001"}

	// -dry-run describes the change and writes nothing.
	st, out, errOut := runVC(t, w, append(args, "-dry-run")...)
	if st != ExitOK {
		t.Fatalf("dry run: status %d, stderr:\n%s", st, errOut)
	}
	golden(t, "provision-dry-run.txt", []byte(out))
	if ps := w.readPorts(t, "DC0_H0_VM1"); len(ps) != 1 || ps[0].Backing.(*types.VirtualSerialPortURIBackingInfo).ProxyURI != "" {
		t.Fatalf("dry run changed the VM: %+v", ps[0].Backing)
	}

	// The real run changes the existing port in place.
	st, out, errOut = runVC(t, w, args...)
	if st != ExitOK {
		t.Fatalf("status %d, stdout:\n%s\nstderr:\n%s", st, out, errOut)
	}
	golden(t, "provision-edit.txt", []byte(out))
	ps := w.readPorts(t, "DC0_H0_VM1")
	if len(ps) != 1 {
		t.Fatalf("%d serial ports, want 1", len(ps))
	}
	b := ps[0].Backing.(*types.VirtualSerialPortURIBackingInfo)
	if b.Direction != "client" || b.ServiceURI != "tcp://198.51.100.6:4001" || b.ProxyURI != bridgeURI {
		t.Errorf("backing %+v, want client tcp://198.51.100.6:4001 via %s", b.VirtualDeviceURIBackingInfo, bridgeURI)
	}
	if c := ps[0].Connectable; c == nil || !c.Connected || !c.StartConnected {
		t.Errorf("connectable %+v, want connected and start-connected", c)
	}
	// Now the audit finds nothing wrong with the VM.
	if st, out, _ := runVC(t, w, "audit", "-config", "testdata/bridge.toml", "DC0_H0_VM1"); st != ExitOK {
		t.Errorf("audit after provision: status %d:\n%s", st, out)
	}
}

func TestProvisionAdd(t *testing.T) {
	w := newWorld(t)
	w.scenario(t)
	st, out, errOut := runVC(t, w, "provision", "-config", "testdata/bridge.toml", "-json", "-vm", "DC0_C0_RP0_VM1", "-direction", "server", "-service", "vm-console-2")
	if st != ExitOK {
		t.Fatalf("status %d, stdout:\n%s\nstderr:\n%s", st, out, errOut)
	}
	golden(t, "provision-add.json", []byte(out))
	var ch Change
	if err := json.Unmarshal([]byte(out), &ch); err != nil {
		t.Fatal(err)
	}
	ps := w.readPorts(t, "DC0_C0_RP0_VM1")
	if len(ps) != 1 || ch.After.Key != ps[0].Key || !ch.Applied {
		t.Fatalf("ports %v, change %+v", ps, ch)
	}
	b := ps[0].Backing.(*types.VirtualSerialPortURIBackingInfo)
	if b.Direction != "server" || b.ServiceURI != "vm-console-2" || b.ProxyURI != bridgeURI || !ps[0].Connectable.StartConnected || !ps[0].Connectable.Connected {
		t.Errorf("port %+v %+v", b.VirtualDeviceURIBackingInfo, ps[0].Connectable)
	}
}

func TestProvisionRefuses(t *testing.T) {
	w := newWorld(t)
	w.scenario(t)
	for _, tc := range []struct {
		name string
		args []string
		vm   string
		code Code
	}{
		{"host without URI backing", []string{"-vm", "DC0_H2_VM1", "-direction", "server", "-service", "x"}, "DC0_H2_VM1", CodeNoURIBacking},
		{"user in proxy", []string{"-vm", "DC0_C0_RP0_VM1", "-direction", "server", "-service", "x", "-proxy", "telnet://u:p@192.0.2.10:13370"}, "DC0_C0_RP0_VM1", CodeProxyUserinfo},
		{"other proxy", []string{"-vm", "DC0_C0_RP0_VM1", "-direction", "server", "-service", "x", "-proxy", otherProxy}, "DC0_C0_RP0_VM1", CodeProxyNotBridge},
		{"telnets", []string{"-vm", "DC0_C0_RP0_VM1", "-direction", "server", "-service", "x", "-proxy", telnetsURI}, "DC0_C0_RP0_VM1", CodeProxyTLS},
		{"not allowed", []string{"-vm", "DC0_C0_RP0_VM1", "-direction", "client", "-service", "telnet://203.0.113.9:23"}, "DC0_C0_RP0_VM1", CodeNoRoute},
		{"device taken", []string{"-vm", "DC0_C0_RP0_VM1", "-direction", "client", "-service", "lab-switch"}, "DC0_C0_RP0_VM1", CodeDeviceShared},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := w.readPorts(t, tc.vm)
			wantRefused(t, w, tc.code, append([]string{"provision", "-config", "testdata/bridge.toml", "-json"}, tc.args...)...)
			if after := w.readPorts(t, tc.vm); len(after) != len(before) {
				t.Errorf("refused provision changed the VM: %d ports, was %d", len(after), len(before))
			}
		})
	}
	// The table form of a refusal.
	st, out, _ := runVC(t, w, "provision", "-config", "testdata/bridge.toml", "-vm", "DC0_C0_RP0_VM1", "-direction", "client", "-service", "lab-switch")
	if st != ExitProblems {
		t.Fatalf("status %d", st)
	}
	golden(t, "provision-refused.txt", []byte(out))
}

func TestProvisionUsage(t *testing.T) {
	w := newWorld(t)
	w.scenario(t)
	// A VM with two URI ports needs -port.
	w.addPort(t, "DC0_H0_VM0", uriBacking("server", "second", bridgeURI), true, true)
	for _, tc := range []struct {
		name string
		args []string
		err  string
	}{
		{"no vm", []string{"-direction", "client", "-service", "x"}, "-vm is required"},
		{"bad direction", []string{"-vm", "DC0_H0_VM0", "-direction", "sideways", "-service", "x"}, "-direction must be client or server"},
		{"no service", []string{"-vm", "DC0_H0_VM0", "-direction", "client"}, "-service is required"},
		{"extra args", []string{"-vm", "DC0_H0_VM0", "-direction", "client", "-service", "x", "extra"}, "takes no arguments"},
		{"unknown vm", []string{"-vm", "nope", "-direction", "client", "-service", "x"}, `vc: VM "nope"`},
		{"no such port", []string{"-vm", "DC0_H0_VM0", "-direction", "client", "-service", "x", "-port", "999"}, "has no serial port with key 999"},
		{"ambiguous", []string{"-vm", "DC0_H0_VM0", "-direction", "client", "-service", "x"}, "choose one with -port KEY"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, _, errOut := runVC(t, w, append([]string{"provision", "-config", "testdata/bridge.toml"}, tc.args...)...)
			if st != ExitUsage || !strings.Contains(errOut, tc.err) {
				t.Errorf("status %d stderr %q, want %d and %q", st, errOut, ExitUsage, tc.err)
			}
		})
	}
}

// wantRefused runs "vc provision -json …" (args) and checks that provision
// refused with a problem of code: exit status ExitProblems, nothing applied.
func wantRefused(t *testing.T, w *world, code Code, args ...string) {
	t.Helper()
	st, out, errOut := runVC(t, w, args...)
	if st != ExitProblems {
		t.Fatalf("status %d, want %d; stdout:\n%s\nstderr:\n%s", st, ExitProblems, out, errOut)
	}
	var ch Change
	if err := json.Unmarshal([]byte(out), &ch); err != nil {
		t.Fatal(err)
	}
	if ch.Applied || !hasCode(ch.Problems, code) {
		t.Errorf("change %+v, want refused with %s", ch, code)
	}
}

func hasCode(ps []*Problem, c Code) bool {
	for _, p := range ps {
		if p.Code == c {
			return true
		}
	}
	return false
}
