// Package leaktest fails a package's test run when goroutines started by
// this module outlive the tests. Every package with goroutines calls Main
// from its TestMain.
package leaktest

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// module is the import path prefix whose goroutines must not leak.
const module = "github.com/vspc-bridge/vspc-bridge/"

// Main runs the tests and then waits up to wait for the module's
// goroutines to end; any left make the run fail with their stacks.
func Main(m *testing.M, wait time.Duration) { os.Exit(Run(m, wait)) }

// Run is Main without the exit, for a TestMain that has more to tear
// down after the check: it returns the exit code.
func Run(m *testing.M, wait time.Duration) int {
	code := m.Run()
	if code == 0 {
		if leaked := Leaked(wait); leaked != "" {
			fmt.Fprintf(os.Stderr, "leaked goroutines:\n%s\n", leaked)
			code = 1
		}
	}
	return code
}

// Leaked waits up to wait for every goroutine running this module's code
// (other than the caller and the test framework) to end, and returns the
// stacks of those still running.
func Leaked(wait time.Duration) string {
	deadline := time.Now().Add(wait)
	buf := make([]byte, 1<<20)
	for {
		buf = buf[:runtime.Stack(buf[:cap(buf)], true)]
		var left []string
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			if !strings.Contains(g, module) || strings.Contains(g, "leaktest.") ||
				strings.Contains(g, "testing.tRunner") || strings.Contains(g, ".TestMain(") {
				continue
			}
			left = append(left, g)
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return strings.Join(left, "\n\n")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
