package bridge

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vspc-bridge/vspc-bridge/devices"
	"github.com/vspc-bridge/vspc-bridge/devices/target"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/rfc2217"
)

// closingDevice's Read ends when it is closed, as a socket's does.
type closingDevice struct {
	n      atomic.Int64
	once   sync.Once
	closed chan struct{}
}

func (d *closingDevice) Read([]byte) (int, error)    { <-d.closed; return 0, io.EOF }
func (d *closingDevice) Write(p []byte) (int, error) { d.n.Add(int64(len(p))); return len(p), nil }
func (d *closingDevice) wrote() int64                { return d.n.Load() }
func (d *closingDevice) Close() error                { d.once.Do(func() { close(d.closed) }); return nil }
func (d *closingDevice) isClosed() bool {
	select {
	case <-d.closed:
		return true
	default:
		return false
	}
}
func (d *closingDevice) SetSettings(_ context.Context, s rfc2217.Settings) (rfc2217.Settings, error) {
	return s, nil
}
func (d *closingDevice) SetDTR(context.Context, bool) error                     { return nil }
func (d *closingDevice) SetRTS(context.Context, bool) error                     { return nil }
func (d *closingDevice) SetBreak(context.Context, bool) error                   { return nil }
func (d *closingDevice) Purge(context.Context, rfc2217.PurgeTarget) error       { return nil }
func (d *closingDevice) ModemState(context.Context) (rfc2217.ModemState, error) { return 0, nil }

// recGuard records the claims; the test ends them (lost) or refuses them.
type recGuard struct {
	invalid  atomic.Bool
	mu       sync.Mutex
	log      []string // "acquire", "open", "close", "release" in order
	refuse   error
	lost     chan struct{}
	acquires int
}

func (g *recGuard) event(e string) {
	g.mu.Lock()
	g.log = append(g.log, e)
	g.mu.Unlock()
}

func (g *recGuard) Acquire(ctx context.Context, device, holder string) (<-chan struct{}, func(), error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.acquires++
	if g.refuse != nil {
		return nil, nil, g.refuse
	}
	g.log = append(g.log, "acquire")
	g.lost = make(chan struct{})
	return g.lost, func() { g.event("release") }, nil
}

func (g *recGuard) Valid() bool { return !g.invalid.Load() }

func (g *recGuard) Forget(string, string) {}

func (g *recGuard) events() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.log...)
}

// A device is opened only after its claim, closed at once when the claim
// is lost, and released after it is closed; a refused claim is a device
// that cannot be reached (the link retries).
func TestDeviceGuard(t *testing.T) {
	b := consoleBridge(t, "[policy]\nreconnect_min = \"1ms\"\nreconnect_max = \"5ms\"\n")
	t.Cleanup(b.Close)
	g := &recGuard{refuse: errors.New("held by member b")}
	b.SetDeviceGuard(g)
	var mu sync.Mutex
	var devs []*closingDevice
	b.open = func(ctx context.Context, _ target.Target, _ devices.Options) (devices.Device, error) {
		g.event("open")
		d := &closingDevice{closed: make(chan struct{})}
		mu.Lock()
		devs = append(devs, d)
		mu.Unlock()
		return d, nil
	}
	be := openConsole(t, b)
	status := func() DeviceStatus { return b.Devices()[0] }
	testwait.For(t, "refused claims to be retried", func() bool { g.mu.Lock(); defer g.mu.Unlock(); return g.acquires >= 3 })
	if st := status(); st.State != "down" || st.LastErr != "held by member b" {
		t.Errorf("status while the claim is refused: %+v", st)
	}
	if ev := g.events(); len(ev) != 0 {
		t.Fatalf("device opened without its claim: %v", ev)
	}
	g.mu.Lock()
	g.refuse = nil
	g.mu.Unlock()
	testwait.For(t, "the device up", func() bool { return status().State == "up" })
	// Past the lease on this member's clock, before the fence: nothing
	// reaches the device.
	g.invalid.Store(true)
	if _, err := be.Write([]byte("late")); err != nil {
		t.Fatalf("VM write while the device is fenced: %v (it should wait in the backlog)", err)
	}
	testwait.For(t, "the link to take the refused write as a lost device", func() bool { return status().State != "up" || status().Backlog > 0 })
	mu.Lock()
	if devs[0].wrote() != 0 {
		t.Fatalf("%d bytes reached a device past this member's lease", devs[0].wrote())
	}
	mu.Unlock()
	g.invalid.Store(false)
	g.mu.Lock()
	lost := g.lost
	g.mu.Unlock()
	close(lost) // this member's lease lapsed
	testwait.For(t, "the device closed and claimed again", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(devs) == 2 && devs[0].isClosed() && status().State == "up"
	})
	be.Close()
	b.Close()
	// Every open follows its claim, and every claim is given back after
	// its device closed: acquire, open, release, acquire, open, release, ...
	ev := g.events()
	if len(ev) < 6 || len(ev)%3 != 0 {
		t.Fatalf("events %v: want acquire-open-release cycles, at least two", ev)
	}
	for i, e := range ev {
		if want := []string{"acquire", "open", "release"}[i%3]; e != want {
			t.Fatalf("events %v: #%d is %s, want %s", ev, i, e, want)
		}
	}
}
