package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vspc-bridge/vspc-bridge/admin"
	"github.com/vspc-bridge/vspc-bridge/devices/devicetest"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/vspc"
	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
)

// The keepalived fault test's network, all of it in network namespaces
// the test makes (nothing but loopback in the test's own):
//
//	ns LAN: bridge br0 10.231.0.1/24 — etcd (vspc-bridge etcd), the
//	        serial device, the simulated ESXi host (the test's sockets)
//	ns M1:  eth0 10.231.0.11/24 (veth to br0) — bridge m1, keepalived
//	ns M2:  eth0 10.231.0.12/24 (veth to br0) — bridge m2, keepalived
//	VIP:    10.231.0.10/24 on the VRRP master's eth0
const (
	kaNet = "10.231.0."
	kaVIP = kaNet + "10"
	// kaToken is the members' admin token (their admin listens on eth0;
	// /readyz, keepalived's check, needs none).
	kaToken = "keepalived-test-token"
)

// netNS is a network namespace the test made (/run/netns/NAME).
type netNS string

// do runs f on an OS thread inside the namespace: sockets f opens stay in
// it for good. The thread ends with f (it is never unlocked), so no
// other goroutine runs in the namespace.
func (n netNS) do(f func()) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.Open("/run/netns/"+string(n), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", n, err)
			return
		}
		f()
		errc <- nil
	}()
	return <-errc
}

