package qcow2

import (
	"errors"
	"testing"

	"github.com/qring/qring/internal/protocol"
)

// backingPath reads a header's backing file name as QEMU 7.2 does: a
// protocol prefix is never joined to the image's directory.
func TestBackingPath(t *testing.T) {
	for _, tc := range []struct {
		name, image, want string
		proto             bool // a *protocol.Error
		fails             bool
	}{
		{"base.qcow2", "/imgs/top.qcow2", "/imgs/base.qcow2", false, false},
		{"../b/base.qcow2", "d/top.qcow2", "b/base.qcow2", false, false},
		{"/abs/base.qcow2", "/imgs/top.qcow2", "/abs/base.qcow2", false, false},
		{"file:base.qcow2", "/imgs/top.qcow2", "base.qcow2", false, false},
		{"file:/abs/base.qcow2", "/imgs/top.qcow2", "/abs/base.qcow2", false, false},
		{"dir/a:b.qcow2", "/imgs/top.qcow2", "/imgs/dir/a:b.qcow2", false, false},
		{"nbd:localhost:10809", "/imgs/top.qcow2", "", false, true}, // the tools' opener's (OpenBacking)
		{"foo:bar", "/imgs/top.qcow2", "", true, true},
		{`json:{"driver":"raw"}`, "/imgs/top.qcow2", "", false, true},
		{"base.qcow2", "", "base.qcow2", false, false},
	} {
		got, err := backingPath(tc.name, tc.image)
		var pe *protocol.Error
		if (err != nil) != tc.fails || errors.As(err, &pe) != tc.proto || got != tc.want {
			t.Errorf("backingPath(%q, %q) = %q, %v; want %q (fails %v, protocol error %v)", tc.name, tc.image, got, err, tc.want, tc.fails, tc.proto)
		}
	}
}
