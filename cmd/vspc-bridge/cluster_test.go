package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/vspc-bridge/vspc-bridge/admin"
	"github.com/vspc-bridge/vspc-bridge/cluster"
	"github.com/vspc-bridge/vspc-bridge/cluster/clustertest"
	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/vspc"
	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
)

func TestClusterInit(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	code := run(t.Context(), []string{"cluster", "init", "-cluster", "lab", "-members", "b1,b2", "-hosts", "127.0.0.1", "-dir", dir}, nil, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, f := range []string{"ca.crt", "ca.key", "b1.crt", "b1.key", "b2.crt", "b2.key"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	if !strings.Contains(out.String(), `name = "lab"`) {
		t.Errorf("no config hint:\n%s", out.String())
	}
	if code := run(t.Context(), []string{"cluster", "init", "-cluster", "lab", "-members", "b1", "-dir", dir}, nil, &out, &errb); code != 1 {
		t.Errorf("init over existing files: exit %d, want 1", code)
	}
	if code := run(t.Context(), []string{"cluster", "init", "-members", "b1"}, nil, &out, &errb); code != 2 {
		t.Errorf("init without -cluster: exit %d, want 2", code)
	}
	errb.Reset()
	if code := run(t.Context(), []string{"cluster"}, nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "usage: vspc-bridge cluster init") {
		t.Errorf("cluster without a subcommand: exit %d %q", code, errb.String())
	}
	errb.Reset()
	if code := run(t.Context(), []string{"etcd", "-h"}, nil, &out, &errb); code != 0 || !strings.Contains(errb.String(), "usage: vspc-bridge etcd") {
		t.Errorf("etcd -h: exit %d %q", code, errb.String())
	}
}

// syncBuf is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// freeLoopbackPorts returns n distinct ports on 127.0.0.1 that were free a
// moment ago, for processes the test starts to listen on. They are held
// open together while they are picked (no two are the same), and taken
// below the kernel's ephemeral range: a port picked with ":0" and closed
// again is soon handed to the next ":0" listener (a proxy or balancer of
// the same test), which then takes a bridge's address before the bridge
// binds it.
func freeLoopbackPorts(t *testing.T, n int) []int {
	t.Helper()
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 12000 {
				lo = v
			}
		}
	}
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries == 1000 {
			t.Fatalf("no %d free ports on 127.0.0.1 below %d", n, lo)
		}
		p := 10000 + rand.IntN(lo-10000)
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue // taken
		}
		defer ln.Close()
		ports = append(ports, p)
	}
	return ports
}

func freeLoopbackPort(t *testing.T) int { return freeLoopbackPorts(t, 1)[0] }

// `vspc-bridge etcd` serves etcd clients until it is stopped, over mutual
// TLS with the certificates of `cluster init`.
func TestEtcdCommand(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"cluster", "init", "-cluster", "lab", "-members", "e1,b1", "-hosts", "127.0.0.1", "-dir", dir}, nil, &out, &errb); code != 0 {
		t.Fatal(errb.String())
	}
	client := fmt.Sprintf("https://127.0.0.1:%d", freeLoopbackPort(t))
	peer := fmt.Sprintf("https://127.0.0.1:%d", freeLoopbackPort(t))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var sout, serr syncBuf
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"etcd", "-name", "e1", "-data-dir", filepath.Join(dir, "e1.etcd"), "-listen-client", client, "-listen-peer", peer,
			"-cert", filepath.Join(dir, "e1.crt"), "-key", filepath.Join(dir, "e1.key"), "-ca", filepath.Join(dir, "ca.crt"), "-log-level", "error"}, nil, &sout, &serr)
	}()
	testwait.For(t, "the etcd member to be ready", func() bool { return strings.Contains(sout.String(), "ready") })
	tlsCfg, err := cluster.ClientTLS(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "b1.crt"), filepath.Join(dir, "b1.key"))
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, TLS: tlsCfg, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer pcancel()
	if _, err := cli.Put(pctx, "/vspc/v1/test", "x"); err != nil {
		t.Fatalf("put over mutual TLS: %v", err)
	}
	cli.Close()
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("etcd exit %d: %s", code, serr.String())
	}
}

