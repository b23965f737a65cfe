package bridge

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/devices"
	"github.com/vspc-bridge/vspc-bridge/devices/target"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// TestDialGate runs the gate on synctest's clock: its timer and time.Now
// are the bubble's, so "released after quiet", "after max under
// continuous Opens" are exact instants, whatever the machine's load.
func TestDialGate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &dialGate{quiet: 20 * time.Millisecond, max: 300 * time.Millisecond}
		t0 := time.Now()
		if g.opened(t0) {
			t.Fatal("the first Open was held")
		}
		if !g.opened(t0.Add(time.Millisecond)) {
			t.Fatal("an Open 1 ms after another was not held")
		}
		if g.opened(t0.Add(time.Second)) {
			t.Fatal("an Open long after the last was held")
		}

		// Held until Opens pause for quiet.
		var ran atomic.Int64
		released := make(chan time.Time, 1)
		start := time.Now()
		g.opened(start)
		g.hold(start, func() { ran.Add(1); released <- time.Now() })
		if at := <-released; at.Sub(start) != g.quiet {
			t.Fatalf("released after %v, want the quiet period %v", at.Sub(start), g.quiet)
		}

		// Opens that never pause: released max after the hold.
		start = time.Now()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(2 * time.Millisecond):
					g.opened(time.Now())
				}
			}
		})
		g.opened(start)
		g.hold(start, func() { released <- time.Now() })
		if at := <-released; at.Sub(start) != g.max {
			t.Errorf("with Opens every 2 ms, released after %v, want max (%v)", at.Sub(start), g.max)
		}
		close(stop)
		wg.Wait()

		// close releases what is held, and later holds run at once.
		g.opened(time.Now())
		g.hold(time.Now(), func() { ran.Add(10) })
		g.close()
		g.hold(time.Now(), func() { ran.Add(100) })
		if ran.Load() != 111 {
			t.Fatalf("ran %d, want 111", ran.Load())
		}
	})
}

type nullSink struct{}

func (nullSink) Send([]byte) error { return nil }
func (nullSink) SendBreak() error  { return nil }

// TestGatedLinkClosedReleasesDevice: a link whose first connect is held
// by the gate and whose port closes gives its device back at once (a VM
// coming back for it must not be refused for up to gateMax), and the
// held connect never runs.
func TestGatedLinkClosedReleasesDevice(t *testing.T) {
	cfg, err := configs.Parse("t.toml", []byte("[vspc]\nlisten = \"127.0.0.1:0\"\n[policy]\nconnect_allow = [\"127.0.0.0/8\"]\nreconnect_min = \"1h\"\nreconnect_max = \"1h\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	b := New(cfg, nil)
	b.gate = dialGate{quiet: time.Hour, max: time.Hour} // hold until closed
	var mu sync.Mutex
	var opened []string // the devices a connect was attempted to
	b.open = func(_ context.Context, tg target.Target, _ devices.Options) (devices.Device, error) {
		mu.Lock()
		opened = append(opened, tg.Addr())
		mu.Unlock()
		return nil, errors.New("refused")
	}
	ctx := t.Context()
	req := func(name, addr string) vspc.Request {
		return vspc.Request{Direction: vspc.DirClient, ServiceURI: "tcp://" + addr, VMName: name, VCUUID: "50000000-0000-4000-8000-0000000000" + name}
	}
	const heldAddr = "127.0.0.1:2"
	first, err := b.Open(ctx, req("01", "127.0.0.1:1"), nullSink{}) // not held: nothing came before it
	if err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the first link's connect", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(opened) == 1
	})
	held, err := b.Open(ctx, req("02", heldAddr), nullSink{})
	if err != nil {
		t.Fatal(err)
	}
	if st := b.linkState(heldAddr); st != "connecting" {
		t.Fatalf("held link state %q, want connecting", st)
	}
	held.Close()
	again, err := b.Open(ctx, req("03", heldAddr), nullSink{})
	if err != nil {
		t.Fatalf("the device of a closed held link is still owned: %v", err)
	}
	again.Close()
	first.Close()
	b.Close() // waits for every attempt that was to run
	mu.Lock()
	defer mu.Unlock()
	for _, addr := range opened {
		if addr == heldAddr {
			t.Fatalf("a held connect ran after its link closed (connects to %v)", opened)
		}
	}
	if len(opened) != 1 {
		t.Errorf("connects to %v, want one, to the link that was not held", opened)
	}
}

// linkState is the state of the link that owns the device at addr.
func (b *Bridge) linkState(addr string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, l := range b.owners {
		if l.target.Addr() == addr {
			l.mu.Lock()
			defer l.mu.Unlock()
			return l.state.String()
		}
	}
	return ""
}
