package testwait

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestForReturnsOnceTrue(t *testing.T) {
	var n atomic.Int32
	go func() {
		for range 3 {
			n.Add(1)
		}
	}()
	For(t, "three increments", func() bool { return n.Load() == 3 })
}

func TestUntilGivesUp(t *testing.T) {
	calls := 0
	if Until(t, 10*time.Millisecond, func() bool { calls++; return false }) {
		t.Fatal("Until reported success for a condition that never held")
	}
	if calls < 2 {
		t.Fatalf("cond ran %d times, want several polls", calls)
	}
}