// echoDevice is a TCP device that echoes, and records how many
// connections it held at once (never more than one: a device is held by
// one member at a time) and how many bytes arrived on a connection after
// a newer one was accepted (a stale holder writing).
type echoDevice struct {
	ln               net.Listener
	mu               sync.Mutex
	open, max, total int
	late             int
	wg               sync.WaitGroup
}

func newEchoDevice(t *testing.T) *echoDevice { return newEchoDeviceOn(t, "127.0.0.1:0") }

// newEchoDeviceOn is an echo device listening on addr.
func newEchoDeviceOn(t *testing.T, addr string) *echoDevice {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	d := &echoDevice{ln: ln}
	d.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d.mu.Lock()
			d.open++
			d.total++
			idx := d.total
			d.max = max(d.max, d.open)
			d.mu.Unlock()
			d.wg.Go(func() {
				defer func() { d.mu.Lock(); d.open--; d.mu.Unlock() }()
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						d.mu.Lock()
						if d.total > idx {
							d.late += n
						}
						d.mu.Unlock()
						if _, werr := c.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			})
		}
	})
	t.Cleanup(func() { ln.Close(); d.wg.Wait() })
	return d
}

// lateWrites is the number of bytes that arrived on a connection after a
// newer one had been accepted.
func (d *echoDevice) lateWrites() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.late
}

func (d *echoDevice) stats() (open, maxOpen, total int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.open, d.max, d.total
}

// startMemberBridge serves cfg in-process; stop ends it (a clean leave).
func startMemberBridge(t *testing.T, cfg string) (*bridgeUnderTest, func()) {
	t.Helper()
	b := &bridgeUnderTest{t: t, path: filepath.Join(t.TempDir(), "bridge.toml"), logs: &syncBuffer{}}
	b.write(cfg)
	c, err := configs.Load(b.path)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(b.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ready := make(chan *daemon, 1)
	b.hup = make(chan os.Signal, 1)
	opts := serveOptions{path: b.path, ready: ready, version: "test", sighup: b.hup}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, c, log, io.Discard, opts) }()
	select {
	case b.d = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("serve: %v\n%s", err, b.logs)
	case <-time.After(testwait.Timeout):
		cancel()
		t.Fatal("serve did not start")
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("serve: %v", err)
				}
			case <-time.After(testwait.Timeout):
				t.Error("serve did not stop")
			}
			if t.Failed() {
				t.Logf("bridge log:\n%s", b.logs)
			}
		})
	}
	t.Cleanup(stop)
	return b, stop
}

