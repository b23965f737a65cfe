package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/vspc-bridge/vspc-bridge/cluster/clustertest"
	"github.com/vspc-bridge/vspc-bridge/internal/leaktest"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
)

// shared is the etcd cluster the tests share (each under its own key
// prefix); tests that stop etcd members start their own.
var shared *clustertest.Etcd

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cluster-test-etcd")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	shared, err = clustertest.NewEtcd(3, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := 0
	func() {
		defer func() {
			shared.Close()
			os.RemoveAll(dir)
		}()
		code = leaktest.Run(m, 10*time.Second)
	}()
	os.Exit(code)
}

// Short timers for tests, still long enough that a lease never lapses by
// accident on two busy cores with the race detector (etcd runs in the
// test process): a 5 s lease, validity margin 1 s, lock delay 1 s, etcd
// calls of 1 s (renewals give up after TTL/3).
const (
	testTTL    = 5 * time.Second
	testMargin = time.Second
	testDelay  = time.Second
)

// env is an etcd cluster and the nodes of one test. Every node reaches
// etcd through its own proxies (one per etcd member), so a test can cut
// one member off etcd.
type env struct {
	t    *testing.T
	etcd *clustertest.Etcd
}

// newEnv returns the shared etcd cluster; each test keeps its keys under
// its own prefix.
func newEnv(t *testing.T) *env {
	return &env{t: t, etcd: shared}
}

type member struct {
	*Node
	cli     *clientv3.Client
	proxies []*clustertest.Proxy
}

// cut partitions the member from etcd; restore heals it.
func (m *member) cut() {
	for _, p := range m.proxies {
		p.Cut()
	}
}

func (m *member) restore() {
	for _, p := range m.proxies {
		p.Restore()
	}
}

