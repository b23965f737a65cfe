package cluster

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
)

// vmHosts stands for vCenter and ESXi: a reconnected port's VM comes
// back (claims its port on a member) unless the test says it stays away.
type vmHosts struct {
	mu     sync.Mutex
	member *member
	calls  []PortID
	away   map[string]bool
}

func (h *vmHosts) Reconnect(ctx context.Context, p PortInfo) error {
	h.mu.Lock()
	h.calls = append(h.calls, p.Port)
	away := h.away[p.Port.VM]
	h.mu.Unlock()
	if away {
		return nil
	}
	_, _, err := h.member.ClaimPort(ctx, PortRecord{Port: p.Port, VMName: p.VMName, Direction: p.Direction})
	return err
}

func TestSweepReconnectsPortsThatDidNotComeBack(t *testing.T) {
	e := newEnv(t)
	a := e.node("a")
	for i := 1; i <= 4; i++ {
		if _, _, err := a.ClaimPort(ctxT(t), port(i)); err != nil {
			t.Fatal(err)
		}
	}
	// Port 4's VM went away cleanly before: not reconnected.
	c4, _, _ := a.ClaimPort(ctxT(t), port(4))
	if err := c4.Release(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	b := e.node("b")
	hosts := &vmHosts{member: b, away: map[string]bool{port(2).Port.VM: true}}
	b.StartSweep(SweepConfig{Grace: time.Second, Rate: 100, Reconnector: hosts})
	testwait.For(t, "b to lead", func() bool { return b.IsLeader() || func() bool { l, _ := b.Leader(ctxT(t)); return l == "a" }() })
	gone := make(chan struct{})
	b.OnMembership(func(id string, up bool) {
		if id == "a" && !up {
			close(gone)
		}
	})
	a.crash()
	<-gone
	// Port 3's VM comes back by itself within the grace period.
	if c, _, err := b.ClaimPort(ctxT(t), port(3)); err != nil || c == nil {
		t.Fatal(err)
	}
	testwait.For(t, "the sweep to reconnect ports 1 and 2 and see port 1 back", func() bool {
		s := b.SweepStats()
		return s.Toggled == 2 && s.Reconnected == 1
	})
	s := b.SweepStats()
	if s.Failed != 0 || s.LastTime <= 0 {
		t.Errorf("stats %+v", s)
	}
	if st := b.Stats(); st.CameBack != 1 || st.SweptBack != 1 {
		t.Errorf("came back by itself %d (want 1: port 3), after a reconnect %d (want 1: port 1)", st.CameBack, st.SweptBack)
	}
	hosts.mu.Lock()
	calls := append([]PortID(nil), hosts.calls...)
	hosts.mu.Unlock()
	if len(calls) != 2 {
		t.Fatalf("reconnected %v, want ports 1 and 2 once each", calls)
	}
	for _, c := range calls {
		if c == port(3).Port || c == port(4).Port {
			t.Errorf("reconnected %v: it came back by itself or was released", c)
		}
	}
	// Port 2 stays away: listed as an orphan, not reconnected again.
	orph, err := b.Orphans(ctxT(t))
	if err != nil || len(orph) != 1 || orph[0].Port != port(2).Port || orph[0].Swept.IsZero() {
		t.Errorf("orphans %+v %v", orph, err)
	}
}

// A member that leaves (a shutdown: a rolling upgrade) drops the VMs
// connected to it: their ports are released as attached, so the leader
// reconnects them through vCenter; a port whose VM was not connected when
// the member began to leave is released as gone and left alone.
func TestSweepReconnectsPortsOfAMemberThatLeft(t *testing.T) {
	e := newEnv(t)
	a := e.node("a")
	var claims []*Claim
	for i := 1; i <= 2; i++ {
		c, _, err := a.ClaimPort(ctxT(t), port(i))
		if err != nil {
			t.Fatal(err)
		}
		claims = append(claims, c)
	}
	b := e.node("b")
	hosts := &vmHosts{member: b}
	b.StartSweep(SweepConfig{Grace: 200 * time.Millisecond, Rate: 100, Reconnector: hosts})
	testwait.For(t, "a and b to see each other", func() bool { return len(a.Members()) == 2 && len(b.Members()) == 2 })
	a.Leaving([]PortID{port(1).Port}) // port 2's VM had gone (its port waits out its grace period)
	for _, c := range claims {
		if err := c.Release(ctxT(t)); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the leader to reconnect port 1 and see it back", func() bool {
		s := b.SweepStats()
		return s.Toggled == 1 && s.Reconnected == 1
	})
	hosts.mu.Lock()
	calls := append([]PortID(nil), hosts.calls...)
	hosts.mu.Unlock()
	if len(calls) != 1 || calls[0] != port(1).Port {
		t.Fatalf("reconnected %v, want port 1 once", calls)
	}
	orphans, err := b.Orphans(ctxT(t))
	if err != nil || len(orphans) != 0 {
		t.Errorf("orphans after the reconnect: %+v %v", orphans, err)
	}
}
