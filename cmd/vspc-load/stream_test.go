package main

import (
	"strings"
	"testing"
)

// TestCounterReaderReports: a counter stream with two of its bytes moved
// later is reported as corrupt from there on, and the error shows where
// the expected word went.
func TestCounterReaderReports(t *testing.T) {
	var w counterWriter
	b := w.fill(make([]byte, 400))
	// Move bytes 100..101 (the first half of word 25) after byte 103.
	moved := append(append(append([]byte{}, b[:100]...), b[102:104]...), b[100:102]...)
	moved = append(moved, b[104:]...)

	var r counterReader
	r.check(moved[:50]) // the mismatch falls in the second read
	r.check(moved[50:])
	if !r.bad.Load() {
		t.Fatal("a reordered stream was taken as intact")
	}
	if got, junk := r.got.Load(), r.junk.Load(); got != 100 || junk != 300 {
		t.Errorf("got %d, junk %d; want 100, 300", got, junk)
	}
	msg := r.err.Error()
	for _, want := range []string{"word 25: got 00190000, want 00000019", "read of 350 bytes, mismatch at 50", "the expected word is not in them"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}

	// Two bytes lost: the reader runs 2 bytes ahead from word 25 on.
	var r2 counterReader
	r2.check(append(append([]byte{}, b[:100]...), b[102:]...))
	if msg := r2.err.Error(); !strings.Contains(msg, "word 25: got 00190000") {
		t.Errorf("lost bytes: error %q", msg)
	}
	// Two bytes inserted: the expected word follows 2 bytes later.
	var r3 counterReader
	r3.check(append(append(append([]byte{}, b[:100]...), 0xaa, 0xbb), b[100:]...))
	if msg := r3.err.Error(); !strings.Contains(msg, "the expected word is at +2") {
		t.Errorf("inserted bytes: error %q", msg)
	}
}

// TestCounterReaderShortReads: a read too short to complete the word a
// previous read began keeps the bytes it has. The checker used to drop
// them (r.np = copy(r.part[:], b) with b empty), so an intact stream
// read as ...[00] [56] [9d 69 00 56 ...] was reported as the full-size
// remote run's "word 5676393: got 9d690056, want 00569d69", missing 0.
func TestCounterReaderShortReads(t *testing.T) {
	w := counterWriter{next: 5676390}
	b := w.fill(make([]byte, 64))
	// Word 5676393 (00 56 9d 69) starts at byte 12: one read ends 1 byte
	// into it, the next is 1 byte long.
	r := counterReader{next: 5676390}
	r.check(b[:13])
	r.check(b[13:14])
	r.check(b[14:])
	if r.bad.Load() {
		t.Errorf("intact stream reported corrupt: %v", r.err)
	}
	if got := r.got.Load(); got != int64(len(b)) {
		t.Errorf("got %d bytes, want %d", got, len(b))
	}

	// Every split of a stream into reads of 1 to 5 bytes reads intact.
	var w2 counterWriter
	s := w2.fill(make([]byte, 4000))
	for first := 1; first <= 5; first++ {
		for size := 1; size <= 5; size++ {
			var r counterReader
			r.check(s[:first])
			for i := first; i < len(s); i += size {
				r.check(s[i:min(i+size, len(s))])
			}
			if r.bad.Load() || r.got.Load() != int64(len(s)) || r.np != 0 || r.next != uint32(len(s)/4) {
				t.Errorf("first read %d, then reads of %d: bad=%v got=%d np=%d words checked %d err=%v", first, size, r.bad.Load(), r.got.Load(), r.np, r.next, r.err)
			}
		}
	}
}
