package vc

import (
	"cmp"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/vspc-bridge/vspc-bridge/configs"
)

// The bridge's telnets listener as VMs name it in the TLS tests.
const bridgeTLS = "telnets://192.0.2.10:13371"

// wrongTP is a well-formed thumbprint of no certificate in the tests.
const wrongTP = "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33"

// newCert makes an ECDSA P-256 server certificate for 192.0.2.10, shaped as
// "vspc-bridge gen-cert" makes it (its generator is not exported). parent
// nil: self-signed; else signed by parent's key, and isCA makes a CA.
func newCert(t *testing.T, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, isCA bool) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"vspc-bridge lab"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IPAddresses:           []net.IP{net.ParseIP("192.0.2.10")},
	}
	if isCA {
		tmpl.IsCA, tmpl.KeyUsage, tmpl.IPAddresses = true, x509.KeyUsageCertSign, nil
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

// tlsConfig writes a self-signed certificate and its key to a temporary
// directory and a bridge config like testdata/bridge.toml plus a telnets
// listener using them. It returns the config path and the certificate.
func tlsConfig(t *testing.T) (string, *x509.Certificate) {
	t.Helper()
	dir := t.TempDir()
	c, key := newCert(t, "192.0.2.10", nil, nil, false)
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "bridge.crt"), filepath.Join(dir, "bridge.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), 0o600); err != nil {
		t.Fatal(err)
	}
	return writeTLSConfig(t, dir, certFile, keyFile), c
}

