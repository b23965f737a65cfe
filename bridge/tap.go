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
// Observer (console alerts) and to the link's taps and, when the bridge
// keeps tap history (SetTapHistory), records its recent traffic, which a
// new tap gets first (its scrollback).

// TapFunc receives a copy of traffic through a link: what the VM sent to
// the device (fromDevice false) or what the device sent to the VM
// (true), in order for each direction. It is called on the forwarding
// path, possibly from two goroutines at once (one per direction): it must
// not block, and must not keep p after it returns.
type TapFunc func(fromDevice bool, p []byte)

// ErrNoLink is returned by Tap when no link joins the port.
var ErrNoLink = errors.New("bridge: no device or remote joins that port")

// TapChunk is a piece of a link's recent traffic, as Tap replays it.
type TapChunk struct {
	FromDevice bool // what the device sent to the VM; false: what the VM sent
	Data       []byte
}

// tap is one TapFunc registered on a link.
type tap struct{ fn TapFunc }

// linkObserver is a link's Observer: the bridge's, then the taps.
type linkObserver struct {
	next    Observer // the bridge's when the link opened; nil when none
	histMax int      // bytes of recent traffic kept for new taps; 0: none

	mu   sync.Mutex             // serialises changes to taps; guards hist
	taps atomic.Pointer[[]*tap] // read on the forwarding path without a lock when histMax is 0
	hist *tapHistory            // made at the first traffic
}

// ObserveConsole implements Observer.
func (o *linkObserver) ObserveConsole(vm, route string, fromDevice bool, p []byte) {
	if o.next != nil {
		o.next.ObserveConsole(vm, route, fromDevice, p)
	}
	var ts *[]*tap
	if o.histMax > 0 {
		// Recording and reading the taps under the lock that Tap holds
		// while it copies the history and adds a tap: each piece of
		// traffic reaches a new tap once, in its history or live.
		o.mu.Lock()
		if o.hist == nil {
			o.hist = &tapHistory{max: o.histMax}
		}
		o.hist.add(fromDevice, p)
		ts = o.taps.Load()
		o.mu.Unlock()
	} else {
		ts = o.taps.Load()
	}
	if ts != nil {
		for _, t := range *ts {
			t.fn(fromDevice, p)
		}
	}
}