// dial connects from inside the namespace.
func (n netNS) dial(ctx context.Context, network, addr string) (c net.Conn, err error) {
	if derr := n.do(func() { var d net.Dialer; c, err = d.DialContext(ctx, network, addr) }); derr != nil {
		return nil, derr
	}
	return c, err
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// kaWorld is the keepalived fault test's setup.
type kaWorld struct {
	t       *testing.T
	lan     netNS
	ns      []netNS
	members []*bridgeProc
	kas     []*kaProc
	dev     *echoDevice
	port    *vspctest.Port
	http    *http.Client // dials from LAN
}

// kaProc is one keepalived (VRRP only) in a member's namespace.
type kaProc struct {
	cmd  *exec.Cmd
	vrrp string // the VRRP child's pid file
	log  string
	done chan struct{}
}

func newKAWorld(t *testing.T) *kaWorld {
	heavy(t)
	ka := devicetest.Require(t, "keepalived")
	devicetest.Require(t, "curl") // configs/keepalived.conf's check
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("the ip command (iproute2) is needed for network namespaces: %v", err)
	}
	id := strconv.Itoa(os.Getpid())
	w := &kaWorld{t: t, lan: netNS("vspcka" + id + "-lan")}
	names := []netNS{w.lan, netNS("vspcka" + id + "-m1"), netNS("vspcka" + id + "-m2")}
	for _, n := range names {
		if err := ipCmd("netns", "add", string(n)); err != nil {
			// Not root, no CAP_SYS_ADMIN, a container without /run/netns.
			t.Skipf("network namespaces are not permitted here, so keepalived cannot be run: %v", err)
		}
		t.Cleanup(func() {
			if err := ipCmd("netns", "del", string(n)); err != nil {
				t.Errorf("removing the test's namespace: %v", err)
			}
		})
	}
	w.ns = names[1:]
	must := func(args ...string) {
		t.Helper()
		if err := ipCmd(args...); err != nil {
			t.Fatal(err)
		}
	}
	lan := string(w.lan)
	must("-n", lan, "link", "set", "lo", "up")
	must("-n", lan, "link", "add", "br0", "type", "bridge")
	must("-n", lan, "addr", "add", kaNet+"1/24", "dev", "br0")
	must("-n", lan, "link", "set", "br0", "up")
	for i, n := range w.ns {
		veth := fmt.Sprintf("vm%d", i+1)
		must("-n", lan, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", string(n))
		must("-n", lan, "link", "set", veth, "master", "br0", "up")
		must("-n", string(n), "link", "set", "lo", "up")
		must("-n", string(n), "addr", "add", fmt.Sprintf("%s1%d/24", kaNet, i+1), "dev", "eth0")
		must("-n", string(n), "link", "set", "eth0", "up")
	}
	w.http = &http.Client{Transport: &http.Transport{DialContext: w.lan.dial, DisableKeepAlives: true}, Timeout: 10 * time.Second}

	dir := t.TempDir()
	var out, errb strings.Builder
	if code := run(t.Context(), []string{"cluster", "init", "-cluster", "lab", "-members", "m1,m2", "-dir", dir}, nil, &out, &errb); code != 0 {
		t.Fatal(errb.String())
	}
	w.startEtcd()
	if err := w.lan.do(func() { w.dev = newEchoDeviceOn(t, kaNet+"1:0") }); err != nil {
		t.Fatal(err)
	}
	_, devPort, _ := net.SplitHostPort(w.dev.ln.Addr().String())
	for i, n := range w.ns {
		me := fmt.Sprintf("%s1%d", kaNet, i+1)
		cfg := fmt.Sprintf(`[vspc]
listen = ":13370"
proxy_uri = "telnet://%s:13370"
grace_period = "0s"
[admin]
listen = "%s:13372"
token = "%s"
[[route]]
service = "console"
device = "tcp://%s1:%s"
[cluster]
name = "lab"
member = "m%d"
endpoints = ["http://%s1:2379"]
link_listen = "%s:13390"
link_ca = "%s/ca.crt"
link_cert = "%s/m%d.crt"
link_key = "%s/m%d.key"
lease_ttl = "4s"
validity_margin = "1s"
lock_delay = "2s"
reconnect_grace = "2s"
`, kaVIP, me, kaToken, kaNet, devPort, i+1, kaNet, me, dir, dir, i+1, dir, i+1)
		p := startBridgeProcIn(t, string(n), fmt.Sprintf("m%d", i+1), cfg, nil)
		p.vm, p.admin = kaVIP+":13370", "http://"+me+":13372"
		w.members = append(w.members, p)
	}
	testwait.For(t, "two members up and joined", func() bool {
		for _, p := range w.members {
			select {
			case <-p.done:
				b, _ := os.ReadFile(p.log)
				t.Fatalf("%s exited while starting:\n%s", p.name, tail(b, 2000))
			default:
			}
			if cl := w.cluster(p); cl == nil || len(cl.Members) != 2 {
				return false
			}
		}
		return true
	})
	// keepalived on m1 first: it takes the VIP (nobody else is there);
	// then m2's joins as backup (nopreempt: it would not take it anyway).
	for i := range w.ns {
		w.kas = append(w.kas, w.startKeepalived(ka, i))
		if i == 0 {
			testwait.For(t, "m1 to hold the VIP", func() bool { return w.hasVIP(0) })
		}
	}
	testwait.For(t, "m2's keepalived to be backup", func() bool {
		b, _ := os.ReadFile(w.kas[1].log)
		return strings.Contains(string(b), "Entering BACKUP STATE")
	})
	w.port = &vspctest.Port{
		VM:   vspctest.VM{Name: "vm-ka", VCUUID: "42100000-0000-0000-0000-00000000c0a1", Direction: vspc.DirClient, ServiceURI: "console"},
		Addr: func() string { return kaVIP + ":13370" }, Mode: vspctest.DropRetry,
		MinBackoff: 100 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
	}
	pctx, pcancel := context.WithCancel(context.Background())
	var pwg sync.WaitGroup
	// The simulated ESXi host lives in LAN: every dial of Run's goroutine
	// is made from there.
	pwg.Go(func() { w.lan.do(func() { w.port.Run(pctx) }) })
	t.Cleanup(func() { pcancel(); pwg.Wait() })
	return w
}

// startEtcd runs one etcd member (this binary as vspc-bridge etcd) in LAN.
func (w *kaWorld) startEtcd() {
	t := w.t
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command("ip", "netns", "exec", string(w.lan), exe, "etcd", "-name", "e1", "-data-dir", filepath.Join(dir, "data"),
		"-listen-client", "http://"+kaNet+"1:2379", "-listen-peer", "http://"+kaNet+"1:2380")
	cmd.Env = append(os.Environ(), "VSPC_BRIDGE_TEST_MAIN=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		ok := false
		for sc.Scan() {
			if !ok && strings.Contains(sc.Text(), "etcd member e1 ready") {
				ok = true
				ready <- true
			}
		}
		if !ok {
			ready <- false
		}
		cmd.Wait()
		logf.Close()
		close(done)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(testwait.Timeout):
			cmd.Process.Kill()
			<-done
		}
	})
	select {
	case ok := <-ready:
		if !ok {
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("etcd exited before it was ready:\n%s", tail(b, 3000))
		}
	case <-time.After(testwait.Timeout):
		t.Fatal("etcd not ready")
	}
}

