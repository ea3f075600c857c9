package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// Fuzzing the engine with hostile images. The input is the image file
// (at most fuzzMaxInput bytes, fuzzMaxLUKSInput for an encrypted one;
// seeds are small images so that mutations land in the header and the
// tables). Properties:
//
//   - OpenDevice either fails with a typed error (ErrCorrupt,
//     ErrUnsupported, or a block error), leaving the image's bytes as
//     they were, or succeeds;
//   - an open image reads its first MiB and a few other offsets, runs
//     Check, takes a few writes, a zeroing, a discard and a flush (which
//     may fail with ErrReadOnly, ErrCorrupt, ErrUnsupported or
//     ErrOutOfRange) and closes;
//   - nothing panics, each input finishes within fuzzTimeout, and the
//     device never grows past fuzzMaxDev: a hostile image must not make
//     the engine write outside the clusters it owns.

const (
	fuzzMaxInput = 256 << 10
	// fuzzMaxLUKSInput is the bound of an input whose header says LUKS
	// (crypt_method 2 at byte 32): the LUKS header area alone is about
	// 1 MiB (eight key slots of 4000 stripes).
	fuzzMaxLUKSInput = 1100 << 10
	fuzzMaxDev       = 64 << 20
	fuzzTimeout      = 20 * time.Second
)

// fuzzSeedImage makes a small image on a memdev with a few writes.
func fuzzSeedImage(tb testing.TB, co CreateOptions, writes [][2]int64) []byte {
	tb.Helper()
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, co); err != nil {
		tb.Fatal(err)
	}
	im, err := OpenDevice(mem, Options{NoBacking: true})
	if err != nil {
		tb.Fatal(err)
	}
	for i, w := range writes {
		if _, err := im.WriteAt(pattern(int(w[1]), byte(i+1)), w[0]); err != nil {
			tb.Fatal(err)
		}
	}
	if len(writes) > 1 {
		// A zero cluster (v3) or zeroed data (v2), and a discard.
		if err := im.WriteZeroes(writes[1][0], writes[1][1], block.MayUnmap); err != nil {
			tb.Fatal(err)
		}
	}
	if err := im.Close(); err != nil {
		tb.Fatal(err)
	}
	return mem.Bytes()
}

