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
