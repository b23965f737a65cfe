package vspctest

import (
	"context"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// PinnedTLS returns the TLS client settings of an ESXi host whose proxy
// URI is telnets://host:port#thumbprint=T: the server's certificate is
// accepted when its SHA-1 fingerprint is T (hex, colons and case
// ignored), whoever issued it and whatever names it carries.
func PinnedTLS(thumbprint string) *tls.Config {
	want := strings.ToLower(strings.ReplaceAll(thumbprint, ":", ""))
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // replaced by the thumbprint check
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("vspctest: no server certificate")
			}
			sum := sha1.Sum(raw[0])
			if got := hex.EncodeToString(sum[:]); got != want {
				return fmt.Errorf("vspctest: server certificate thumbprint %s, want %s", got, want)
			}
			return nil
		},
	}
}

// DialTLS is Dial over TLS: the source host of a VM whose proxy URI is
// telnets://addr.
func DialTLS(ctx context.Context, addr string, cfg *tls.Config, vm VM) (*Conn, error) {
	d := tls.Dialer{Config: cfg}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c, err := Handshake(ctx, nc, vm)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// DialPeerTLS is DialPeer over TLS: the vMotion destination host.
func DialPeerTLS(ctx context.Context, addr string, cfg *tls.Config, vm VM, seq, secret []byte) (*Conn, error) {
	d := tls.Dialer{Config: cfg}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return PeerHandshake(ctx, nc, vm, seq, secret)
}

// MigrateTLS is Migrate with the destination host connecting over TLS.
func MigrateTLS(ctx context.Context, c *Conn, addr string, cfg *tls.Config, seq []byte) (*Conn, error) {
	secret, err := c.Begin(ctx, seq)
	if err != nil {
		return nil, err
	}
	dst, err := DialPeerTLS(ctx, addr, cfg, c.vm, seq, secret)
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	wg.Go(func() { c.nc.Close() })
	err = dst.Complete(seq)
	wg.Wait()
	if err != nil {
		dst.Close()
		return nil, err
	}
	return dst, nil
}
