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