// add registers t and returns the recorded history.
func (o *linkObserver) add(t *tap) []TapChunk {
	o.mu.Lock()
	defer o.mu.Unlock()
	var replay []TapChunk
	if o.hist != nil {
		replay = o.hist.chunks()
	}
	var ts []*tap
	if old := o.taps.Load(); old != nil {
		ts = slices.Clone(*old)
	}
	ts = append(ts, t)
	o.taps.Store(&ts)
	return replay
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
// device and VM never wait for fn. replay is the link's recent traffic
// (SetTapHistory; nil when it keeps none), oldest first: everything the
// link carried before fn was registered, within the history's size, and
// nothing that fn gets.
// Tap returns ErrNoLink when no link joins the port (a direction-server
// port with a console instead has remote access's watchers).
func (b *Bridge) Tap(key vspc.PortKey, fn TapFunc) (replay []TapChunk, untap func(), err error) {
	b.mu.Lock()
	var l *link
	for _, o := range b.owners {
		if vspc.PortKeyOf(o.uuid, o.name, o.service) == key {
			l = o
			break
		}
	}
	b.mu.Unlock()
	if l == nil {
		return nil, nil, ErrNoLink
	}
	o, ok := l.observer.(*linkObserver)
	if !ok {
		return nil, nil, ErrNoLink
	}
	t := &tap{fn: fn}
	replay = o.add(t)
	var once sync.Once
	return replay, func() { once.Do(func() { o.remove(t) }) }, nil
}

// SetTapHistory makes links opened from now on keep their last n bytes
// of traffic (both directions), which Tap replays to a new tap; 0 keeps
// none (the default). A link allocates its history as traffic comes, up
// to 2n.
func (b *Bridge) SetTapHistory(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tapHistory = max(n, 0)
}

// tapHistory is a link's recent traffic: records of a 2-byte header (the
// top bit: from the device; the rest: the length) and the bytes, oldest
// first, in buf[start:], at most max bytes with headers. Consecutive
// traffic in one direction shares a record. The oldest record is cut
// from its front to make room, so the history keeps the newest max
// bytes less headers. buf grows as traffic comes, to 2*max at most; its
// front is reclaimed once it is half of buf or buf would pass that.
type tapHistory struct {
	max   int
	buf   []byte
	start int // the oldest record
	last  int // the newest record's header; -1 when empty
}

const (
	histFromDevice = 0x8000
	histMaxRecord  = 0x7fff
)

func (h *tapHistory) header(at int) (fromDevice bool, n int) {
	v := int(h.buf[at])<<8 | int(h.buf[at+1])
	return v&histFromDevice != 0, v & histMaxRecord
}

func (h *tapHistory) setHeader(at int, fromDevice bool, n int) {
	if fromDevice {
		n |= histFromDevice
	}
	h.buf[at], h.buf[at+1] = byte(n>>8), byte(n)
}

// add records p.
func (h *tapHistory) add(fromDevice bool, p []byte) {
	if h.max < 3 || len(p) == 0 {
		return
	}
	if len(p) > h.max-2 {
		p = p[len(p)-(h.max-2):] // only its end fits
	}
	for len(p) > 0 {
		k := min(len(p), histMaxRecord)
		h.addRecord(fromDevice, p[:k])
		p = p[k:]
	}
}

func (h *tapHistory) addRecord(fromDevice bool, p []byte) {
	if h.buf == nil {
		h.last = -1
	}
	need := func() int {
		if h.last >= 0 {
			if dev, n := h.header(h.last); dev == fromDevice && n+len(p) <= histMaxRecord {
				return len(p) // extends the newest record
			}
		}
		return 2 + len(p)
	}
	for len(h.buf)-h.start+need() > h.max {
		h.trimFront(len(h.buf) - h.start + need() - h.max)
	}
	if n := need(); cap(h.buf)-len(h.buf) < n {
		// Reclaim the front when it is half of buf or buf would pass
		// 2*max (the records take at most max, so the front is free then).
		if h.start > 0 && (h.start >= len(h.buf)/2 || len(h.buf)+n > 2*h.max) {
			m := copy(h.buf, h.buf[h.start:])
			h.buf = h.buf[:m]
			if h.last >= 0 {
				h.last -= h.start
			}
			h.start = 0
		}
		if cap(h.buf)-len(h.buf) < n {
			nb := make([]byte, len(h.buf), min(max(2*cap(h.buf), len(h.buf)+n, 256), 2*h.max))
			copy(nb, h.buf)
			h.buf = nb
		}
	}
	if need() == len(p) {
		dev, n := h.header(h.last)
		h.setHeader(h.last, dev, n+len(p))
		h.buf = append(h.buf, p...)
		return
	}
	h.last = len(h.buf)
	h.buf = append(h.buf, 0, 0)
	h.setHeader(h.last, fromDevice, len(p))
	h.buf = append(h.buf, p...)
}

// trimFront frees at least k bytes from the oldest record (all of it
// when k covers its bytes).
func (h *tapHistory) trimFront(k int) {
	dev, n := h.header(h.start)
	if k >= n { // the whole record goes
		if h.last == h.start {
			h.buf, h.start, h.last = h.buf[:0], 0, -1
			return
		}
		h.start += 2 + n
		return
	}
	at := h.start + k
	h.setHeader(at, dev, n-k)
	if h.last == h.start {
		h.last = at
	}
	h.start = at
}

// chunks copies the history out.
func (h *tapHistory) chunks() []TapChunk {
	var out []TapChunk
	for at := h.start; at < len(h.buf); {
		dev, n := h.header(at)
		out = append(out, TapChunk{FromDevice: dev, Data: append([]byte(nil), h.buf[at+2:at+2+n]...)})
		at += 2 + n
	}
	return out
}
