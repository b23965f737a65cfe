package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/devices/devicetest"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
)

// The L4 balancer topology's example, configs/haproxy.cfg, is a valid
// HAProxy configuration as shipped.
func TestHAProxyConfig(t *testing.T) {
	bin := devicetest.Require(t, "haproxy")
	out, err := exec.Command(bin, "-c", "-f", filepath.Join("..", "..", "configs", "haproxy.cfg")).CombinedOutput()
	if err != nil {
		t.Fatalf("haproxy -c configs/haproxy.cfg: %v\n%s", err, out)
	}
}

// haproxyFront runs configs/haproxy.cfg in front of the world's members,
// its addresses moved to loopback (nothing else changed), and returns
// the address ESXi would be given.
func haproxyFront(w *haWorld) string {
	t := w.t
	bin := devicetest.Require(t, "haproxy")
	src, err := os.ReadFile(filepath.Join("..", "..", "configs", "haproxy.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	front := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	cfg := string(src)
	sub := func(old, new string) {
		if strings.Count(cfg, old) != 1 {
			t.Fatalf("configs/haproxy.cfg no longer has %q once: update this test", old)
		}
		cfg = strings.Replace(cfg, old, new, 1)
	}
	sub("bind 10.0.0.10:13370", "bind "+front)
	for i, m := range w.members {
		_, adminPort, _ := net.SplitHostPort(m.admin)
		sub(fmt.Sprintf("server bridge-%d 10.0.0.1%d:13370 check port 13372", i+1, i+1),
			fmt.Sprintf("server bridge-%d %s check port %s", i+1, m.vm, adminPort))
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "haproxy.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-db", "-f", path) // -db: in the foreground
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(testwait.Timeout):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("haproxy log:\n%s", tail(b, 4000))
		}
	})
	testwait.For(t, "haproxy to listen", func() bool {
		select {
		case <-done:
			return true // exited: said below
		default:
		}
		c, err := net.Dial("tcp", front)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	select {
	case <-done:
		b, _ := os.ReadFile(logf.Name())
		t.Fatalf("haproxy exited: %v\n%s", cmd.ProcessState, b)
	default:
	}
	return front
}

// The L4 balancer topology with a real HAProxy running the shipped
// configs/haproxy.cfg (least connections, /readyz health checks,
// redispatch) in front of three bridge processes: the VM's reconnects
// are spread over the members and carried to its port's owner; a
// vMotion's PEER through HAProxy completes; kill -9 of the owner: the
// host dials again through HAProxy (a connection to the dead member is
// refused and redispatched), a survivor holds it until the dead owner's
// lease ends, claims the port and opens the device after the lock delay.
// Never two device connections at once.
func TestClusterFaultHAProxy(t *testing.T) {
	w := newHAWorldWith(t, haOptions{grace: "1m", front: haproxyFront})
	front := w.port.Addr()
	w.echo("through haproxy")
	owner := ""
	testwait.For(t, "a member to hold the port", func() bool { owner = w.holder(-1); return owner != "" })
	// Least connections among equals goes round: within three reconnects
	// one lands on a member other than the owner and is relayed.
	relayed := func() (n int64) {
		for _, p := range w.members {
			n += p.counters().Forwarded
		}
		return n
	}
	for i := 0; relayed() == 0; i++ {
		if i == 3 {
			t.Fatalf("three reconnects through haproxy, none relayed to the owner %s", owner)
		}
		prev := w.port.Conn()
		w.port.Reconnect()
		testwait.For(t, "the VM to reconnect through haproxy", func() bool { c := w.port.Conn(); return c != nil && c != prev })
		w.echo(fmt.Sprintf("through haproxy, reconnect %d", i+1))
	}
	if h := w.holder(-1); h != owner {
		t.Fatalf("the port moved from %s to %s on a reconnect within its grace period", owner, h)
	}
	// A vMotion whose destination's PEER goes through haproxy (to
	// whichever member).
	seq := []byte{0x11, 0x22, 0x33, 0x44}
	secret, err := w.port.Conn().Begin(w.ctx(), seq)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := vspctest.DialPeer(w.ctx(), front, w.vm, seq, secret)
	if err != nil {
		t.Fatalf("PEER through haproxy: %v", err)
	}
	defer dst.Close()
	if err := dst.Complete(seq); err != nil {
		t.Fatal(err)
	}
	echoOn(t, dst, "destination through haproxy")
	testwait.For(t, "the source connection to close", func() bool { return w.port.Conn() == nil })
	// kill -9 of the owner; haproxy's health check takes it out, and
	// until then redispatch sends a refused connection elsewhere.
	i := int(owner[1] - '1')
	killed := time.Now()
	w.members[i].cmd.Process.Kill()
	<-w.members[i].done
	if !dst.WaitClosed(testwait.Timeout) {
		t.Fatal("the VM's connection stayed open after its port's owner died")
	}
	c, err := vspctest.Dial(w.ctx(), front, w.vm)
	if err != nil {
		t.Fatalf("the VM dialing again through haproxy after kill -9 of the owner: %v", err)
	}
	defer c.Close()
	echoOn(t, c, "through haproxy after kill -9 of the owner")
	back := time.Since(killed)
	if h := w.holder(i); h == "" || h == owner {
		t.Errorf("the port is held by %q after %s died", h, owner)
	}
	if _, maxOpen, _ := w.dev.stats(); maxOpen != 1 {
		t.Errorf("the device had %d connections at once, want 1", maxOpen)
	}
	var held int64
	for j, p := range w.members {
		if j != i {
			held += p.counters().Held
		}
	}
	t.Logf("HAProxy (configs/haproxy.cfg): %d connection(s) relayed to the owner; kill -9 of the owner %s: the VM back through haproxy on another member %v after the kill (lease 4s, lock delay 2s; %d connection(s) held until the lease ended)", relayed(), owner, back.Round(time.Millisecond), held)
}
