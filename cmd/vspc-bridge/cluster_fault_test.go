package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/event"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vspc-bridge/vspc-bridge/admin"
	"github.com/vspc-bridge/vspc-bridge/cluster/clustertest"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/vspc"
	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
)

// The cluster fault tests run three bridge processes (this test binary
// as vspc-bridge), three etcd members (in the test process), a vCenter
// (govmomi's simulator) and a simulated ESXi host that stays down after
// its proxy goes away until vCenter toggles the serial port, behind the
// steerable balancer acting as a VIP. Each takes half a minute or more:
// they run with VSPC_HEAVY=1 (make bench).

func heavy(t *testing.T) {
	if os.Getenv("VSPC_HEAVY") == "" {
		t.Skip("cluster fault test: set VSPC_HEAVY=1 (make bench runs it)")
	}
}

// bridgeProc is one vspc-bridge serve process.
type bridgeProc struct {
	t     *testing.T
	name  string
	cmd   *exec.Cmd
	vm    string // VM listener
	admin string
	log   string // its stderr
	done  chan struct{}
}

func startBridgeProc(t *testing.T, name, cfg string, env []string) *bridgeProc {
	t.Helper()
	return startBridgeProcIn(t, "", name, cfg, env)
}

// startBridgeProcIn starts the bridge in network namespace ns (through
// `ip netns exec`, which execs it: the process is the bridge's); "" is
// the test's own.
func startBridgeProcIn(t *testing.T, ns, name, cfg string, env []string) *bridgeProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, name+".toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	p := &bridgeProc{t: t, name: name, log: logf.Name(), done: make(chan struct{})}
	p.cmd = exec.Command(exe, "serve", "-config", path, "-log-level", "debug")
	if ns != "" {
		p.cmd = exec.Command("ip", append([]string{"netns", "exec", ns}, p.cmd.Args...)...)
	}
	p.cmd.Env = append(append(os.Environ(), "VSPC_BRIDGE_TEST_MAIN=1"), env...)
	p.cmd.Stdout = io.Discard
	p.cmd.Stderr = logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGCONT)
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(testwait.Timeout):
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("%s log (last 6000 bytes):\n%s", name, tail(b, 6000))
		}
	})
	return p
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func (p *bridgeProc) status(ctx context.Context) (admin.Status, error) {
	c := &admin.Client{Base: p.admin}
	return c.Status(ctx)
}

// cluster asks the process for its cluster status (nil when it does not
// answer: dead or stopped). The status waits up to 2 × etcd_timeout for
// an etcd endpoint that is down: the call allows for it.
func (p *bridgeProc) cluster() *admin.ClusterStatus {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := p.status(ctx)
	if err != nil {
		return nil
	}
	return st.Cluster
}

// vcenter is govmomi's simulator with one VM whose serial port is proxied
// to service "console".
type vcenter struct {
	url  string
	vm   *object.VirtualMachine
	uuid string
}

func newVCenter(t *testing.T, proxy string) *vcenter {
	t.Helper()
	m := simulator.VPX()
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Remove)
	s := m.Service.NewServer()
	t.Cleanup(s.Close)
	ctx := t.Context()
	c, err := govmomi.NewClient(ctx, s.URL, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Logout(context.Background()) })
	f := find.NewFinder(c.Client)
	dc, err := f.DefaultDatacenter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f.SetDatacenter(dc)
	vm, err := f.VirtualMachine(ctx, "DC0_H0_VM0")
	if err != nil {
		t.Fatal(err)
	}
	devs, err := vm.Device(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := devs.CreateSerialPort()
	if err != nil {
		t.Fatal(err)
	}
	sp.Backing = &types.VirtualSerialPortURIBackingInfo{VirtualDeviceURIBackingInfo: types.VirtualDeviceURIBackingInfo{Direction: "client", ServiceURI: "console", ProxyURI: proxy}}
	sp.Connectable = &types.VirtualDeviceConnectInfo{Connected: true, StartConnected: true}
	if err := vm.AddDevice(ctx, sp); err != nil {
		t.Fatal(err)
	}
	var props mo.VirtualMachine
	if err := vm.Properties(ctx, vm.Reference(), []string{"config.instanceUuid"}, &props); err != nil {
		t.Fatal(err)
	}
	return &vcenter{url: s.URL.String(), vm: vm, uuid: props.Config.InstanceUuid}
}

