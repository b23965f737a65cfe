package bridge_test

import (
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/internal/leaktest"
)

// TestMain fails the run if goroutines started by the tests outlive them
// (sessions, port writers, links, timers).
func TestMain(m *testing.M) { leaktest.Main(m, 5*time.Second) }
