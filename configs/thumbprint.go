package configs

import (
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net/url"
	"os"
	"strings"
)

// ParseThumbprint accepts a SHA-1 certificate thumbprint as people and tools
// write it — colon-separated hex pairs ("AB:CD:…", as Thumbprint writes it
// and openssl prints it) or 40 hex digits without separators, in either case —
// and returns it in Thumbprint's form, so that two thumbprints compare with ==.
func ParseThumbprint(s string) (string, error) {
	h := s
	if strings.Contains(s, ":") {
		parts := strings.Split(s, ":")
		for _, p := range parts {
			if len(p) != 2 {
				return "", fmt.Errorf("configs: thumbprint %q: want 20 colon-separated hex pairs or 40 hex digits", s)
			}
		}
		h = strings.Join(parts, "")
	}
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 20 {
		return "", fmt.Errorf("configs: thumbprint %q: want the SHA-1 as 20 colon-separated hex pairs or 40 hex digits", s)
	}
	var out strings.Builder
	for i, c := range b {
		if i > 0 {
			out.WriteByte(':')
		}
		fmt.Fprintf(&out, "%02X", c)
	}
	return out.String(), nil
}

// URIThumbprint returns the thumbprint a proxy URI pins in its fragment, the
// value of "thumbprint=" in "telnets://host:port#thumbprint=AB:CD:…" (parts
// of the fragment may be separated by '&'; the key is matched without regard
// to case). ok is false when the URI pins none. The value is returned as
// written; see ParseThumbprint.
func URIThumbprint(uri string) (thumbprint string, ok bool) {
	u, err := url.Parse(uri)
	if err != nil || u.Fragment == "" {
		return "", false
	}
	for part := range strings.SplitSeq(u.Fragment, "&") {
		if k, v, _ := strings.Cut(part, "="); strings.EqualFold(k, "thumbprint") {
			return v, true
		}
	}
	return "", false
}

// CertFile reads the first certificate of a PEM file (the leaf of a chain),
// the certificate CertFileThumbprint fingerprints.
func CertFile(certFile string) (*x509.Certificate, error) {
	data, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("configs: %w", err)
	}
	for {
		var blk *pem.Block
		blk, data = pem.Decode(data)
		if blk == nil {
			return nil, fmt.Errorf("configs: %s: no PEM CERTIFICATE block", certFile)
		}
		if blk.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("configs: %s: %w", certFile, err)
			}
			return c, nil
		}
	}
}
