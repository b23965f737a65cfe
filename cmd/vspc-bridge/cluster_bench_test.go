package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vspc-bridge/vspc-bridge/admin"
	"github.com/vspc-bridge/vspc-bridge/cluster"
	"github.com/vspc-bridge/vspc-bridge/cluster/clustertest"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/vspc"
	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
)

// The headline scenario of issue 16 (VSPC_HEAVY=1, make bench): three
// bridge processes, VMs streaming numbered lines through their devices
// (echo servers) and back, hand-overs in flight, and one member killed
// with kill -9. The hosts dial again with backoff (DropRetry: the
// optimistic ESXi), or, in TestClusterHeadlineHostsStay, stay down until
// the leader's vCenter reconnect brings them back (DropStay). It reports the time each
// session took to be re-established (p50, p99), the lines lost (sent but
// never echoed: in the dead member's buffers) and duplicated (never),
// every hand-over's end, the device connections held at once (never two
// per device), and etcd requests per second.
//
// Behind a VIP every VM is on the member that holds it, and that member
// is killed.
func TestClusterHeadline(t *testing.T) { headline(t, headlineWorld{}) }

// Behind an L4 balancer (active/active) the VMs' ports are spread over the
// three members, and every VM has reconnected once through the balancer,
// so most connections reach a member that relays them to the port's owner
// over the member link. Killing one member drops the connections it owned
// (their ports are claimed by the survivors once its lease ends: the
// hosts' new connections, and the destinations' PEERs, are held until
// then) and the connections it relayed (their ports, on live members,
// wait for them within the grace period).
func TestClusterHeadlineActiveActive(t *testing.T) { headline(t, headlineWorld{activeActive: true}) }

// Behind a VIP with hosts that do not dial again by themselves (DropStay,
// the likely ESXi): the dead member's VMs come back only when the leader
// reconnects their serial ports through vCenter (govmomi's simulator
// holding the VMs), once the dead member's lease ended and
// reconnect_grace passed, at most reconnect_rate per second
// (VSPC_HA_RECONNECT_RATE; default 100 here, the config's default is 10).
// The vMotions' destinations still send their PEER.
func TestClusterHeadlineHostsStay(t *testing.T) {
	headline(t, headlineWorld{hostsStay: true, reconnectRate: envInt("VSPC_HA_RECONNECT_RATE", 100)})
}

// headlineWorld varies the headline scenario.
type headlineWorld struct {
	activeActive  bool // behind an L4 balancer; else behind a VIP
	hostsStay     bool // hosts wait for vCenter after a drop (DropStay); else they dial again
	reconnectRate int  // [cluster] reconnect_rate, with hostsStay
}

