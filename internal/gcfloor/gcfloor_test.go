package gcfloor

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
)

// report is what a helper process measured.
type report struct {
	GCsSmall    uint32 // collections while the live heap grew to 24 MiB
	GCsLarge    uint32 // collections while it grew on to 96 MiB
	LimitActive int64  // the memory limit while the floor was up
	Ended       bool   // the floor ended by itself once the heap outgrew it
	Percent     int    // GOGC once the heap is past the floor
	AfterStop   int    // GOGC after Stop
	LimitAfter  int64  // the memory limit after Stop
}

const childEnv = "GCFLOOR_CHILD"

// helper runs this test binary as a fresh process (a heap with no past)
// with mode "floor" or "none" and the extra environment.
func helper(t *testing.T, mode string, env ...string) report {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestGCFloor$", "-test.count=1")
	cmd.Env = append(append(os.Environ(), childEnv+"="+mode), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper %s: %v\n%s", mode, err, out)
	}
	for line := range strings.Lines(string(out)) {
		if s, ok := strings.CutPrefix(line, "gcfloor "); ok {
			var r report
			if err := json.Unmarshal([]byte(s), &r); err != nil {
				t.Fatal(err)
			}
			return r
		}
	}
	t.Fatalf("helper %s printed no report:\n%s", mode, out)
	return report{}
}

func TestGCFloor(t *testing.T) {
	if mode := os.Getenv(childEnv); mode != "" {
		child(t, mode)
		return
	}
	none := helper(t, "none")
	floor := helper(t, "floor")
	t.Logf("collections while the live heap grows to 24 MiB: %d without a floor, %d with a 32 MiB floor", none.GCsSmall, floor.GCsSmall)
	if none.GCsSmall < 2 {
		t.Errorf("without a floor only %d collections while the heap grew to 24 MiB; the test no longer shows anything", none.GCsSmall)
	}
	if floor.GCsSmall != 0 {
		t.Errorf("%d collections under a 32 MiB floor while the live heap grew to 24 MiB, want 0", floor.GCsSmall)
	}
	if floor.GCsLarge == 0 {
		t.Error("no collection while the live heap grew from 24 to 96 MiB: the floor did not give way")
	}
	if !floor.Ended || floor.Percent != 100 || floor.AfterStop != 100 {
		t.Errorf("past the floor: ended %v, GOGC %d, and %d after Stop; want true, 100, 100", floor.Ended, floor.Percent, floor.AfterStop)
	}
	if floor.LimitActive != limitFactor*32<<20 || floor.LimitAfter != math.MaxInt64 {
		t.Errorf("memory limit %d while the floor was up and %d after, want %d and none", floor.LimitActive, floor.LimitAfter, limitFactor*32<<20)
	}

	// An operator's GOGC is the base the floor returns to.
	r := helper(t, "floor", "GOGC=200")
	if r.Percent != 200 || r.AfterStop != 200 {
		t.Errorf("GOGC=200: %d past the floor and %d after Stop, want 200", r.Percent, r.AfterStop)
	}
	// GOGC=off: the floor does nothing.
	r = helper(t, "floor", "GOGC=off")
	if r.Percent != -1 || r.AfterStop != -1 || r.LimitActive != math.MaxInt64 {
		t.Errorf("GOGC=off: percent %d / %d after Stop, limit %d; want -1 and no limit (untouched)", r.Percent, r.AfterStop, r.LimitActive)
	}
	// A memory limit too small to hold the floor: the floor does nothing
	// and the operator's limit stays.
	r = helper(t, "floor", "GOMEMLIMIT=100MiB")
	if r.GCsSmall < 2 || r.LimitActive != 100<<20 || r.LimitAfter != 100<<20 {
		t.Errorf("GOMEMLIMIT=100MiB: %d collections to 24 MiB, limit %d while up and %d after; want >= 2 and 100 MiB throughout", r.GCsSmall, r.LimitActive, r.LimitAfter)
	}
}

func child(t *testing.T, mode string) {
	var f *Floor
	if mode == "floor" {
		f = Start(32 << 20)
	}
	numGC := func() uint32 {
		var st runtime.MemStats
		runtime.ReadMemStats(&st)
		return st.NumGC
	}
	var r report
	r.LimitActive = debug.SetMemoryLimit(-1)
	var keep [][]byte
	grow := func(toMiB int) uint32 {
		gc0 := numGC()
		for len(keep) < toMiB<<10 {
			keep = append(keep, make([]byte, 1024))
		}
		return numGC() - gc0
	}
	r.GCsSmall, r.GCsLarge = grow(24), grow(96)
	if f != nil {
		// The cleanup that ends the floor runs after a collection, on its
		// own goroutine: collect until it has (the parent checks Ended).
		testwait.Until(t, testwait.Timeout, func() bool {
			if active, _ := f.Active(); !active {
				return true
			}
			runtime.GC()
			return false
		})
		var active bool
		active, r.Percent = f.Active()
		r.Ended = !active
		f.Stop()
	}
	r.AfterStop = currentPercent()
	r.LimitAfter = debug.SetMemoryLimit(-1)
	runtime.KeepAlive(keep)
	b, _ := json.Marshal(r)
	fmt.Printf("gcfloor %s\n", b)
}
