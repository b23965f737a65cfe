package remote

import (
	"io"
	"sync"
	"time"
)

// writeChunk is the most the writer hands the connection at once, so
// that progress (and with it a stalled client) is seen at this grain.
const writeChunk = 16 << 10

// bufPool hands out queue buffers, so that a client streaming in bursts
// does not allocate a new buffer for every burst, while a drained queue
// gives its buffer back: an idle client holds none. It is the hub's (no
// package-level state).
type bufPool struct{ p sync.Pool }

// pooledCap is the size of pooled buffers; a queue that grew past it
// frees its buffer when drained.
const pooledCap = 32 << 10

func (b *bufPool) get() []byte {
	if b == nil {
		return nil
	}
	if v, ok := b.p.Get().(*[]byte); ok {
		return (*v)[:0]
	}
	return make([]byte, 0, pooledCap)
}

func (b *bufPool) put(q []byte) {
	if b == nil || cap(q) != pooledCap {
		return
	}
	b.p.Put(&q)
}

// outQueue is the bounded queue of wire bytes waiting for one remote
// client. A writer goroutine drains it into the connection; it is started
// when there is something to write and ends when the queue is empty, so
// an idle client holds neither a goroutine nor a buffer here.
//
// Console output beyond the limit either drops the client at once (drop:
// the queue is emptied, a last message is queued, and the connection is
// closed after it, or when the kill timer fires first), or marks the
// queue full (pause): the console then waits until the writer has drained
// it to half the limit (onRoom), or drops the client once it has taken no
// output for client_stall.
type outQueue struct {
	w      io.Writer
	limit  int
	kill   func()                     // closes the connection under a stuck writer
	finish func(error)                // the queue is closed and written, or a write failed; called once
	now    func() time.Time           // the hub's clock
	pool   *bufPool                   // nil: plain allocation
	ctl    func(dst, p []byte) []byte // encodes what is not console output (notices, last words); nil: as it is
	// whole: the queue holds frames (a member link's console stream),
	// which the writer's chunks may split anywhere: a drop keeps what is
	// queued and appends its message, so that no frame is cut.
	whole bool
	wg    sync.WaitGroup // the writer goroutine

	mu       sync.Mutex  // guards the fields below
	onRoom   func()      // a full queue drained to half its limit, or ended (called without the lock)
	q        []byte      // q[head:] is still to be written (the writer may be writing a prefix of it)
	head     int         //
	inflight int         // q[head:head+inflight] is being written
	writing  bool        // a writer goroutine runs
	closing  bool        // no more output; the writer ends once q is written
	finished bool        // finish was called (or is about to be)
	dropped  bool        // closed because the client fell behind
	full     bool        // over the limit in pause mode: the console waits for it
	since    time.Time   // last progress: a write completed, or the queue became non-empty
	timer    *time.Timer // runs kill if the writer is still busy killGrace after closing
	err      error       // the write error that ended the queue
}

// newOutQueue returns a queue for w. kill closes the connection under a
// writer stuck after close; finish (may be nil) is called once when the
// queue has ended: closed and written (nil), or a write failed.
func newOutQueue(w io.Writer, limit int, kill func(), finish func(error)) *outQueue {
	if finish == nil {
		finish = func(error) {}
	}
	return &outQueue{w: w, limit: limit, kill: kill, now: time.Now, onRoom: func() {}, finish: finish}
}

// newOutQueue returns a client queue with the hub's limit, clock and
// buffer pool.
func (h *Hub) newOutQueue(w io.Writer, kill func(), finish func(error)) *outQueue {
	o := newOutQueue(w, int(h.cfg.Remote.ClientQueue), kill, finish)
	o.now, o.pool = h.now, &h.bufs
	return o
}

func (o *outQueue) pendingLocked() int { return len(o.q) - o.head }

// appendLocked adds b, taking a pooled buffer when the queue holds none.
func (o *outQueue) appendLocked(enc func(dst, p []byte) []byte, b []byte) {
	if o.pendingLocked() == 0 {
		o.since = o.now()
	}
	if o.q == nil {
		o.q = o.pool.get()
	}
	if enc == nil {
		o.q = append(o.q, b...)
	} else {
		o.q = enc(o.q, b)
	}
}

// data queues console output p, encoded by enc. It never blocks. With
// pause false, a client over the limit is dropped: data returns false and
// the queue now holds dropMsg only. With pause true, the queue is marked
// full and data returns true; the console is to wait for it (fullSince).
func (o *outQueue) data(p []byte, enc func(dst, p []byte) []byte, dropMsg string, pause bool) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closing {
		return !o.dropped
	}
	o.appendLocked(enc, p)
	if o.pendingLocked() > o.limit {
		if !pause {
			o.dropLocked(dropMsg)
			return false
		}
		o.full = true
	}
	o.kickLocked()
	return true
}

// ctlAppend appends b, which is not console output, encoded by ctl.
func (o *outQueue) ctlAppend(dst, b []byte) []byte {
	if o.ctl == nil || len(b) == 0 {
		return append(dst, b...)
	}
	return o.ctl(dst, b)
}