func writeTLSConfig(t *testing.T, dir, certFile, keyFile string) string {
	t.Helper()
	base, err := os.ReadFile("testdata/bridge.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(base), "[vspc]\n", fmt.Sprintf("[vspc]\ntls_listen = \"0.0.0.0:13371\"\ntls_cert = %q\ntls_key = %q\n", certFile, keyFile), 1)
	path := filepath.Join(dir, "bridge-tls.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// proxyOf reads the proxy URI of the VM's serial port with the service URI.
func (w *world) proxyOf(t *testing.T, vmName, service string) string {
	t.Helper()
	for _, p := range w.readPorts(t, vmName) {
		if b, ok := p.Backing.(*types.VirtualSerialPortURIBackingInfo); ok && b.ServiceURI == service {
			return b.ProxyURI
		}
	}
	t.Fatalf("%s has no URI-backed port for service %q", vmName, service)
	return ""
}

// TestProvisionTLS: with a telnets listener and a certificate, provision
// writes the pinned URI by default, pins an explicit -proxy (saying so), and
// refuses what the audit would flag.
func TestProvisionTLS(t *testing.T) {
	w := newWorld(t)
	w.scenario(t)
	cfg, cert := tlsConfig(t)
	pinned := bridgeTLS + "#thumbprint=" + configs.Thumbprint(cert.Raw)

	// Default proxy URI: the telnets listener, pinned, read back from the simulator.
	st, out, errOut := runVC(t, w, "provision", "-config", cfg, "-vm", "DC0_C0_RP0_VM1", "-direction", "server", "-service", "vm-console-2")
	if st != ExitOK {
		t.Fatalf("status %d, stdout:\n%s\nstderr:\n%s", st, out, errOut)
	}
	if got := w.proxyOf(t, "DC0_C0_RP0_VM1", "vm-console-2"); got != pinned {
		t.Errorf("proxy URI written %q, want %q", got, pinned)
	}
	if strings.Contains(out, "note:") || !strings.Contains(out, pinned) {
		t.Errorf("output:\n%s\nwant the pinned URI and no note", out)
	}
	if st, out, _ := runVC(t, w, "audit", "-config", cfg, "DC0_C0_RP0_VM1"); st != ExitOK {
		t.Errorf("audit after provision: status %d:\n%s", st, out)
	}

	// An explicit telnets -proxy to the bridge without a pin gets one, and says so.
	st, out, errOut = runVC(t, w, "provision", "-config", cfg, "-json", "-vm", "DC0_H0_VM1", "-direction", "client", "-service", "tcp://198.51.100.6:4001", "-proxy", bridgeTLS)
	if st != ExitOK {
		t.Fatalf("explicit -proxy: status %d, stdout:\n%s\nstderr:\n%s", st, out, errOut)
	}
	var ch Change
	if err := json.Unmarshal([]byte(out), &ch); err != nil {
		t.Fatal(err)
	}
	if len(ch.Notes) != 1 || !strings.Contains(ch.Notes[0], "-proxy "+bridgeTLS+" pins no certificate: added #thumbprint="+configs.Thumbprint(cert.Raw)) || ch.After.ProxyURI != pinned {
		t.Errorf("notes %q, after %q; want one note on the added pin and %q", ch.Notes, ch.After.ProxyURI, pinned)
	}
	if got := w.proxyOf(t, "DC0_H0_VM1", "tcp://198.51.100.6:4001"); got != pinned {
		t.Errorf("explicit -proxy: written %q, want %q", got, pinned)
	}
	// The table form prints the note.
	st, out, _ = runVC(t, w, "provision", "-config", cfg, "-dry-run", "-vm", "DC0_H0_VM1", "-direction", "client", "-service", "tcp://198.51.100.6:4001", "-proxy", bridgeTLS+"#")
	if st != ExitOK || !strings.Contains(out, "\nnote: -proxy "+bridgeTLS+"# pins no certificate") {
		t.Errorf("dry run with -proxy: status %d, output:\n%s", st, out)
	}

	// A colon-less, lower-case pin of the right certificate is written as given.
	bare := bridgeTLS + "#thumbprint=" + strings.ToLower(strings.ReplaceAll(configs.Thumbprint(cert.Raw), ":", ""))
	if st, out, errOut := runVC(t, w, "provision", "-config", cfg, "-vm", "DC0_H0_VM1", "-direction", "client", "-service", "tcp://198.51.100.6:4001", "-proxy", bare); st != ExitOK || strings.Contains(out, "note:") {
		t.Errorf("colon-less pin: status %d, stdout:\n%s\nstderr:\n%s", st, out, errOut)
	}
	if got := w.proxyOf(t, "DC0_H0_VM1", "tcp://198.51.100.6:4001"); got != bare {
		t.Errorf("colon-less pin: written %q, want %q", got, bare)
	}

	// Refusals: nothing is written.
	for _, tc := range []struct {
		name string
		args []string
		code Code
	}{
		{"wrong pin", []string{"-proxy", bridgeTLS + "#thumbprint=" + wrongTP}, CodeProxyThumbprint},
		{"not a SHA-1", []string{"-proxy", bridgeTLS + "#thumbprint=" + strings.Repeat("AB", 32)}, CodeProxyThumbprint},
		{"-pin=false, self-signed", []string{"-pin=false"}, CodeProxyUnpinned},
		{"-pin=false -proxy, self-signed", []string{"-pin=false", "-proxy", bridgeTLS}, CodeProxyUnpinned},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantRefused(t, w, tc.code, append([]string{"provision", "-config", cfg, "-json", "-vm", "DC0_H0_VM0", "-direction", "client", "-service", "lab-switch"}, tc.args...)...)
			if got := w.proxyOf(t, "DC0_H0_VM0", "lab-switch"); got != bridgeURI {
				t.Errorf("refused provision wrote %q", got)
			}
		})
	}
}

