package vspc

import (
	"testing"
	"unsafe"
)

func TestWholeCommands(t *testing.T) {
	tests := []struct {
		buf  []byte
		w    int
		want int
	}{
		{[]byte{1, 2, 3}, 2, 2},
		{[]byte{1, 0xff, 0xff, 2}, 2, 1},       // cut inside IAC IAC: resend the pair
		{[]byte{1, 0xff, 0xff, 2}, 3, 3},       // pair complete
		{[]byte{0xff, 0xf3, 0xff, 0xff}, 1, 0}, // cut inside IAC BRK
		{[]byte{0xff, 0xf3, 0xff, 0xff}, 2, 2},
		{[]byte{0xff, 0xf3, 0xff, 0xff}, 3, 2},
		{[]byte{0xff, 0xff, 0xff, 0xff}, 4, 4},
	}
	for _, tt := range tests {
		if got := wholeCommands(tt.buf, tt.w); got != tt.want {
			t.Errorf("wholeCommands(% x, %d) = %d, want %d", tt.buf, tt.w, got, tt.want)
		}
	}
}

// A done signal is closed for whoever waits, before or after it fires,
// and allocates no channel when nobody waits.
func TestDoneSignal(t *testing.T) {
	closed := make(chan struct{})
	close(closed)
	var early, late, never doneSignal
	w := early.wait()
	early.fire(&closed)
	<-w
	late.fire(&closed)
	<-late.wait()
	never.fire(&closed)
	if never.ch.Load() != &closed {
		t.Fatal("a signal nobody waited on made a channel of its own")
	}
	var both doneSignal
	a, b := both.wait(), both.wait()
	if a != b {
		t.Fatal("two waits got different channels")
	}
	both.fire(&closed)
	<-a
}

// TestParkedPortSizes keeps what a parked plain port holds for good within
// the size classes issue 17's figure was measured with: a field added to
// a vmConn or a Port moves it to the next class (448 or 384 bytes), which
// every idle port pays.
func TestParkedPortSizes(t *testing.T) {
	if n := unsafe.Sizeof(vmConn{}); n > 416 {
		t.Errorf("vmConn is %d bytes, want at most 416 (move what few connections use to connRare)", n)
	}
	if n := unsafe.Sizeof(Port{}); n > 352 {
		t.Errorf("Port is %d bytes, want at most 352 (portTimers and a lazy cond keep what an attached idle port does not use apart)", n)
	}
}
