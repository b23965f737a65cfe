package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/internal/atomicfile"
)

// cmdGenCert writes a self-signed ECDSA certificate and key for a lab
// telnets:// listener and prints the pinned proxy URI.
func cmdGenCert(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gen-cert", flag.ContinueOnError)
	fs.SetOutput(stderr)
	certFile := fs.String("cert", "vspc-bridge.crt", "certificate file to write (PEM)")
	keyFile := fs.String("key", "vspc-bridge.key", "private key file to write (PEM, mode 0600)")
	hosts := fs.String("host", "", "comma-separated DNS names and IP addresses for the certificate; the first is used in the proxy URI (default: this host's name)")
	port := fs.Int("port", 13371, "the tls_listen port, for the proxy URI")
	days := fs.Int("days", 825, "validity in days")
	force := fs.Bool("force", false, "overwrite existing files")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: vspc-bridge gen-cert [-host NAME,IP,...] [-port 13371] [-cert FILE] [-key FILE] [-days N] [-force]\n\nWrites a self-signed ECDSA P-256 certificate and key for a lab telnets:// listener and prints the proxy URI that pins it, telnets://HOST:PORT#thumbprint=<SHA-1, colon-separated hex> (the form OpenStack Nova configures).\n\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 || *port < 1 || *port > 65535 || *days < 1 {
		fs.Usage()
		return errUsage
	}
	names := strings.FieldsFunc(*hosts, func(r rune) bool { return r == ',' || r == ' ' })
	if len(names) == 0 {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("no -host given and no host name: %w", err)
		}
		names = []string{h}
	}
	if !*force {
		for _, f := range []string{*certFile, *keyFile} {
			if _, err := os.Stat(f); err == nil {
				return fmt.Errorf("%s exists; use -force to overwrite it", f)
			}
		}
	}
	der, key, notAfter, err := selfSigned(names, time.Duration(*days)*24*time.Hour)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(*keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600); err != nil {
		return err
	}
	if err := atomicfile.Write(*certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	absCert, _ := filepath.Abs(*certFile)
	absKey, _ := filepath.Abs(*keyFile)
	tp := configs.Thumbprint(der)
	uri := configs.TelnetsURI(net.JoinHostPort(names[0], strconv.Itoa(*port)), tp)
	fmt.Fprintf(stdout, `wrote %s and %s (ECDSA P-256, self-signed, for %s, valid until %s)
SHA-1 thumbprint: %s

Proxy URI for ESXi (telnets, certificate pinned by thumbprint):
  %s

In the bridge config:
  [vspc]
  tls_listen = ":%d"
  tls_cert = %q
  tls_key = %q
  proxy_uri = %q

For a VM (govc): govc device.serial.connect -vm VM -vspc-proxy '%s' SERVICE
For OpenStack Nova: [vmware] serial_port_proxy_uri = %s
`, *certFile, *keyFile, strings.Join(names, ", "), notAfter.Format(time.DateOnly), tp, uri, *port, absCert, absKey, uri, uri, uri)
	return nil
}

// selfSigned makes a self-signed ECDSA P-256 server certificate for names
// (DNS names or IP addresses). It returns the certificate and the PKCS #8
// key, both DER.
func selfSigned(names []string, valid time.Duration) (cert, key []byte, notAfter time.Time, err error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: names[0], Organization: []string{"vspc-bridge lab"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(valid),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	cert, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	key, err = x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	return cert, key, tmpl.NotAfter, nil
}
