package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"sync/atomic"
	"time"
)

// Counter streams: 4-byte big-endian words numbered from 0, XORed with a
// mask. With mask 0 a stream carries few 0xFF bytes (like console text);
// with ffMask half its bytes are 0xFF, which the telnet side must escape.
// A lost, duplicated, reordered or altered byte breaks the numbering.
const ffMask = 0xff00ff00

type counterWriter struct {
	next uint32
	mask uint32
}

// fill writes len(b)/4 successive words into b and returns them.
func (w *counterWriter) fill(b []byte) []byte {
	b = b[:len(b)/4*4]
	for i := 0; i < len(b); i += 4 {
		binary.BigEndian.PutUint32(b[i:], w.next^w.mask)
		w.next++
	}
	return b
}

type counterReader struct {
	next uint32
	mask uint32
	part [4]byte
	np   int
	bad  atomic.Bool  // a mismatch was seen; the stream is corrupt from here
	got  atomic.Int64 // bytes received in order
	junk atomic.Int64 // bytes received after the first mismatch
	err  error
}

// check consumes b; got counts the bytes that continue the numbering,
// junk every byte from the first mismatch on.
func (r *counterReader) check(b []byte) {
	if r.bad.Load() {
		r.junk.Add(int64(len(b)))
		return
	}
	n := len(b)
	full := b
	for r.np > 0 && len(b) > 0 {
		r.part[r.np] = b[0]
		r.np++
		b = b[1:]
		if r.np == 4 {
			r.np = 0
			if !r.word(binary.BigEndian.Uint32(r.part[:])) {
				r.around(full, n-len(b)-4)
				r.got.Add(int64(n - len(b) - 4))
				r.junk.Add(int64(len(b) + 4))
				return
			}
		}
	}
	if r.np > 0 {
		// The read ended before the word a previous read began: keep
		// its bytes for the next read (b is empty).
		r.got.Add(int64(n))
		return
	}
	for len(b) >= 4 {
		if !r.word(binary.BigEndian.Uint32(b)) {
			r.around(full, n-len(b))
			r.got.Add(int64(n - len(b)))
			r.junk.Add(int64(len(b)))
			return
		}
		b = b[4:]
	}
	r.np = copy(r.part[:], b)
	r.got.Add(int64(n))
}

// around adds to r.err the bytes of the read around the first mismatch
// (at off in b; negative when the word began in the previous read), and
// where the expected word turns up in them: what was lost, inserted or
// reordered.
func (r *counterReader) around(b []byte, off int) {
	lo, hi := max(off-32, 0), min(max(off, 0)+64, len(b))
	var want [4]byte
	binary.BigEndian.PutUint32(want[:], r.next^r.mask)
	found := "not in them"
	if i := bytes.Index(b[lo:hi], want[:]); i >= 0 {
		found = fmt.Sprintf("at %+d", lo+i-off)
	}
	r.err = fmt.Errorf("%w; read of %d bytes, mismatch at %d; the expected word is %s; bytes %d..%d: % x", r.err, len(b), off, found, lo, hi, b[lo:hi])
}

func (r *counterReader) word(v uint32) bool {
	if want := r.next ^ r.mask; v != want {
		r.err = fmt.Errorf("word %d: got %08x, want %08x", r.next, v, want)
		r.bad.Store(true)
		return false
	}
	r.next++
	return true
}

// durations collects samples and reports percentiles.
type durations []time.Duration

func (d durations) pct(p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p)
	return s[i]
}

func (d durations) max() time.Duration {
	if len(d) == 0 {
		return 0
	}
	return slices.Max(d)
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond))
}
