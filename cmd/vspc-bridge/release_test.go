package main

import "testing"

// The releaser fires once per storm: when the parked connections reach a
// new high (by 1,000 and a quarter over the last release), at the first
// check where the count holds still; never while it is still moving, for
// small changes, or when connections that woke park again.
func TestReleaser(t *testing.T) {
	for _, tc := range []struct {
		name    string
		samples []int
		fire    []bool
	}{
		{"a storm parks, then holds", []int{0, 6000, 17000, 18000, 18000, 18000}, []bool{false, false, false, false, true, false}},
		{"small changes never fire", []int{0, 500, 900, 990, 990}, []bool{false, false, false, false, false}},
		{"a rise of a quarter after a release fires again", []int{18000, 18000, 23000, 23000}, []bool{false, true, false, true}},
		{"a rise under a quarter of a large base does not", []int{18000, 18000, 20000, 20000}, []bool{false, true, false, false}},
		{"wake storm, then they park again", []int{0, 9000, 9000, 100, 9000, 9000}, []bool{false, false, true, false, false, false}},
		{"a storm past the last high after a wake storm", []int{0, 9000, 9000, 100, 9000, 9000, 12000, 12000}, []bool{false, false, true, false, false, false, false, true}},
		{"a count that falls back and holds does not", []int{0, 9000, 9000, 20000, 5000, 5000}, []bool{false, false, true, false, false, false}},
		{"still moving by more than 1 %", []int{0, 5000, 5200, 5210}, []bool{false, false, false, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r releaser
			for i, n := range tc.samples {
				if got := r.sample(n); got != tc.fire[i] {
					t.Fatalf("sample %d (%d parked): release %v, want %v", i, n, got, tc.fire[i])
				}
			}
		})
	}
}
