package vmdk_test

import (
	"errors"
	"testing"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/vmdk"
	"github.com/qring/qring/vmdk/format"
)

// TestCreateHugeSize: a size within a sector of the int64 limit is
// refused as too large, with nothing written. NewPlan rounded it up to a
// sector first, which overflowed into a negative size that its checks
// let by: a plan with a capacity of 2^64 - 2^58 sectors, whose header
// Create wrote before a later write failed, leaving a file qemu-img
// cannot open ("File truncated, expecting at least -1128098929967104
// bytes").
func TestCreateHugeSize(t *testing.T) {
	for _, size := range []int64{1<<63 - 1, 1<<63 - 511, 1<<63 - 512} {
		if _, err := format.NewPlan(format.NewOptions{Size: size}); !errors.Is(err, format.ErrTooLarge) {
			t.Errorf("NewPlan(%d) = %v, want ErrTooLarge", size, err)
		}
		f := memdev.New(memdev.Options{})
		if _, err := vmdk.Create(f, vmdk.CreateOptions{NewOptions: format.NewOptions{Size: size}, Name: "x.vmdk"}); !errors.Is(err, format.ErrTooLarge) {
			t.Errorf("Create(%d) = %v, want ErrTooLarge", size, err)
		}
		if n, _ := f.Size(); n != 0 {
			t.Errorf("Create(%d) wrote %d bytes", size, n)
		}
	}
	// Rounding is unchanged below the limit.
	p, err := format.NewPlan(format.NewOptions{Size: 1000})
	if err != nil || p.Header.Capacity != 2 {
		t.Errorf("NewPlan(1000) = capacity %d, %v; want 2 sectors", p.Header.Capacity, err)
	}
}
