package qcow2

import (
	"bytes"
	"encoding/binary"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// TestRebuild_LiveImagePlacedInside: a Check(RepairAll) of an image open
// and written (bitmaps maintained, discards pending and held, compressed
// stream open, space reserved ahead and filled), whose refcount block 1
// is a data cluster the open cannot see: the rebuild places its
// structures in clusters nothing references inside the file. Writes go
// on after it; the image must read as the model, and check clean.
func TestRebuild_LiveImagePlacedInside(t *testing.T) {
	testkit.NeedQemu(t)
	for _, tc := range []struct {
		name string
		co   CreateOptions
		o    Options
	}{
		{"default", CreateOptions{Size: 64 << 20}, Options{}},
		{"fill", CreateOptions{Size: 64 << 20, ClusterSize: 4096}, Options{PreallocFill: FillZeroes, PreallocSize: 2 << 20}},
		{"c512", CreateOptions{Size: 8 << 20, ClusterSize: 512, RefcountBits: 4}, Options{}},
		{"xl2", CreateOptions{Size: 64 << 20, ClusterSize: 32 << 10, ExtendedL2: true}, Options{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			im, d := memImage(t, tc.co, Options{}, memdev.Options{})
			size := int(tc.co.Size)
			model := make([]byte, size)
			w := func(im *Image, p []byte, off int) {
				t.Helper()
				mustWrite(t, im, p, int64(off))
				copy(model[off:], p)
			}
			w(im, pattern(size/4, 3), 0)
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			b := d.Bytes()
			be := binary.BigEndian
			rt := be.Uint64(b[48:])
			l2 := be.Uint64(b[be.Uint64(b[40:]):]) & format.L1OffsetMask
			e0 := be.Uint64(b[l2:]) & format.L1OffsetMask
			// Refcount block 1 is the first data cluster: its range
			// lies far past the file, where nothing allocates.
			be.PutUint64(b[rt+(1<<be.Uint32(b[20:]))-8:], e0) // the last entry of the table's first cluster
			mem := memdev.FromBytes(b, memdev.Options{})
			im, err := OpenDevice(mem, tc.o)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			if err := im.AddBitmap("b0", 65536, true); err != nil {
				t.Fatal(err)
			}
			cs := int(im.Geometry().ClusterSize)
			// Free clusters inside: discards of what was written.
			if err := im.Discard(int64(size/16), int64(size/16)); err != nil {
				t.Fatal(err)
			}
			for i := range size / 4 / (8 * cs) {
				off := int64(size/8 + i*8*cs)
				if err := im.Discard(off, int64(cs)); err != nil {
					t.Fatal(err)
				}
			}
			copy(model[size/16:size/8], make([]byte, size/16))
			for i := range size / 4 / (8 * cs) {
				off := size/8 + i*8*cs
				if off+cs <= size/4 {
					clear(model[off : off+cs])
				}
			}
			if !tc.co.ExtendedL2 {
				p := pattern(4*cs, 9)
				if err := im.WriteCompressed(int64(size/2), p[:cs]); err != nil {
					t.Fatal(err)
				}
				copy(model[size/2:], p[:cs])
			}
			w(im, pattern(size/8, 5), size/2+cs)
			// Concurrent guest I/O while the check runs: overwrites
			// and reads of clusters in use.
			var wg sync.WaitGroup
			stop := make(chan struct{})
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, cs)
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					im.ReadAt(buf, int64((i%16)*cs))
				}
			}()
			r, err := im.Check(CheckOptions{Repair: RepairAll})
			close(stop)
			wg.Wait()
			if err != nil {
				t.Fatalf("check: %v", err)
			}
			msgs := strings.Join(r.Messages, "\n")
			if !strings.Contains(msgs, "Rebuilding refcount structure") {
				t.Fatalf("no rebuild: %+v\n%s", r, msgs)
			}
			if r.Corruptions != 0 {
				t.Fatalf("after -r all: %+v\n%s", r, msgs)
			}
			t.Logf("header reftable at %#x, file %d", im.Header().RefcountTableOffset, func() int64 { n, _ := mem.Size(); return n }())
			// Writes after the rebuild allocate from the new refcounts.
			w(im, pattern(size/8, 11), size/16)
			w(im, pattern(3*cs, 12), size-3*cs)
			if err := im.Discard(int64(size/2+cs), int64(4*cs)); err != nil {
				t.Fatal(err)
			}
			clear(model[size/2+cs : size/2+5*cs])
			w(im, pattern(size/16, 13), size*3/4)
			got := make([]byte, size)
			if _, err := im.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, model) {
				t.Fatal("the image reads differently from the model before close")
			}
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(t.TempDir(), "img.qcow2")
			if err := mem.WriteFile(p); err != nil {
				t.Fatal(err)
			}
			testkit.QemuCheck(t, p)
			im, err = OpenDevice(memdev.FromBytes(mem.Bytes(), memdev.Options{}), Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			if _, err := im.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, model) {
				for i := 0; i < size; i += cs {
					if !bytes.Equal(got[i:i+cs], model[i:i+cs]) {
						t.Fatalf("guest cluster %d (offset %#x) differs after reopen", i/cs, i)
					}
				}
			}
		})
	}
}
