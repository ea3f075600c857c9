package nbd

import (
	"testing"

	"github.com/qring/qring/block/memdev"
)

// roDev is a device that says it is read-only (as a *qcow2.Image opened
// read-only does).
type roDev struct{ *memdev.Dev }

func (roDev) ReadOnly() bool { return true }

// TestExport_ReadOnlyDevice: an export of a device that says it is
// read-only is advertised read-only and refuses writes with EPERM, even
// when Export.ReadOnly is unset (it was advertised writable, and every
// write then failed).
func TestExport_ReadOnlyDevice(t *testing.T) {
	s := newTestServer(t, &Export{Name: "", Dev: roDev{newMem(memdev.Options{})}})
	c := dial(t, s)
	if _, flags := c.connect("", true); flags&FlagReadOnly == 0 || flags&(FlagSendTrim|FlagSendWriteZeroes) != 0 {
		t.Fatalf("flags 0x%x: want read-only, no TRIM or WRITE_ZEROES", flags)
	}
	for _, typ := range []uint16{cmdWrite, cmdWriteZeroes, cmdTrim} {
		var pl []byte
		if typ == cmdWrite {
			pl = []byte{1}
		}
		if code, _, _ := c.do(typ, 0, 0, 1, pl); code != errPerm {
			t.Errorf("%s on a read-only device: %d, want EPERM", cmdName(typ), code)
		}
	}
}
