package uring

import (
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestMetrics_SubEveryField: Sub subtracts every counter, so a counter added to
// Metrics and forgotten in Sub fails here.
func TestMetrics_SubEveryField(t *testing.T) {
	testkit.CheckSub(t, Metrics.Sub)
}