// TestProvisionTLSCertUnreadable: a bridge with TLS whose certificate cannot
// be read is an error, not a silently unpinned (or plain) URI.
func TestProvisionTLSCertUnreadable(t *testing.T) {
	w := newWorld(t)
	w.scenario(t)
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.crt")
	cfg := writeTLSConfig(t, dir, missing, filepath.Join(dir, "missing.key"))
	for _, cmd := range [][]string{
		{"provision", "-config", cfg, "-vm", "DC0_C0_RP0_VM1", "-direction", "server", "-service", "vm-console-2"},
		{"audit", "-config", cfg},
	} {
		st, out, errOut := runVC(t, w, cmd...)
		if st != ExitUsage || !strings.Contains(errOut, "vc: [vspc] tls_cert: configs: open "+missing) {
			t.Errorf("%s: status %d, stderr %q; want %d and the unreadable tls_cert", cmd[0], st, errOut, ExitUsage)
		}
		if out != "" {
			t.Errorf("%s: output %q, want none", cmd[0], out)
		}
	}
	if ps := w.readPorts(t, "DC0_C0_RP0_VM1"); len(ps) != 0 {
		t.Errorf("provision wrote %d ports", len(ps))
	}
}

// TestAuditThumbprint audits telnets ports to the bridge pinned in every way
// against a self-signed certificate.
func TestAuditThumbprint(t *testing.T) {
	w := newWorld(t)
	cfg, cert := tlsConfig(t)
	tp := configs.Thumbprint(cert.Raw)
	ports := []struct{ service, proxy string }{
		{"pinned", bridgeTLS + "#thumbprint=" + tp},
		{"pinned-bare-lower", bridgeTLS + "#thumbprint=" + strings.ToLower(strings.ReplaceAll(tp, ":", ""))},
		{"pinned-wrong", bridgeTLS + "#thumbprint=" + wrongTP},
		{"pinned-garbage", bridgeTLS + "#thumbprint=not-a-thumbprint"},
		{"unpinned", bridgeTLS},
		{"plain", bridgeURI},
	}
	for _, p := range ports {
		w.addPort(t, "DC0_C0_RP0_VM1", uriBacking("server", p.service, p.proxy), true, true)
	}
	st, out, errOut := runVC(t, w, "audit", "-config", cfg, "-json", "DC0_C0_RP0_VM1")
	if st != ExitProblems {
		t.Fatalf("status %d, want %d; stderr:\n%s", st, ExitProblems, errOut)
	}
	var r Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	service := map[string]string{} // port name → service URI
	for _, p := range r.VMs[0].Ports {
		service[p.Name] = p.ServiceURI
	}
	var got []string
	for _, p := range r.Problems {
		got = append(got, fmt.Sprintf("%s %s %s", service[p.Port], p.Code, p.Severity))
		if !strings.HasPrefix(p.Fix, "vspc-bridge vc provision -config "+cfg+" -vm DC0_C0_RP0_VM1 ") {
			t.Errorf("%s: fix %q, want the provision command", p.Code, p.Fix)
		}
	}
	want := []string{
		"pinned-wrong proxy-thumbprint ",
		"pinned-garbage proxy-thumbprint ",
		"unpinned proxy-unpinned warning",
	}
	if !slices.Equal(got, want) {
		t.Errorf("problems (service code severity):\n%q\nwant\n%q", got, want)
	}

	// The table, with the generated thumbprint masked (same length, so that
	// the columns stay aligned) and the temporary config path replaced.
	st, out, _ = runVC(t, w, "audit", "-config", cfg, "DC0_C0_RP0_VM1")
	if st != ExitProblems {
		t.Errorf("table: status %d", st)
	}
	out = strings.ReplaceAll(out, strings.ToLower(strings.ReplaceAll(tp, ":", "")), strings.Repeat("x", 40))
	out = strings.ReplaceAll(out, tp, strings.Repeat("XX:", 19)+"XX")
	out = strings.ReplaceAll(out, cfg, "<CONFIG>")
	golden(t, "audit-tls.txt", []byte(out))

	// After provision (the fix), the wrongly pinned port passes.
	if st, out, errOut := runVC(t, w, "provision", "-config", cfg, "-vm", "DC0_C0_RP0_VM1", "-direction", "server", "-service", "pinned-wrong"); st != ExitOK {
		t.Fatalf("provision: status %d, stdout:\n%s\nstderr:\n%s", st, out, errOut)
	}
	if got := w.proxyOf(t, "DC0_C0_RP0_VM1", "pinned-wrong"); got != bridgeTLS+"#thumbprint="+tp {
		t.Errorf("fixed proxy URI %q", got)
	}
}

