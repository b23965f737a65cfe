package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
)

// freshListeners deletes the listener assignments a previous run of the
// test (-count) left under its prefix.
func freshListeners(t *testing.T, m *member) {
	t.Helper()
	if _, err := m.cli.Delete(ctxT(t), m.key("listen/"), clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
}

// setSeen rewrites when a serial port was last seen (what an attach an
// hour apart would have written).
func setSeen(t *testing.T, m *member, rec PortRecord, port int, at time.Time) {
	t.Helper()
	v := mustJSON(listenSeen{Port: port, VM: rec.Port.VM, Service: rec.Port.Service, VMName: rec.VMName, Seen: at})
	if _, err := m.cli.Put(ctxT(t), m.key(kListenSeen+rec.Port.path()), v); err != nil {
		t.Fatal(err)
	}
}

// assignments reads listen/vm and listen/port and checks that they are
// each other's inverse; it returns port → serial port path.
func assignments(t *testing.T, m *member) map[int]string {
	t.Helper()
	r, err := m.cli.Txn(ctxT(t)).Then(clientv3.OpGet(m.key(kListenVM), clientv3.WithPrefix()), clientv3.OpGet(m.key(kListenN), clientv3.WithPrefix())).Commit()
	if err != nil {
		t.Fatal(err)
	}
	byVM := map[string]int{}
	for _, kv := range r.Responses[0].GetResponseRange().Kvs {
		p, err := strconv.Atoi(string(kv.Value))
		if err != nil {
			t.Fatalf("%s = %q", kv.Key, kv.Value)
		}
		byVM[strings.TrimPrefix(string(kv.Key), m.key(kListenVM))] = p
	}
	byPort := map[int]string{}
	for _, kv := range r.Responses[1].GetResponseRange().Kvs {
		p, _ := strconv.Atoi(strings.TrimPrefix(string(kv.Key), m.key(kListenN)))
		byPort[p] = string(kv.Value)
		if byVM[string(kv.Value)] != p {
			t.Errorf("listen/port/%d = %s, but that serial port's listen/vm is %d", p, kv.Value, byVM[string(kv.Value)])
		}
	}
	if len(byVM) != len(byPort) {
		t.Errorf("%d listen/vm keys, %d listen/port keys", len(byVM), len(byPort))
	}
	return byPort
}

// A full range reclaims the port of the serial port seen longest ago that
// no member holds, says so as the state file does, and passes over ports
// whose serial port is held however old; an assignment made by an older
// member (no seen record) counts as the oldest. The serial port that lost
// its port gets another when it comes back.
func TestAssignListenerReclaims(t *testing.T) {
	e := newEnv(t)
	a, b := e.node("a"), e.node("b")
	freshListeners(t, a)
	const lo, hi = 7000, 7002
	for i := range 3 {
		p, r, err := a.AssignListener(ctxT(t), port(i).Port, port(i).VMName, lo, hi)
		if err != nil || p != lo+i || r != "" {
			t.Fatalf("port %d: %d %q %v", i, p, r, err)
		}
	}
	// Again within the hour: the same port, nothing written.
	rev := func() int64 {
		r, err := a.cli.Get(ctxT(t), "/")
		if err != nil {
			t.Fatal(err)
		}
		return r.Header.Revision
	}
	before := rev()
	if p, _, err := b.AssignListener(ctxT(t), port(0).Port, port(0).VMName, lo, hi); err != nil || p != lo {
		t.Fatalf("port 0 again: %d %v", p, err)
	}
	if after := rev(); after != before {
		t.Errorf("assigning a known port within the hour wrote to etcd (revision %d → %d)", before, after)
	}
	now := time.Now().UTC().Truncate(time.Second)
	setSeen(t, a, port(0), lo, now.Add(-1*time.Hour))
	setSeen(t, a, port(1), lo+1, now.Add(-5*time.Hour)) // the oldest, but attached
	setSeen(t, a, port(2), lo+2, now.Add(-3*time.Hour))
	if _, _, err := a.ClaimPort(ctxT(t), port(1)); err != nil {
		t.Fatal(err)
	}
	p, r, err := b.AssignListener(ctxT(t), port(3).Port, port(3).VMName, lo, hi)
	want := fmt.Sprintf("port %d reclaimed from VM %q (service URI %q), last seen %s", lo+2, "vm-2", port(2).Port.Service, now.Add(-3*time.Hour).Format(time.RFC3339))
	if err != nil || p != lo+2 || r != want {
		t.Fatalf("port 3: %d %q %v, want %d %q", p, r, err, lo+2, want)
	}
	if got := assignments(t, a); got[lo+2] != port(3).Port.path() || len(got) != 3 {
		t.Errorf("assignments %v", got)
	}
	// vm-2 comes back: the range is full again; vm-0's is the oldest
	// not held.
	p, r, err = a.AssignListener(ctxT(t), port(2).Port, port(2).VMName, lo, hi)
	if err != nil || p != lo || !strings.HasPrefix(r, fmt.Sprintf("port %d reclaimed from VM %q", lo, "vm-0")) {
		t.Fatalf("port 2 back: %d %q %v", p, r, err)
	}
	// An assignment without a seen record (an older member made it) goes
	// first, even before one seen an hour ago.
	if _, err := a.cli.Delete(ctxT(t), a.key(kListenSeen+port(3).Port.path())); err != nil {
		t.Fatal(err)
	}
	setSeen(t, a, port(2), lo, now.Add(-10*time.Hour))
	p, r, err = a.AssignListener(ctxT(t), port(4).Port, port(4).VMName, lo, hi)
	if err != nil || p != lo+2 || !strings.Contains(r, "last seen unknown") {
		t.Fatalf("port 4: %d %q %v", p, r, err)
	}
	// Everything held: nothing to reclaim.
	for _, i := range []int{2, 4} {
		if _, _, err := b.ClaimPort(ctxT(t), port(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := a.AssignListener(ctxT(t), port(5).Port, port(5).VMName, lo, hi); !errors.Is(err, ErrNoListener) {
		t.Fatalf("every serial port held: %v, want ErrNoListener", err)
	}
	if s := a.Stats().ListenReclaims + b.Stats().ListenReclaims; s != 3 {
		t.Errorf("%d reclaims counted, want 3", s)
	}
	assignments(t, a)
}

// Three members reclaim at once, while serial ports that hold ports come
// back: every serial port that is held (claimed, as the hub's are before
// their console opens) and got a port has its own, etcd's two indexes
// agree, and exactly as many got one as the range holds.
func TestAssignListenerReclaimRace(t *testing.T) {
	e := newEnv(t)
	nodes := []*member{e.node("a"), e.node("b"), e.node("c")}
	freshListeners(t, nodes[0])
	const lo, hi = 7100, 7109
	for i := range 10 {
		if _, _, err := nodes[0].AssignListener(ctxT(t), port(i).Port, port(i).VMName, lo, hi); err != nil {
			t.Fatal(err)
		}
	}
	// Old serial ports 0..4 come back (member a), new ones 100..109 arrive
	// on every member; 5..9 never come back.
	type result struct {
		rec  PortRecord
		port int
		err  error
	}
	var mu sync.Mutex
	var results []result
	attach := func(m *member, rec PortRecord) {
		if _, o, err := m.ClaimPort(ctxT(t), rec); err != nil || o != nil {
			t.Errorf("claim %s: %v %+v", rec.VMName, err, o)
			return
		}
		p, _, err := m.AssignListener(ctxT(t), rec.Port, rec.VMName, lo, hi)
		mu.Lock()
		results = append(results, result{rec, p, err})
		mu.Unlock()
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 5 {
			attach(nodes[0], port(i))
		}
	})
	for k, m := range nodes {
		wg.Go(func() {
			for i := 100 + k; i < 110; i += len(nodes) {
				attach(m, port(i))
			}
		})
	}
	wg.Wait()
	byPort := assignments(t, nodes[1])
	got := map[int]string{}
	failed := 0
	for _, r := range results {
		switch {
		case errors.Is(r.err, ErrNoListener):
			failed++
		case r.err != nil:
			t.Errorf("%s: %v", r.rec.VMName, r.err)
		default:
			if o, dup := got[r.port]; dup {
				t.Errorf("port %d given to %s and %s", r.port, o, r.rec.VMName)
			}
			got[r.port] = r.rec.VMName
			if byPort[r.port] != r.rec.Port.path() {
				t.Errorf("%s got %d, etcd has %s for it", r.rec.VMName, r.port, byPort[r.port])
			}
		}
	}
	if len(got) != 10 || failed != 5 {
		t.Errorf("%d serial ports got a port, %d none; want 10 and 5 (%v)", len(got), failed, got)
	}
}

// A member cut off from etcd goes on serving a serial port after its
// lease ended; another member reclaims that port's console port. When
// the first member is back, its watch reports the port taken from the
// serial port it serves (and not from the new holder), so that its
// listener closes.
func TestWatchListenersReclaimed(t *testing.T) {
	e := newEnv(t)
	a, b := e.node("a"), e.node("b")
	freshListeners(t, a)
	const lo, hi = 7200, 7200
	x, y := port(1), port(2)
	if _, _, err := a.ClaimPort(ctxT(t), x); err != nil {
		t.Fatal(err)
	}
	if p, _, err := a.AssignListener(ctxT(t), x.Port, x.VMName, lo, hi); err != nil || p != lo {
		t.Fatalf("%d %v", p, err)
	}
	type event struct {
		port           int
		stillX, stillY bool
	}
	events := make(chan event, 16)
	ctx := ctxT(t)
	var wg sync.WaitGroup
	defer wg.Wait()
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	wg.Go(func() {
		a.WatchListeners(wctx, func(port int, still func(PortID) bool) {
			select {
			case events <- event{port, still(x.Port), still(y.Port)}:
			case <-wctx.Done():
			}
		})
	})
	// The first listing reports the current assignment: x keeps it.
	if ev := <-events; ev.port != lo || !ev.stillX || ev.stillY {
		t.Fatalf("first listing: %+v", ev)
	}
	a.cut()
	if _, err := b.cli.Revoke(ctxT(t), a.Lease()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.ClaimPort(ctxT(t), y); err != nil {
		t.Fatal(err)
	}
	p, r, err := b.AssignListener(ctxT(t), y.Port, y.VMName, lo, hi)
	if err != nil || p != lo || r == "" {
		t.Fatalf("y: %d %q %v", p, r, err)
	}
	a.restore()
	var ev event
	testwait.For(t, "a to see the port reclaimed from x", func() bool {
		select {
		case ev = <-events:
			return !ev.stillX
		default:
			return false
		}
	})
	if ev.port != lo || ev.stillX || !ev.stillY {
		t.Errorf("after the reclaim: %+v", ev)
	}
}
