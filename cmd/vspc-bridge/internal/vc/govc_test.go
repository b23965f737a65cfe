package vc

import (
	"encoding/json"
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/vmware/govmomi/cli"
	_ "github.com/vmware/govmomi/cli/device"        // registers device.info
	_ "github.com/vmware/govmomi/cli/device/serial" // registers device.serial.*
)

// govc runs one govc command in-process against the world's simulator and
// returns its standard output. govc writes to os.Stdout, so the test swaps
// it for a pipe while the command runs (this test must not run in parallel).
func (w *world) govc(t *testing.T, args ...string) string {
	t.Helper()
	r, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(r)
		out <- b
	}()
	stdout := os.Stdout
	os.Stdout = pw
	rc := cli.Run(args)
	os.Stdout = stdout
	if err := pw.Close(); err != nil {
		t.Fatal(err)
	}
	b := <-out
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if rc != 0 {
		t.Fatalf("govc %s: exit %d; output:\n%s", strings.Join(args, " "), rc, b)
	}
	return string(b)
}

// govcPort is the part of "govc device.info -json" output the test compares.
type govcPort struct {
	Name    string `json:"name"`
	Key     int32  `json:"key"`
	Backing struct {
		Direction  string `json:"direction"`
		ServiceURI string `json:"serviceURI"`
		ProxyURI   string `json:"proxyURI"`
		FileName   string `json:"fileName"`
	} `json:"backing"`
	Connectable *struct {
		Connected      bool `json:"connected"`
		StartConnected bool `json:"startConnected"`
	} `json:"connectable"`
	YieldOnPoll bool `json:"yieldOnPoll"`
}

// TestGovcAgrees sets VMs up with govc's own commands and checks that the
// audit reads them as "govc device.info" does.
func TestGovcAgrees(t *testing.T) {
	w := newWorld(t)
	t.Setenv("GOVC_URL", w.url)
	t.Setenv("GOVC_INSECURE", "1")
	t.Setenv("GOVC_PERSIST_SESSION", "false")
	t.Setenv("GOVC_DATACENTER", "")

	type setup struct {
		vm      string
		connect []string // device.serial.connect arguments after -vm/-device
		codes   []Code   // what the audit must say about the port (the simulator connects new ports)
	}
	setups := []setup{
		// Through the bridge, client: the bridge routes "lab-switch".
		{"DC0_H0_VM0", []string{"-client", "-vspc-proxy", bridgeURI, "lab-switch"}, nil},
		// Through the bridge with telnets, which the bridge does not speak.
		{"DC0_H0_VM1", []string{"-client", "-vspc-proxy", telnetsURI, "tcp://198.51.100.7:4003"}, []Code{CodeProxyTLS}},
		// Straight to the network, server: vMotion will be refused.
		{"DC0_H1_VM0", []string{"telnet://:33233"}, []Code{CodeNoProxy}},
	}
	var names []string
	for _, s := range setups {
		dev := strings.TrimSpace(w.govc(t, "device.serial.add", "-vm", s.vm))
		if !strings.HasPrefix(dev, "serialport-") {
			t.Fatalf("device.serial.add printed %q", dev)
		}
		w.govc(t, append([]string{"device.serial.connect", "-vm", s.vm, "-device", dev}, s.connect...)...)
		names = append(names, s.vm)
	}

	r, err := Audit(t.Context(), w.client, testBridge(), Options{VMs: names})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.VMs) != len(setups) {
		t.Fatalf("audit read %d VMs, want %d", len(r.VMs), len(setups))
	}
	for _, s := range setups {
		var info struct{ Devices []govcPort }
		if err := json.Unmarshal([]byte(w.govc(t, "device.info", "-json", "-vm", s.vm, "serialport-*")), &info); err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(r.VMs, func(v VM) bool { return v.Name == s.vm })
		ours := r.VMs[i].Ports
		if len(info.Devices) != 1 || len(ours) != 1 {
			t.Fatalf("%s: govc reads %d serial ports, the audit %d", s.vm, len(info.Devices), len(ours))
		}
		g, o := info.Devices[0], ours[0]
		var gc, gs bool
		if g.Connectable != nil {
			gc, gs = g.Connectable.Connected, g.Connectable.StartConnected
		}
		if g.Name != o.Name || g.Key != o.Key || o.Backing != BackingURI ||
			g.Backing.Direction != o.Direction || g.Backing.ServiceURI != o.ServiceURI || g.Backing.ProxyURI != o.ProxyURI ||
			gc != o.Connected || gs != o.StartConnected || g.YieldOnPoll != o.YieldOnPoll {
			t.Errorf("%s: govc reads %+v (connectable %+v), the audit %+v", s.vm, g, g.Connectable, o)
		}
		var codes []Code
		for _, p := range r.Problems {
			if p.VM == s.vm {
				codes = append(codes, p.Code)
			}
		}
		if !slices.Equal(codes, s.codes) {
			t.Errorf("%s: audit says %v, want %v", s.vm, codes, s.codes)
		}
	}

	// provision puts the bridge in front of the directly wired port; govc sees it.
	var stdout, stderr strings.Builder
	e := env{stdout: &stdout, stderr: &stderr, getenv: os.Getenv, loadBridge: func(string) (Bridge, error) { return testBridge(), nil }}
	if st := run(t.Context(), []string{"provision", "-vm", "DC0_H1_VM0", "-direction", "server", "-service", "telnet://:33233"}, e); st != ExitOK {
		t.Fatalf("provision: status %d\n%s%s", st, stdout.String(), stderr.String())
	}
	var info struct{ Devices []govcPort }
	if err := json.Unmarshal([]byte(w.govc(t, "device.info", "-json", "-vm", "DC0_H1_VM0", "serialport-*")), &info); err != nil {
		t.Fatal(err)
	}
	if len(info.Devices) != 1 || info.Devices[0].Backing.ProxyURI != bridgeURI || info.Devices[0].Backing.Direction != "server" {
		t.Errorf("after provision govc reads %+v", info.Devices)
	}
}
