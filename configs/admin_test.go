package configs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestAdminDefaults(t *testing.T) {
	c, err := Parse("min.toml", []byte("[vspc]\nlisten = \"127.0.0.1:13370\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Admin.Listen != "127.0.0.1:13372" || c.Admin.Token != "" || c.Admin.TLSCert != "" {
		t.Errorf("admin defaults: %+v", c.Admin)
	}
	a := c.Alerts
	if a.Webhook != "" || a.RateLimit != 5 || a.RateWindow.Duration != time.Minute || a.Queue != 4096 || a.MaxLine != 4*KiB || a.WebhookTimeout.Duration != 5*time.Second {
		t.Errorf("alerts defaults: %+v", a)
	}
	if len(c.AlertRules) != 0 {
		t.Errorf("alert rules: %+v", c.AlertRules)
	}
}

func TestExampleDocumentsAdminKeys(t *testing.T) {
	ex := string(ExampleTOML())
	for _, k := range append(tableKeys(typeOf(Admin{})), tableKeys(typeOf(Alerts{}))...) {
		if !strings.Contains(ex, "\n"+k+" = ") {
			t.Errorf("example.toml does not set %s", k)
		}
	}
	for _, k := range tableKeys(typeOf(AlertRule{})) {
		if !strings.Contains(ex, "\n# "+k+" = ") {
			t.Errorf("example.toml does not document alert.%s", k)
		}
	}
}

func TestAlertRules(t *testing.T) {
	c, err := Parse("a.toml", []byte(`[vspc]
listen = "127.0.0.1:13370"
[[route]]
name = "sw"
service = "sw-*"
device = "tcp://127.0.0.1:1"
[[alert]]
pattern = "Kernel panic"
[[alert]]
name = "sw-crash"
pattern = "%SYS-[0-2]-"
route = "sw"
vm = "core-*"
from = "device"
`))
	if err != nil {
		t.Fatal(err)
	}
	r0, r1 := c.AlertRules[0], c.AlertRules[1]
	if r0.Name != "Kernel panic" || r0.From != AlertFromVM || !r0.Regexp().MatchString("[ 1.0] Kernel panic - not syncing") || !r0.MatchesVM("x") {
		t.Errorf("rule 0: %+v", r0)
	}
	if r1.Name != "sw-crash" || r1.From != AlertFromDevice || r1.Route != "sw" || !r1.MatchesVM("core-7") || r1.MatchesVM("edge-1") {
		t.Errorf("rule 1: %+v", r1)
	}
}

func TestAdminErrors(t *testing.T) {
	const listen = "[vspc]\nlisten = \"127.0.0.1:13370\"\n"
	for _, tt := range []struct {
		name, src string
		want      []string // substrings, each in its own error
	}{
		{"bad listen", listen + "[admin]\nlisten = \"nope\"\n", []string{"4: admin.listen: want host:port"}},
		{"public without token", listen + "[admin]\nlisten = \"0.0.0.0:9000\"\n", []string{"4: admin.listen: 0.0.0.0:9000 is not a loopback address: set token or token_file"}},
		{"public with token", listen + "[admin]\nlisten = \"0.0.0.0:9000\"\ntoken_file = \"/etc/t\"\n", nil},
		{"off", listen + "[admin]\nlisten = \"\"\n", nil},
		{"localhost ok", listen + "[admin]\nlisten = \"localhost:9000\"\n", nil},
		{"ipv6 loopback ok", listen + "[admin]\nlisten = \"[::1]:9000\"\n", nil},
		{"clash with vspc", listen + "[admin]\nlisten = \"127.0.0.1:13370\"\n", []string{"admin.listen: 127.0.0.1:13370 clashes with vspc.listen 127.0.0.1:13370"}},
		{"clash with wildcard tls", listen + "tls_listen = \":13371\"\ntls_cert = \"c\"\ntls_key = \"k\"\n[admin]\nlisten = \"127.0.0.1:13371\"\n", []string{"admin.listen: 127.0.0.1:13371 clashes with vspc.tls_listen :13371"}},
		{"port 0 never clashes", "[vspc]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n", nil},
		{"cert without key", listen + "[admin]\ntls_cert = \"c\"\n", []string{"admin.tls_key: tls_cert and tls_key go together"}},
		{"token and file", listen + "[admin]\ntoken = \"x\"\ntoken_file = \"f\"\n", []string{"5: admin.token_file: set either token or token_file"}},
		{"token spaces", listen + "[admin]\ntoken = \" x\"\n", []string{"admin.token: must not start or end with white space"}},
		{"unknown admin key", listen + "[admin]\nport = 1\n", []string{"4: admin.port: unknown key (valid in [admin]: listen, tls_cert, tls_key, token, token_file)"}},
		{"webhook scheme", listen + "[alerts]\nwebhook = \"ftp://x/y\"\n", []string{"4: alerts.webhook: \"ftp://x/y\": want an http:// or https:// URL"}},
		{"webhook no host", listen + "[alerts]\nwebhook = \"http:///y\"\n", []string{"alerts.webhook"}},
		{"limits", listen + "[alerts]\nrate_limit = 0\nrate_window = \"0s\"\nqueue = 1\nmax_line = 10\nwebhook_timeout = \"-1s\"\n",
			[]string{"4: alerts.rate_limit: 0 is out of range", "5: alerts.rate_window: must be positive", "6: alerts.queue: 1 is out of range", "7: alerts.max_line: 10 is out of range", "8: alerts.webhook_timeout: must be positive"}},
		{"rule errors", listen + "[[alert]]\npattern = \"(\"\nroute = \"nope\"\nfrom = \"up\"\nvm = \"[\"\n[[alert]]\nname = \"x\"\n",
			[]string{"4: alert[0].pattern: error parsing regexp", "5: alert[0].route: no [[route]] is named \"nope\"", "6: alert[0].from: \"up\": want", "7: alert[0].vm: bad pattern", "alert[1].pattern: required"}},
		{"duplicate names", listen + "[[alert]]\npattern = \"a\"\n[[alert]]\npattern = \"a\"\n", []string{"alert[1]: duplicate alert name \"a\" (also alert[0])"}},
		{"pattern wrong type", listen + "[[alert]]\npattern = 3\n", []string{"alert[0].pattern: want a string, got integer 3"}},
	} {
		t.Run(tt.name, func(t *testing.T) { wantErrors(t, tt.src, tt.want) })
	}
}

func TestReadToken(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "tok")
	os.WriteFile(f, []byte("  s3cret\n"), 0o600)
	if tok, err := (&Admin{TokenFile: f}).ReadToken(); err != nil || tok != "s3cret" {
		t.Errorf("ReadToken = %q, %v", tok, err)
	}
	if tok, err := (&Admin{Token: "inline"}).ReadToken(); err != nil || tok != "inline" {
		t.Errorf("inline token = %q, %v", tok, err)
	}
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	if _, err := (&Admin{TokenFile: empty}).ReadToken(); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Errorf("empty file: %v", err)
	}
	if _, err := (&Admin{TokenFile: filepath.Join(dir, "missing")}).ReadToken(); err == nil || !strings.HasPrefix(err.Error(), "configs: admin.token_file: ") {
		t.Errorf("missing file: %v", err)
	}
}

