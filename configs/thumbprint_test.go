package configs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseThumbprint(t *testing.T) {
	const canon = "0A:1B:2C:3D:4E:5F:60:71:82:93:A4:B5:C6:D7:E8:F9:00:11:22:33"
	for _, tc := range []struct {
		in, want string // want "" = error
	}{
		{canon, canon},
		{strings.ToLower(canon), canon},
		{strings.ReplaceAll(canon, ":", ""), canon},
		{strings.ToLower(strings.ReplaceAll(canon, ":", "")), canon},
		{"0a:1B:2c:3D:4e:5F:60:71:82:93:a4:B5:c6:D7:e8:F9:00:11:22:33", canon},
		{"", ""},
		{canon[:len(canon)-3], ""}, // 19 pairs
		{canon + ":44", ""},        // 21 pairs
		{strings.ReplaceAll(canon, ":", "")[:38], ""},             // 19 bytes
		{strings.Replace(canon, "0A:1B", "0A1:B", 1), ""},         // misplaced colon
		{strings.Replace(canon, "0A", "0G", 1), ""},               // not hex
		{strings.Repeat("AB", 32), ""},                            // SHA-256 length
		{strings.Replace(canon, ":", "::", 1)[:len(canon)+1], ""}, // empty pair
		{strings.ReplaceAll(canon, ":", "-"), ""},                 // other separator
		{strings.ReplaceAll(canon, ":", "")[:39] + " ", ""},       // trailing space
	} {
		got, err := ParseThumbprint(tc.in)
		if tc.want == "" {
			if err == nil || !strings.HasPrefix(err.Error(), "configs: thumbprint") {
				t.Errorf("ParseThumbprint(%q) = %q, %v; want a configs: thumbprint error", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseThumbprint(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestURIThumbprint(t *testing.T) {
	for _, tc := range []struct {
		uri, want string
		ok        bool
	}{
		{"telnets://h:13371#thumbprint=AB:CD", "AB:CD", true},
		{"telnets://h:13371#Thumbprint=abcd", "abcd", true},
		{"telnets://h:13371#x=1&thumbprint=AB", "AB", true},
		{"telnets://h:13371#thumbprint=", "", true},
		{"telnets://h:13371", "", false},
		{"telnets://h:13371#", "", false},
		{"telnets://h:13371#other=AB", "", false},
		{"telnets://h:13371#AB:CD", "", false},
		{"%zz", "", false},
	} {
		got, ok := URIThumbprint(tc.uri)
		if got != tc.want || ok != tc.ok {
			t.Errorf("URIThumbprint(%q) = %q, %v; want %q, %v", tc.uri, got, ok, tc.want, tc.ok)
		}
	}
}

func TestCertFile(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "t"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, blocks ...*pem.Block) string {
		var b bytes.Buffer
		for _, blk := range blocks {
			b.Write(pem.EncodeToMemory(blk))
		}
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, b.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	// A key before the certificate (a combined PEM file) is skipped.
	f := write("combined.pem", &pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	c, err := CertFile(f)
	if err != nil {
		t.Fatal(err)
	}
	tp, err := CertFileThumbprint(f)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.Raw, der) || Thumbprint(c.Raw) != tp {
		t.Errorf("CertFile read another certificate than CertFileThumbprint")
	}
	for name, path := range map[string]string{
		"missing":  filepath.Join(dir, "none.pem"),
		"key only": write("key.pem", &pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
		"garbage":  write("bad.pem", &pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")}),
	} {
		if _, err := CertFile(path); err == nil || !strings.HasPrefix(err.Error(), "configs: ") {
			t.Errorf("%s: err %v, want a configs: error", name, err)
		}
	}
}
