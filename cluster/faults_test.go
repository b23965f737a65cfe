package cluster

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/cluster/clustertest"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
)

// These tests stop etcd members, so each starts its own etcd cluster.

// Loss of the etcd leader: writes stall for an election; leases survive
// (the new leader extends them), nothing changes hands, nobody fences.
func TestEtcdLeaderLoss(t *testing.T) {
	e := &env{t: t, etcd: clustertest.StartEtcd(t, 3)}
	a, b := e.node("a"), e.node("b")
	pc, _, err := a.ClaimPort(ctxT(t), port(1))
	if err != nil {
		t.Fatal(err)
	}
	dc, err := b.ClaimDevice(ctxT(t), "tcp://127.0.0.1:4001", "vm-2")
	if err != nil {
		t.Fatal(err)
	}
	lead := e.etcd.Leader()
	if lead < 0 {
		t.Fatal("no etcd leader")
	}
	e.etcd.Kill(lead)
	// A new claim goes through once a new leader is elected.
	c3, _, err := b.ClaimPort(ctxT(t), port(3))
	if err != nil || c3 == nil {
		t.Fatalf("claim after the leader's loss: %v", err)
	}
	testwait.For(t, "a new etcd leader", func() bool { return e.etcd.Leader() >= 0 })
	o, err := b.PortOwner(ctxT(t), port(1).Port)
	if err != nil || o == nil || o.Record.Member != "a" || o.Fence != pc.Fence() {
		t.Fatalf("port 1 after the leader's loss: %+v %v", o, err)
	}
	select {
	case <-dc.Lost():
		t.Fatal("a device was fenced because the etcd leader died")
	default:
	}
	for _, n := range []*member{a, b} {
		if s := n.Stats(); s.LeaseLosses != 0 || s.Fences != 0 || s.ClaimsLost != 0 {
			t.Errorf("%s: %+v", n.Member(), s)
		}
	}
}

