package keepalive

import (
	"net"
	"testing"
	"time"
)

func TestSpread(t *testing.T) {
	for _, tc := range []struct {
		k    time.Duration
		want []int // seconds, for n = 0, 1, ...
	}{
		{30 * time.Second, []int{30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 30}},
		{31 * time.Second, []int{31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 31}},
		{3 * time.Second, []int{3, 2, 3, 2}},
		{2 * time.Second, []int{2, 1, 2}},
		{1 * time.Second, []int{1, 1}},
		{500 * time.Millisecond, []int{1, 1}},
		{2500 * time.Millisecond, []int{2, 1, 2}},
	} {
		for n, w := range tc.want {
			if got := Spread(tc.k, uint64(n)); got != time.Duration(w)*time.Second {
				t.Errorf("Spread(%v, %d) = %v, want %ds", tc.k, n, got, w)
			}
		}
	}
	// A two-hour keepalive spreads over an hour, whole seconds.
	k := 2 * time.Hour
	if got := Spread(k, 3600); got != time.Hour {
		t.Errorf("Spread(2h, 3600) = %v, want 1h", got)
	}
	if got := Spread(k, 3601); got != k {
		t.Errorf("Spread(2h, 3601) = %v, want 2h", got)
	}
}

// TestSpreader: a group's connections get the spread in turn, and
// Default is Go's keepalive with that idle time.
func TestSpreader(t *testing.T) {
	var s Spreader
	for n, w := range []int{30, 29, 28} {
		if got := s.Next(30 * time.Second); got != time.Duration(w)*time.Second {
			t.Errorf("Next #%d = %v, want %ds", n, got, w)
		}
	}
	var d Spreader
	for n, w := range []int{15, 14, 13, 12, 11, 10, 9, 8, 15} {
		want := net.KeepAliveConfig{Enable: true, Idle: time.Duration(w) * time.Second, Interval: 15 * time.Second, Count: 9}
		if got := d.Default(); got != want {
			t.Errorf("Default #%d = %+v, want %+v", n, got, want)
		}
	}
}
