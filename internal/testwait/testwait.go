// Package testwait is the one way tests wait for state they can observe:
// a condition polled with a short backoff until it holds, with a deadline
// that is generous on purpose. A wait that succeeds costs only the time the
// condition took; the deadline only bounds how long a broken test hangs, so
// it is long enough that two busy cores never hit it by accident.
//
// Tests wait on visible state (a port's state, a queue's length, a file's
// contents), never on a sleep that hopes the state has been reached.
package testwait

import (
	"testing"
	"time"
)

// Timeout bounds every wait. It is far above anything a passing test needs:
// a wait that takes this long is a failure, not a slow machine.
const Timeout = 60 * time.Second

// For polls cond until it returns true, and fails the test with what when it
// has not within Timeout (or before the test's own deadline, whichever comes
// first). cond runs on the test goroutine.
func For(t testing.TB, what string, cond func() bool) {
	t.Helper()
	if !Until(t, Timeout, cond) {
		t.Fatalf("timed out after waiting for %s", what)
	}
}

// Until polls cond until it returns true or d has passed, and reports
// whether it did. It never fails the test; callers that need a custom
// failure message use it.
func Until(t testing.TB, d time.Duration, cond func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(d)
	if td, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if end, ok := td.Deadline(); ok && end.Add(-5*time.Second).Before(deadline) {
			deadline = end.Add(-5 * time.Second)
		}
	}
	for pause := 100 * time.Microsecond; ; {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return cond()
		}
		time.Sleep(pause)
		pause = min(2*pause, 20*time.Millisecond)
	}
}
