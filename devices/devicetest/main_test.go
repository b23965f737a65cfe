package devicetest

import (
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/internal/leaktest"
)

// TestMain fails the run if goroutines started by the tests outlive them.
func TestMain(m *testing.M) { leaktest.Main(m, 2*time.Second) }
