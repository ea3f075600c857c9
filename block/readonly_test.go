package block

import (
	"errors"
	"strings"
	"testing"
)

// ReadOnly refuses every write with ErrReadOnly and its Why, has
// nothing to flush, and once closed answers ErrClosed.
func TestReadOnly(t *testing.T) {
	r := &ReadOnly{Why: "fmt (reads only)"}
	for _, err := range []error{r.Writev(0, [][]byte{{1}}), r.WriteZeroes(0, 512, 0), r.Truncate(0)} {
		if !errors.Is(err, ErrReadOnly) || !strings.HasPrefix(err.Error(), "fmt (reads only): ") {
			t.Errorf("open: %v", err)
		}
	}
	if err := r.Flush(); err != nil {
		t.Errorf("flush: %v", err)
	}
	if r.Closed() || r.MarkClosed() || !r.MarkClosed() || !r.Closed() {
		t.Error("closing: Closed and MarkClosed disagree")
	}
	for _, err := range []error{r.Writev(0, nil), r.WriteZeroes(0, 512, 0), r.Truncate(0), r.Flush()} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("closed: %v", err)
		}
	}
}
