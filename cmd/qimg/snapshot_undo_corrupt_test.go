package main

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/qring/qring/qcow2"
)

// TestSnapshot_CloseErrorSaysCorrupt: a snapshot operation whose failure
// marked the image corrupt (qcow2's undoIncrementsLocked when the undo
// fails too) printed only qemu-img's "Could not create snapshot 'x': -5
// (Input/output error)", the undo's errno, and dropped Close's error
// (review of 8908bd0): the user was not told the image is now marked
// corrupt. Close's error now follows when it says so; otherwise the
// operation's message stands alone, as qemu-img's.
func TestSnapshot_CloseErrorSaysCorrupt(t *testing.T) {
	op := fmt.Errorf("Could not create snapshot 'x': -%d (%s)", int(syscall.EIO), strerror(syscall.EIO))
	corrupt := fmt.Errorf("%w: image marked corrupt, closed without flushing: undoing refcount increments", qcow2.ErrCorrupt)
	if got := withCloseErr(op, corrupt); !errors.Is(got, qcow2.ErrCorrupt) && !strings.Contains(got.Error(), "marked corrupt") || !strings.HasPrefix(got.Error(), op.Error()) {
		t.Errorf("op failed, image marked corrupt: %q", got)
	}
	if got := withCloseErr(op, errors.New("flush: input/output error")); got != op {
		t.Errorf("op failed, close failed otherwise: %q, want the op's message alone", got)
	}
	if got := withCloseErr(nil, corrupt); got != corrupt {
		t.Errorf("op succeeded: %v, want Close's error", got)
	}
	if got := withCloseErr(op, nil); got != op {
		t.Errorf("close succeeded: %v", got)
	}
}
