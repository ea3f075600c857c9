package qcow2

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// refblockOnData is an image (64 MiB, 64 KiB clusters) with 1 MiB of
// guest data at 0 whose refcount table's entry 1 names the first data
// cluster: the refcount structures need a rebuild.
func refblockOnData(t *testing.T, fixed bool) (*memdev.Dev, []byte) {
	t.Helper()
	d := memdev.New(memdev.Options{})
	if err := CreateDevice(d, CreateOptions{Size: 64 << 20}); err != nil {
		t.Fatal(err)
	}
	im, err := OpenDevice(d, Options{})
	if err != nil {
		t.Fatal(err)
	}
	data := pattern(1<<20, 7)
	mustWrite(t, im, data, 0)
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	b := d.Bytes()
	rt := binary.BigEndian.Uint64(b[48:])
	l2 := binary.BigEndian.Uint64(b[binary.BigEndian.Uint64(b[40:]):]) & format.L1OffsetMask
	first := binary.BigEndian.Uint64(b[l2:]) & format.L1OffsetMask // guest cluster 0's data
	binary.BigEndian.PutUint64(b[rt+8:], first)
	if fixed {
		// A device of fixed size with room past the image: the rebuild
		// must use the free clusters inside it.
		return memdev.FromBytes(append(b, make([]byte, 1<<20)...), memdev.Options{Fixed: true}), data
	}
	return memdev.FromBytes(b, memdev.Options{}), data
}

// TestRebuild_CrashClones: -r all rebuilds the refcount structures of an
// image whose refcount block is a data cluster. A crash at any device
// operation of the rebuild (each unflushed write kept or lost at random,
// torn at sectors) leaves an image that opens, whose guest data is
// intact, and that a second -r all repairs to a clean image: the switch
// to the new structures is one header write behind a flush (Q4).
func TestRebuild_CrashClones(t *testing.T) {
	t.Parallel()
	testkit.NeedQemu(t)
	for _, fixed := range []bool{false, true} {
		t.Run(map[bool]string{false: "file", true: "fixed"}[fixed], func(t *testing.T) { rebuildCrashClones(t, fixed) })
	}
}

