package reconcile_test

import (
	"testing"

	"github.com/seed157d4c4d/reliablemq/internal/testenv"
	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them,
// apart from the official client's own (see testenv.ClientLeakOptions).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.ClientLeakOptions()...)
}
