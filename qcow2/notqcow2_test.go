package qcow2

import (
	"errors"
	"testing"

	"github.com/qring/qring/block/memdev"
)

// TestOpen_NotQcow2IsNotCorrupt: a file that is no qcow2 image (a raw
// image, text) is ErrNotQcow2, with QEMU's words, and not ErrCorrupt: a
// program that repairs what is corrupt must not act on a raw file.
func TestOpen_NotQcow2IsNotCorrupt(t *testing.T) {
	for name, b := range map[string][]byte{
		"zeros": make([]byte, 1<<16),
		"text":  []byte("root:x:0:0:root:/root:/bin/bash\n"),
		"empty": nil,
	} {
		_, err := OpenDevice(memdev.FromBytes(b, memdev.Options{}), Options{})
		if !errors.Is(err, ErrNotQcow2) || errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v: want ErrNotQcow2 and not ErrCorrupt", name, err)
		}
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Qemu != "Image is not in qcow2 format" {
			t.Errorf("%s: %v: want a FieldError in QEMU's words", name, err)
		}
	}
}
