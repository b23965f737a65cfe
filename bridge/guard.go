package bridge

import (
	"context"
	"errors"
	"sync"

	"github.com/vspc-bridge/vspc-bridge/devices"
)

// DeviceGuard keeps a device from being held by two bridges at once (the
// cluster's device claims in etcd). A link asks it before every device
// open; nil (a single node) opens at once.
type DeviceGuard interface {
	// Acquire returns once device is this bridge's to open: it may wait
	// (a lock delay after a holder that vanished; etcd unreachable) until
	// ctx ends, and fails when someone else holds the device. lost is
	// closed if the claim ends without release (this member's lease
	// lapsed): the link then closes the device at once. release gives the
	// device back cleanly; the link calls it after closing the device.
	Acquire(ctx context.Context, device, holder string) (lost <-chan struct{}, release func(), err error)
	// Valid reports whether this bridge may write to the devices it
	// claimed: checked before every write, so that a bridge resumed after
	// a pause longer than its lease writes nothing before it notices.
	Valid() bool
	// Forget gives back a claim that Acquire made but reported as not yet
	// usable (a lock delay), when the link ends before it opened the
	// device. A claim released already is not affected.
	Forget(device, holder string)
}

// holder names the port that holds a device, for the guard.
func (l *link) holder() string { return l.name + " " + l.uuid }

// ErrFenced is the write error of a device whose claim is no longer valid.
var ErrFenced = errors.New("bridge: device claim no longer valid (this member's lease lapsed)")

// SetDeviceGuard makes device opens from now on ask g first; nil stops it.
func (b *Bridge) SetDeviceGuard(g DeviceGuard) {
	b.mu.Lock()
	b.guard = g
	b.mu.Unlock()
}

func (b *Bridge) deviceGuard() DeviceGuard {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.guard
}

// guarded is an open device and its claim.
type guarded struct {
	devices.Device
	valid   func() bool
	release func()
	once    sync.Once
}

// Write refuses once the claim is no longer valid on this bridge's clock.
func (g *guarded) Write(p []byte) (int, error) {
	if !g.valid() {
		return 0, ErrFenced
	}
	return g.Device.Write(p)
}

// open claims the device (when a guard is set), then opens it. With a
// claim, a watcher closes the device as soon as the claim is lost, and
// Close releases the claim after closing the device.
func (l *link) open(ctx context.Context, opts devices.Options) (devices.Device, error) {
	g := l.b.deviceGuard()
	if g == nil {
		return l.b.open(ctx, l.target, opts)
	}
	lost, release, err := g.Acquire(ctx, l.key, l.holder())
	if err != nil {
		return nil, err
	}
	dev, err := l.b.open(ctx, l.target, opts)
	if err != nil {
		release()
		return nil, err
	}
	gd := &guarded{Device: dev, valid: g.Valid}
	done := make(chan struct{})
	gd.release = func() { close(done); release() }
	l.b.wg.Go(func() {
		select {
		case <-lost:
			l.logger().Warn("device claim lost (this member's lease lapsed): closing the device before another bridge may open it")
			dev.Close()
		case <-done:
		}
	})
	return gd, nil
}

// Close closes the device, then gives its claim back (once: the link may
// close a device twice).
func (g *guarded) Close() error {
	err := g.Device.Close()
	g.once.Do(g.release)
	return err
}

// raw is the device under a claim's wrapper, for the optional interfaces
// a device kind may have (parking, line state, settings mismatch).
func raw(d any) any {
	if g, ok := d.(*guarded); ok {
		return g.Device
	}
	return d
}
