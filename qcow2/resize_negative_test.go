package qcow2

import (
	"errors"
	"strings"
	"testing"
)

// TestResize_NegativeSize: a negative new size is refused as negative by
// Truncate and Shrink alike (Truncate(-1) said it was not a multiple of
// 512, Truncate(-512) that it shrank the image), and nothing changes.
func TestResize_NegativeSize(t *testing.T) {
	im, _ := testImage(t, CreateOptions{Size: 1 << 20}, Options{})
	for _, f := range []func(int64) error{im.Truncate, im.Shrink} {
		for _, size := range []int64{-1, -512, -1 << 62} {
			if err := f(size); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "negative size") {
				t.Errorf("size %d: %v", size, err)
			}
		}
	}
	if n, err := im.Size(); err != nil || n != 1<<20 {
		t.Fatalf("size after the refusals: %d, %v", n, err)
	}
}