// dropLocked empties the queue, queues msg and closes the queue. The
// bytes the writer is writing now stay where they are (it owns them).
func (o *outQueue) dropLocked(msg string) {
	if o.whole {
		o.q = o.ctlAppend(o.q, []byte(msg))
	} else if o.inflight > 0 {
		// Keep the chunk in flight: the writer advances head over it.
		o.q = o.ctlAppend(o.q[:o.head+o.inflight], []byte(msg))
	} else {
		o.q, o.head = o.ctlAppend(o.q[:0], []byte(msg)), 0
	}
	o.closing, o.dropped, o.full = true, true, false
	o.armLocked()
	o.kickLocked()
}

// drop drops a stalled client (pause mode): like data's drop.
func (o *outQueue) drop(msg string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.closing {
		o.dropLocked(msg)
	}
}

// fullSince reports whether the queue is full (the console must wait for
// it) and since when the client has made no progress.
func (o *outQueue) fullSince() (time.Time, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.since, o.full && !o.closing
}

// control queues protocol bytes or text that are not console output
// (telnet replies, prompts, notices); they are not bounded by the limit
// but are small and only sent in answer to the client or on events.
func (o *outQueue) control(b []byte) { o.controlEnc(o.ctl, b) }

// controlEnc is control with b encoded by enc (nil: as it is).
func (o *outQueue) controlEnc(enc func(dst, p []byte) []byte, b []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closing || len(b) == 0 {
		return
	}
	o.appendLocked(enc, b)
	o.kickLocked()
}

// close queues a last message (may be empty) and tells the writer to end
// after writing what is queued.
func (o *outQueue) close(last string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closing {
		return
	}
	if last != "" {
		o.appendLocked(o.ctl, []byte(last))
	}
	o.closing, o.full = true, false
	o.armLocked()
	o.kickLocked()
}

// armLocked starts the kill timer. o.mu held.
func (o *outQueue) armLocked() {
	if o.timer == nil && !o.finished && o.kill != nil {
		o.timer = time.AfterFunc(killGrace, o.kill)
	}
}

// kickLocked starts the writer when there is something for it to do.
func (o *outQueue) kickLocked() {
	if o.writing || o.finished || (o.pendingLocked() == 0 && !o.closing) {
		return
	}
	o.writing = true
	o.wg.Go(o.writer)
}

// setOnRoom sets what the writer calls when a full queue has drained to
// half its limit (nil: nothing); the console attached to sets it.
func (o *outQueue) setOnRoom(f func()) {
	if f == nil {
		f = func() {}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.onRoom = f
	o.full = false // the next console waits on fresh evidence
}

// queued returns the number of bytes waiting.
func (o *outQueue) queued() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.pendingLocked()
}

// ended reports whether the queue takes no more output: closed, dropped,
// or a write failed.
func (o *outQueue) ended() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.closing || o.finished
}

// isDropped reports whether the client was dropped for falling behind.
func (o *outQueue) isDropped() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.dropped
}

// wait waits until the writer has ended (after close: everything is
// written, or a write failed) and returns the write error, if any.
func (o *outQueue) wait() error {
	o.wg.Wait()
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

// writer writes queued bytes, a chunk at a time, until the queue is empty
// (then it ends; a new one starts with the next bytes), or it is closed
// and written, or a write fails. At most one runs at a time (writing): it
// is the connection's only writer.
func (o *outQueue) writer() {
	for {
		o.mu.Lock()
		n := o.pendingLocked()
		if n == 0 {
			o.writing = false
			o.pool.put(o.q)
			o.q, o.head = nil, 0
			if !o.closing {
				o.mu.Unlock()
				return
			}
			o.finishLocked(nil)
			return
		}
		o.inflight = min(n, writeChunk)
		buf := o.q[o.head : o.head+o.inflight]
		o.mu.Unlock()

		w, err := o.w.Write(buf)

		o.mu.Lock()
		o.head += w
		o.inflight = 0
		if w > 0 {
			o.since = o.now()
		}
		if err != nil {
			o.writing, o.closing, o.full = false, true, false
			o.q, o.head = nil, 0
			o.finishLocked(err)
			return
		}
		room := o.full && o.pendingLocked() <= o.limit/2
		if room {
			o.full = false
		}
		onRoom := o.onRoom
		if o.head > len(o.q)/2 && o.head > writeChunk {
			// Move the rest to the front; only the writer does this, and
			// only between writes, so no chunk in flight moves.
			o.q = o.q[:copy(o.q, o.q[o.head:])]
			o.head = 0
		}
		o.mu.Unlock()
		if room {
			onRoom()
		}
	}
}

// finishLocked ends the queue for good and calls finish and onRoom
// without the lock. Called with o.mu held; returns with it released.
func (o *outQueue) finishLocked(err error) {
	o.finished = true
	o.err = err
	if o.timer != nil {
		o.timer.Stop()
	}
	onRoom := o.onRoom
	o.mu.Unlock()
	onRoom() // a console waiting for this client waits no more
	o.finish(err)
}