// TestFromConfigTLSCert: the config bridge reads tls_cert only with tls_listen.
func TestFromConfigTLSCert(t *testing.T) {
	cfg, cert := tlsConfig(t)
	b, err := LoadBridge(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := b.TLSCert(); err != nil || c == nil || !c.Equal(cert) {
		t.Errorf("TLSCert() = %v, %v; want the generated certificate", c, err)
	}
	// proxy_uri pinned to a stale certificate, as gen-cert suggests writing
	// it: provision's default is pinned to the certificate file.
	data, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stale := strings.Replace(string(data), `proxy_uri = "telnet://192.0.2.10:13370"`, `proxy_uri = "`+bridgeTLS+`#thumbprint=`+wrongTP+`"`, 1)
	if stale == string(data) {
		t.Fatal("the test config has no proxy_uri to replace")
	}
	if err := os.WriteFile(cfg, []byte(stale), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err = LoadBridge(cfg); err != nil {
		t.Fatal(err)
	}
	br, err := parseBridge(b)
	if err != nil {
		t.Fatal(err)
	}
	if want := bridgeTLS + "#thumbprint=" + configs.Thumbprint(cert.Raw); br.uri != want {
		t.Errorf("proxy_uri with a stale pin: default %q, want %q", br.uri, want)
	}
	plain, err := LoadBridge("testdata/bridge.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c, err := plain.TLSCert(); c != nil || err != nil {
		t.Errorf("no tls_listen: TLSCert() = %v, %v; want nil, nil", c, err)
	}
}

// TestPin is provision's rule for an explicit -proxy, and its default.
func TestPin(t *testing.T) {
	cert, _ := newCert(t, "192.0.2.10", nil, nil, false)
	tp := configs.Thumbprint(cert.Raw)
	b := testBridge()
	b.uris = []string{bridgeURI, bridgeTLS}
	noCert := b
	b.cert = cert
	br, err := parseBridge(b)
	if err != nil {
		t.Fatal(err)
	}
	if want := bridgeTLS + "#thumbprint=" + tp; br.uri != want {
		t.Errorf("default proxy URI %q, want %q", br.uri, want)
	}
	for _, tc := range []struct {
		in, want string // want "" = left as it is
	}{
		{bridgeTLS, bridgeTLS + "#thumbprint=" + tp},
		{bridgeTLS + "#", bridgeTLS + "#thumbprint=" + tp},
		{bridgeTLS + "#x=1", bridgeTLS + "#x=1&thumbprint=" + tp},
		{"TELNETS://192.0.2.10:13371", "TELNETS://192.0.2.10:13371#thumbprint=" + tp},
		{bridgeTLS + "#thumbprint=" + wrongTP, ""}, // pinned: the audit judges it
		{bridgeURI, ""},                    // plain telnet
		{telnetsURI, ""},                   // telnets to the plain port
		{"telnets://192.0.2.99:13371", ""}, // not the bridge
		{"not a URI", ""},
	} {
		got, ok := br.pin(tc.in)
		if want := cmp.Or(tc.want, tc.in); got != want || ok != (tc.want != "") {
			t.Errorf("pin(%q) = %q, %v; want %q", tc.in, got, ok, want)
		}
	}
	// Without a certificate, nothing is pinned and the default is unchanged.
	br, err = parseBridge(noCert)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := br.pin(bridgeTLS); ok || got != bridgeTLS || br.uri != bridgeURI {
		t.Errorf("no certificate: pin = %q, %v; default %q", got, ok, br.uri)
	}
}