// Three members behind a balancer: a port and its device are held by one
// member (m1); a reconnect that lands on m2 and a vMotion destination that
// lands on m3 are carried to m1 over the member link, which keeps the
// port and the device (active/active); when m1 leaves, the VM
// reconnected through vCenter (here: the simulated host's Reconnect)
// lands on the next member, which claims the port and opens the device.
func TestClusterSmoke(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"cluster", "init", "-cluster", "lab", "-members", "m1,m2,m3", "-dir", dir}, nil, &out, &errb); code != 0 {
		t.Fatal(errb.String())
	}
	etcd := clustertest.StartEtcd(t, 3)
	dev := newEchoDevice(t)
	var eps []string
	for _, e := range etcd.Endpoints() {
		eps = append(eps, fmt.Sprintf("%q", e))
	}
	var members []*bridgeUnderTest
	var stops []func()
	for i := 1; i <= 3; i++ {
		cfg := fmt.Sprintf(`[vspc]
listen = "127.0.0.1:0"
[admin]
listen = ""
[[route]]
service = "console"
device = "tcp://%s"
[cluster]
name = "lab"
member = "m%d"
endpoints = [%s]
link_listen = "127.0.0.1:%d"
link_ca = "%s/ca.crt"
link_cert = "%s/m%d.crt"
link_key = "%s/m%d.key"
lease_ttl = "5s"
validity_margin = "1s"
lock_delay = "1s"
reconnect_grace = "0s"
`, dev.ln.Addr(), i, strings.Join(eps, ", "), freeLoopbackPort(t), dir, dir, i, dir, i)
		b, stop := startMemberBridge(t, cfg)
		members = append(members, b)
		stops = append(stops, stop)
	}
	testwait.For(t, "every member to see three", func() bool {
		for _, b := range members {
			if cl := b.d.status().Cluster; cl == nil || len(cl.Members) != 3 {
				return false
			}
		}
		return true
	})
	bal := clustertest.NewBalancer(t, members[0].addr(kindVSPC), members[1].addr(kindVSPC), members[2].addr(kindVSPC))
	bal.Send(0) // the VIP is on m1
	vm := vspctest.VM{Name: "vm-1", VCUUID: "50000000-0000-4000-8000-000000000001", Direction: vspc.DirClient, ServiceURI: "console"}
	port := &vspctest.Port{VM: vm, Addr: bal.Addr, Mode: vspctest.DropStay}
	pctx, pcancel := context.WithCancel(context.Background())
	var pwg sync.WaitGroup
	pwg.Go(func() { port.Run(pctx) })
	defer func() { pcancel(); pwg.Wait() }()

	echo := func(what string) {
		t.Helper()
		testwait.For(t, "the VM to be connected ("+what+")", func() bool { return port.Conn() != nil })
		c := port.Conn()
		msg := "ping " + what + "\n"
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
			t.Fatalf("echo through the device (%s): %q %v", what, got, err)
		}
	}
	echo("via m1")
	// Active/active: the VM reconnects through the balancer to m2, which
	// does not hold the port: m2 carries the connection to m1 over the
	// member link, and m1 keeps the port and its device.
	bal.Send(1)
	first := port.Conn()
	port.Reconnect()
	testwait.For(t, "the VM to reconnect", func() bool { c := port.Conn(); return c != nil && c != first })
	echo("via m2 to m1")
	// m2's status shows what m1 holds (its ownership counts are cached
	// for up to 2 s).
	holds := func(b *bridgeUnderTest, id string, ports, devices int) bool {
		cl := b.d.status().Cluster
		for _, m := range cl.Members {
			if m.ID == id {
				return m.Ports == ports && m.Devices == devices
			}
		}
		return false
	}
	testwait.For(t, "m2 to see m1 hold the port and the device", func() bool { return holds(members[1], "m1", 1, 1) })
	if cl := members[1].d.status().Cluster; !cl.Healthy || len(cl.Etcd) != 3 || cl.Counters.ClaimConflicts != 1 || cl.Counters.Forwarded != 1 {
		t.Errorf("m2's view: %+v", cl)
	}
	if ss := members[0].d.srv.Ports(); len(ss) != 1 || ss[0].Via != "m2" || ss[0].State != "attached" {
		t.Errorf("m1's port: %+v, want it attached through m2", ss)
	}
	var text bytes.Buffer
	printStatus(&text, members[1].d.status(), nil)
	for _, want := range []string{"Cluster lab, member m2: etcd healthy. Leader m", "m1      127.0.0.1:", "ok, leader"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("status text lacks %q:\n%s", want, text.String())
		}
	}
	// sessions on m2 says which member serves the VM's port.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/api/v1/sessions?vm=vm-1", nil)
	req.Host = "127.0.0.1:13372"
	members[1].d.admin.ServeHTTP(rec, req)
	var sl admin.SessionList
	if err := json.Unmarshal(rec.Body.Bytes(), &sl); err != nil || rec.Code != 200 || len(sl.Sessions) != 0 || len(sl.Elsewhere) != 1 || sl.Elsewhere[0].Member != "m1" {
		t.Errorf("sessions vm-1 on m2: %d %s", rec.Code, rec.Body)
	}
	// A vMotion whose destination reaches m3: its PEER goes to m1 too.
	ctx, cancel := context.WithTimeout(t.Context(), testwait.Timeout)
	defer cancel()
	seq := []byte{0x76, 0x19, 0xff, 0xe9}
	secret, err := port.Conn().Begin(ctx, seq)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := vspctest.DialPeer(ctx, members[2].addr(kindVSPC), vm, seq, secret)
	if err != nil {
		t.Fatalf("PEER at m3: %v", err)
	}
	defer dst.Close()
	if err := dst.Complete(seq); err != nil {
		t.Fatal(err)
	}
	echoOn(t, dst, "after the vMotion, via m3 to m1")
	if k := members[0].d.srv.Counters(); k.VMotionsCompleted != 1 || k.HandedIn != 2 {
		t.Errorf("m1's counters %+v: want 1 vMotion completed, 2 connections handed in", k)
	}
	if _, _, total := dev.stats(); total != 1 {
		t.Errorf("device: %d connections, want 1 (m1 kept it throughout)", total)
	}
	testwait.For(t, "the source connection to close", func() bool { return port.Conn() == nil })

	// m1 leaves; the VM stays down until it is reconnected, then lands on
	// m2 through the VIP.
	stops[0]()
	select {
	case <-dst.Done():
	case <-time.After(testwait.Timeout):
		t.Fatal("the VM's connection (relayed by m3) did not drop when m1 left")
	}
	bal.Send(1)
	port.Reconnect()
	echo("via m2")
	testwait.For(t, "m2 to hold the port and the device", func() bool { return holds(members[1], "m2", 1, 1) })
	if _, maxOpen, total := dev.stats(); maxOpen != 1 || total != 2 {
		t.Errorf("device: %d connections at most at once (want 1), %d in all (want 2)", maxOpen, total)
	}
}