func rebuildCrashClones(t *testing.T, fixed bool) {
	mem, data := refblockOnData(t, fixed)
	size0, _ := mem.Size()
	before := checkMem(t, memdev.FromBytes(mem.Bytes(), memdev.Options{}))
	if before.Corruptions == 0 {
		t.Fatalf("the damaged image checks clean: %+v", before)
	}
	rng := rand.New(rand.NewPCG(19, 1))
	h := &hookDev{Dev: mem}
	var clones []*memdev.Dev
	h.before = func() {
		for range 8 {
			clones = append(clones, mem.CrashClone(rng, rng.Float64()))
		}
	}
	im, err := OpenDevice(h, Options{Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	r, err := im.Check(CheckOptions{Repair: RepairAll})
	if err != nil || !r.Clean() || r.CorruptionsFixed == 0 {
		t.Fatalf("-r all: %v %+v", err, r)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	if n, _ := mem.Size(); fixed && n != size0 {
		t.Fatalf("the device of fixed size went from %d to %d bytes", size0, n)
	}
	clones = append(clones, mem.CrashClone(rng, 0))
	if len(clones) < 10 {
		t.Fatalf("only %d crash points", len(clones))
	}
	for i, c := range clones {
		// The old state, as damaged as before, or the new one, with
		// leaks at most: never anything else.
		if r := checkMem(t, memdev.FromBytes(c.Bytes(), memdev.Options{})); r.CheckErrors != 0 ||
			(r.Corruptions != 0 && (r.Corruptions != before.Corruptions || r.Leaks != before.Leaks)) {
			t.Fatalf("clone %d: %+v, want no corruption or the damage as it was (%d corruptions, %d leaks)",
				i, r, before.Corruptions, before.Leaks)
		}
		if i%4 != 0 && i != len(clones)-1 {
			continue // the repair below, for a sample
		}
		im, err := OpenDevice(c, Options{Repair: true})
		if err != nil {
			t.Fatalf("clone %d: open: %v", i, err)
		}
		got := make([]byte, len(data))
		if _, err := im.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("clone %d: guest data lost: %v", i, err)
		}
		r, err := im.Check(CheckOptions{Repair: RepairAll})
		if err != nil || !r.Clean() {
			t.Fatalf("clone %d: -r all: %v %+v", i, err, r)
		}
		if err := im.Close(); err != nil {
			t.Fatal(err)
		}
		if i%16 == 0 || i == len(clones)-1 {
			p := filepath.Join(t.TempDir(), "clone.qcow2")
			if err := c.WriteFile(p); err != nil {
				t.Fatal(err)
			}
			testkit.QemuCheck(t, p)
		}
	}
}

// checkMem is a read-only Check of the image on d.
func checkMem(t *testing.T, d *memdev.Dev) *CheckResult {
	t.Helper()
	im, err := OpenDevice(d, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	r, err := im.Check(CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRebuild_FixedNoRoom: on a device of fixed size whose only free
// space is one whole cluster and its partial last one (the rebuild needs
// two), the rebuild finds no room and says so; it writes nothing past the device's end and changes nothing
// (review: it placed a block there and failed with ENOSPC half-way).
func TestRebuild_FixedNoRoom(t *testing.T) {
	mem, _ := refblockOnData(t, false)
	b := append(mem.Bytes(), make([]byte, 96<<10)...) // a cluster and a half more
	d := memdev.FromBytes(b, memdev.Options{Fixed: true})
	im, err := OpenDevice(d, Options{Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	r, err := im.Check(CheckOptions{Repair: RepairAll})
	if err != nil || r.CheckErrors == 0 || r.CorruptionsFixed != 0 ||
		!strings.Contains(strings.Join(r.Messages, "\n"), "no run of") {
		t.Fatalf("-r all: %v %+v, want the rebuild refused for want of room", err, r)
	}
	im.Close()
	if got := d.Bytes(); len(got) != len(b) || !bytes.Equal(got[0x10000:], b[0x10000:]) {
		t.Fatalf("the refused rebuild changed the device (%d -> %d bytes)", len(b), len(got))
	}
}

// TestCheck_OverflowIsCorruption: a cluster referenced more often than
// the refcount width holds is a corruption, as qemu-img reports it
// ("ERROR: overflow cluster"), and -r all still repairs the rest (a
// leak) instead of failing (review).
func TestCheck_OverflowIsCorruption(t *testing.T) {
	im, d := memImage(t, CreateOptions{Size: 4 << 20, RefcountBits: 1}, Options{}, memdev.Options{})
	mustWrite(t, im, pattern(128<<10, 4), 0) // guest clusters 0 and 1
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	b := d.Bytes()
	be := binary.BigEndian
	l2 := be.Uint64(b[be.Uint64(b[40:]):]) & format.L1OffsetMask
	be.PutUint64(b[l2+16*8:], be.Uint64(b[l2:])) // entry 16 shares entry 0's cluster
	leaked := be.Uint64(b[l2+8:]) & format.L1OffsetMask
	be.PutUint64(b[l2+8:], 0) // entry 1's cluster leaks
	im, err := OpenDevice(memdev.FromBytes(b, memdev.Options{}), Options{Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	r, err := im.Check(CheckOptions{Repair: RepairAll})
	msgs := strings.Join(r.Messages, "\n")
	if err != nil || r.LeaksFixed != 1 || r.Corruptions == 0 || !strings.Contains(msgs, "ERROR: overflow cluster") {
		t.Fatalf("-r all: %v %+v, want the overflow reported and the leak (cluster at %#x) fixed", err, r, leaked)
	}
}
