package cluster

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// The owner's watch of its own ports' drops (WatchDropped), on the
// bubble's clock: a port whose VM connection dropped abnormally and is
// still detached reconnect_grace later is reconnected through vCenter,
// once, at that moment, and timed back; nothing is done for a clean
// close, a VM back before the grace, a VM in a vMotion, a port gone, or a
// drop a later one replaced (whose own grace then counts).
func TestWatchDroppedReconnects(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const grace = 2 * time.Second
		ctx, cancel := context.WithCancel(t.Context())
		n := &Node{cfg: Config{Member: "a"}, log: slog.New(slog.DiscardHandler), ctx: ctx, cancel: cancel}
		rec := &recorder{}
		n.sweep = &sweeper{n: n, cfg: SweepConfig{Grace: grace, Rate: 10, Reconnector: rec},
			orphans: map[string]time.Time{}, toggled: map[string]time.Time{}, drops: map[PortID]time.Time{}}
		defer func() { cancel(); n.wg.Wait() }()

		var srv stateResumer
		const (
			stays     = iota + 1 // abnormal drop, stays detached: reconnected at the grace
			clean                // clean close, stays detached: left alone
			back                 // abnormal drop, back before the grace
			backClean            // abnormal drop, back, then a clean close
			twice                // abnormal drop, and again a second later: the grace counts from the second
			moving               // abnormal drop, in a vMotion at the grace
			gone                 // abnormal drop, port closed before the grace
		)
		states := map[int]string{stays: "detached", clean: "detached", back: "detached", backClean: "detached", twice: "detached", moving: "vmotion"}
		show := func() {
			var ps []vspc.PortInfo
			for i, st := range states {
				r := port(i)
				ps = append(ps, vspc.PortInfo{VMName: r.VMName, VCUUID: r.Port.VM, ServiceURI: r.Port.Service, State: st})
			}
			srv.set(ps...)
		}
		show()
		for _, i := range []int{stays, back, backClean, twice, moving, gone} {
			n.WatchDropped(port(i).Port, true, &srv)
		}
		n.WatchDropped(port(clean).Port, false, &srv)
		called := func() []PortID {
			var out []PortID
			for _, c := range rec.calls() {
				out = append(out, c.Port)
			}
			return out
		}

		time.Sleep(grace / 4)
		states[backClean] = "attached"
		show()
		time.Sleep(grace / 4)
		states[back], states[backClean] = "attached", "detached"
		show()
		n.WatchDropped(port(backClean).Port, false, &srv) // back, then closed cleanly
		n.WatchDropped(port(twice).Port, true, &srv)      // dropped again (it had come back)
		time.Sleep(grace/2 - time.Millisecond)
		synctest.Wait()
		if got := called(); len(got) != 0 {
			t.Fatalf("reconnected %v before the grace", got)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if got := called(); !slices.Equal(got, []PortID{port(stays).Port}) {
			t.Fatalf("at the grace: reconnected %v, want %s alone", got, port(stays).Port)
		}
		if rec.calls()[0].Member != "a" || rec.calls()[0].VMName != port(stays).VMName {
			t.Errorf("reconnect %+v: want member a and the VM's name", rec.calls()[0])
		}
		time.Sleep(grace / 2)
		synctest.Wait()
		if got := called(); !slices.Equal(got, []PortID{port(stays).Port, port(twice).Port}) {
			t.Fatalf("a grace after the second drop: reconnected %v, want %s then %s", got, port(stays).Port, port(twice).Port)
		}
		states[stays], states[twice] = "attached", "attached"
		show()
		time.Sleep(grace)
		synctest.Wait()
		if s := n.SweepStats(); s.Toggled != 2 || s.Reconnected != 2 || s.Failed != 0 {
			t.Errorf("sweep stats %+v: want 2 toggled, 2 back", s)
		}
		n.sweep.mu.Lock()
		left := len(n.sweep.drops)
		n.sweep.mu.Unlock()
		if left != 0 {
			t.Errorf("%d drops still watched", left)
		}
		time.Sleep(10 * grace)
		synctest.Wait()
		if got := called(); len(got) != 2 {
			t.Errorf("reconnected %v in all, want 2", got)
		}
	})
}
