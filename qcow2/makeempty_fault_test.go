package qcow2

import (
	"bytes"
	"errors"
	"testing"

	"github.com/qring/qring/block/errordev"
	"github.com/qring/qring/block/memdev"
)

// TestFaultSweep_MakeEmpty fails each device op of MakeEmpty in turn
// (EIO, ENOSPC; with and without passing discards down), as it drops the
// emptied L2 tables too: the open image reads zeros or its old data per cluster,
// closes, and the file reopens with no corruption (leaks allowed) and
// reads as the open image did.
func TestFaultSweep_MakeEmpty(t *testing.T) {
	t.Parallel()
	const size = 16 << 20
	for _, npd := range []bool{false, true} {
		for _, ferr := range []error{errordev.ErrInjectedEIO, errordev.ErrInjectedENOSPC} {
			for idx := int64(0); ; idx++ {
				mem := memdev.New(memdev.Options{})
				if err := CreateDevice(mem, CreateOptions{Size: size, ClusterSize: 4096}); err != nil {
					t.Fatal(err)
				}
				ed := errordev.New(mem, nil, errordev.Options{})
				im, err := OpenDevice(ed, Options{NoPassDiscard: npd})
				if err != nil {
					t.Fatal(err)
				}
				for off := int64(0); off < size; off += 1 << 20 {
					writeAt(t, im, off+8192, pattern(8192, byte(off>>20)+1))
				}
				if err := im.Flush(); err != nil {
					t.Fatal(err)
				}
				inj := errordev.OnIndex(idx, ferr)
				ed.SetInjector(inj)
				merr := im.MakeEmpty()
				if inj.Fired() == 0 {
					if merr != nil {
						t.Fatal(merr)
					}
					t.Logf("npd=%v %v: %d ops swept", npd, ferr, idx)
					break
				}
				ed.SetInjector(nil)
				got := make([]byte, size)
				if _, err := im.ReadAt(got, 0); err != nil {
					t.Fatalf("idx %d: read: %v", idx, err)
				}
				for off := int64(0); off < size; off += 1 << 20 {
					b := got[off+8192 : off+16384]
					if !bytes.Equal(b, pattern(8192, byte(off>>20)+1)) && !bytes.Equal(b, make([]byte, 8192)) {
						t.Fatalf("idx %d (%v): the data at %d is neither its own nor zeros", idx, merr, off+8192)
					}
				}
				im.Close() // may fail after the fault
				im2, err := OpenDevice(memdev.FromBytes(mem.Bytes(), memdev.Options{}), Options{ReadOnly: true})
				if err != nil {
					t.Fatalf("idx %d (%v): reopen: %v", idx, merr, err)
				}
				r, err := im2.Check(CheckOptions{})
				if err != nil || r.Corruptions != 0 || r.CheckErrors != 0 {
					t.Fatalf("idx %d (%v): check: %v %+v", idx, merr, err, r)
				}
				after := make([]byte, size)
				if _, err := im2.ReadAt(after, 0); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, after) && !errors.Is(merr, ErrWritesLost) {
					t.Errorf("idx %d (%v): reopened image reads otherwise than the open one did", idx, merr)
				}
				im2.Close()
			}
		}
	}
}
