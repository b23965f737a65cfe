package remote_test

import (
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/internal/leaktest"
)

// TestMain fails the run if goroutines started by this package outlive
// the tests (a session, writer, listener or log writer that did not end).
func TestMain(m *testing.M) { leaktest.Main(m, 3*time.Second) }
