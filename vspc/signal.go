package vspc

import "sync/atomic"

// doneSignal is a channel closed once, made only when someone asks to
// wait on it: a channel is 96 bytes, and an idle connection or port that
// nobody waits on (nearly all of them) holds none.
type doneSignal struct {
	ch atomic.Pointer[chan struct{}] // nil until wait or fire
}

// wait returns a channel that is closed once fire has run.
func (d *doneSignal) wait() <-chan struct{} {
	if p := d.ch.Load(); p != nil {
		return *p
	}
	ch := make(chan struct{})
	if d.ch.CompareAndSwap(nil, &ch) {
		return ch
	}
	return *d.ch.Load() // fire ran, or another wait made one
}

// fire closes the channel; closed is the server's channel that is closed
// from the start, taken when nobody waited. The caller runs it once.
func (d *doneSignal) fire(closed *chan struct{}) {
	if !d.ch.CompareAndSwap(nil, closed) {
		close(*d.ch.Load())
	}
}