func headline(t *testing.T, hw headlineWorld) {
	heavy(t)
	activeActive := hw.activeActive
	nVM := envInt("VSPC_HA_VMS", 1000)
	nMig := min(envInt("VSPC_HA_VMOTIONS", 100), nVM)
	dir := t.TempDir()
	var out, errb strings.Builder
	if code := run(t.Context(), []string{"cluster", "init", "-cluster", "lab", "-members", "m1,m2,m3", "-dir", dir}, nil, &out, &errb); code != 0 {
		t.Fatal(errb.String())
	}
	etcd := clustertest.StartEtcd(t, 3)
	devs := newEchoFarm(t, nVM)
	var eps []string
	for _, e := range etcd.Endpoints() {
		eps = append(eps, fmt.Sprintf("%q", e))
	}
	ports := freeLoopbackPorts(t, 9) // VM listener, admin and link of each member
	vmAddrs := make([]string, 3)
	for i := range vmAddrs {
		vmAddrs[i] = fmt.Sprintf("127.0.0.1:%d", ports[i])
	}
	bal := clustertest.NewBalancer(t, vmAddrs...)
	services := make([]string, nVM)
	for i := range nVM {
		services[i] = "tcp://" + devs.addrs[i]
	}
	var farm *vcFarm
	var env []string
	reconnect := `reconnect_grace = "0s"`
	if hw.hostsStay {
		start := time.Now()
		farm = newVCFarm(t, nVM, "telnet://"+bal.Addr(), services)
		t.Logf("vCenter simulator with %d VMs and their serial ports in %v", nVM, time.Since(start).Round(time.Millisecond))
		env = []string{"GOVC_URL=" + farm.url, "GOVC_INSECURE=1"}
		reconnect = fmt.Sprintf("reconnect_grace = \"2s\"\nreconnect_rate = %d", hw.reconnectRate)
	}
	var members []*bridgeProc
	for i := range 3 {
		adminAddr := fmt.Sprintf("127.0.0.1:%d", ports[3+i])
		grace := "0s"
		if activeActive {
			grace = "1m" // a relay's death is a dropped connection: the port waits for its VM
		}
		cfg := fmt.Sprintf(`[vspc]
listen = %q
grace_period = %q
%s
[vmotion]
peer_timeout = "1m"
[admin]
listen = %q
[policy]
connect_allow = ["127.0.0.1/32"]
directions = ["client"]
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
%s
`, vmAddrs[i], grace, os.Getenv("VSPC_HA_VSPC_EXTRA"), adminAddr, i+1, strings.Join(eps, ", "), ports[6+i], dir, dir, i+1, dir, i+1, reconnect)
		p := startBridgeProc(t, fmt.Sprintf("m%d", i+1), cfg, env)
		p.vm, p.admin = vmAddrs[i], adminAddr
		members = append(members, p)
	}
	testwait.For(t, "three members up and joined", func() bool {
		for _, p := range members {
			if cl := p.cluster(); cl == nil || len(cl.Members) != 3 {
				return false
			}
		}
		return true
	})
	if activeActive {
		bal.RoundRobin()
	} else {
		bal.Send(0)
	}

	vms := make([]*streamVM, nVM)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	start := time.Now()
	for i := range nVM {
		v := &streamVM{vm: vspctest.VM{Name: fmt.Sprintf("vm-%04d", i), VCUUID: fmt.Sprintf("50000000-0000-4000-8000-%012d", i),
			Direction: vspc.DirClient, ServiceURI: services[i]}, migrating: i < nMig}
		mode := vspctest.DropRetry
		if hw.hostsStay {
			v.vm.Name, v.vm.VCUUID = fmt.Sprintf("DC0_H0_VM%d", i), farm.uuids[i]
			mode = vspctest.DropStay
		}
		vms[i] = v
		if v.migrating {
			// A VM being vMotioned: its own connection, no automatic redial.
			c, err := vspctest.Dial(ctx, bal.Addr(), v.vm)
			if err != nil {
				t.Fatalf("%s: %v", v.vm.Name, err)
			}
			v.setConn(c)
			continue
		}
		v.port = &vspctest.Port{VM: v.vm, Addr: bal.Addr, Mode: mode, MinBackoff: 200 * time.Millisecond, MaxBackoff: time.Second,
			OnConnect: v.setConn}
		wg.Go(func() { v.port.Run(ctx) })
	}
	var strayToggles atomic.Int64 // toggles of a port whose VM is being vMotioned
	if farm != nil {
		farm.onConnect(func(i int) {
			if p := vms[i].port; p != nil {
				p.Reconnect()
			} else {
				strayToggles.Add(1)
			}
		})
	}
	testwait.For(t, "every VM attached", func() bool {
		all := true
		for _, v := range vms {
			if v.current() == nil {
				all = false
				if v.port != nil && hw.hostsStay {
					if _, _, err := v.port.Stats(); err != nil {
						v.port.Reconnect() // a first dial failed: setup, not the failover
					}
				}
			}
		}
		return all
	})
	t.Logf("%d VMs attached through the balancer in %v", nVM, time.Since(start).Round(time.Millisecond))
	if activeActive {
		// Every VM reconnects once through the balancer: most land on a
		// member other than their port's owner and are relayed.
		start = time.Now()
		for i, v := range vms {
			if v.migrating {
				c, err := vspctest.Dial(ctx, bal.Addr(), v.vm)
				if err != nil {
					t.Fatalf("%s: %v", v.vm.Name, err)
				}
				old := v.current()
				v.setConn(c)
				old.Close()
			} else {
				v.port.Reconnect()
			}
			if i%50 == 49 {
				time.Sleep(20 * time.Millisecond) // pace: a storm is not the point here
			}
		}
		testwait.For(t, "every VM attached again", func() bool {
			for _, v := range vms {
				if v.current() == nil || v.reattached.Load() < start.UnixNano() {
					return false
				}
			}
			return true
		})
		var fwd int64
		for _, p := range members {
			if cl := p.cluster(); cl != nil {
				fwd += cl.Counters.Forwarded
			}
		}
		t.Logf("every VM reconnected through the balancer in %v: %d connections relayed to their port's owner", time.Since(start).Round(time.Millisecond), fwd)
	}
	sctx, stopStreams := context.WithCancel(ctx)
	var swg sync.WaitGroup
	for _, v := range vms {
		swg.Go(func() { v.stream(sctx, 100*time.Millisecond) })
	}
	testwait.For(t, "every VM's lines to come back", func() bool {
		for _, v := range vms {
			if v.echoed.Load() < 3 {
				return false
			}
		}
		return true
	})

	// Hand-overs in flight: GOAHEAD received, the destination not yet there.
	type mig struct {
		v           *streamVM
		seq, secret []byte
	}
	var migs []mig
	notNow := 0
	for i, v := range vms[:nMig] {
		seq := []byte{byte(i >> 8), byte(i), 0xff, 0x5a}
		for try := 0; ; try++ {
			sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
			secret, err := v.current().Begin(sctx, seq)
			scancel()
			if errors.Is(err, vspctest.ErrNotNow) && try < 10 {
				// A clean refusal (an etcd call over its deadline on a
				// busy machine): vCenter would try the vMotion again.
				notNow++
				time.Sleep(200 * time.Millisecond)
				continue
			}
			if err != nil {
				t.Fatalf("%s BEGIN: %v", v.vm.Name, err)
			}
			migs = append(migs, mig{v, seq, secret})
			break
		}
	}
	if notNow > 0 {
		t.Logf("%d BEGINs answered NOTNOW first (then GOAHEAD)", notNow)
	}
	opsBefore, tBefore := etcdOps(members[1:]), time.Now()

	// Who owns each port as m1 dies (read from etcd).
	ownerOf := map[string]string{}
	{
		cli := etcd.Client(t)
		gctx, gcancel := context.WithTimeout(ctx, 10*time.Second)
		r, err := cli.Get(gctx, cluster.DefaultPrefix+"ports/", clientv3.WithPrefix())
		gcancel()
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range r.Kvs {
			var rec cluster.PortRecord
			if json.Unmarshal(kv.Value, &rec) == nil {
				ownerOf[rec.Port.VM] = rec.Member
			}
		}
	}
	// What each VM had sent and got back as m1 dies, and which connection
	// it was writing to (a write to it after the kill may be lost: the
	// host learns of the death only from a reset).
	echoedAtKill := make([]int64, len(vms))
	for i, v := range vms {
		v.mu.Lock()
		v.killGen.Store(int64(v.gen))
		v.mu.Unlock()
		v.sentAtKill = v.sent.Load()
		echoedAtKill[i] = v.echoed.Load()
		v.echoedAtKill = echoedAtKill[i] + v.dups.Load()
	}
	killed := time.Now()
	members[0].cmd.Process.Signal(syscall.SIGKILL)
	<-members[0].done
	if activeActive {
		bal.SetDown(0, true) // the balancer's health check takes m1 out
	} else {
		bal.Send(1) // keepalived moves the VIP to m2
	}

	// The destination hosts arrive: PEER at m2, which takes the dead
	// member's hand-overs over.
	var mwg sync.WaitGroup
	var completed, refused, retried atomic.Int64
	migBack := make([]time.Duration, len(migs))
	for i, m := range migs {
		mwg.Go(func() {
			deadline := time.Now().Add(time.Minute)
			for try := 0; time.Now().Before(deadline); try++ {
				if try == 1 {
					retried.Add(1)
				}
				dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
				dst, err := vspctest.DialPeer(dctx, bal.Addr(), m.v.vm, m.seq, m.secret)
				dcancel()
				if err == nil {
					if err := dst.Complete(m.seq); err == nil {
						migBack[i] = time.Since(killed)
						m.v.setConn(dst)
						completed.Add(1)
						return
					}
					dst.Close()
				}
				// A refused PEER: the port's record is taken, or m1's lease
				// has not expired yet (ESXi would fail the vMotion; here
				// the host tries again until the record's TTL).
				time.Sleep(250 * time.Millisecond)
			}
			refused.Add(1)
		})
	}
	backWithin := testwait.Timeout
	if hw.hostsStay {
		// The lease, reconnect_grace, then one toggle per port at
		// reconnect_rate at most: twice that, and a minute.
		backWithin += 2 * (7*time.Second + time.Duration(nVM-nMig)*time.Second/time.Duration(hw.reconnectRate))
	}
	if !testwait.Until(t, backWithin, func() bool {
		for i, v := range vms[nMig:] {
			if activeActive {
				// Those m1 neither owned nor relayed never dropped.
				if v.echoed.Load() < echoedAtKill[nMig+i]+3 {
					return false
				}
			} else if v.reattached.Load() < killed.UnixNano() {
				return false
			}
		}
		return true
	}) {
		n := 0
		for _, v := range vms[nMig:] {
			if v.reattached.Load() > killed.UnixNano() {
				n++
			}
		}
		t.Fatalf("timed out after %v waiting for every streaming VM back: %d of %d back", backWithin, n, nVM-nMig)
	}
	mwg.Wait()
	opsAfter, tAfter := etcdOps(members[1:]), time.Now()
	// Stream a little longer on the new member, then stop, and count once
	// every line in flight has come back (the echoes stop changing).
	time.Sleep(2 * time.Second)
	stopStreams()
	swg.Wait()
	echoedNow := func() int64 {
		var n int64
		for _, v := range vms {
			n += v.echoed.Load() + v.dups.Load()
		}
		return n
	}
	prev := int64(-1)
	testwait.For(t, "the lines in flight to come back", func() bool {
		n := echoedNow()
		settled := n == prev
		prev = n
		if !settled {
			time.Sleep(500 * time.Millisecond)
		}
		return settled
	})
	cancel()
	wg.Wait()

	var back []time.Duration
	for _, v := range vms[nMig:] {
		if r := v.reattached.Load(); r > killed.UnixNano() {
			back = append(back, time.Duration(r-killed.UnixNano()))
		}
	}
	for _, d := range migBack {
		if d > 0 {
			back = append(back, d)
		}
	}
	slices.Sort(back)
	var backOwned, backRelayed []time.Duration // the dead member owned the port / only relayed it
	for _, v := range vms[nMig:] {
		if r := v.reattached.Load(); r > killed.UnixNano() {
			if ownerOf[v.vm.VCUUID] == "m1" {
				backOwned = append(backOwned, time.Duration(r-killed.UnixNano()))
			} else {
				backRelayed = append(backRelayed, time.Duration(r-killed.UnixNano()))
			}
		}
	}
	slices.Sort(backOwned)
	slices.Sort(backRelayed)
	var lost, dup, sent int64
	for _, v := range vms {
		lost += v.lost()
		dup += v.dups.Load()
		sent += v.sent.Load()
	}
	what := "the VIP holder"
	if activeActive {
		what = "one of three members behind an L4 balancer (active/active)"
	}
	var held int64
	for _, p := range members[1:] {
		if cl := p.cluster(); cl != nil {
			held += cl.Counters.Held
		}
	}
	hosts := "hosts redial with 200ms..1s backoff"
	if hw.hostsStay {
		hosts = fmt.Sprintf("hosts wait for vCenter, reconnect_grace 2s, reconnect_rate %d", hw.reconnectRate)
	}
	t.Logf("kill -9 of %s with %d VMs streaming and %d hand-overs in flight (lease 5s, lock delay 1s, %s):", what, nVM, nMig, hosts)
	t.Logf("  connections held by the survivors until the dead member's lease ended: %d", held)
	t.Logf("  sessions re-established: %d; p50 %v, p99 %v, max %v after the kill", len(back), pct(back, 50), pct(back, 99), back[len(back)-1])
	if hw.hostsStay {
		var mb []time.Duration
		for _, d := range migBack {
			if d > 0 {
				mb = append(mb, d)
			}
		}
		slices.Sort(mb)
		if n := len(backOwned); n > 1 {
			t.Logf("    of which VMs back through a vCenter reconnect: %d; p50 %v, p99 %v; first %v, last %v: %.1f ports/s", n, pct(backOwned, 50), pct(backOwned, 99),
				backOwned[0].Round(time.Millisecond), backOwned[n-1].Round(time.Millisecond), float64(n-1)/(backOwned[n-1]-backOwned[0]).Seconds())
		}
		t.Logf("    of which vMotion destinations (PEER): %d; p50 %v, p99 %v", len(mb), pct(mb, 50), pct(mb, 99))
	}
	if activeActive {
		t.Logf("    of which ports the dead member owned (claimed by a survivor once its lease ended): %d; p50 %v, p99 %v", len(backOwned), pct(backOwned, 50), pct(backOwned, 99))
		t.Logf("    of which ports on survivors whose connection the dead member relayed: %d; p50 %v, p99 %v", len(backRelayed), pct(backRelayed, 50), pct(backRelayed, 99))
	}
	t.Logf("  hand-overs: %d completed (%d needed more than one PEER, where ESXi would fail the vMotion), %d refused", completed.Load(), retried.Load(), refused.Load())
	if hw.hostsStay {
		var k admin.ClusterCounters
		want := int64(nVM - nMig) // every streaming VM's port, once
		testwait.Until(t, testwait.Timeout, func() bool {
			k = admin.ClusterCounters{}
			for _, p := range members[1:] {
				if cl := p.cluster(); cl != nil {
					k.Toggled += cl.Counters.Toggled
					k.Reconnected += cl.Counters.Reconnected
					k.ReconnectFailed += cl.Counters.ReconnectFailed
					k.CameBack += cl.Counters.CameBack
					k.SweptBack += cl.Counters.SweptBack
					k.MaxReconnectSeconds = max(k.MaxReconnectSeconds, cl.Counters.MaxReconnectSeconds)
				}
			}
			return k.Reconnected >= want
		})
		t.Logf("  ports reconnected through vCenter: %d toggled (%d reconfigurations seen by the hosts, %d of a VM in a vMotion), %d back after their toggle (toggle to claim at most %.2fs), %d failed; %d came back by themselves, %d claimed after a sweep",
			k.Toggled, farm.toggles.Load(), strayToggles.Load(), k.Reconnected, k.MaxReconnectSeconds, k.ReconnectFailed, k.CameBack, k.SweptBack)
		if k.Toggled != want || farm.toggles.Load() != want || k.Reconnected != want || k.ReconnectFailed != 0 {
			t.Errorf("vCenter reconnects: %d toggled, %d seen by the hosts, %d back, %d failed; want %d toggled and back, none failed", k.Toggled, farm.toggles.Load(), k.Reconnected, k.ReconnectFailed, want)
		}
		if strayToggles.Load() != 0 {
			t.Errorf("%d ports of VMs in a vMotion were toggled through vCenter (their hand-over was to be taken over)", strayToggles.Load())
		}
	}
	t.Logf("  lines: %d sent, %d lost (in the dead member's buffers), %d duplicated", sent, lost, dup)
	t.Logf("  etcd requests by the survivors: %.0f/s during the failover (%d in %v)", float64(opsAfter-opsBefore)/tAfter.Sub(tBefore).Seconds(), opsAfter-opsBefore, tAfter.Sub(tBefore).Round(time.Millisecond))
	t.Logf("  device connections at once, at most: %d per device", devs.maxPerDevice())
	if os.Getenv("VSPC_HA_DEBUG") != "" {
		for i, v := range vms {
			if l := v.lost(); l > 0 && i%20 == 0 {
				t.Logf("  %s migrating=%v sent %d echoed %d last %d lost %d", v.vm.Name, v.migrating, v.sent.Load(), v.echoed.Load(), v.last.Load(), l)
			}
		}
	}
	if dup != 0 {
		t.Errorf("%d lines delivered twice", dup)
	}
	for _, v := range vms {
		// A line is lost only if the dead member could have held it:
		// one sent before the kill and not echoed by then (what it had
		// not yet echoed, and the echoes a hand-over held since BEGIN),
		// or one written after the kill to the connection the VM had
		// then (until the reset reached the host). A VM whose connection
		// never dropped loses nothing.
		l := v.lost()
		v.mu.Lock()
		same := int64(v.gen) == v.killGen.Load()
		v.mu.Unlock()
		if bound := v.sentAtKill - v.echoedAtKill + v.deadWrites.Load(); l > bound {
			t.Errorf("%s lost %d lines (sent %d, echoed %d): more than the dead member could have held (%d unechoed at the kill, %d written to its connection after)", v.vm.Name, l, v.sent.Load(), v.echoed.Load(), v.sentAtKill-v.echoedAtKill, v.deadWrites.Load())
		}
		if same && !v.migrating && l != 0 {
			t.Errorf("%s lost %d lines though its connection never dropped", v.vm.Name, l)
		}
	}
	if devs.maxPerDevice() > 1 {
		t.Errorf("a device had %d connections at once", devs.maxPerDevice())
	}
	if completed.Load()+refused.Load() != int64(nMig) {
		t.Errorf("hand-overs: %d completed + %d refused of %d", completed.Load(), refused.Load(), nMig)
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[min(len(d)-1, len(d)*p/100)].Round(time.Millisecond)
}

func etcdOps(ps []*bridgeProc) int64 {
	var n int64
	for _, p := range ps {
		if cl := p.cluster(); cl != nil {
			n += cl.Counters.Ops
		}
	}
	return n
}

// streamVM writes numbered lines and checks they come back in order:
// a gap is a lost line, a repeat a duplicate.
type streamVM struct {
	vm        vspctest.VM
	port      *vspctest.Port
	migrating bool

	mu   sync.Mutex
	conn *vspctest.Conn
	gen  int // bumped on each new connection

	sent, echoed, dups atomic.Int64
	last               atomic.Int64 // highest number echoed
	reattached         atomic.Int64 // Unix ns of the last new connection

	killGen                  atomic.Int64 // gen when a member was killed (0: not yet)
	deadWrites               atomic.Int64 // lines written to that connection after
	sentAtKill, echoedAtKill int64        // set before the kill, read after the streams stop
}

func (v *streamVM) setConn(c *vspctest.Conn) {
	v.mu.Lock()
	v.conn = c
	v.gen++
	v.mu.Unlock()
	v.reattached.Store(time.Now().UnixNano())
	go v.read(c) // ends when c closes
}

func (v *streamVM) current() *vspctest.Conn {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.conn
}

func (v *streamVM) lost() int64 { return v.sent.Load() - v.echoed.Load() - v.dups.Load() }

func (v *streamVM) stream(ctx context.Context, every time.Duration) {
	n := int64(0)
	for ctx.Err() == nil {
		v.mu.Lock()
		c, gen := v.conn, int64(v.gen)
		v.mu.Unlock()
		if c != nil {
			n++
			if _, err := fmt.Fprintf(c, "%s %d\n", v.vm.Name, n); err == nil {
				v.sent.Add(1)
				if gen == v.killGen.Load() {
					v.deadWrites.Add(1)
				}
			} else {
				n--
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(every):
		}
	}
}

func (v *streamVM) read(c *vspctest.Conn) {
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		n, _ := strconv.ParseInt(f[1], 10, 64)
		if n <= v.last.Load() {
			v.dups.Add(1)
			continue
		}
		v.last.Store(n)
		v.echoed.Add(1)
	}
}

// echoFarm is one echo device per VM, counting connections per device.
type echoFarm struct {
	addrs []string
	lns   []net.Listener
	mu    sync.Mutex
	open  []int
	max   int
	wg    sync.WaitGroup
}

func newEchoFarm(t *testing.T, n int) *echoFarm {
	f := &echoFarm{open: make([]int, n)}
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f.lns = append(f.lns, ln)
		f.addrs = append(f.addrs, ln.Addr().String())
		f.wg.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				f.mu.Lock()
				f.open[i]++
				f.max = max(f.max, f.open[i])
				f.mu.Unlock()
				f.wg.Go(func() {
					defer func() { f.mu.Lock(); f.open[i]--; f.mu.Unlock() }()
					defer c.Close()
					if _, err := io.Copy(c, c); err != nil && !errors.Is(err, net.ErrClosed) {
						return
					}
				})
			}
		})
	}
	t.Cleanup(func() {
		for _, ln := range f.lns {
			ln.Close()
		}
		f.wg.Wait() // the bridges, stopped before, closed their connections
	})
	return f
}

func (f *echoFarm) maxPerDevice() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.max
}