// Loss of quorum: etcd answers nothing. Sessions carry on; hand-overs are
// refused; new claims wait; with the failsafe holding (every member
// confirms etcd is down for all) devices stay open. When quorum is back
// the members renew or re-claim without conflict.
func TestEtcdQuorumLoss(t *testing.T) {
	e := &env{t: t, etcd: clustertest.StartEtcd(t, 3)}
	// Stands for Failsafe over the member link (every other member
	// answers that it cannot reach etcd either).
	everyoneDown := func(context.Context) bool { return true }
	a := e.node("a", func(c *Config) { c.Failsafe = everyoneDown })
	b := e.node("b", func(c *Config) { c.Failsafe = everyoneDown })
	pa, _, err := a.ClaimPort(ctxT(t), port(1))
	if err != nil {
		t.Fatal(err)
	}
	da, err := a.ClaimDevice(ctxT(t), "tcp://127.0.0.1:4001", "vm-1")
	if err != nil {
		t.Fatal(err)
	}
	e.etcd.Kill(1)
	e.etcd.Kill(2)
	testwait.For(t, "members to see etcd unavailable", func() bool { return !a.Healthy() && !b.Healthy() })
	if err := a.PublishMigration(ctxT(t), PeerHash([]byte("s")), Migration{Port: port(1).Port, SeqLen: 1}, time.Minute); !errors.Is(err, ErrUnavailable) {
		t.Errorf("hand-over without quorum: %v, want ErrUnavailable", err)
	}
	claimed := make(chan error, 1)
	go func() {
		_, _, err := b.ClaimPort(ctxT(t), port(2))
		claimed <- err
	}()
	// Past the lease TTL on every clock: the failsafe keeps the device.
	testwait.For(t, "a's failsafe", func() bool { return a.Health().Failsafe })
	select {
	case <-da.Lost():
		t.Fatal("device fenced although every member confirmed etcd was down for all")
	case err := <-claimed:
		t.Fatalf("a claim completed without quorum: %v", err)
	default:
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, m := range []int{1, 2} {
		wg.Go(func() { errs[i] = e.etcd.Restart(m) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := <-claimed; err != nil {
		t.Fatalf("waiting claim after quorum came back: %v", err)
	}
	testwait.For(t, "a healthy again", func() bool { h := a.Health(); return h.Healthy && !h.Failsafe && !h.Fenced })
	o, err := b.PortOwner(ctxT(t), port(1).Port)
	if err != nil || o == nil || o.Record.Member != "a" {
		t.Fatalf("port 1 after quorum came back: %+v %v", o, err)
	}
	select {
	case <-pa.Lost():
		t.Error("port claim lost although nobody else claimed it")
	case <-da.Lost():
		t.Error("device claim lost although nobody else claimed it")
	default:
	}
	if rec, err := b.DeviceHolder(ctxT(t), "tcp://127.0.0.1:4001"); err != nil || rec == nil || rec.Member != "a" {
		t.Errorf("device holder after quorum came back: %+v %v", rec, err)
	}
}

// linked starts a node whose member link serves failsafe questions and
// whose Failsafe asks the other members over the link.
func (e *env) linked(id, certDir string) *member {
	t := e.t
	t.Helper()
	l := loadLink(t, certDir, "lab", id, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n *Node
	var mu sync.Mutex
	m := e.node(id, func(c *Config) {
		c.Info.Link = ln.Addr().String()
		c.Failsafe = func(ctx context.Context) bool {
			mu.Lock()
			self := n
			mu.Unlock()
			return Failsafe(l, self)(ctx)
		}
	})
	mu.Lock()
	n = m.Node
	mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		l.Serve(ctx, ln, func(ctx context.Context, s *Stream) {
			if s.Header.Kind == KindFailsafe {
				m.AnswerFailsafe(s)
				return
			}
			s.Reply(Reply{Err: "unexpected"})
			s.Conn.Close()
		})
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return m
}

// A member cut from etcd while the others still reach it: the failsafe
// does not hold (another member answers that it reaches etcd), so the
// cut member fences its device before the other may open it.
func TestMemberCutFromEtcd(t *testing.T) {
	dir := t.TempDir()
	if _, err := InitCerts(CertOptions{Dir: dir, Cluster: "lab", Members: []string{"a", "b"}}); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	a, b := e.linked("a", dir), e.linked("b", dir)
	testwait.For(t, "a and b to see each other", func() bool { return len(a.Members()) == 2 && len(b.Members()) == 2 })
	const dev = "tcp://127.0.0.1:4001"
	da, err := a.ClaimDevice(ctxT(t), dev, "vm-1")
	if err != nil {
		t.Fatal(err)
	}

	// Both cut: every member confirms etcd is down; a keeps its device.
	a.cut()
	b.cut()
	testwait.For(t, "a's failsafe", func() bool { return a.Health().Failsafe })
	select {
	case <-da.Lost():
		t.Fatal("device fenced while etcd was down for every member")
	default:
	}

	// b reaches etcd again, a does not: a fences, and does so before b
	// can open the device (a's lease expires, then b waits the lock
	// delay).
	b.restore()
	var fencedAt time.Time
	var mu sync.Mutex
	go func() {
		<-da.Lost()
		mu.Lock()
		fencedAt = time.Now()
		mu.Unlock()
	}()
	var db *Claim
	testwait.For(t, "b to claim the device", func() bool {
		c, err := b.ClaimDevice(ctxT(t), dev, "vm-1")
		var held *HeldError
		if errors.As(err, &held) {
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		db = c
		return true
	})
	openedAt := time.Now()
	mu.Lock()
	f := fencedAt
	mu.Unlock()
	if f.IsZero() || !f.Before(openedAt) {
		t.Fatalf("a fenced at %v, b opened the device at %v: two holders", f, openedAt)
	}
	if b.Stats().LockDelays != 1 {
		t.Errorf("b did not wait the lock delay: %+v", b.Stats())
	}
	db.Release(ctxT(t))
	if s := a.Stats(); s.Fences < 1 || s.FailsafeHolds < 1 {
		t.Errorf("a's stats %+v: want a failsafe hold and a fence", s)
	}
}