// fuzzCompressedSeed makes an image with compressed clusters with
// qemu-img convert -c (nil without qemu-img).
func fuzzCompressedSeed(tb testing.TB, clusterSize string) []byte {
	if !testkit.HaveQemu() {
		return nil
	}
	dir := tb.TempDir()
	raw := filepath.Join(dir, "r.raw")
	data := make([]byte, 64<<10)
	copy(data, bytes.Repeat([]byte("qring compressed cluster "), 1000))
	copy(data[40<<10:], pattern(8192, 3))
	if err := os.WriteFile(raw, data, 0o644); err != nil {
		tb.Fatal(err)
	}
	out := filepath.Join(dir, "c.qcow2")
	if b, err := exec.Command("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "cluster_size="+clusterSize, raw, out).CombinedOutput(); err != nil {
		tb.Logf("qemu-img convert -c: %v\n%s", err, b)
		return nil
	}
	b, err := os.ReadFile(out)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func fuzzSeeds(tb testing.TB) [][]byte {
	w := [][2]int64{{0, 1000}, {70000, 9000}, {300000, 512}}
	seeds := [][]byte{
		fuzzSeedImage(tb, CreateOptions{Size: 1 << 20, ClusterSize: 512}, w),
		fuzzSeedImage(tb, CreateOptions{Size: 1 << 20, ClusterSize: 512, RefcountBits: 1}, w),
		fuzzSeedImage(tb, CreateOptions{Size: 1 << 20, ClusterSize: 512, RefcountBits: 64}, w),
		fuzzSeedImage(tb, CreateOptions{Size: 4 << 20, ClusterSize: 4096}, w),
		fuzzSeedImage(tb, CreateOptions{Size: 4 << 20, ClusterSize: 4096, Compat: "0.10"}, w),
		fuzzSeedImage(tb, CreateOptions{Size: 4 << 20, ClusterSize: 4096, LazyRefcounts: true}, w),
		fuzzSeedImage(tb, CreateOptions{Size: 4 << 20, ClusterSize: 1024, BackingFile: "base.qcow2", BackingFormat: "qcow2"}, w[:1]),
		fuzzSeedImage(tb, CreateOptions{Size: 64 << 20, ClusterSize: 16384}, [][2]int64{{0, 100}, {33 << 20, 100}}),
		fuzzSeedImage(tb, CreateOptions{Size: 1 << 30, ClusterSize: 32768}, nil),
		fuzzSeedImage(tb, CreateOptions{Size: 4 << 20, ClusterSize: 16384, ExtendedL2: true}, w),
	}
	for _, cs := range []string{"512", "4096"} {
		if b := fuzzCompressedSeed(tb, cs); b != nil {
			seeds = append(seeds, b)
		}
	}
	if b := fuzzDataFileSeed(tb); b != nil {
		seeds = append(seeds, b)
	}
	// Snapshots, bitmaps, LUKS, zstd, dirty lazy refcounts
	// (fuzz_seeds_test.go): last, so that FuzzOpenPatch's corpus keeps
	// naming the seeds above by their index.
	return append(seeds, fuzzMoreSeeds(tb)...)
}

// firstDifference is the offset of the first byte where a and b differ
// (the shorter length if one is a prefix of the other), -1 if equal.
func firstDifference(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// fuzzOK reports whether err is one of the errors a hostile image may
// legitimately cause.
func fuzzOK(err error, more ...error) bool {
	if err == nil {
		return true
	}
	for _, e := range append([]error{ErrCorrupt, ErrUnsupported, ErrNotQcow2, block.ErrRange, block.ErrNotSupported, ErrNoKey, ErrDataFile}, more...) {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// fuzzDataOpener opens the external data file an input names (DF1): a
// device in memory whatever the name, never a file of the host.
func fuzzDataOpener(string, bool) (block.Device, error) {
	d := memdev.New(memdev.Options{})
	if err := d.Truncate(1 << 20); err != nil {
		return nil, err
	}
	return d, nil
}

func FuzzOpen(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		if !fuzzTooLarge(s) {
			f.Add(s)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if fuzzTooLarge(b) {
			t.Skip()
		}
		fuzzOpenTimed(t, b)
	})
}

// fuzzDirty reports an input whose header (version 3) has the dirty bit.
func fuzzDirty(b []byte) bool {
	return len(b) >= 80 && binary.BigEndian.Uint32(b[4:]) >= 3 && binary.BigEndian.Uint64(b[72:])&format.IncompatDirty != 0
}

// fuzzTooLarge reports an input past fuzzMaxInput, or past
// fuzzMaxLUKSInput for an encrypted one.
func fuzzTooLarge(b []byte) bool {
	if len(b) >= 36 && binary.BigEndian.Uint32(b[32:]) == 2 {
		return len(b) > fuzzMaxLUKSInput
	}
	return len(b) > fuzzMaxInput
}

// fuzzOpenTimed runs fuzzOpenOne on b on its own goroutine and fails the
// test, with every goroutine's stack, if it does not finish within
// fuzzTimeout.
func fuzzOpenTimed(t *testing.T, b []byte) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fuzzOpenOne(t, b)
	}()
	select {
	case <-done:
	case <-time.After(fuzzTimeout):
		buf := make([]byte, 1<<20)
		t.Fatalf("input of %d bytes did not finish in %v\n%s", len(b), fuzzTimeout, buf[:runtime.Stack(buf, true)])
	}
}

// fuzzOpenOne runs the FuzzOpen property on one input; it reports with
// t.Errorf only (it runs on its own goroutine).
func fuzzOpenOne(t *testing.T, b []byte) {
	fuzzOpenReadOnly(t, b)
	mem := memdev.FromBytes(b, memdev.Options{})
	im, err := OpenDevice(mem, Options{NoBacking: true, NoKey: true, Opener: fuzzDataOpener})
	if err != nil {
		if im != nil {
			t.Errorf("image and error %v", err)
		}
		if !fuzzOK(err) {
			t.Errorf("open: untyped error %v", err)
		}
		// A refused open changes nothing: whatever it read or prepared
		// before it gave up (the bitmaps' IN_USE flags, an L1 or
		// refcount table grown) must not reach the image. Except a
		// dirty image's repair: like QEMU's, it rebuilds the refcounts
		// in place before the open decides (a corruption the rebuild
		// cannot fix then refuses it, the dirty bit kept); QEMU opens
		// such an image.
		if got := mem.Bytes(); !fuzzDirty(b) && !bytes.Equal(got, b) {
			t.Errorf("a refused writable open (%v) changed the image: %d bytes, was %d, first difference at %d", err, len(got), len(b), firstDifference(got, b))
		}
		return
	}
	defer func() {
		if err := im.Close(); err != nil && !fuzzOK(err, ErrReadOnly) {
			t.Errorf("close: %v", err)
		}
		if n, _ := mem.Size(); n > fuzzMaxDev {
			t.Errorf("device grew from %d to %d bytes", len(b), n)
		}
	}()
	size, err := im.Size()
	if err != nil || size < 0 {
		t.Errorf("size %d: %v", size, err)
		return
	}
	buf := make([]byte, 1<<20)
	rd := func(off int64, n int) {
		if off < 0 || off >= size {
			return
		}
		if _, err := im.ReadAt(buf[:n], off); err != nil && err != io.EOF && !fuzzOK(err) {
			t.Errorf("read %d+%d: %v", off, n, err)
		}
	}
	rd(0, len(buf))
	rd(size/2, 4096)
	rd(size-4096, 4096)
	rd(size-1, 1)
	if _, err := im.Check(CheckOptions{MaxMessages: 10}); err != nil && !fuzzOK(err) {
		t.Errorf("check: %v", err)
	}
	wok := func(what string, err error) {
		if !fuzzOK(err, ErrReadOnly, ErrOutOfRange) {
			t.Errorf("%s: %v", what, err)
		}
	}
	p := pattern(5000, 9)
	for _, off := range []int64{0, 1000, size / 2, size - 5000} {
		if off >= 0 && off+int64(len(p)) <= size {
			_, err := im.WriteAt(p, off)
			wok("write", err)
		}
	}
	cs := int64(im.Geometry().ClusterSize)
	if size >= 4*cs {
		wok("zero", im.WriteZeroes(cs, 2*cs, block.MayUnmap))
		wok("discard", im.Discard(0, 2*cs))
	}
	wok("flush", im.Flush())
	rd(0, 64<<10)
}

// fuzzOpenReadOnly opens a copy of b read-only, which lets damaged
// tables by (Q19): reads and Check give typed errors at worst, and
// nothing is written.
func fuzzOpenReadOnly(t *testing.T, b []byte) {
	mem := memdev.FromBytes(append([]byte(nil), b...), memdev.Options{})
	im, err := OpenDevice(mem, Options{NoBacking: true, NoKey: true, ReadOnly: true, Opener: fuzzDataOpener})
	if err != nil {
		if !fuzzOK(err) {
			t.Errorf("read-only open: untyped error %v", err)
		}
		return
	}
	if size, err := im.Size(); err == nil && size > 0 {
		buf := make([]byte, min(size, 1<<20))
		if _, err := im.ReadAt(buf, 0); err != nil && err != io.EOF && !fuzzOK(err) {
			t.Errorf("read-only read: %v", err)
		}
	}
	if _, err := im.Check(CheckOptions{MaxMessages: 10}); err != nil && !fuzzOK(err) {
		t.Errorf("read-only check: %v", err)
	}
	if err := im.Close(); err != nil && !fuzzOK(err) {
		t.Errorf("read-only close: %v", err)
	}
	if !bytes.Equal(mem.Bytes(), b) {
		t.Errorf("a read-only open changed the image")
	}
}

// FuzzOpenPatch is FuzzOpen with structured inputs: a valid seed image
// (picked by idx) with a few bytes overwritten at off (and at off2, so a
// header field and a table entry can change together). Byte-string
// mutations of whole images mostly insert or delete bytes and break the
// header; this target keeps the layout and reaches the table walks.
func FuzzOpenPatch(f *testing.F) {
	seeds := fuzzSeeds(f)
	for i, s := range seeds {
		f.Add(uint8(i), uint32(0x48), []byte{0xff}, uint32(0), []byte{})             // l1_size
		f.Add(uint8(i), uint32(0x30), []byte{0, 0, 0, 0, 0, 1}, uint32(0), []byte{}) // refcount_table_offset
		f.Add(uint8(i), uint32(0x14), []byte{9}, uint32(len(s)/2), []byte{0x80, 0, 0, 0, 0, 1, 0x02, 0})
	}
	f.Fuzz(func(t *testing.T, idx uint8, off uint32, p []byte, off2 uint32, p2 []byte) {
		if len(p)+len(p2) > 64 {
			t.Skip()
		}
		b := append([]byte(nil), seeds[int(idx)%len(seeds)]...)
		copy(b[int(off)%len(b):], p)
		copy(b[int(off2)%len(b):], p2)
		fuzzOpenTimed(t, b)
	})
}