// connected reads the serial port's connectable.connected.
func (v *vcenter) connected(ctx context.Context) (bool, error) {
	devs, err := v.vm.Device(ctx)
	if err != nil {
		return false, err
	}
	for _, d := range devs.SelectByType((*types.VirtualSerialPort)(nil)) {
		sp := d.(*types.VirtualSerialPort)
		if b, ok := sp.Backing.(*types.VirtualSerialPortURIBackingInfo); ok && b.ServiceURI == "console" {
			return sp.Connectable != nil && sp.Connectable.Connected, nil
		}
	}
	return false, fmt.Errorf("no console port")
}

// reconfigs counts the VM's reconfigurations (vCenter events).
func (v *vcenter) reconfigs(ctx context.Context, c *vim25.Client) (int, error) {
	evs, err := event.NewManager(c).QueryEvents(ctx, types.EventFilterSpec{
		Entity:      &types.EventFilterSpecByEntity{Entity: v.vm.Reference(), Recursion: types.EventFilterSpecRecursionOptionSelf},
		EventTypeId: []string{"VmReconfiguredEvent"},
	})
	return len(evs), err
}

// followToggles plays ESXi's part for the serial port: when vCenter
// reconfigures it and it ends up connected (connectable.connected off and
// on), the host connects again. A poll of the connected flag alone could
// miss the short "off"; the reconfiguration events cannot be missed.
func (v *vcenter) followToggles(t *testing.T, port *vspctest.Port) func() int {
	var mu sync.Mutex
	toggles := 0
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		seen, err := v.reconfigs(ctx, v.vm.Client())
		if err != nil {
			t.Error(err)
			return
		}
		for ctx.Err() == nil {
			n, err := v.reconfigs(ctx, v.vm.Client())
			if err == nil && n > seen {
				if on, err := v.connected(ctx); err == nil && on {
					seen = n
					mu.Lock()
					toggles++
					mu.Unlock()
					port.Reconnect()
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return func() int { mu.Lock(); defer mu.Unlock(); return toggles }
}

// haWorld is the whole setup of a fault test.
type haWorld struct {
	t       *testing.T
	etcd    *clustertest.Etcd
	members []*bridgeProc
	links   []*clustertest.Proxy   // each member's link, as the others reach it
	etcdVia [][]*clustertest.Proxy // each member's way to each etcd member, when haOptions.etcdVia
	bal     *clustertest.Balancer
	dev     *echoDevice
	vc      *vcenter
	vm      vspctest.VM
	port    *vspctest.Port
}

// haOptions vary a fault test's world.
type haOptions struct {
	grace   string             // [vspc] grace_period; default "0s"
	cluster string             // more [cluster] keys
	mode    vspctest.AfterDrop // what the VM's host does after a drop
	// front, when set, starts what the VM's host dials instead of the
	// steerable balancer (a real HAProxy) once the members are up, and
	// returns its address.
	front func(w *haWorld) string
	// etcdVia: each member reaches etcd through proxies of its own the
	// test can cut (haWorld.etcdVia).
	etcdVia bool
}

func newHAWorld(t *testing.T) *haWorld { return newHAWorldWith(t, haOptions{}) }

func newHAWorldWith(t *testing.T, o haOptions) *haWorld {
	heavy(t)
	if o.grace == "" {
		o.grace = "0s"
	}
	dir := t.TempDir()
	var out, errb strings.Builder
	if code := run(t.Context(), []string{"cluster", "init", "-cluster", "lab", "-members", "m1,m2,m3", "-dir", dir}, nil, &out, &errb); code != 0 {
		t.Fatal(errb.String())
	}
	etcd := clustertest.StartEtcd(t, 3)
	w := &haWorld{t: t, etcd: etcd, dev: newEchoDevice(t)}
	var eps []string
	for _, e := range etcd.Endpoints() {
		eps = append(eps, fmt.Sprintf("%q", e))
	}
	ports := freeLoopbackPorts(t, 9) // VM listener, admin and link of each member
	vmAddrs := make([]string, 3)
	for i := range vmAddrs {
		vmAddrs[i] = fmt.Sprintf("127.0.0.1:%d", ports[i])
	}
	w.bal = clustertest.NewBalancer(t, vmAddrs...)
	w.vc = newVCenter(t, "telnet://"+w.bal.Addr())
	env := []string{"GOVC_URL=" + w.vc.url, "GOVC_INSECURE=1"}
	for i := range 3 {
		adminAddr := fmt.Sprintf("127.0.0.1:%d", ports[3+i])
		// The other members reach this one's link through a proxy the
		// test can cut.
		linkAddr := fmt.Sprintf("127.0.0.1:%d", ports[6+i])
		lp := clustertest.NewProxy(t, linkAddr)
		w.links = append(w.links, lp)
		meps := eps
		if o.etcdVia {
			meps = nil
			var via []*clustertest.Proxy
			for _, e := range etcd.Endpoints() {
				ep := clustertest.NewProxy(t, strings.TrimPrefix(e, "http://"))
				via = append(via, ep)
				meps = append(meps, fmt.Sprintf("%q", ep.URL()))
			}
			w.etcdVia = append(w.etcdVia, via)
		}
		cfg := fmt.Sprintf(`[vspc]
listen = %q
grace_period = %q
[admin]
listen = %q
[[route]]
service = "console"
device = "tcp://%s"
[cluster]
name = "lab"
member = "m%d"
endpoints = [%s]
link_listen = %q
link_advertise = %q
link_ca = "%s/ca.crt"
link_cert = "%s/m%d.crt"
link_key = "%s/m%d.key"
lease_ttl = "4s"
validity_margin = "1s"
lock_delay = "2s"
reconnect_grace = "2s"
%s
`, vmAddrs[i], o.grace, adminAddr, w.dev.ln.Addr(), i+1, strings.Join(meps, ", "), linkAddr, lp.Addr(), dir, dir, i+1, dir, i+1, o.cluster)
		p := startBridgeProc(t, fmt.Sprintf("m%d", i+1), cfg, env)
		p.vm, p.admin = vmAddrs[i], adminAddr
		w.members = append(w.members, p)
	}
	testwait.For(t, "three members up and joined", func() bool {
		for _, p := range w.members {
			select {
			case <-p.done:
				b, _ := os.ReadFile(p.log)
				t.Fatalf("%s exited while starting:\n%s", p.name, tail(b, 2000))
			default:
			}
			if cl := p.cluster(); cl == nil || len(cl.Members) != 3 {
				return false
			}
		}
		return true
	})
	w.bal.Send(0) // the VIP is on m1
	w.vm = vspctest.VM{Name: "DC0_H0_VM0", VCUUID: w.vc.uuid, Direction: vspc.DirClient, ServiceURI: "console"}
	addr := w.bal.Addr
	if o.front != nil {
		a := o.front(w)
		addr = func() string { return a }
	}
	w.port = &vspctest.Port{VM: w.vm, Addr: addr, Mode: o.mode, MinBackoff: 100 * time.Millisecond, MaxBackoff: 500 * time.Millisecond}
	pctx, pcancel := context.WithCancel(context.Background())
	var pwg sync.WaitGroup
	pwg.Go(func() { w.port.Run(pctx) })
	t.Cleanup(func() { pcancel(); pwg.Wait() })
	return w
}

// echo sends a line through the VM's connection and reads it back from
// the device.
func (w *haWorld) echo(what string) {
	t := w.t
	t.Helper()
	testwait.For(t, "the VM to be connected ("+what+")", func() bool { return w.port.Conn() != nil })
	c := w.port.Conn()
	msg := "ping " + what + "\n"
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo through the device (%s): %q %v", what, got, err)
	}
}

// holder returns the member holding the port, as the live members see it.
func (w *haWorld) holder(skip int) string {
	for i, p := range w.members {
		if i == skip {
			continue
		}
		if cl := p.cluster(); cl != nil {
			for _, m := range cl.Members {
				if m.Ports > 0 {
					return m.ID
				}
			}
		}
	}
	return ""
}

// swept sums the reconnects through vCenter the live members made.
func (w *haWorld) swept(skip int) (toggled, back int64) {
	for i, p := range w.members {
		if i == skip {
			continue
		}
		if cl := p.cluster(); cl != nil {
			toggled += cl.Counters.Toggled
			back += cl.Counters.Reconnected
		}
	}
	return
}

// kill -9 of the member that holds the port: its VM stays down (as ESXi
// most likely does) until the leader reconnects it through vCenter after
// the lease and the grace period; it lands on the VIP's new holder, which
// claims the port and opens the device after the lock delay. The device
// never has two connections at once.
func TestClusterFaultKillOwner(t *testing.T) {
	w := newHAWorld(t)
	toggles := w.vc.followToggles(t, w.port)
	w.echo("via m1")
	testwait.For(t, "m1 to hold the port", func() bool { return w.holder(-1) == "m1" })
	killed := time.Now()
	w.members[0].cmd.Process.Kill()
	<-w.members[0].done
	w.bal.Send(1) // keepalived moves the VIP to m2
	testwait.For(t, "the VM connection to drop", func() bool { return w.port.Conn() == nil })
	w.echo("via m2 after a vCenter reconnect")
	back := time.Since(killed)
	testwait.For(t, "m2 to hold the port", func() bool { return w.holder(0) == "m2" })
	if n := toggles(); n != 1 {
		t.Errorf("vCenter toggled the port %d times, want 1", n)
	}
	testwait.For(t, "the sweep's counts", func() bool { tg, bk := w.swept(0); return tg == 1 && bk == 1 })
	if _, maxOpen, _ := w.dev.stats(); maxOpen != 1 {
		t.Errorf("the device had %d connections at once, want 1", maxOpen)
	}
	t.Logf("VM serial port back %v after kill -9 of its member (lease 4s + grace 2s + lock delay 2s)", back.Round(time.Millisecond))
}

// SIGSTOP of the member that holds the port, longer than its lease: the
// others take the port over; when the stopped member resumes it writes
// nothing more to the device (its lease lapsed on its own clock) and
// closes it.
func TestClusterFaultPauseOwner(t *testing.T) {
	w := newHAWorld(t)
	w.vc.followToggles(t, w.port)
	w.echo("via m1")
	testwait.For(t, "m1 to hold the port", func() bool { return w.holder(-1) == "m1" })
	w.members[0].cmd.Process.Signal(syscall.SIGSTOP)
	w.bal.Send(1)
	// The VM writes while m1 is stopped: the bytes wait in m1's socket.
	if _, err := w.port.Conn().Write([]byte("written while m1 was stopped\n")); err != nil {
		t.Fatal(err)
	}
	// The leader reconnects the port through vCenter; the VM lands on m2.
	testwait.For(t, "m2 to hold the port", func() bool { return w.holder(0) == "m2" })
	w.echo("via m2")
	_, _, before := w.dev.stats()
	w.members[0].cmd.Process.Signal(syscall.SIGCONT)
	// m1 notices its lease is gone and lets go of its device connection.
	testwait.For(t, "m1 to close its device connection", func() bool { open, _, _ := w.dev.stats(); return open == 1 })
	testwait.For(t, "m1 to answer again, fenced or with a new lease", func() bool {
		cl := w.members[0].cluster()
		return cl != nil && (cl.Counters.Fences > 0 || cl.Counters.LeaseLosses > 0)
	})
	if late := w.dev.lateWrites(); late != 0 {
		t.Errorf("m1 wrote %d bytes to the device after its lease lapsed", late)
	}
	if _, _, after := w.dev.stats(); after != before {
		t.Errorf("device connections %d → %d after m1 resumed: it reconnected to the device", before, after)
	}
	w.echo("via m2, after m1 resumed")
}
