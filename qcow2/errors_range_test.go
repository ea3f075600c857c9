package qcow2

import (
	"errors"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
)

// A guest request past the virtual size fails with ErrOutOfRange, which
// is also the device contract's block.ErrRange (a caller holding a
// block.Device matches that one), and writes nothing.
func TestErrOutOfRange_MatchesBlockErrRange(t *testing.T) {
	const size = 1 << 20
	im, _ := memImage(t, CreateOptions{Size: size}, Options{}, memdev.Options{})
	buf := make([]byte, 4096)
	for i := range buf {
		buf[i] = 0xa5
	}
	var dev block.Device = im
	for name, err := range map[string]error{
		"WriteAt":     func() error { _, err := im.WriteAt(buf, size-2048); return err }(),
		"Writev":      dev.Writev(size, [][]byte{buf}),
		"WriteZeroes": dev.WriteZeroes(size-512, 4096, 0),
	} {
		if !errors.Is(err, ErrOutOfRange) || !errors.Is(err, block.ErrRange) {
			t.Errorf("%s past the end: %v, want ErrOutOfRange matching block.ErrRange", name, err)
		}
	}
	got := make([]byte, 4096)
	if _, err := im.ReadAt(got, size-4096); err != nil {
		t.Fatal(err)
	}
	for i, b := range got {
		if b != 0 {
			t.Fatalf("byte %d of the last block is %#x after refused writes, want 0", size-4096+i, b)
		}
	}
}
