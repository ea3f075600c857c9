package latdev_test

import (
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/blocktest"
	"github.com/qring/qring/block/latdev"
	"github.com/qring/qring/block/memdev"
)

// TestConformance: latdev over memdev keeps the device contract. The
// model charges a little per op and seeks, with 8 ops in parallel (a
// Parallel of 1 models a single-head disk and so, by design, makes
// disjoint requests wait for each other: it would fail B1_no_wait).
func TestConformance(t *testing.T) {
	st := blocktest.NewStall()
	m := latdev.Model{PerOp: 2 * time.Microsecond, SeekMin: time.Microsecond, Parallel: 8, Media: block.MediaHDD}
	blocktest.Run(t, func(t *testing.T) block.Device {
		return latdev.New(memdev.New(memdev.Options{OnWrite: st.Hook}), m)
	}, blocktest.Config{Stall: st, Crash: blocktest.CrashMem})
}
