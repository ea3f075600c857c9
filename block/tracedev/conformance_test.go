package tracedev_test

import (
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/blocktest"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/block/tracedev"
)

// TestConformance: tracedev over memdev keeps the device contract.
func TestConformance(t *testing.T) {
	st := blocktest.NewStall()
	blocktest.Run(t, func(t *testing.T) block.Device {
		return tracedev.New(memdev.New(memdev.Options{OnWrite: st.Hook}), tracedev.Options{})
	}, blocktest.Config{Stall: st, Crash: blocktest.CrashMem})
}
