package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// validID is the grammar of member and cluster ids: they go into etcd
// keys, certificate URIs and file names.
var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// CheckID reports whether s is a valid member or cluster id.
func CheckID(s string) error {
	if !validID.MatchString(s) {
		return fmt.Errorf("cluster: id %q: want 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", s)
	}
	return nil
}

// MemberURI is the URI SAN that names a member in its certificate.
func MemberURI(clusterName, member string) string {
	return "vspc://" + clusterName + "/member/" + member
}

// memberFromCert returns the member id in a certificate's URI SAN
// vspc://<cluster>/member/<id>.
func memberFromCert(c *x509.Certificate, clusterName string) (string, error) {
	for _, u := range c.URIs {
		if u.Scheme == "vspc" && u.Host == clusterName && strings.HasPrefix(u.Path, "/member/") {
			id := strings.TrimPrefix(u.Path, "/member/")
			if CheckID(id) == nil {
				return id, nil
			}
		}
	}
	return "", fmt.Errorf("cluster: certificate %q names no member of cluster %q (want a URI SAN %s)", c.Subject.CommonName, clusterName, MemberURI(clusterName, "ID"))
}

// CertSHA256 is the hex SHA-256 of a DER certificate, as published in
// members/<id>.
func CertSHA256(der []byte) string {
	h := sha256.Sum256(der)
	return hex.EncodeToString(h[:])
}

// CertOptions describe the certificates `vspc-bridge cluster init` makes.
type CertOptions struct {
	Dir     string   // where the files go
	Cluster string   // cluster name (in every member's URI SAN)
	Members []string // member ids
	Hosts   []string // DNS names and IP addresses put in every member certificate
	Days    int      // validity; default 3650
	Force   bool     // overwrite existing member files
}

// InitCerts writes a cluster CA (ca.crt, ca.key; kept if present) and,
// for each member, <id>.crt and <id>.key: an ECDSA P-256 certificate for
// both TLS client and server use, naming the member in a URI SAN. The
// same pair serves the member link, the etcd client, and an embedded etcd
// member's client and peer listeners. It returns the files written.
func InitCerts(o CertOptions) ([]string, error) {
	if err := CheckID(o.Cluster); err != nil {
		return nil, err
	}
	if len(o.Members) == 0 {
		return nil, errors.New("cluster: no members named")
	}
	for _, m := range o.Members {
		if err := CheckID(m); err != nil {
			return nil, err
		}
	}
	if o.Days <= 0 {
		o.Days = 3650
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	var written []string
	caCrt, caKeyFile := filepath.Join(o.Dir, "ca.crt"), filepath.Join(o.Dir, "ca.key")
	ca, caKey, err := loadCA(caCrt, caKeyFile)
	if errors.Is(err, os.ErrNotExist) {
		ca, caKey, err = newCA(o.Cluster, o.Days)
		if err == nil {
			err = writePair(caCrt, caKeyFile, ca.Raw, caKey, false)
			written = append(written, caCrt, caKeyFile)
		}
	}
	if err != nil {
		return nil, err
	}
	for _, m := range o.Members {
		der, key, err := newMemberCert(ca, caKey, o.Cluster, m, o.Hosts, o.Days)
		if err != nil {
			return written, err
		}
		crt, kf := filepath.Join(o.Dir, m+".crt"), filepath.Join(o.Dir, m+".key")
		if err := writePair(crt, kf, der, key, o.Force); err != nil {
			return written, err
		}
		written = append(written, crt, kf)
	}
	return written, nil
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func newCA(clusterName string, days int) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "vspc-bridge cluster " + clusterName + " CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(0, 0, days),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: making the CA: %w", err)
	}
	c, err := x509.ParseCertificate(der)
	return c, key, err
}

func newMemberCert(ca *x509.Certificate, caKey *ecdsa.PrivateKey, clusterName, member string, hosts []string, days int) ([]byte, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	u, err := url.Parse(MemberURI(clusterName, member))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: member},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(0, 0, days),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{u},
		DNSNames:     []string{member},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: making the certificate of %s: %w", member, err)
	}
	return der, key, nil
}

func loadCA(crt, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cb, err := os.ReadFile(crt)
	if err != nil {
		return nil, nil, err
	}
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: %s exists but its key does not: %w", crt, err)
	}
	cp, _ := pem.Decode(cb)
	kp, _ := pem.Decode(kb)
	if cp == nil || kp == nil {
		return nil, nil, fmt.Errorf("cluster: %s or %s is not PEM", crt, keyFile)
	}
	c, err := x509.ParseCertificate(cp.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: %s: %w", crt, err)
	}
	k, err := x509.ParseECPrivateKey(kp.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: %s: %w", keyFile, err)
	}
	return c, k, nil
}

// writePair writes a certificate and its key (mode 0600), refusing to
// overwrite without force.
func writePair(crt, keyFile string, der []byte, key *ecdsa.PrivateKey, force bool) error {
	if !force {
		for _, f := range []string{crt, keyFile} {
			if _, err := os.Stat(f); err == nil {
				return fmt.Errorf("cluster: %s exists (use -force to overwrite)", f)
			}
		}
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		return err
	}
	return writeAtomic(crt, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("cluster: %w", err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("cluster: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	return nil
}

// ClientTLS builds the TLS configuration of an etcd client: the CA that
// signed the etcd servers' certificates (or "" for the system roots) and,
// when etcd requires client certificates, this member's pair.
func ClientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("cluster: etcd CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("cluster: etcd CA %s holds no PEM certificate", caFile)
		}
		c.RootCAs = pool
	}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("cluster: etcd client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}
