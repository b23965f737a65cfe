package vspc_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"testing"
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
// telnet bytes.
func TestTLSSlowClientHello(t *testing.T) {
	srv := vspc.NewServer(vspc.Config{Bridger: &recBridger{}, Logger: testLogger(t), HandshakeTimeout: 5 * time.Second})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ctx, tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, MinVersion: tls.VersionTLS12}))
	}()
	defer func() { cancel(); <-done; srv.Close() }()

	for _, delay := range []time.Duration{0, 150 * time.Millisecond} {
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay)
		tc := tls.Client(nc, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
		hctx, hcancel := context.WithTimeout(t.Context(), 5*time.Second)
		c, err := vspctest.Handshake(hctx, tc, vspctest.VM{Name: "tls-vm", VCUUID: "50000000-0000-4000-8000-00000000000a", Direction: vspc.DirServer, ServiceURI: "vSPC.py"})
		hcancel()
		if err != nil {
			nc.Close()
			t.Fatalf("ClientHello %v after connect: %v", delay, err)
		}
		c.Close()
	}
	// A host that never starts TLS is a handshake timeout.
	before := srv.Counters()
	srv.SetConfig(vspc.Config{HandshakeTimeout: 100 * time.Millisecond})
	nc2, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	nc2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc2.Read(make([]byte, 1)); err == nil {
		t.Fatal("a silent host on the telnets listener got bytes")
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		k := srv.Counters()
		if k.HandshakeTimeouts > before.HandshakeTimeouts && k.HandshakeLost == before.HandshakeLost {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("counters before %+v, after %+v: want one more handshake timeout", before, k)
		}
	}
}