// startKeepalived runs configs/keepalived.conf, its addresses moved into
// the test's network (nothing else changed), in member i's namespace.
func (w *kaWorld) startKeepalived(bin string, i int) *kaProc {
	t := w.t
	src, err := os.ReadFile(keepalivedConf)
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(src)
	sub := func(old, new string) {
		if strings.Count(cfg, old) != 1 {
			t.Fatalf("configs/keepalived.conf no longer has %q once: update this test", old)
		}
		cfg = strings.Replace(cfg, old, new, 1)
	}
	sub("router_id bridge-1", fmt.Sprintf("router_id m%d", i+1))
	sub("http://10.0.0.11:13372/readyz", fmt.Sprintf("http://%s1%d:13372/readyz", kaNet, i+1))
	sub("priority 150", fmt.Sprintf("priority %d", 150-50*i))
	sub("10.0.0.10/24", kaVIP+"/24")
	dir := t.TempDir()
	path := filepath.Join(dir, "keepalived.conf")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "keepalived.log"))
	if err != nil {
		t.Fatal(err)
	}
	k := &kaProc{vrrp: filepath.Join(dir, "vrrp.pid"), log: logf.Name(), done: make(chan struct{})}
	// -n: no daemon; -P: VRRP only; -l -D: log in detail to the console.
	k.cmd = exec.Command("ip", "netns", "exec", string(w.ns[i]), bin, "-n", "-l", "-D", "-P", "-f", path,
		"-p", filepath.Join(dir, "keepalived.pid"), "-r", k.vrrp)
	k.cmd.Stdout, k.cmd.Stderr = logf, logf
	if err := k.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { k.cmd.Wait(); logf.Close(); close(k.done) }()
	t.Cleanup(func() {
		k.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-k.done:
		case <-time.After(testwait.Timeout):
			k.cmd.Process.Kill()
			<-k.done
		}
		if t.Failed() {
			b, _ := os.ReadFile(k.log)
			t.Logf("keepalived m%d log (last 3000 bytes):\n%s", i+1, tail(b, 3000))
		}
	})
	return k
}

// kill ends keepalived as a crash does: SIGKILL to it and its VRRP child.
func (k *kaProc) kill() {
	if b, err := os.ReadFile(k.vrrp); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	k.cmd.Process.Kill()
	<-k.done
}

// hasVIP reports whether member i's eth0 has the VIP.
func (w *kaWorld) hasVIP(i int) bool {
	out, err := exec.Command("ip", "-n", string(w.ns[i]), "-4", "-o", "addr", "show", "dev", "eth0").CombinedOutput()
	return err == nil && strings.Contains(string(out), " "+kaVIP+"/")
}

func (w *kaWorld) cluster(p *bridgeProc) *admin.ClusterStatus {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := (&admin.Client{Base: p.admin, Token: kaToken, HTTP: w.http}).Status(ctx)
	if err != nil {
		return nil
	}
	return st.Cluster
}

// holder is the member that holds the VM's port, as member from sees it.
func (w *kaWorld) holder(from int) string {
	if cl := w.cluster(w.members[from]); cl != nil {
		for _, m := range cl.Members {
			if m.Ports > 0 {
				return m.ID
			}
		}
	}
	return ""
}

