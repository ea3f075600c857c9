package sched

import (
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestClusterMetrics_SubEveryField: Sub subtracts every counter and keeps the
// gauges (InFlight, PeakInFlight) from its receiver, so a counter added
// to ClusterMetrics and forgotten in Sub fails here.
func TestClusterMetrics_SubEveryField(t *testing.T) {
	testkit.CheckSub(t, ClusterMetrics.Sub, "InFlight", "PeakInFlight")
}
