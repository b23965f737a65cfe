package vspc_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vspc-bridge/vspc-bridge/vspc"
	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
)

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestTLSSlowClientHello: a host whose TLS handshake starts late (a busy
// ESXi host, a long path) is still served: the TLS handshake runs under
// the handshake timeout, not under the short wait for the VM's first
// telnet bytes. A host that never starts TLS is a handshake timeout, at
// the handshake timeout.
func TestTLSSlowClientHello(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newPipeEnv(t, func(c *vspc.Config) { c.HandshakeTimeout = 5 * time.Second })
		cfg := &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, MinVersion: tls.VersionTLS12}
		serveTLS := func() net.Conn {
			host, proxy := net.Pipe()
			go e.srv.ServeConn(tls.Server(proxy, cfg))
			t.Cleanup(func() { host.Close() })
			return host
		}
		for _, delay := range []time.Duration{0, 150 * time.Millisecond} {
			nc := serveTLS()
			time.Sleep(delay)
			tc := tls.Client(nc, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
			c, err := vspctest.Handshake(t.Context(), tc, vspctest.VM{Name: "tls-vm", VCUUID: "50000000-0000-4000-8000-00000000000a", Direction: vspc.DirServer, ServiceURI: "vSPC.py"})
			if err != nil {
				t.Fatalf("ClientHello %v after connect: %v", delay, err)
			}
			c.Close()
		}
		before := e.srv.Counters()
		const hsTimeout = 100 * time.Millisecond
		e.srv.SetConfig(vspc.Config{HandshakeTimeout: hsTimeout})
		h := collect(serveTLS())
		time.Sleep(hsTimeout - time.Millisecond)
		synctest.Wait()
		if _, closed := h.state(); closed {
			t.Fatal("a silent host was closed before the handshake timeout")
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if got, closed := h.state(); !closed || len(got) != 0 {
			t.Fatalf("a silent host on the telnets listener: closed %v, got % x", closed, got)
		}
		k := e.srv.Counters()
		if k.HandshakeTimeouts != before.HandshakeTimeouts+1 || k.HandshakeLost != before.HandshakeLost {
			t.Fatalf("counters before %+v, after %+v: want one more handshake timeout", before, k)
		}
	})
}
