package errordev_test

import (
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/blocktest"
	"github.com/qring/qring/block/errordev"
	"github.com/qring/qring/block/memdev"
)

// TestConformance: errordev with no fault armed is a transparent device,
// with and without an injector that never fires.
func TestConformance(t *testing.T) {
	for _, tc := range []struct {
		name string
		inj  errordev.Injector
	}{
		{"no-injector", nil},
		{"never-fires", errordev.Randomly(0, 1, errordev.ErrInjectedEIO)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := blocktest.NewStall()
			blocktest.Run(t, func(t *testing.T) block.Device {
				return errordev.New(memdev.New(memdev.Options{OnWrite: st.Hook}), tc.inj, errordev.Options{})
			}, blocktest.Config{Stall: st, Crash: blocktest.CrashMem})
		})
	}
}