// TestThumbprint checks the telnets:// thumbprint form against openssl
// (`openssl x509 -noout -fingerprint -sha1`, what OpenStack's vmware-vspc
// devstack plugin puts in Nova's serial_port_proxy_uri) when it is
// installed, and its shape always.
func TestThumbprint(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "t"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "c.pem")
	os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	tp, err := CertFileThumbprint(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(tp) != 59 || strings.Count(tp, ":") != 19 || strings.ToUpper(tp) != tp {
		t.Errorf("thumbprint %q: want 20 upper-case hex pairs joined by colons", tp)
	}
	if got := TelnetsURI("vspc.example:13371", tp); got != "telnets://vspc.example:13371#thumbprint="+tp {
		t.Errorf("TelnetsURI = %q", got)
	}
	if err := checkProxyURI(TelnetsURI("vspc.example:13371", tp)); err != nil {
		t.Errorf("proxy_uri check rejects our own URI: %v", err)
	}
	if _, err := CertFileThumbprint(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("missing file: no error")
	}
	if out, err := exec.Command("openssl", "x509", "-in", f, "-noout", "-fingerprint", "-sha1").Output(); err == nil {
		_, want, _ := strings.Cut(strings.TrimSpace(string(out)), "=")
		if tp != want {
			t.Errorf("thumbprint %q, openssl says %q", tp, want)
		}
	} else {
		t.Logf("openssl not available (%v); shape checked only", err)
	}
}

func typeOf(v any) reflect.Type { return reflect.TypeOf(v) }

// TestSystemdUnit checks the packaged unit for what the README promises:
// an unprivileged user with only the tty group, restart on failure, a
// config check before start, reload by SIGHUP, and the hardening options.
func TestSystemdUnit(t *testing.T) {
	data, err := os.ReadFile("vspc-bridge.service")
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string][]string{}
	for _, l := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(l, "#") {
			keys[k] = append(keys[k], v)
		}
	}
	for k, want := range map[string]string{
		"User": "vspc-bridge", "Group": "vspc-bridge", "SupplementaryGroups": "dialout", "Restart": "on-failure",
		"NoNewPrivileges": "yes", "CapabilityBoundingSet": "", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
		"ExecReload": "/bin/kill -HUP $MAINPID", "DevicePolicy": "closed", "MemoryDenyWriteExecute": "yes",
		"ExecStart":    "/usr/local/bin/vspc-bridge serve -config /etc/vspc-bridge/bridge.toml -log-format json",
		"ExecStartPre": "/usr/local/bin/vspc-bridge check-config /etc/vspc-bridge/bridge.toml",
	} {
		if got := keys[k]; len(got) != 1 || got[0] != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
}
