package luksdisk

import (
	"errors"
	"os"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/blocktest"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/crypto/luks"
)

// TestConformance: a LUKS volume over a memdev keeps the block.Device
// contract (blocktest), its crash clones reopened with the key.
func TestConformance(t *testing.T) {
	_, area, _, err := luks.Create([]byte("pw"), luks.CreateOptions{Iterations: 1000})
	if err != nil {
		t.Fatal(err)
	}
	st := blocktest.NewStall()
	open := func(t *testing.T, m block.Device, writable bool) block.Device {
		d, err := Open(m, Options{Passphrase: []byte("pw"), Writable: writable})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := d.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
				t.Error(err)
			}
		})
		return d
	}
	blocktest.Run(t, func(t *testing.T) block.Device {
		m := memdev.New(memdev.Options{OnWrite: st.Hook})
		if err := m.Writev(0, [][]byte{area}); err != nil {
			t.Fatal(err)
		}
		return open(t, m, true)
	}, blocktest.Config{
		Stall: st,
		Crash: func(t *testing.T, d block.Device) block.Device { return open(t, blocktest.CrashMem(t, d), true) },
		ReadOnly: func(t *testing.T, d block.Device) block.Device {
			return open(t, noClose{d.(*Disk).File()}, false)
		},
		ReadOnlyErr: ErrReadOnly,
		Skip: map[string]string{
			"B2_read_past_eof": "the payload is whole sectors: a write past the end grows it to its sector's end (QEMU's size too)",
			"B4_zeroes":        "the payload is whole sectors: zeroing past the end grows it to its sector's end (QEMU's size too)",
		},
	})
}

// noClose is a device whose Close leaves it open (a second view of a
// file another disk owns).
type noClose struct{ block.Device }

func (noClose) Close() error { return nil }
