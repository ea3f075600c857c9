package qcow2

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/qring/qring/block/memdev"
)

// TestTruncatePrealloc_NoSpaceCutsBack: a growth with falloc or full
// preallocation that runs out of space fails at the step QEMU 7.2's
// qcow2_co_truncate fails at, and leaves the file as QEMU's file driver
// leaves it, cut back to its length before the data's space was asked
// for: the new refcount table (qcow2_refcount_area) written, nothing
// past it. With 1 MiB free the table fits and the data do not ("Failed
// to resize underlying file: ..."); with 32 KiB not even the table
// ("Failed to resize refcount structures"). The failed growth linked
// its clusters first and left the file as long as the grown image. With
// a reserve ahead the file keeps the reserve.
func TestTruncatePrealloc_NoSpaceCutsBack(t *testing.T) {
	const cs = 64 << 10
	for _, mode := range []string{PreallocFull, PreallocFalloc} {
		for _, reserve := range []bool{false, true} {
			for _, c := range []struct {
				free int64
				step string
				grew int64 // the file's growth QEMU's leaves
			}{
				{1 << 20, "Failed to resize underlying file: Could not", cs},
				{32 << 10, "Failed to resize refcount structures", 0},
			} {
				t.Run(fmt.Sprintf("%s/reserve=%v/free=%d", mode, reserve, c.free), func(t *testing.T) {
					mem := memdev.New(memdev.Options{NoAllocate: mode == PreallocFalloc})
					if err := CreateDevice(mem, CreateOptions{Size: 10 << 20, ClusterSize: cs}); err != nil {
						t.Fatal(err)
					}
					d := &fullDev{Dev: mem, limit: 1 << 40}
					o := Options{PreallocSize: -1} // as qimg resize: no reserve ahead
					if reserve {
						o = Options{PreallocSize: 1 << 20}
					}
					im, err := OpenDevice(d, o)
					if err != nil {
						t.Fatal(err)
					}
					data := pattern(cs, 7)
					mustWrite(t, im, data, 0)
					if err := im.Flush(); err != nil {
						t.Fatal(err)
					}
					before, _ := mem.Size()
					d.limit = before + c.free
					err = im.TruncatePrealloc(200<<20, mode)
					var se *StepError
					if !errors.As(err, &se) || !reserve && !strings.HasPrefix(se.Step, c.step) { // a reserve may hold the table
						t.Errorf("TruncatePrealloc: %v; want the step %q", err, c.step)
					}
					if n, _ := im.Size(); n != 10<<20 {
						t.Errorf("size %d after the failure", n)
					}
					if sz, _ := mem.Size(); !reserve && sz != before+c.grew || reserve && sz > max(before, before+c.grew) {
						t.Errorf("file of %d bytes after the failure, %d before: want %d", sz, before, before+c.grew)
					}
					got := make([]byte, cs)
					if _, err := im.ReadAt(got, 0); err != nil || string(got) != string(data) {
						t.Errorf("data after the failure: %v", err)
					}
					if err := im.Close(); err != nil {
						t.Fatal(err)
					}
					ro, err := OpenDevice(mem, Options{ReadOnly: true})
					if err != nil {
						t.Fatal(err)
					}
					defer ro.Close()
					r, err := ro.Check(CheckOptions{})
					if err != nil || r.Corruptions != 0 || r.CheckErrors != 0 {
						t.Errorf("check: %v, %d corruptions, %d errors: %v", err, r.Corruptions, r.CheckErrors, r.Messages)
					}
				})
			}
		}
	}
}