// inProcCluster is n members in this process on one etcd cluster, with
// a device route "console" to an echo device, behind a balancer.
type inProcCluster struct {
	etcd    *clustertest.Etcd
	dev     *echoDevice
	members []*bridgeUnderTest
	stops   []func()
	bal     *clustertest.Balancer
}

func startInProcCluster(t *testing.T, n int) *inProcCluster {
	t.Helper()
	dir := t.TempDir()
	var ids []string
	for i := 1; i <= n; i++ {
		ids = append(ids, fmt.Sprintf("m%d", i))
	}
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"cluster", "init", "-cluster", "lab", "-members", strings.Join(ids, ","), "-dir", dir}, nil, &out, &errb); code != 0 {
		t.Fatal(errb.String())
	}
	c := &inProcCluster{etcd: clustertest.StartEtcd(t, 3), dev: newEchoDevice(t)}
	var eps []string
	for _, e := range c.etcd.Endpoints() {
		eps = append(eps, fmt.Sprintf("%q", e))
	}
	var addrs []string
	for i := 1; i <= n; i++ {
		b, stop := startMemberBridge(t, fmt.Sprintf(`[vspc]
listen = "127.0.0.1:0"
[admin]
listen = ""
[[route]]
service = "console"
device = "tcp://%s"
[cluster]
name = "lab"
member = "m%d"
endpoints = [%s]
link_listen = "127.0.0.1:%d"
link_ca = "%s/ca.crt"
link_cert = "%s/m%d.crt"
link_key = "%s/m%d.key"
lease_ttl = "5s"
validity_margin = "1s"
lock_delay = "1s"
reconnect_grace = "0s"
`, c.dev.ln.Addr(), i, strings.Join(eps, ", "), freeLoopbackPort(t), dir, dir, i, dir, i))
		c.members = append(c.members, b)
		c.stops = append(c.stops, stop)
		addrs = append(addrs, b.addr(kindVSPC))
	}
	testwait.For(t, "every member to see the others", func() bool {
		for _, b := range c.members {
			if cl := b.d.status().Cluster; cl == nil || len(cl.Members) != n {
				return false
			}
		}
		return true
	})
	c.bal = clustertest.NewBalancer(t, addrs...)
	return c
}

