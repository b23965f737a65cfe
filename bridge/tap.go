package bridge

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// Taps copy a link's traffic to watchers (the web console's "watch"):
// read-only, beside the forwarding path, never holding it up. A link's
// observer is a linkObserver that passes what it sees to the bridge's
// Observer (console alerts) and to the link's taps.

// TapFunc receives a copy of traffic through a link: what the VM sent to
// the device (fromDevice false) or what the device sent to the VM
// (true), in order for each direction. It is called on the forwarding
// path, possibly from two goroutines at once (one per direction): it must
// not block, and must not keep p after it returns.
type TapFunc func(fromDevice bool, p []byte)

// ErrNoLink is returned by Tap when no link joins the port.
var ErrNoLink = errors.New("bridge: no device or remote joins that port")

// tap is one TapFunc registered on a link.
type tap struct{ fn TapFunc }

// linkObserver is a link's Observer: the bridge's, then the taps.
type linkObserver struct {
	next Observer // the bridge's when the link opened; nil when none

	mu   sync.Mutex             // serialises changes to taps
	taps atomic.Pointer[[]*tap] // read on the forwarding path without a lock
}

// ObserveConsole implements Observer.
func (o *linkObserver) ObserveConsole(vm, route string, fromDevice bool, p []byte) {
	if o.next != nil {
		o.next.ObserveConsole(vm, route, fromDevice, p)
	}
	if ts := o.taps.Load(); ts != nil {
		for _, t := range *ts {
			t.fn(fromDevice, p)
		}
	}
}

func (o *linkObserver) add(t *tap) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var ts []*tap
	if old := o.taps.Load(); old != nil {
		ts = slices.Clone(*old)
	}
	ts = append(ts, t)
	o.taps.Store(&ts)
}

func (o *linkObserver) remove(t *tap) {
	o.mu.Lock()
	defer o.mu.Unlock()
	old := o.taps.Load()
	if old == nil {
		return
	}
	ts := slices.DeleteFunc(slices.Clone(*old), func(x *tap) bool { return x == t })
	if len(ts) == 0 {
		o.taps.Store(nil)
		return
	}
	o.taps.Store(&ts)
}

// Tap copies the traffic of the link that joins the port with key to fn,
// until the returned untap is called (it is idempotent; a call of fn
// already under way when untap returns may still finish). The link's
// device and VM never wait for fn.
// Tap returns ErrNoLink when no link joins the port (a direction-server
// port with a console instead has remote access's watchers).
func (b *Bridge) Tap(key vspc.PortKey, fn TapFunc) (untap func(), err error) {
	b.mu.Lock()
	var l *link
	for _, o := range b.owners {
		if o.req.PortKey() == key {
			l = o
			break
		}
	}
	b.mu.Unlock()
	if l == nil {
		return nil, ErrNoLink
	}
	o, ok := l.observer.(*linkObserver)
	if !ok {
		return nil, ErrNoLink
	}
	t := &tap{fn: fn}
	o.add(t)
	var once sync.Once
	return func() { once.Do(func() { o.remove(t) }) }, nil
}
