package vc

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/go-multierror"
)

func TestAuditGolden(t *testing.T) { testGolden(t, "audit") }

// TestAuditFakeBridge checks that testBridge (used where the config file
// format must not matter) and testdata/bridge.toml agree.
func TestAuditFakeBridge(t *testing.T) {
	w := newWorld(t)
	w.scenario(t)
	fromFile, err := LoadBridge("testdata/bridge.toml")
	if err != nil {
		t.Fatal(err)
	}
	a, err := Audit(t.Context(), w.client, fromFile, Options{Config: "testdata/bridge.toml"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Audit(t.Context(), w.client, testBridge(), Options{Config: "testdata/bridge.toml"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmpJSON(t, a, b); diff != "" {
		t.Error(diff)
	}
	// Every problem is also one error of a go-multierror.
	var merr *multierror.Error
	if !errors.As(a.Err(), &merr) || len(merr.Errors) != len(a.Problems) || len(a.Problems) == 0 {
		t.Errorf("Err() = %v, want a multierror of %d problems", a.Err(), len(a.Problems))
	}
	if !strings.HasPrefix(merr.Errors[0].Error(), "vc: ") {
		t.Errorf("problem error %q lacks the vc: prefix", merr.Errors[0])
	}
}

func TestRunUsage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		env    map[string]string
		status int
		out    string // substring of stdout
		err    string // substring of stderr
	}{
		{"no command", nil, nil, ExitUsage, "", "usage: vspc-bridge vc COMMAND"},
		{"unknown command", []string{"frobnicate"}, nil, ExitUsage, "", `vc: unknown command "frobnicate"`},
		{"help", []string{"-h"}, nil, ExitOK, "usage: vspc-bridge vc COMMAND", ""},
		{"audit help", []string{"audit", "-h"}, nil, ExitOK, "no-proxy", ""},
		{"provision help", []string{"provision", "-h"}, nil, ExitOK, "usage: vspc-bridge vc provision", ""},
		{"preflight help", []string{"preflight", "-h"}, nil, ExitOK, "5.0 Update 1", ""},
		{"help hides credentials", []string{"audit", "-h"}, map[string]string{"GOVC_URL": "u:hunter2@vc.example", "GOVC_PASSWORD": "hunter3"}, ExitOK, "[GOVC_PASSWORD]", ""},
		{"bad flag", []string{"audit", "-bogus"}, nil, ExitUsage, "", "flag provided but not defined: -bogus"},
		{"no URL", []string{"audit"}, nil, ExitUsage, "", "vc: no vCenter URL: set GOVC_URL or -u"},
		{"bad config", []string{"audit", "-config", "testdata/does-not-exist.toml"}, map[string]string{"GOVC_URL": "127.0.0.1:1"}, ExitUsage, "", "vc: configs:"},
		{"unreachable, password from env", []string{"audit", "-u", "user@127.0.0.1:1"}, map[string]string{"GOVC_PASSWORD": "hunter2"}, ExitUsage, "", "vc: connect to https://user:xxxxx@127.0.0.1:1/sdk"},
		{"unreachable", []string{"audit", "-u", "user:pass@127.0.0.1:1"}, nil, ExitUsage, "", "vc: connect to https://user:xxxxx@127.0.0.1:1/sdk"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			e := env{stdout: &stdout, stderr: &stderr, getenv: func(k string) string { return tc.env[k] }, loadBridge: LoadBridge}
			if st := run(t.Context(), tc.args, e); st != tc.status {
				t.Errorf("status %d, want %d; stderr:\n%s", st, tc.status, stderr.String())
			}
			if !strings.Contains(stdout.String(), tc.out) {
				t.Errorf("stdout lacks %q:\n%s", tc.out, stdout.String())
			}
			if all := stdout.String() + stderr.String(); strings.Contains(all, "hunter") {
				t.Errorf("output shows a password:\n%s", all)
			}
			if !strings.Contains(stderr.String(), tc.err) {
				t.Errorf("stderr lacks %q:\n%s", tc.err, stderr.String())
			}
		})
	}
}

// TestAuditNamed audits one VM by inventory path and one by name; a VM
// without problems exits 0.
func TestAuditNamed(t *testing.T) {
	w := newWorld(t)
	w.scenario(t)
	var stdout, stderr bytes.Buffer
	st := run(t.Context(), []string{"audit", "-config", "testdata/bridge.toml", "-json", "/DC0/vm/DC0_H0_VM0", "DC0_C0_RP0_VM0"}, w.env(&stdout, &stderr, nil))
	if st != ExitOK {
		t.Fatalf("status %d, want 0; stdout:\n%s\nstderr:\n%s", st, stdout.String(), stderr.String())
	}
	var r Report
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	if len(r.VMs) != 2 || r.VMs[0].Name != "DC0_C0_RP0_VM0" || r.VMs[1].Name != "DC0_H0_VM0" {
		t.Fatalf("VMs = %+v", r.VMs)
	}
	if p := r.VMs[1].Ports[0]; p.Route != "lab-switch" || p.Device != "tcp://198.51.100.5:4001" {
		t.Errorf("route %q device %q, want lab-switch tcp://198.51.100.5:4001", p.Route, p.Device)
	}
	stdout.Reset()
	if st := run(t.Context(), []string{"audit", "no-such-vm"}, w.env(&stdout, &stderr, nil)); st != ExitUsage {
		t.Errorf("unknown VM: status %d, want %d", st, ExitUsage)
	}
}

func TestAuditDatacenter(t *testing.T) {
	w := newWorld(t)
	w.scenario(t)
	st, out, errOut := runVC(t, w, "audit", "-config", "testdata/bridge.toml", "-dc", "DC0", "-json")
	if st != ExitProblems {
		t.Fatalf("status %d; stderr:\n%s", st, errOut)
	}
	var r Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if len(r.VMs) != 8 {
		t.Errorf("%d VMs in DC0, want 8", len(r.VMs))
	}
	if st, _, errOut := runVC(t, w, "audit", "-dc", "DC9"); st != ExitUsage || !strings.Contains(errOut, "vc: datacenter:") {
		t.Errorf("unknown datacenter: status %d, stderr %q", st, errOut)
	}
	// A bridge config whose address is not a telnet URI is a usage error.
	var stdout, stderr bytes.Buffer
	bad := fakeBridge{uris: []string{"http://192.0.2.10:80"}}
	if st := run(t.Context(), []string{"audit"}, w.env(&stdout, &stderr, bad)); st != ExitUsage || !strings.Contains(stderr.String(), "scheme must be telnet or telnets") {
		t.Errorf("bad bridge address: status %d, stderr %q", st, stderr.String())
	}
}

func TestFromConfigProxyURIs(t *testing.T) {
	for _, tc := range []struct {
		file string
		want []string
	}{
		{"testdata/bridge.toml", []string{"telnet://192.0.2.10:13370"}},
		{"testdata/bridge-tls.toml", []string{"telnet://192.0.2.10:13370", "telnets://192.0.2.10:13371"}},
	} {
		b, err := LoadBridge(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		if got := b.ProxyURIs(); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.file, got, tc.want)
		}
	}
	b, err := LoadBridge("")
	if err != nil {
		t.Fatal(err)
	}
	if got := b.ProxyURIs(); len(got) == 0 || got[0] != "telnet://127.0.0.1:13370" {
		t.Errorf("built-in config: %q", got)
	}
}