func echoOn(t *testing.T, c *vspctest.Conn, what string) {
	t.Helper()
	msg := "ping " + what + "\n"
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	read := make(chan error, 1)
	go func() { _, err := io.ReadFull(c, got); read <- err }()
	select {
	case err := <-read:
		if err != nil || string(got) != msg {
			t.Fatalf("echo through the device (%s): %q %v", what, got, err)
		}
	case <-time.After(testwait.Timeout):
		c.Close()
		<-read
		t.Fatalf("no echo through the device (%s)", what)
	}
}

// A vMotion begun on a member that leaves before the destination's PEER
// arrives is finished by the member the PEER reaches: the hand-over was
// published in etcd as the hash of sequence and secret, and the PEER's
// payload names it.
func TestClusterVMotionTakeover(t *testing.T) {
	c := startInProcCluster(t, 2)
	c.bal.Send(0)
	vm := vspctest.VM{Name: "vm-1", VCUUID: "50000000-0000-4000-8000-000000000002", Direction: vspc.DirClient, ServiceURI: "console"}
	ctx, cancel := context.WithTimeout(t.Context(), testwait.Timeout)
	defer cancel()
	src, err := vspctest.Dial(ctx, c.bal.Addr(), vm)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	echoOn(t, src, "before the vMotion")
	seq := []byte{0x44, 0xda, 0xff, 0xf1} // an IAC inside, as ESXi's can be
	secret, err := src.Begin(ctx, seq)
	if err != nil {
		t.Fatal(err)
	}
	c.stops[0]() // m1 leaves with the hand-over pending
	c.bal.Send(1)
	dst, err := vspctest.DialPeer(ctx, c.bal.Addr(), vm, seq, secret)
	if err != nil {
		t.Fatalf("PEER at the surviving member: %v", err)
	}
	defer dst.Close()
	if err := dst.Complete(seq); err != nil {
		t.Fatal(err)
	}
	echoOn(t, dst, "after the takeover")
	if cl := c.members[1].d.status().Cluster; cl.Counters.Takeovers != 1 {
		t.Errorf("m2 counted %d takeovers, want 1", cl.Counters.Takeovers)
	}
	// A replayed PEER finds nothing: the record was single use.
	if c2, err := vspctest.DialPeer(ctx, c.bal.Addr(), vm, seq, secret); err == nil {
		c2.Close()
		t.Error("a second PEER with the same secret was accepted")
	}
}

// While etcd is unreachable a member answers VMOTION-BEGIN with NOTNOW: no
// other bridge could finish the hand-over, so the VM stays where it is.
// The session and its device carry on: etcd is down for both members,
// which confirm it to each other over the member link (the failsafe).
func TestClusterVMotionNotNowWithoutEtcd(t *testing.T) {
	c := startInProcCluster(t, 2)
	c.bal.Send(0)
	vm := vspctest.VM{Name: "vm-1", VCUUID: "50000000-0000-4000-8000-000000000003", Direction: vspc.DirClient, ServiceURI: "console"}
	ctx, cancel := context.WithTimeout(t.Context(), testwait.Timeout)
	defer cancel()
	conn, err := vspctest.Dial(ctx, c.bal.Addr(), vm)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	echoOn(t, conn, "with etcd")
	var kill sync.WaitGroup
	for i := range c.etcd.Members {
		kill.Go(func() { c.etcd.Kill(i) })
	}
	kill.Wait()
	testwait.For(t, "the member to see etcd unreachable", func() bool { return !c.members[0].d.status().Cluster.Healthy })
	if _, err := conn.Begin(ctx, []byte{1, 2, 3, 4}); !errors.Is(err, vspctest.ErrNotNow) {
		t.Fatalf("BEGIN without etcd: %v, want NOTNOW", err)
	}
	testwait.For(t, "the lease to lapse and the failsafe to hold", func() bool { return c.members[0].d.status().Cluster.Failsafe })
	echoOn(t, conn, "without etcd")
}