// echo sends a line through the VM's connection, once it is not prev
// (nil: any), and reads it back from the device. It returns the
// connection.
func (w *kaWorld) echo(what string, prev *vspctest.Conn) *vspctest.Conn {
	t := w.t
	t.Helper()
	testwait.For(t, "the VM to be connected ("+what+")", func() bool { c := w.port.Conn(); return c != nil && c != prev })
	c := w.port.Conn()
	msg := "ping " + what + "\n"
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo through the device (%s): %q %v", what, got, err)
	}
	return c
}

// The keepalived VIP topology as shipped (configs/keepalived.conf) on two
// members, each in a network namespace of its own, ESXi's simulated host
// dialing the VIP. The VIP holder dies: its bridge is killed (SIGKILL:
// its connections end as a crashed process's do), then its keepalived
// (SIGKILL, so it gives nothing up) and its link. The backup takes the
// VIP after VRRP's master-down interval (3 advertisements and a skew);
// the host dials the VIP again by itself and lands on the new holder,
// which holds its connection until the dead member's lease ends, claims
// the port and opens the device after the lock delay. The device never
// has two connections at once.
func TestClusterFaultKeepalived(t *testing.T) {
	w := newKAWorld(t)
	first := w.echo("via m1", nil)
	testwait.For(t, "m1 to hold the port", func() bool { return w.holder(1) == "m1" })
	killed := time.Now()
	w.members[0].cmd.Process.Kill()
	<-w.members[0].done
	w.kas[0].kill()
	if err := ipCmd("-n", string(w.ns[0]), "link", "set", "eth0", "down"); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "m2 to take the VIP", func() bool { return w.hasVIP(1) })
	moved := time.Since(killed)
	w.echo("via m2 after the VIP moved", first)
	back := time.Since(killed)
	testwait.For(t, "m2 to hold the port", func() bool { return w.holder(1) == "m2" })
	if _, maxOpen, _ := w.dev.stats(); maxOpen != 1 {
		t.Errorf("the device had %d connections at once, want 1", maxOpen)
	}
	dials, drops, _ := w.port.Stats()
	t.Logf("VIP on m2 %v after m1 died; VM serial port back through m2 %v after (lease 4s, lock delay 2s); the host dialed %d times, dropped %d",
		moved.Round(time.Millisecond), back.Round(time.Millisecond), dials, drops)
}

// keepalived stops on the VIP holder (SIGTERM: it gives the VIP up at
// once with a priority 0 advertisement) while its bridge lives on. The
// host's established connection now reaches the new holder, which
// resets it at the host's next write; the host dials the VIP again, and
// the new holder carries the connection over the member link to the
// owner, which still holds the port and its device.
func TestClusterFaultKeepalivedStops(t *testing.T) {
	w := newKAWorld(t)
	first := w.echo("via m1", nil)
	testwait.For(t, "m1 to hold the port", func() bool { return w.holder(1) == "m1" })
	stopped := time.Now()
	w.kas[0].cmd.Process.Signal(syscall.SIGTERM)
	<-w.kas[0].done
	testwait.For(t, "m2 to take the VIP", func() bool { return w.hasVIP(1) && !w.hasVIP(0) })
	moved := time.Since(stopped)
	// The host writes into its old connection: m2 answers with a reset
	// (what it wrote is lost, as on any reset).
	if _, err := first.Write([]byte("into the old connection\n")); err != nil {
		t.Fatal(err)
	}
	w.echo("via m2, relayed to m1", first)
	back := time.Since(stopped)
	if h := w.holder(1); h != "m1" {
		t.Errorf("the port is held by %q, want m1 (the owner lives)", h)
	}
	if cl := w.cluster(w.members[1]); cl == nil || cl.Counters.Forwarded < 1 {
		t.Errorf("m2 carried no connection to m1: %+v", cl)
	}
	if _, maxOpen, total := w.dev.stats(); maxOpen != 1 || total != 1 {
		t.Errorf("device connections: %d at once, %d in all; want 1 and 1 (m1 kept its device)", maxOpen, total)
	}
	dials, drops, _ := w.port.Stats()
	t.Logf("VIP on m2 %v after keepalived stopped on m1; VM serial port back through m2 (relayed to m1) %v after; the host dialed %d times, dropped %d",
		moved.Round(time.Millisecond), back.Round(time.Millisecond), dials, drops)
}
