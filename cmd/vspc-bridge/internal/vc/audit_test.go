package vc

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestAuditGolden(t *testing.T) {
	w := newWorld(t)
	w.scenario(t)
	for _, tc := range []struct {
		name string
		args []string
		file string
	}{
		{"table", []string{"audit", "-config", "testdata/bridge.toml"}, "audit.txt"},
		{"json", []string{"audit", "-config", "testdata/bridge.toml", "-json"}, "audit.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			st := run(t.Context(), tc.args, w.env(&stdout, &stderr, nil))
			if st != ExitProblems {
				t.Errorf("exit status %d, want %d; stderr:\n%s", st, ExitProblems, stderr.String())
			}
			golden(t, tc.file, stdout.Bytes())
		})
	}
}

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
		{"bad flag", []string{"audit", "-bogus"}, nil, ExitUsage, "", "flag provided but not defined: -bogus"},
		{"no URL", []string{"audit"}, nil, ExitUsage, "", "vc: no vCenter URL: set GOVC_URL or -u"},
		{"bad config", []string{"audit", "-config", "testdata/does-not-exist.toml"}, map[string]string{"GOVC_URL": "127.0.0.1:1"}, ExitUsage, "", "vc: configs:"},
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
