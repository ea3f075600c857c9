//go:build linux

package uring

import (
	"errors"
	"strings"
	"testing"

	"github.com/qring/qring/block"
)

// mustRefuse checks that err is a RefusedError naming mode, the
// fallocate that was refused, in its type and its message, and that it
// still is block.ErrNotSupported and the errno (U2, U15).
func mustRefuse(t *testing.T, err error, mode string) {
	t.Helper()
	var re *RefusedError
	if !errors.As(err, &re) {
		t.Fatalf("%v (%T): want a RefusedError", err, err)
	}
	if re.Mode != mode || !strings.Contains(err.Error(), "fallocate("+mode+") refused") {
		t.Fatalf("%q (mode %s): want the refusal of %s", err, re.Mode, mode)
	}
	if !errors.Is(err, block.ErrNotSupported) || !errors.Is(err, re.Err) || !refused(re.Err) {
		t.Fatalf("%v: not ErrNotSupported wrapping a refusing errno", err)
	}
}
