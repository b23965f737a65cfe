package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/cluster/clustertest"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
)

func loadLink(t *testing.T, dir, clusterName, member string, admit func(id, sum string) error) *Link {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, member+".crt"), filepath.Join(dir, member+".key"))
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	l, err := NewLink(LinkConfig{Cluster: clusterName, Member: member, Cert: &cert, CA: pool, Admit: admit, Logger: clustertest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestInitCerts(t *testing.T) {
	dir := t.TempDir()
	files, err := InitCerts(CertOptions{Dir: dir, Cluster: "lab", Members: []string{"a", "b"}, Hosts: []string{"127.0.0.1", "bridge-a.lab"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 6 {
		t.Errorf("files written: %v", files)
	}
	st, err := os.Stat(filepath.Join(dir, "a.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("a.key mode: %v %v", st.Mode(), err)
	}
	// Again: the CA is kept, existing member files are not overwritten.
	if _, err := InitCerts(CertOptions{Dir: dir, Cluster: "lab", Members: []string{"a"}}); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("second init over a.crt: %v", err)
	}
	if files, err := InitCerts(CertOptions{Dir: dir, Cluster: "lab", Members: []string{"c"}}); err != nil || len(files) != 2 {
		t.Errorf("adding member c: %v %v", files, err)
	}
	c, err := tls.LoadX509KeyPair(filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(c.Certificate[0])
	if id, err := memberFromCert(leaf, "lab"); err != nil || id != "c" {
		t.Errorf("member of c.crt: %q %v", id, err)
	}
	if _, err := memberFromCert(leaf, "other"); err == nil {
		t.Error("c.crt accepted as a member of another cluster")
	}
	if _, err := InitCerts(CertOptions{Dir: dir, Cluster: "lab", Members: []string{"bad/id"}}); err == nil {
		t.Error("a member id with a slash was accepted")
	}
}

// echo serves "vm" streams by echoing their bytes.
func serveEcho(t *testing.T, l *Link) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		l.Serve(ctx, ln, func(ctx context.Context, s *Stream) {
			if s.Header.Kind != KindVM || s.Header.Port.VM != "vm-1" {
				s.Reply(Reply{Err: "unexpected stream"})
				s.Conn.Close()
				return
			}
			s.Reply(Reply{OK: true})
			io.Copy(s.Conn, s.Conn)
			s.Conn.Close()
		})
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return ln.Addr().String()
}

func TestLinkMutualTLS(t *testing.T) {
	dir, rogueDir := t.TempDir(), t.TempDir()
	if _, err := InitCerts(CertOptions{Dir: dir, Cluster: "lab", Members: []string{"a", "b", "c"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := InitCerts(CertOptions{Dir: rogueDir, Cluster: "lab", Members: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	admitted := func(id, _ string) error {
		if id == "c" {
			return errors.New("not a live member")
		}
		return nil
	}
	a, b := loadLink(t, dir, "lab", "a", admitted), loadLink(t, dir, "lab", "b", admitted)
	addr := serveEcho(t, b)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	conn, r, err := a.Dial(ctx, addr, "b", Header{Kind: KindVM, Port: PortID{VM: "vm-1", Service: "s"}, Fence: 7})
	if err != nil || !r.OK {
		t.Fatalf("dial: %v %+v", err, r)
	}
	msg := []byte("bytes both ways \xff\x00")
	if _, err := conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != string(msg) {
		t.Fatalf("echo: %q %v", got, err)
	}
	conn.Close()

	if _, _, err := a.Dial(ctx, addr, "b", Header{Kind: KindVM, Port: PortID{VM: "other"}}); err == nil || !strings.Contains(err.Error(), "unexpected stream") {
		t.Errorf("refused stream: %v", err)
	}
	if _, _, err := a.Dial(ctx, addr, "c", Header{Kind: KindVM}); err == nil || !strings.Contains(err.Error(), `is member "b", want "c"`) {
		t.Errorf("dialing b as c: %v", err)
	}
	rogue := loadLink(t, rogueDir, "lab", "a", nil)
	if _, _, err := rogue.Dial(ctx, addr, "b", Header{Kind: KindVM}); err == nil {
		t.Error("a certificate of another CA was admitted")
	}
	c := loadLink(t, dir, "lab", "c", nil)
	if _, _, err := c.Dial(ctx, addr, "b", Header{Kind: KindVM, Port: PortID{VM: "vm-1"}}); err == nil {
		t.Error("a member the listener does not admit (not live in etcd) got a stream")
	}
	other := loadLink(t, dir, "other", "a", nil)
	if _, _, err := other.Dial(ctx, addr, "b", Header{Kind: KindVM}); err == nil {
		t.Error("a peer expecting another cluster name accepted b's certificate")
	}
}

// AdmitPeer admits live members whose published certificate matches.
func TestAdmitPeer(t *testing.T) {
	e := newEnv(t)
	a := e.node("a", func(c *Config) { c.Info.CertSHA256 = "abc" })
	e.node("b")
	testwait.For(t, "a to see b", func() bool { _, ok := a.MemberByID("b"); return ok })
	if err := a.AdmitPeer("b", "anything"); err != nil {
		t.Errorf("b publishes no hash: %v", err)
	}
	if err := a.AdmitPeer("a", "abd"); err == nil {
		t.Error("a certificate other than the published one was admitted")
	}
	if err := a.AdmitPeer("a", "abc"); err != nil {
		t.Error(err)
	}
	if err := a.AdmitPeer("z", "abc"); err == nil {
		t.Error("a member not in etcd was admitted")
	}
}
