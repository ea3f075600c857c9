package qcow2

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// A qcow2 backing file (the qback token): the overlay's unallocated
// clusters read through an *Image, not a raw device, whose own clusters
// hold data, are zero clusters (the zero flag, with and without their
// host cluster) or are unallocated (they read through to nothing: the
// backing file has none of its own). Its clusters are not the overlay's
// (4 KiB, or 16 KiB under a 4 KiB overlay), its size is no multiple of
// either. On memdev backends the overlay reads it through
// Options.Backing (one read-only Image over a memdev, shared by the
// live image, its reopens and every crash clone's verification); on
// file backends the engine opens the file the header names, as
// qemu-img check and convert do on every backend. Nothing may write
// it: qbUnchanged compares its bytes (the memdev's and the file's) with
// those it was created with.

// tqback is a case's qcow2 backing file.
type tqback struct {
	mem   *memdev.Dev // the backing image (memdev backends read it through im)
	im    *Image      // read-only over mem (r.bdev)
	path  string      // the file the overlay's header names
	bytes []byte      // the file's bytes as created
	// Clusters of each kind the backing file was given.
	data, zero, zeroAlloc, unalloc int
}

// qbSetup creates the qcow2 backing file, sets r.bdata to the guest
// view it gives (r.model's start) and names it in co.
func (r *trun) qbSetup(co *CreateOptions) {
	n := r.size/2 + 25*512 // shorter than the image, a partial last cluster
	bcs := int64(4096)
	if r.cfg.cs == 4096 {
		bcs = 16 << 10
	}
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: n, ClusterSize: int(bcs)}); err != nil {
		r.fatalf("qcow2 backing file: create: %v", err)
	}
	im, err := OpenDevice(mem, Options{})
	if err != nil {
		r.fatalf("qcow2 backing file: open: %v", err)
	}
	rng := rand.New(rand.NewPCG(r.seed, 0xbacc))
	r.bdata = make([]byte, n)
	buf := make([]byte, bcs)
	for off := int64(0); off < n; off += bcs {
		k := min(bcs, n-off)
		kind := rng.IntN(8)
		if kind >= 6 {
			r.qb.unalloc++
			continue
		}
		fillPattern(buf[:k], rng.Uint64())
		if _, err := im.WriteAt(buf[:k], off); err != nil {
			r.fatalf("qcow2 backing file: write: %v", err)
		}
		switch kind {
		case 4, 5:
			// A zero cluster: the zero flag, its host cluster kept
			// (no MayUnmap) or given back.
			f := block.Flags(0)
			if kind == 5 {
				f = block.MayUnmap
				r.qb.zero++
			} else {
				r.qb.zeroAlloc++
			}
			if err := im.WriteZeroes(off, k, f); err != nil {
				r.fatalf("qcow2 backing file: zero: %v", err)
			}
		default:
			r.qb.data++
			copy(r.bdata[off:], buf[:k])
		}
	}
	if err := im.Close(); err != nil {
		r.fatalf("qcow2 backing file: close: %v", err)
	}
	copy(r.model, r.bdata)
	r.qb.mem = mem
	r.qb.bytes = bytes.Clone(mem.Bytes())
	r.qb.path = filepath.Join(r.dir, "backing.qcow2")
	if err := os.WriteFile(r.qb.path, r.qb.bytes, 0o444); err != nil {
		r.fatalf("%v", err)
	}
	if r.qb.im, err = OpenDevice(mem, Options{ReadOnly: true}); err != nil {
		r.fatalf("qcow2 backing file: open read-only: %v", err)
	}
	if got := testkit.ReadAll(r.t, r.qb.im); !bytes.Equal(got, r.bdata) {
		r.fatalf("qcow2 backing file: reads back other bytes at %#x", testkit.FirstDiff(got, r.bdata))
	}
	if testkit.HaveQemu() {
		r.qbMapped()
	}
	r.bdev = r.qb.im
	co.BackingFile, co.BackingFormat = r.qb.path, "qcow2"
	tortureTracef("qcow2 backing file: %d clusters of %d: %d data, %d zero, %d zero allocated, %d unallocated", (n+bcs-1)/bcs, bcs, r.qb.data, r.qb.zero, r.qb.zeroAlloc, r.qb.unalloc)
}

// qbMapped has qemu-img map find the three kinds of cluster the backing
// file was given: data, zero clusters (present, reading zeros) and
// unallocated ones (not present: they read through to nothing).
func (r *trun) qbMapped() {
	var ext []struct {
		Length              int64
		Present, Zero, Data bool
	}
	out, err := exec.Command("qemu-img", "map", "--output=json", r.qb.path).Output()
	if err == nil {
		err = json.Unmarshal(out, &ext)
	}
	if err != nil {
		r.fatalf("qemu-img map of the qcow2 backing file: %v", err)
	}
	var data, zero, unalloc int64
	for _, e := range ext {
		switch {
		case e.Data:
			data += e.Length
		case e.Present && e.Zero:
			zero += e.Length
		case !e.Present:
			unalloc += e.Length
		}
	}
	if (r.qb.data > 0) != (data > 0) || (r.qb.zero+r.qb.zeroAlloc > 0) != (zero > 0) || (r.qb.unalloc > 0) != (unalloc > 0) {
		r.fatalf("qemu-img map of the qcow2 backing file: %d data, %d zero, %d unallocated bytes, for %d data, %d zero and %d unallocated clusters", data, zero, unalloc, r.qb.data, r.qb.zero+r.qb.zeroAlloc, r.qb.unalloc)
	}
}

// qbUnchanged fails the case if the qcow2 backing file's bytes changed,
// on its memdev or in its file.
func (r *trun) qbUnchanged(what string) {
	if r.qb.mem == nil {
		return
	}
	if k := testkit.FirstDiff(r.qb.mem.Bytes(), r.qb.bytes); k >= 0 || len(r.qb.mem.Bytes()) != len(r.qb.bytes) {
		r.fatalf("%s: the qcow2 backing file's memdev was written: first difference at %#x (%d bytes, %d created)", what, k, len(r.qb.mem.Bytes()), len(r.qb.bytes))
	}
	b, err := os.ReadFile(r.qb.path)
	if err != nil {
		r.fatalf("%v", err)
	}
	if k := testkit.FirstDiff(b, r.qb.bytes); k >= 0 || len(b) != len(r.qb.bytes) {
		r.fatalf("%s: the qcow2 backing file was written: first difference at %#x (%d bytes, %d created)", what, k, len(b), len(r.qb.bytes))
	}
	if testkit.HaveQemu() {
		r.qemuCheckBacking(what)
	}
}

// qemuCheckBacking has qemu-img check find the backing file clean.
func (r *trun) qemuCheckBacking(what string) {
	if err := testkit.QemuCheckReport(r.qb.path, testkit.QemuCheckResult.Clean); err != nil {
		r.fatalf("%s: the qcow2 backing file: %v", what, err)
	}
}

func (r *trun) qbClose() {
	if r.qb.im != nil {
		r.qb.im.Close()
		r.qb.im = nil
	}
}
