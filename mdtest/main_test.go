package mdtest_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if any goroutine (of the broker, the listeners, the
// subscriptions or the test clients) outlives the tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
