package vmdk

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/vmdk/format"
)

// basePat is sector s of the parent in the tests of snapshots.
func basePat(s int64) []byte { return fill(512, byte(s*3+0x40)) }

// memSnapshot is a parent of size bytes holding basePat in every sector
// and a new snapshot over it (zeroed grains if zg), both on memdevs;
// open opens a snapshot's device writable over a copy of the parent.
func memSnapshot(t *testing.T, size int64, zg bool) (base, top *memdev.Dev, open func(top block.Device) *Disk) {
	t.Helper()
	base = memdev.New(memdev.Options{})
	if _, err := Create(base, CreateOptions{NewOptions: format.NewOptions{Size: size}, CID: 0x1234abcd}); err != nil {
		t.Fatal(err)
	}
	bd, err := Open(base, Options{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	for s := int64(0); s < size/512; s++ {
		if err := bd.Writev(s*512, [][]byte{basePat(s)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := bd.Flush(); err != nil {
		t.Fatal(err)
	}
	cid := bd.CID()
	bb := bytes.Clone(base.Bytes())
	top = memdev.New(memdev.Options{})
	if _, err := Create(top, CreateOptions{NewOptions: format.NewOptions{Size: size, ZeroedGrain: zg, ParentHint: "base.vmdk", ParentCID: cid}}); err != nil {
		t.Fatal(err)
	}
	open = func(dev block.Device) *Disk {
		t.Helper()
		d, err := Open(dev, Options{Name: "top.vmdk", Writable: true, OpenParent: func(string) (*Disk, error) {
			return Open(memdev.FromBytes(bb, memdev.Options{}), Options{})
		}})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	return base, top, open
}

// TestWrite_ParentConcurrent: writers into new grains of a snapshot,
// many sharing a grain, and every other grain zeroed whole while they
// write, all at once (KD13): a grain is filled from the parent once,
// before any write into it lands, and zeroed only after that. A grain
// no zeros reached reads each sector's write or the parent's bytes; a
// zeroed one reads zeros or a write that came after them, never the
// parent's bytes.
func TestWrite_ParentConcurrent(t *testing.T) {
	const size, gb = 4 << 20, 64 << 10
	_, top, open := memSnapshot(t, size, true)
	d := open(top)
	const writers, each = 8, 150
	var wg sync.WaitGroup
	pieces := make([][]int64, writers)
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			for range each {
				// Slots of 512 bytes, slot%writers == g: no two
				// writers share a slot, many share a grain.
				slot := rng.Int64N(size/512/writers)*writers + int64(g)
				if err := d.Writev(slot*512, [][]byte{fill(512, byte(slot))}); err != nil {
					t.Error(err)
					return
				}
				pieces[g] = append(pieces[g], slot)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 3 {
			for gi := int64(0); gi < size/gb; gi += 2 {
				if err := d.WriteZeroes(gi*gb, gb, 0); err != nil {
					t.Error(err)
					return
				}
			}
		}
	}()
	wg.Wait()
	written := map[int64]bool{}
	for _, ps := range pieces {
		for _, s := range ps {
			written[s] = true
		}
	}
	check := func(d *Disk, what string) {
		t.Helper()
		got := make([]byte, size)
		if err := d.Readv(0, [][]byte{got}); err != nil {
			t.Fatal(err)
		}
		for s := int64(0); s < size/512; s++ {
			b := got[s*512 : (s+1)*512]
			mine := written[s] && bytes.Equal(b, fill(512, byte(s)))
			switch zeroed := (s*512/gb)%2 == 0; {
			case zeroed && !mine && !bytes.Equal(b, make([]byte, 512)):
				t.Fatalf("%s: sector %d of a zeroed grain reads %x", what, s, b[:8])
			case !zeroed && written[s] && !mine:
				t.Fatalf("%s: sector %d reads %x, not its write", what, s, b[:8])
			case !zeroed && !written[s] && !bytes.Equal(b, basePat(s)):
				t.Fatalf("%s: sector %d reads %x, not the parent's", what, s, b[:8])
			}
		}
	}
	check(d, "read back")
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = open(memdev.FromBytes(top.Bytes(), memdev.Options{}))
	check(d, "reopened")
	d.Close()
}

// TestWrite_ParentCrashClones: power cuts while a snapshot takes writes
// into new grains (filled from the parent first, KD13), whole grains
// zeroed and flushes: every clone opens writable over the parent,
// sectors a completed Flush covered read what was written, the others
// that or the parent's bytes (zeros for a zeroed grain's), never
// anything else.
func TestWrite_ParentCrashClones(t *testing.T) {
	const size, sec, gb = 2 << 20, 512, 64 << 10
	rng := rand.New(rand.NewPCG(5, 17))
	g := &cloneGroup{devs: map[string]*memdev.Dev{}}
	_, top, open := memSnapshot(t, size, true)
	g.devs["top"] = top
	d := open(&groupDev{Dev: top, g: g})
	// may are the bytes a sector can read after a power cut: what the
	// last completed Flush covered, and each write or zeros since
	// (any of them may have reached the disk, in order or not).
	may := map[int64][][]byte{}
	check := func(c *memdev.Dev) {
		t.Helper()
		cd := open(c)
		got := make([]byte, size)
		if err := cd.Readv(0, [][]byte{got}); err != nil {
			t.Fatal(err)
		}
		for s := int64(0); s < size/sec; s++ {
			b := got[s*sec : (s+1)*sec]
			vs, ok := may[s]
			if !ok {
				vs = [][]byte{basePat(s)} // never written: the parent's
			}
			if !slices.ContainsFunc(vs, func(v []byte) bool { return bytes.Equal(b, v) }) {
				t.Fatalf("sector %d reads %x, none of its %d possible contents", s, b[:8], len(vs))
			}
		}
		cd.Close()
	}
	set := func(s int64, v []byte) {
		if _, ok := may[s]; !ok {
			may[s] = [][]byte{basePat(s)}
		}
		may[s] = append(may[s], v)
	}
	flushed := func() {
		for s, vs := range may {
			may[s] = vs[len(vs)-1:]
		}
	}
	clones := 0
	for step := 0; step < 120; step++ {
		s := rng.Int64N(size / sec)
		if _, ok := may[s]; ok {
			continue
		}
		if err := d.Writev(s*sec, [][]byte{fill(sec, byte(s))}); err != nil {
			t.Fatal(err)
		}
		set(s, fill(sec, byte(s)))
		if rng.IntN(7) == 0 {
			gi := rng.Int64N(size / gb)
			if err := d.WriteZeroes(gi*gb, gb, 0); err != nil {
				t.Fatal(err)
			}
			for x := gi * gb / sec; x < (gi+1)*gb/sec; x++ {
				set(x, make([]byte, sec))
			}
		}
		clones += g.step(t, step, rng, d, flushed, func(c map[string]*memdev.Dev) { check(c["top"]) })
	}
	if clones == 0 {
		t.Fatal("no crash clone taken")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestWrite_ParentLikeQemu: a snapshot qimg's Create makes over a VMDK
// parent (parentFileNameHint, parentCID) is qemu-img create -b's byte
// for byte, given the same CID; the writes, zeros and flushes qemu-io
// issues into one, issued through a Disk into another, leave images
// qemu-img compares equal and check passes, the same grains allocated;
// a write that needs a new grain over a parent whose CID changed fails
// with ErrParentCID, as QEMU's.
func TestWrite_ParentLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.vmdk")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", base, "10M")
	testkit.MustRun(t, "qemu-io", "-f", "vmdk", "-c", "write -P 0x11 0 1M", "-c", "write -P 0x12 5M 1M", base)
	q, o := filepath.Join(dir, "q.vmdk"), filepath.Join(dir, "o.vmdk")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", q, "12M")
	want, _ := os.ReadFile(q)
	wd := format.ParseDescriptor(string(want[512 : 512+format.DescSize-1]))
	b, _ := os.ReadFile(base)
	bcid := format.ParseDescriptor(string(b[512 : 512+format.DescSize-1])).CID
	if wd.ParentCID != bcid {
		t.Fatalf("qemu-img's parentCID %x, the base's CID %x", wd.ParentCID, bcid)
	}
	if _, err := createFile(t, o, CreateOptions{NewOptions: format.NewOptions{Size: 12 << 20, ParentHint: "base.vmdk", ParentCID: bcid}, Name: "q.vmdk", CID: wd.CID}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(o)
	testkit.MustEqual(t, got, want, "the snapshot qemu-img creates")
	d := openOver(t, o)
	ops := []func() error{
		func() error { return d.Writev(4096, [][]byte{bytes.Repeat([]byte{0x21}, 512)}) },
		func() error { return d.WriteZeroes(5<<20+8192, 4096, 0) },
		func() error { return d.Writev(9<<20, [][]byte{bytes.Repeat([]byte{0x22}, 512)}) },
		func() error { return d.WriteZeroes(2<<20, 64<<10, block.MayUnmap) },
		func() error { return d.WriteZeroes(3<<20, 4096, 0) },
		func() error { return d.Writev(11<<20-300, [][]byte{bytes.Repeat([]byte{0x23}, 1000)}) },
		func() error { return d.Writev(5<<20+100<<10, [][]byte{bytes.Repeat([]byte{0x24}, 300)}) },
		d.Flush,
	}
	for i, op := range ops {
		if err := op(); err != nil {
			t.Fatalf("op %d: %v", i, err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	testkit.MustRun(t, "qemu-io", "-f", "vmdk", "-c", "write -P 0x21 4096 512", "-c", "write -z 5251072 4096", "-c", "write -P 0x22 9M 512",
		"-c", "write -z -u 2M 64k", "-c", "write -z 3M 4k", "-c", "write -P 0x23 11534036 1000", "-c", "write -P 0x24 5345280 300", "-c", "flush", q)
	qemuCheck(t, o)
	testkit.MustRun(t, "qemu-img", "compare", "-f", "vmdk", "-F", "vmdk", o, q)
	if a, b := testkit.MustRun(t, "qemu-img", "map", "-f", "vmdk", o), testkit.MustRun(t, "qemu-img", "map", "-f", "vmdk", q); strings.ReplaceAll(a, o, q) != b {
		t.Errorf("qemu-img map:\nours:\n%s\nqemu-io's:\n%s", a, b)
	}
	// The base changes: a new grain needs it and fails, as in QEMU.
	// The refusal changes nothing, the CID included (QEMU changes it
	// after a write only).
	testkit.MustRun(t, "qemu-io", "-f", "vmdk", "-c", "write -P 0x31 0 512", base)
	before, _ := os.ReadFile(o)
	d = openOver(t, o)
	if err := d.Writev(7<<20, [][]byte{make([]byte, 512)}); !errors.Is(err, ErrParentCID) {
		t.Errorf("a new grain over a changed parent: %v", err)
	}
	if err := d.WriteZeroes(8<<20, 512, 0); !errors.Is(err, ErrParentCID) {
		t.Errorf("zeros into a new grain over a changed parent: %v", err)
	}
	d.Close()
	if after, _ := os.ReadFile(o); !bytes.Equal(before, after) {
		t.Error("a refused write changed the snapshot")
	}
}

// TestWrite_StreamSnapshotLikeQemu: a streamOptimized snapshot takes
// whole grains, zeros too, deflated, over a parent whose bytes it hides
// (KD12, KD13): partial zeros are refused as QEMU refuses them, whole
// ones a deflated grain of zeros (they copied the parent's bytes raw
// into the stream and every later read of the grain failed); qemu-img
// compares it with the one qemu-io writes.
func TestWrite_StreamSnapshotLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.vmdk")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", base, "1M")
	testkit.MustRun(t, "qemu-io", "-f", "vmdk", "-c", "write -P 0x5a 0 1M", base)
	o, q := filepath.Join(dir, "o.vmdk"), filepath.Join(dir, "q.vmdk")
	for _, p := range []string{o, q} {
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=streamOptimized", "-b", "base.vmdk", "-F", "vmdk", p)
	}
	d := openOver(t, o)
	if err := d.WriteZeroes(4096, 4096, 0); !errors.Is(err, ErrStreamPartial) {
		t.Errorf("partial zeros: %v", err)
	}
	if err := d.WriteZeroes(128<<10, 64<<10, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Writev(256<<10, [][]byte{bytes.Repeat([]byte{7}, 64<<10)}); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 64<<10)
	if err := d.Readv(128<<10, [][]byte{got}); err != nil || !bytes.Equal(got, make([]byte, 64<<10)) {
		t.Fatalf("zeros read back: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	testkit.MustRun(t, "qemu-io", "-f", "vmdk", "-c", "write -z 128k 64k", "-c", "write -P 7 256k 64k", q)
	if _, _, code := testkit.Run(t, "qemu-io", "-f", "vmdk", "-c", "write -z 4k 4k", q); code != 0 {
		t.Log("qemu-io refused the partial zeros too")
	}
	qemuCheck(t, o)
	testkit.MustRun(t, "qemu-img", "compare", "-f", "vmdk", "-F", "vmdk", o, q)
	// Over a changed parent, whole grains and zeros are refused as in
	// QEMU, the snapshot left as it was (its CID too).
	testkit.MustRun(t, "qemu-io", "-f", "vmdk", "-c", "write -P 0x31 0 512", base)
	before, _ := os.ReadFile(o)
	d = openOver(t, o)
	if err := d.Writev(512<<10, [][]byte{make([]byte, 64<<10)}); !errors.Is(err, ErrParentCID) {
		t.Errorf("a grain over a changed parent: %v", err)
	}
	if err := d.WriteZeroes(576<<10, 64<<10, 0); !errors.Is(err, ErrParentCID) {
		t.Errorf("zeros over a changed parent: %v", err)
	}
	d.Close()
	if after, _ := os.ReadFile(o); !bytes.Equal(before, after) {
		t.Error("a refused write changed the snapshot")
	}
}

// openOver opens the snapshot at p writable over its parent, read-only.
func openOver(t *testing.T, p string) *Disk {
	t.Helper()
	f, err := block.OpenOSFile(p, false)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Open(f, Options{Name: p, Writable: true, OpenParent: func(pp string) (*Disk, error) {
		pf, err := block.OpenOSFile(pp, true)
		if err != nil {
			return nil, err
		}
		return Open(pf, Options{Name: pp})
	}})
	if err != nil {
		f.Close()
		t.Fatal(err)
	}
	return d
}
