package main

import (
	"os"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/internal/leaktest"
)

// TestMain fails the run if goroutines started by the tests outlive them.
// With VSPC_BRIDGE_TEST_MAIN=1 the test binary is vspc-bridge itself, for
// tests that need it as a process (a terminal on its standard input).
func TestMain(m *testing.M) {
	if os.Getenv("VSPC_BRIDGE_TEST_MAIN") == "1" {
		main()
		return
	}
	leaktest.Main(m, 3*time.Second)
}