func (e *env) node(id string, edit ...func(*Config)) *member {
	t := e.t
	t.Helper()
	m := &member{}
	var eps []string
	for _, ep := range e.etcd.Endpoints() {
		p := clustertest.NewProxy(t, ep[len("http://"):])
		m.proxies = append(m.proxies, p)
		eps = append(eps, p.URL())
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	m.cli = cli
	cfg := Config{Member: id, Client: cli, Prefix: "/" + t.Name() + "/", LeaseTTL: testTTL, ValidityMargin: testMargin, LockDelay: testDelay,
		CallTimeout: time.Second, Info: MemberInfo{Link: "127.0.0.1:1"}, Logger: clustertest.Logger(t)}
	for _, f := range edit {
		f(&cfg)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	n, err := Start(ctx, cfg)
	if err != nil {
		cli.Close()
		t.Fatal(err)
	}
	m.Node = n
	t.Cleanup(func() {
		for _, p := range m.proxies {
			p.Restore()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n.Close(ctx)
		cli.Close()
	})
	return m
}

// crash stops the member as kill -9 would: no release, no revoke; its
// lease expires on etcd's clock.
func (m *member) crash() {
	m.cancel()
	m.wg.Wait()
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.cli.Close()
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func port(i int) PortRecord {
	return PortRecord{Port: PortID{VM: fmt.Sprintf("50000000-0000-0000-0000-%012d", i), Service: "tcp://nport-1:4001"}, VMName: fmt.Sprintf("vm-%d", i), Direction: "client"}
}

func TestClaimPortOneWinner(t *testing.T) {
	e := newEnv(t)
	nodes := []*member{e.node("a"), e.node("b"), e.node("c")}
	var wg sync.WaitGroup
	claims := make([]*Claim, len(nodes))
	owners := make([]*Owner, len(nodes))
	for i, n := range nodes {
		wg.Go(func() {
			c, o, err := n.ClaimPort(ctxT(t), port(1))
			if err != nil {
				t.Error(err)
			}
			claims[i], owners[i] = c, o
		})
	}
	wg.Wait()
	var winner *Claim
	var who string
	for i, c := range claims {
		if c != nil {
			if winner != nil {
				t.Fatalf("two members claimed the same port: %s and %s", who, nodes[i].Member())
			}
			winner, who = c, nodes[i].Member()
		}
	}
	if winner == nil {
		t.Fatal("nobody claimed the port")
	}
	for i, o := range owners {
		if claims[i] != nil {
			continue
		}
		if o == nil || o.Record.Member != who || o.Fence != winner.Fence() {
			t.Errorf("%s: owner = %+v, want %s with fence %d", nodes[i].Member(), o, who, winner.Fence())
		}
	}
	// The winner claims again: adopted, same fence.
	for _, n := range nodes {
		if n.Member() == who {
			c, o, err := n.ClaimPort(ctxT(t), port(1))
			if err != nil || o != nil || c.Fence() != winner.Fence() {
				t.Fatalf("re-claim by the owner: %v %+v %v", c, o, err)
			}
		}
	}
	if err := winner.Release(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	o, err := nodes[0].PortOwner(ctxT(t), port(1).Port)
	if err != nil || o != nil {
		t.Fatalf("after release: owner %+v, %v", o, err)
	}
}

func TestMemberIDInUse(t *testing.T) {
	e := newEnv(t)
	e.node("a")
	cli := e.etcd.Client(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	_, err := Start(ctx, Config{Member: "a", Client: cli, LeaseTTL: testTTL, Prefix: "/" + t.Name() + "/"})
	if !errors.Is(err, ErrMemberInUse) {
		t.Fatalf("second process with member id a: %v, want ErrMemberInUse", err)
	}
}

func TestDeviceLockDelayAfterCrash(t *testing.T) {
	e := newEnv(t)
	a, b := e.node("a"), e.node("b")
	const dev = "tcp://127.0.0.1:4001"
	if _, err := a.ClaimDevice(ctxT(t), dev, "vm-1"); err != nil {
		t.Fatal(err)
	}
	_, err := b.ClaimDevice(ctxT(t), dev, "vm-2")
	var held *HeldError
	if !errors.As(err, &held) || held.Record.Member != "a" {
		t.Fatalf("claim of a held device: %v, want HeldError naming a", err)
	}
	left := make(chan struct{})
	b.OnMembership(func(id string, up bool) {
		if id == "a" && !up {
			close(left)
		}
	})
	a.crash()
	<-left // a's lease expired: its keys are gone
	start := time.Now()
	c, err := b.ClaimDevice(ctxT(t), dev, "vm-1")
	if err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < testDelay {
		t.Errorf("device opened %v after its holder vanished, before the lock delay %v", waited, testDelay)
	}
	if b.Stats().LockDelays != 1 {
		t.Errorf("lock delays = %d, want 1", b.Stats().LockDelays)
	}
	// A clean release lets the next holder open at once.
	if err := c.Release(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	cc := e.node("c")
	if _, err := cc.ClaimDevice(ctxT(t), dev, "vm-1"); err != nil {
		t.Fatal(err)
	}
	if cc.Stats().LockDelays != 0 {
		t.Error("a device released cleanly made the next holder wait the lock delay")
	}
}

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
	ws  []fakeWaiter
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.ws = append(c.ws, fakeWaiter{c.now.Add(d), ch})
	return ch
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.ws[:0]
	for _, w := range c.ws {
		if !w.at.After(c.now) {
			w.ch <- c.now
		} else {
			kept = append(kept, w)
		}
	}
	c.ws = kept
}

// A member cut off from etcd fences its devices when its lease lapses on
// its own clock, while etcd still holds the key: before anyone else can
// claim the device.
func TestSelfFenceOnOwnClock(t *testing.T) {
	e := newEnv(t)
	clk := newFakeClock()
	a := e.node("a", func(c *Config) { c.Clock = clk; c.LeaseTTL = 30 * time.Second; c.ValidityMargin = 2 * time.Second })
	b := e.node("b")
	const dev = "rfc2217://127.0.0.1:7000"
	c, err := a.ClaimDevice(ctxT(t), dev, "vm-1")
	if err != nil {
		t.Fatal(err)
	}
	a.cut()
	clk.Advance(27 * time.Second) // a renewal is due, and fails (etcd unreachable)
	testwait.For(t, "a to notice etcd is unreachable", func() bool { return !a.Health().Healthy })
	select {
	case <-c.Lost():
		t.Fatal("device fenced while the lease was still valid on the member's clock")
	default:
	}
	clk.Advance(2 * time.Second) // past TTL − margin
	testwait.For(t, "a to fence its device", func() bool {
		select {
		case <-c.Lost():
			return true
		default:
			return false
		}
	})
	if h := a.Health(); !h.Fenced || h.Valid {
		t.Errorf("health after the lapse: %+v", h)
	}
	// etcd has not expired a's lease (30 s on etcd's clock): nobody else
	// could have opened the device yet.
	rec, err := b.DeviceHolder(ctxT(t), dev)
	if err != nil || rec == nil || rec.Member != "a" {
		t.Fatalf("device holder on etcd = %+v, %v; want a", rec, err)
	}
	// New claims wait while fenced.
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if _, _, err := a.ClaimPort(ctx, port(9)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("claim while fenced: %v, want a wait that ends with the context", err)
	}
	// etcd back: the lease (still alive on etcd) is renewed, and the
	// device is ours again.
	a.restore()
	clk.Advance(time.Second)
	testwait.For(t, "a to renew its lease", func() bool { clk.Advance(100 * time.Millisecond); return a.Health().Valid && !a.Health().Fenced })
	if _, err := a.ClaimDevice(ctxT(t), dev, "vm-1"); err != nil {
		t.Fatalf("re-claiming our own device after the fence: %v", err)
	}
	if s := a.Stats(); s.Fences != 1 || s.LockDelays != 0 {
		t.Errorf("stats %+v: want 1 fence and no lock delay", s)
	}
}

// With the failsafe holding (every member confirms etcd is down for all),
// a lapsed member keeps its devices.
func TestFailsafeKeepsDevices(t *testing.T) {
	e := newEnv(t)
	clk := newFakeClock()
	var asked sync.WaitGroup
	asked.Add(1)
	var once sync.Once
	a := e.node("a", func(c *Config) {
		c.Clock = clk
		c.LeaseTTL = 30 * time.Second
		c.ValidityMargin = 2 * time.Second
		c.Failsafe = func(context.Context) bool { once.Do(asked.Done); return true }
	})
	c, err := a.ClaimDevice(ctxT(t), "tcp://127.0.0.1:4001", "vm-1")
	if err != nil {
		t.Fatal(err)
	}
	a.cut()
	clk.Advance(27 * time.Second)
	testwait.For(t, "a to notice etcd is unreachable", func() bool { return !a.Health().Healthy })
	clk.Advance(2 * time.Second)
	asked.Wait()
	testwait.For(t, "the failsafe state", func() bool { return a.Health().Failsafe })
	select {
	case <-c.Lost():
		t.Fatal("device fenced although the failsafe held")
	default:
	}
	if !a.Valid() {
		t.Error("member not valid in failsafe")
	}
	if _, _, err := a.ClaimPort(func() context.Context {
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		t.Cleanup(cancel)
		return ctx
	}(), port(3)); err == nil {
		t.Error("a new claim succeeded while etcd was unreachable")
	}
}

// etcd unreachable: sessions carry on, new claims wait and complete once
// etcd is back; hand-overs cannot be published.
func TestUnavailableClaimsWait(t *testing.T) {
	e := newEnv(t)
	a := e.node("a")
	a.cut()
	testwait.For(t, "a to see etcd unreachable", func() bool { return !a.Health().Healthy })
	if err := a.PublishMigration(ctxT(t), PeerHash([]byte("seqsecret")), Migration{Port: port(1).Port, SeqLen: 3}, time.Minute); !errors.Is(err, ErrUnavailable) {
		t.Errorf("publishing a hand-over without etcd: %v, want ErrUnavailable", err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := a.ClaimPort(ctxT(t), port(1))
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("claim finished while etcd was unreachable: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	a.restore()
	if err := <-done; err != nil {
		t.Fatalf("claim after etcd came back: %v", err)
	}
}

// The lease vanishes (revoked: what a resumed etcd leader does to leases
// that expired by its clock). The member takes a new one and claims again;
// what another member took meanwhile is reported lost.
func TestLeaseLossReclaims(t *testing.T) {
	e := newEnv(t)
	a, b := e.node("a"), e.node("b")
	kept, _, err := a.ClaimPort(ctxT(t), port(1))
	if err != nil || kept == nil {
		t.Fatal(err)
	}
	taken, _, err := a.ClaimPort(ctxT(t), port(2))
	if err != nil || taken == nil {
		t.Fatal(err)
	}
	dev, err := a.ClaimDevice(ctxT(t), "tcp://127.0.0.1:4001", "vm-1")
	if err != nil {
		t.Fatal(err)
	}
	oldFence := kept.Fence()
	a.cut()
	if _, err := b.cli.Revoke(ctxT(t), a.Lease()); err != nil {
		t.Fatal(err)
	}
	// b claims port 2 while a is away.
	c2, o, err := b.ClaimPort(ctxT(t), port(2))
	if err != nil || c2 == nil {
		t.Fatalf("b's claim of the freed port: %v %+v", err, o)
	}
	a.restore()
	testwait.For(t, "a to lose port 2", func() bool {
		select {
		case <-taken.Lost():
			return true
		default:
			return false
		}
	})
	select {
	case <-kept.Lost():
		t.Fatal("port 1 lost although nobody else claimed it")
	case <-dev.Lost():
		t.Fatal("device lost although nobody else claimed it")
	default:
	}
	// Claims are renewed one after another: port 1 may come after port 2.
	testwait.For(t, "port 1 claimed again under the new lease", func() bool { return kept.Fence() > oldFence })
	o1, err := b.PortOwner(ctxT(t), port(1).Port)
	if err != nil || o1 == nil || o1.Record.Member != "a" || o1.Fence != kept.Fence() {
		t.Errorf("port 1 owner %+v, %v", o1, err)
	}
	if s := a.Stats(); s.LeaseLosses != 1 || s.ClaimsLost != 1 {
		t.Errorf("stats %+v", s)
	}
}

// A pending vMotion outlives its owner: a survivor takes it over once the
// owner's lease expired, exactly once.
func TestMigrationTakeOver(t *testing.T) {
	e := newEnv(t)
	a, b, c := e.node("a"), e.node("b"), e.node("c")
	pc, _, err := a.ClaimPort(ctxT(t), port(1))
	if err != nil {
		t.Fatal(err)
	}
	payload := []byte("\x44\xda\x87\xf1secret-16-bytes!")
	hash := PeerHash(payload)
	if err := a.PublishMigration(ctxT(t), hash, Migration{Port: port(1).Port, SeqLen: 4, Fence: pc.Fence(), VMName: "vm-1"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.LookupMigration(ctxT(t), PeerHash([]byte("\x44\xda\x87\xf1wrong-secret-16b"))); !errors.Is(err, ErrNoMigration) {
		t.Fatalf("lookup with a wrong secret: %v", err)
	}
	m, rev, err := b.LookupMigration(ctxT(t), hash)
	if err != nil || m.Owner != "a" || m.SeqLen != 4 || m.Fence != pc.Fence() {
		t.Fatalf("lookup: %+v %v", m, err)
	}
	if _, err := b.TakeOverMigration(ctxT(t), hash, m, rev); !errors.Is(err, ErrOwnerAlive) {
		t.Fatalf("takeover while the owner lives: %v", err)
	}
	gone := make(chan struct{})
	b.OnMembership(func(id string, up bool) {
		if id == "a" && !up {
			close(gone)
		}
	})
	a.crash()
	<-gone
	var wg sync.WaitGroup
	res := make([]error, 2)
	for i, n := range []*member{b, c} {
		wg.Go(func() { _, res[i] = n.TakeOverMigration(ctxT(t), hash, m, rev) })
	}
	wg.Wait()
	won := 0
	for _, err := range res {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, ErrNoMigration) && !errors.Is(err, ErrOwnerAlive):
			t.Errorf("takeover: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d members took the hand-over over, want exactly 1 (%v)", won, res)
	}
	if _, _, err := b.LookupMigration(ctxT(t), hash); !errors.Is(err, ErrNoMigration) {
		t.Errorf("record after takeover: %v, want gone (single use)", err)
	}
}

// The owner deletes its record when the hand-over ends.
func TestMigrationDelete(t *testing.T) {
	e := newEnv(t)
	a := e.node("a")
	hash := PeerHash([]byte("seq-secret"))
	if err := a.PublishMigration(ctxT(t), hash, Migration{Port: port(1).Port, SeqLen: 3}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteMigration(ctxT(t), hash); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.LookupMigration(ctxT(t), hash); !errors.Is(err, ErrNoMigration) {
		t.Errorf("after delete: %v", err)
	}
}

func TestMembershipAndLeader(t *testing.T) {
	e := newEnv(t)
	a, b, c := e.node("a"), e.node("b"), e.node("c")
	all := []*member{a, b, c}
	testwait.For(t, "every member to see three members", func() bool {
		for _, n := range all {
			if len(n.Members()) != 3 {
				return false
			}
		}
		return true
	})
	leaders := func() []*member {
		var l []*member
		for _, n := range all {
			if n.closed0() {
				continue
			}
			if n.IsLeader() {
				l = append(l, n)
			}
		}
		return l
	}
	testwait.For(t, "one leader", func() bool { return len(leaders()) == 1 })
	old := leaders()[0]
	old.crash()
	testwait.For(t, "a new leader after the old one died", func() bool {
		l := leaders()
		return len(l) == 1 && l[0] != old
	})
	for _, n := range all {
		if n != old && len(n.Members()) != 2 {
			testwait.For(t, "the dead member to leave the list", func() bool { return len(n.Members()) == 2 })
		}
	}
}

func (m *member) closed0() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

func TestAssignListener(t *testing.T) {
	e := newEnv(t)
	nodes := []*member{e.node("a"), e.node("b"), e.node("c")}
	got := make([][]int, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		got[i] = make([]int, 10)
		wg.Go(func() {
			for j := range 10 {
				p, _, err := n.AssignListener(ctxT(t), port(j).Port, port(j).VMName, 7000, 7009)
				if err != nil {
					t.Error(err)
				}
				got[i][j] = p
			}
		})
	}
	wg.Wait()
	seen := map[int]int{}
	for j := range 10 {
		for i := range nodes {
			if got[i][j] != got[0][j] {
				t.Errorf("port %d: members disagree: %d vs %d", j, got[i][j], got[0][j])
			}
		}
		if k, dup := seen[got[0][j]]; dup {
			t.Errorf("listener %d assigned to ports %d and %d", got[0][j], k, j)
		}
		seen[got[0][j]] = j
	}
	// Every serial port is attached (claimed): the range is full and
	// nothing can be reclaimed.
	for j := range 10 {
		if _, _, err := nodes[j%3].ClaimPort(ctxT(t), port(j)); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := nodes[0].AssignListener(ctxT(t), port(10).Port, port(10).VMName, 7000, 7009); !errors.Is(err, ErrNoListener) {
		t.Errorf("range full: %v, want ErrNoListener", err)
	}
}

// TryClaimDevice does not wait out the lock delay: it holds the claim and
// says when the device may be opened; claiming again then succeeds. A
// claim given up during the delay (Forget) frees the device.
func TestTryClaimDeviceLockDelay(t *testing.T) {
	e := newEnv(t)
	a, b := e.node("a"), e.node("b")
	const dev = "tcp://127.0.0.1:4002"
	if _, err := a.ClaimDevice(ctxT(t), dev, "vm-1"); err != nil {
		t.Fatal(err)
	}
	gone := make(chan struct{})
	b.OnMembership(func(id string, up bool) {
		if id == "a" && !up {
			close(gone)
		}
	})
	a.crash()
	<-gone
	_, err := b.TryClaimDevice(ctxT(t), dev, "vm-1")
	var ld *LockDelayError
	if !errors.As(err, &ld) {
		t.Fatalf("first claim after the holder vanished: %v, want a LockDelayError", err)
	}
	if c := e.node("c"); true {
		if _, err := c.TryClaimDevice(ctxT(t), dev, "vm-9"); !errors.As(err, new(*HeldError)) {
			t.Errorf("another member's claim during b's lock delay: %v, want HeldError", err)
		}
	}
	testwait.For(t, "the lock delay to pass", func() bool {
		_, err := b.TryClaimDevice(ctxT(t), dev, "vm-1")
		return err == nil
	})
	if time.Now().Before(ld.Until) {
		t.Errorf("claimed before the lock delay ended (%v)", ld.Until)
	}
	// Another device: given up during its delay, it is free again.
	const dev2 = "tcp://127.0.0.1:4003"
	d := e.node("d")
	if _, err := d.ClaimDevice(ctxT(t), dev2, "vm-2"); err != nil {
		t.Fatal(err)
	}
	gone2 := make(chan struct{})
	b.OnMembership(func(id string, up bool) {
		if id == "d" && !up {
			close(gone2)
		}
	})
	d.crash()
	<-gone2
	if _, err := b.TryClaimDevice(ctxT(t), dev2, "vm-2"); !errors.As(err, &ld) {
		t.Fatalf("dev2: %v", err)
	}
	b.DeviceGuard().Forget(dev2, "vm-2")
	if rec, err := b.DeviceHolder(ctxT(t), dev2); err != nil || rec != nil {
		t.Errorf("dev2 after Forget: held by %+v, %v", rec, err)
	}
}
