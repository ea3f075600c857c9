package sched

import (
	"fmt"

	"github.com/qring/qring/block"
)

// ErrBusy is returned by Tracker.Begin with noWait when the request would
// have to wait (S3). It matches block.ErrBusy under errors.Is, so device
// layers can pass it up unchanged.
var ErrBusy = fmt.Errorf("sched: %w", block.ErrBusy)
