package remote

import (
	"io"
	"sync"
	"time"
)

// outQueue is the bounded queue of wire bytes waiting for one remote
// client, drained by a single writer goroutine (run). Console output that
// would push it past its limit drops the client instead of waiting: the
// queue is emptied, a last message is queued, and the writer closes the
// connection after writing it (or when the kill timer fires first).
type outQueue struct {
	limit int
	kill  func() // closes the connection under a stuck writer

	mu      sync.Mutex  // guards the fields below
	cond    sync.Cond   // signalled on new bytes and on closing
	q       []byte      // encoded bytes not yet handed to the writer
	closing bool        // no more output; the writer ends once q is written
	dropped bool        // closed because the client fell behind
	timer   *time.Timer // runs kill if the writer is still busy killGrace after closing
	done    bool        // run returned
}

func newOutQueue(limit int, kill func()) *outQueue {
	o := &outQueue{limit: limit, kill: kill}
	o.cond.L = &o.mu
	return o
}

// data queues console output p, encoded by enc. It returns false (and
// starts the drop) when the client is too far behind; it never blocks.
func (o *outQueue) data(p []byte, enc func(dst, p []byte) []byte, dropMsg string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closing {
		return !o.dropped
	}
	n := len(o.q)
	o.q = enc(o.q, p)
	if len(o.q) > o.limit {
		o.q = append(o.q[:0], dropMsg...)
		o.closing = true
		o.dropped = true
		o.armLocked()
		o.cond.Broadcast()
		return false
	}
	if n == 0 {
		o.cond.Broadcast()
	}
	return true
}

// control queues protocol bytes or text that are not console output
// (telnet replies, prompts, notices); they are not bounded by the limit
// but are small and only sent in answer to the client or on events.
func (o *outQueue) control(b []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closing || len(b) == 0 {
		return
	}
	o.q = append(o.q, b...)
	o.cond.Broadcast()
}

// close queues a last message (may be empty) and tells the writer to end
// after writing what is queued.
func (o *outQueue) close(last string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closing {
		return
	}
	o.q = append(o.q, last...)
	o.closing = true
	o.armLocked()
	o.cond.Broadcast()
}

// armLocked starts the kill timer. o.mu held.
func (o *outQueue) armLocked() {
	if o.timer == nil && !o.done && o.kill != nil {
		o.timer = time.AfterFunc(killGrace, o.kill)
	}
}

// queued returns the number of bytes waiting.
func (o *outQueue) queued() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.q)
}

// isDropped reports whether the client was dropped for falling behind.
func (o *outQueue) isDropped() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.dropped
}

// run writes queued bytes to w until close was called and everything is
// written, or a write fails. It is the connection's only writer.
func (o *outQueue) run(w io.Writer) error {
	defer func() {
		o.mu.Lock()
		o.done = true
		if o.timer != nil {
			o.timer.Stop()
		}
		o.mu.Unlock()
	}()
	var spare []byte
	for {
		o.mu.Lock()
		for len(o.q) == 0 && !o.closing {
			o.cond.Wait()
		}
		if len(o.q) == 0 {
			o.mu.Unlock()
			return nil
		}
		cur := o.q
		o.q = spare[:0]
		o.mu.Unlock()
		if _, err := w.Write(cur); err != nil {
			o.mu.Lock()
			o.closing = true
			o.q = o.q[:0]
			o.mu.Unlock()
			return err
		}
		spare = cur
		if cap(spare) > 1<<20 {
			spare = nil // do not keep a big buffer for an idle client
		}
	}
}
