package vmdk

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/errordev"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/vmdk/format"
)

// openRW opens the image at p writable over the host file.
func openRW(t *testing.T, p string) *Disk {
	t.Helper()
	f, err := block.OpenOSFile(p, false)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Open(f, Options{Name: p, Writable: true})
	if err != nil {
		f.Close()
		t.Fatal(err)
	}
	return d
}

func fill(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i/512)
	}
	return b
}

// qemuCheck runs qemu-img check on a VMDK image: it must find nothing.
func qemuCheck(t *testing.T, p string) {
	t.Helper()
	out, stderr, code := testkit.Run(t, "qemu-img", "check", "-f", "vmdk", p)
	if code != 0 || strings.TrimSpace(out) != "No errors were found on the image." || stderr != "" {
		t.Errorf("qemu-img check %s: exit %d\n%s%s", p, code, out, stderr)
	}
}

// TestWrite_MatchesQemu: what a writable Disk writes into an image
// qemu-img created is what qemu-img reads back, qemu-img check finds
// nothing, its map shows the grains written, and qemu-io's writes into
// the same image are what the Disk reads (KD8-KD10). Plain and
// zeroed_grain images, the latter with grains QEMU zeroed.
func TestWrite_MatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	for _, opts := range []string{"", "zeroed_grain=on"} {
		t.Run("o="+opts, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "a.vmdk")
			args := []string{"create", "-q", "-f", "vmdk"}
			if opts != "" {
				args = append(args, "-o", opts)
			}
			testkit.MustRun(t, "qemu-img", append(args, p, "40M")...)
			if opts != "" {
				testkit.MustRun(t, "qemu-io", "-f", "vmdk", "-c", "write -z 1M 128k", p) // zeroed grains
			}
			d := openRW(t, p)
			size, _ := d.Size()
			model := make([]byte, size)
			write := func(off int64, bufs ...[]byte) {
				t.Helper()
				if err := d.Writev(off, bufs); err != nil {
					t.Fatalf("write at %d: %v", off, err)
				}
				copy(model[off:], bytes.Join(bufs, nil))
			}
			write(4096, fill(4096, 1))                               // grain 0, partly
			write(128<<10-512, fill(1000, 2), fill(24, 3))           // across grains 1 and 2, a vector
			write(size-1536, fill(1536, 4))                          // the last sectors
			write(1<<20+100, fill(1, 5))                             // one byte (a zeroed grain with zeroed_grain)
			write(33<<20, fill(64<<10, 6))                           // a whole grain in another table
			if err := d.WriteZeroes(4096+512, 1024, 0); err != nil { // in an allocated grain
				t.Fatal(err)
			}
			clear(model[4096+512 : 4096+1536])
			if err := d.WriteZeroes(6<<20, 1<<20, block.MayUnmap); err != nil { // unallocated ones
				t.Fatal(err)
			}
			if err := d.Discard(4096, 512); err != nil { // a hint QEMU ignores: the bytes stay
				t.Fatal(err)
			}
			if err := d.Writev(size-512, [][]byte{make([]byte, 1024)}); !errors.Is(err, ErrOutOfRange) {
				t.Errorf("write past the end: %v", err)
			}
			if err := d.Truncate(size * 2); !errors.Is(err, block.ErrNotSupported) {
				t.Errorf("Truncate: %v", err)
			}
			got := make([]byte, size)
			if err := d.Readv(0, [][]byte{got}); err != nil {
				t.Fatal(err)
			}
			testkit.MustEqual(t, got, model, "read back before Close")
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			qemuCheck(t, p)
			raw := filepath.Join(dir, "a.raw")
			testkit.MustRun(t, "qemu-img", "convert", "-f", "vmdk", "-O", "raw", p, raw)
			q, err := os.ReadFile(raw)
			if err != nil {
				t.Fatal(err)
			}
			testkit.MustEqual(t, q, model, "qemu-img's read")
			var m []struct {
				Start, Length int64
				Data          bool
			}
			if err := json.Unmarshal([]byte(testkit.MustRun(t, "qemu-img", "map", "-f", "vmdk", "--output=json", p)), &m); err != nil {
				t.Fatal(err)
			}
			var grains []int64
			for _, e := range m {
				for o := e.Start; e.Data && o < e.Start+e.Length; o += 64 << 10 {
					grains = append(grains, o>>16)
				}
			}
			want := []int64{0, 1, 2, 16, 33 << 4, (size - 1) >> 16}
			if !slices.Equal(grains, want) {
				t.Errorf("qemu-img map: grains %v allocated, want %v", grains, want)
			}
			// QEMU writes into our grains and a new one; we read them.
			testkit.MustRun(t, "qemu-io", "-f", "vmdk", "-c", "write -P 0x77 8192 4096", "-c", "write -P 0x78 13M 512", p)
			copy(model[8192:], bytes.Repeat([]byte{0x77}, 4096))
			copy(model[13<<20:], bytes.Repeat([]byte{0x78}, 512))
			d = openRW(t, p)
			got = make([]byte, size)
			if err := d.Readv(0, [][]byte{got}); err != nil {
				t.Fatal(err)
			}
			testkit.MustEqual(t, got, model, "qemu-io's writes")
			// And ours again, after QEMU's: into the grain QEMU
			// allocated and a new one after it.
			write(13<<20+4096, fill(512, 9))
			write(20<<20, fill(512, 10))
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			qemuCheck(t, p)
			testkit.MustRun(t, "qemu-img", "convert", "-f", "vmdk", "-O", "raw", p, raw)
			q, _ = os.ReadFile(raw)
			testkit.MustEqual(t, q, model, "qemu-img's read, last")
		})
	}
}

// newMem is a new image of size bytes on a memdev, opened writable.
func newMem(t testing.TB, size int64) (*memdev.Dev, *Disk) {
	t.Helper()
	m := memdev.New(memdev.Options{})
	if _, err := Create(m, CreateOptions{NewOptions: format.NewOptions{Size: size}, Name: "m.vmdk"}); err != nil {
		t.Fatal(err)
	}
	d, err := Open(m, Options{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	return m, d
}

// TestWrite_Concurrent: writers into the same new grains at once share
// the one allocation (KD9), and every byte written is read back, before
// and after a Flush and a reopen.
func TestWrite_Concurrent(t *testing.T) {
	m, d := newMem(t, 16<<20)
	size, _ := d.Size()
	const writers, each = 8, 200
	var wg sync.WaitGroup
	pieces := make([][]int64, writers)
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for i := range each {
				// 512-byte slots, slot%writers == g: no two writers
				// share a slot, many share a grain.
				slot := rng.Int64N(size/512/writers)*writers + int64(g)
				if err := d.Writev(slot*512, [][]byte{fill(512, byte(slot))}); err != nil {
					t.Error(err)
					return
				}
				pieces[g] = append(pieces[g], slot)
				if i%50 == 49 {
					if err := d.Flush(); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	check := func(d *Disk, what string) {
		t.Helper()
		got := make([]byte, size)
		if err := d.Readv(0, [][]byte{got}); err != nil {
			t.Fatal(err)
		}
		want := make([]byte, size)
		for _, ps := range pieces {
			for _, s := range ps {
				copy(want[s*512:], fill(512, byte(s)))
			}
		}
		testkit.MustEqual(t, got, want, what)
	}
	check(d, "before Flush")
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	check(d, "after Flush")
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d2, err := Open(memdev.FromBytes(m.Bytes(), memdev.Options{}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	check(d2, "reopened")
}

// TestWrite_CrashClones: a power cut at any moment leaves an image that
// opens (writable too), reads every write a completed Flush covered,
// and reads each other sector as it was or as a later write left it;
// new grains allocated after the crash read as zeros where nothing was
// written, whatever leaked grains the crash left in the file (KD9,
// KD10); qemu-img check finds nothing in some of them.
func TestWrite_CrashClones(t *testing.T) {
	for _, c := range []struct {
		name       string
		zg, stream bool
	}{{"plain", false, false}, {"zeroed_grain", true, false}, {"streamOptimized", false, true}} {
		t.Run(c.name, func(t *testing.T) { crashClones(t, c.zg, c.stream) })
	}
}

// crashClones is TestWrite_CrashClones on an image with zeroed grains
// (zg: some whole grains are zeroed too, as their entries) or without,
// or a streamOptimized one (whole grains written, compressed).
func crashClones(t *testing.T, zg, stream bool) {
	rng := rand.New(rand.NewPCG(7, 7))
	m := memdev.New(memdev.Options{})
	if _, err := Create(m, CreateOptions{NewOptions: format.NewOptions{Size: 4 << 20, ZeroedGrain: zg, Stream: stream}}); err != nil {
		t.Fatal(err)
	}
	g := &cloneGroup{devs: map[string]*memdev.Dev{"img": m}}
	d, err := Open(&groupDev{Dev: m, g: g}, Options{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	size, _ := d.Size()
	const sec, gb = 512, 64 << 10
	zeroed := map[int64]bool{} // sector -> zeroed, by a completed Flush
	pat := func(s int64) []byte {
		if zeroed[s] {
			return make([]byte, sec)
		}
		return fill(sec, byte(s*7+1))
	}
	written := map[int64]bool{} // sector -> covered by a completed Flush
	flushed := func() {
		for x := range written {
			written[x] = true
		}
		for x := range zeroed {
			zeroed[x] = true
		}
	}
	perm := rng.Perm(int(size / sec / 2))
	clones, checks := 0, 0
	for step := 0; step < 120; step++ {
		s := int64(perm[step])
		n := int64(1 + rng.IntN(8))
		if stream {
			s, n = s&^(gb/sec-1), gb/sec // the whole grain, once
		}
		if !writeNew(t, d, s, n, size/sec, written, pat) {
			continue
		}
		if zg && rng.IntN(6) == 0 {
			zeroWhole(t, d, s*sec/gb, written, zeroed)
		}
		clones += g.step(t, step, rng, d, flushed, func(cs map[string]*memdev.Dev) {
			if checks++; checks%10 == 4 && testkit.HaveQemu() {
				qemuReadsClone(t, cs["img"], size)
			}
			checkClone(t, cs["img"], size, written, pat)
		})
	}
	if clones == 0 {
		t.Fatal("no crash clone taken")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// writeNew writes sectors s, s+1... (at most n, below sectors, up to
// the first one written before) with their patterns, and marks them
// written but not flushed; false when s was written before.
func writeNew(t *testing.T, d *Disk, s, n, sectors int64, written map[int64]bool, pat func(int64) []byte) bool {
	t.Helper()
	var bufs [][]byte
	var secs []int64
	for k := int64(0); k < n && s+k < sectors; k++ {
		if _, ok := written[s+k]; ok {
			break
		}
		bufs = append(bufs, pat(s+k))
		secs = append(secs, s+k)
	}
	if len(secs) == 0 {
		return false
	}
	if err := d.Writev(s*512, bufs); err != nil {
		t.Fatal(err)
	}
	for _, x := range secs {
		written[x] = false
	}
	return true
}

// zeroWhole zeroes 64 KiB grain gi whole: its written sectors read their
// pattern or zeros until a Flush, zeros after it.
func zeroWhole(t *testing.T, d *Disk, gi int64, written, zeroed map[int64]bool) {
	t.Helper()
	const gb = 64 << 10
	if err := d.WriteZeroes(gi*gb, gb, 0); err != nil {
		t.Fatal(err)
	}
	for x := gi * gb / 512; x < (gi+1)*gb/512; x++ {
		if _, ok := written[x]; ok {
			written[x], zeroed[x] = false, false
		}
	}
}

// qemuReadsClone checks that qemu-img check finds nothing in the crash
// clone c and qemu-img reads it as we do.
func qemuReadsClone(t *testing.T, c *memdev.Dev, size int64) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.vmdk")
	if err := c.WriteFile(p); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, p)
	q := testkit.QemuReadRaw(t, "vmdk", p)
	d, err := Open(memdev.FromBytes(c.Bytes(), memdev.Options{}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	got := make([]byte, size)
	if err := d.Readv(0, [][]byte{got}); err != nil {
		t.Fatal(err)
	}
	testkit.MustEqual(t, q, got, "qemu-img's read of a crash clone")
}

// checkClone opens a crash clone writable: flushed sectors read their
// pattern, others their pattern or zeros; then it allocates a new grain
// in the clone and reads it back (zeros but for the write).
func checkClone(t *testing.T, c *memdev.Dev, size int64, written map[int64]bool, pat func(int64) []byte) {
	t.Helper()
	d, err := Open(c, Options{Writable: true})
	if err != nil {
		t.Fatalf("crash clone does not open: %v", err)
	}
	got := make([]byte, size)
	if err := d.Readv(0, [][]byte{got}); err != nil {
		t.Fatal(err)
	}
	testkit.CheckCrashSectors(t, got, written, pat)
	// A grain in the half never written, allocated now.
	gb := d.extents[0].layout.GrainBytes()
	gi := size / gb * 3 / 4
	want := make([]byte, gb)
	copy(want[512:], pat(1))
	if d.extents[0].layout.Compressed {
		// A streamOptimized image takes whole grains.
		if err := d.Writev(gi*gb, [][]byte{want}); err != nil {
			t.Fatal(err)
		}
	} else if err := d.Writev(gi*gb+512, [][]byte{pat(1)}); err != nil {
		t.Fatal(err)
	}
	g := make([]byte, gb)
	if err := d.Readv(gi*gb, [][]byte{g}); err != nil {
		t.Fatal(err)
	}
	if i := testkit.FirstDiff(g, want); i >= 0 {
		t.Fatalf("new grain %d reads old bytes at %d: %x", gi, i, g[i:i+8])
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestWrite_CID: the first write after Open gives the image a new CID
// of the same length, durably, before the write (KD11): an image QEMU
// made on top of it then refuses to read through it, as after QEMU's
// own write.
func TestWrite_CID(t *testing.T) {
	testkit.NeedQemu(t)
	dir := t.TempDir()
	base, top := filepath.Join(dir, "base.vmdk"), filepath.Join(dir, "top.vmdk")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", base, "1M")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "-b", base, "-F", "vmdk", top)
	testkit.MustRun(t, "qemu-img", "convert", "-f", "vmdk", "-O", "raw", top, filepath.Join(dir, "ok.raw"))
	d := openRW(t, base)
	old := d.CID()
	// Reads and Flush change nothing.
	if err := d.Readv(0, [][]byte{make([]byte, 512)}); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if d.CID() != old {
		t.Fatal("CID changed without a write")
	}
	if err := d.Writev(0, [][]byte{fill(512, 1)}); err != nil {
		t.Fatal(err)
	}
	if d.CID() == old || len(fmt.Sprintf("%x", d.CID())) != len(fmt.Sprintf("%x", old)) {
		t.Errorf("CID %x after a write, was %x", d.CID(), old)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(base)
	if got := format.ParseDescriptor(string(b[512 : 512+format.DescSize-1])); got.CID == old || !got.HasParentCID {
		t.Errorf("descriptor on disk: CID %x (was %x)", got.CID, old)
	}
	qemuCheck(t, base)
	if _, stderr, code := testkit.Run(t, "qemu-img", "convert", "-f", "vmdk", "-O", "raw", top, filepath.Join(dir, "x.raw")); code == 0 {
		t.Errorf("qemu-img read the top image through a changed base: %s", stderr)
	}
}

// TestWrite_Refused: images qring does not write open read-only but
// not writable, and the refused open leaves them as they were: a
// descriptor file whose extents share a file, a parent, and grains that
// overlap each other or the metadata.
func TestWrite_Refused(t *testing.T) {
	testkit.NeedQemu(t)
	dir := t.TempDir()
	try := func(name string, p string, want error) {
		t.Helper()
		before, _ := os.ReadFile(p)
		f, err := block.OpenOSFile(p, false)
		if err != nil {
			t.Fatal(err)
		}
		d, err := Open(f, Options{Name: p, Writable: true, OpenExtent: func(q string, _ bool) (block.Device, error) { return block.OpenOSFile(q, true) }})
		if err == nil {
			d.Close()
			t.Errorf("%s: opened writable", name)
		} else if !errors.Is(err, want) || !errors.Is(err, ErrNotWritable) {
			t.Errorf("%s: %v, want %v and ErrNotWritable", name, err, want)
		}
		f.Close()
		if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
			t.Errorf("%s: the refused open changed the image", name)
		}
	}
	// Version 3 without deflate (QEMU: "VMDK version 3 must be read
	// only").
	v3 := filepath.Join(dir, "v3.vmdk")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", v3, "1M")
	if b, err := os.ReadFile(v3); err == nil {
		b[4] = 3
		os.WriteFile(v3, b, 0o644)
	}
	try("version 3 without deflate", v3, format.ErrUnsupported)
	// Descriptor files whose extents would write into one another or
	// into the descriptor (QEMU writes them all the same).
	for name, lines := range map[string]string{
		"an extent file named twice": "RW 2048 FLAT \"t-flat.vmdk\" 0\nRW 2048 FLAT \"t-flat.vmdk\" 2048\n",
		"the same file by two names": "RW 2048 FLAT \"t-flat.vmdk\" 0\nRW 2048 FLAT \"./t-flat.vmdk\" 2048\n",
		"a sparse extent twice":      "RW 2048 SPARSE \"s-s001.vmdk\"\nRW 2048 SPARSE \"s-s001.vmdk\"\n",
		"the descriptor itself":      "RW 2048 FLAT \"t-flat.vmdk\" 0\nRW 2048 FLAT \"t.vmdk\" 2048\n",
	} {
		p := filepath.Join(dir, "t.vmdk")
		os.WriteFile(filepath.Join(dir, "t-flat.vmdk"), make([]byte, 2<<20), 0o644)
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", filepath.Join(dir, "s.vmdk"), "1M")
		os.WriteFile(p, []byte("# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"twoGbMaxExtentFlat\"\n\n"+lines), 0o644)
		try(name, p, format.ErrCorrupt)
	}
	base, top := filepath.Join(dir, "base.vmdk"), filepath.Join(dir, "top.vmdk")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", base, "1M")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "-b", base, "-F", "vmdk", top)
	before, _ := os.ReadFile(top)
	f, _ := block.OpenOSFile(top, false)
	if _, err := Open(f, Options{Name: top, Writable: true, NoParent: true}); !errors.Is(err, format.ErrUnsupported) || !errors.Is(err, ErrNotWritable) {
		t.Errorf("with a parent: %v", err)
	}
	f.Close()
	if after, _ := os.ReadFile(top); !bytes.Equal(before, after) {
		t.Error("with a parent: the refused open changed the image")
	}
	// Grain 1 pointed at grain 0's sector, then at the first grain
	// table's.
	p := filepath.Join(dir, "a.vmdk")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", p, "1M")
	testkit.MustRun(t, "qemu-io", "-f", "vmdk", "-c", "write 0 128k", p)
	clean, _ := os.ReadFile(p)
	h, _ := format.ParseHeader(clean)
	gd := int64(h.GDOffset) * 512
	gt := int64(format.Entry(clean[gd:], 0)) * 512
	for _, e := range []uint32{format.Entry(clean[gt:], 0), uint32(gt / 512)} {
		c := bytes.Clone(clean)
		c[gt+4], c[gt+5], c[gt+6], c[gt+7] = byte(e), byte(e>>8), byte(e>>16), byte(e>>24)
		if err := os.WriteFile(p, c, 0o644); err != nil {
			t.Fatal(err)
		}
		try(fmt.Sprintf("grain 1 at sector %d", e), p, format.ErrCorrupt)
	}
}

// TestWrite_HugeTablesRefused: a header whose grain tables would hold
// far more entries than the file can (tiny grains, a huge capacity)
// opens read-only, but writable it is refused before anything is sized
// by them (KD8), and the image is left as it was.
func TestWrite_HugeTablesRefused(t *testing.T) {
	m := memdev.New(memdev.Options{})
	if _, err := Create(m, CreateOptions{NewOptions: format.NewOptions{Size: 1 << 20}}); err != nil {
		t.Fatal(err)
	}
	b := m.Bytes()
	b = append(b, make([]byte, 9<<20-len(b))...)
	le := binary.LittleEndian
	le.PutUint64(b[12:], 1<<30) // capacity, sectors
	le.PutUint64(b[20:], 1)     // granularity: 2 Mi directory entries of 512 tables
	le.PutUint64(b[56:], 2048)  // gd_offset: 8 MiB of zeros at 1 MiB
	if _, err := Open(memdev.FromBytes(b, memdev.Options{}), Options{}); err != nil {
		t.Fatalf("read-only open: %v", err)
	}
	w := memdev.FromBytes(b, memdev.Options{})
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := Open(w, Options{Writable: true}); !errors.Is(err, format.ErrCorrupt) || !errors.Is(err, ErrNotWritable) {
		t.Errorf("writable open: %v", err)
	}
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > 64<<20 {
		t.Errorf("the refused open allocated %d MiB", n>>20)
	}
	if !bytes.Equal(w.Bytes(), b) {
		t.Error("the refused open changed the image")
	}
}

// TestWrite_StreamMatchesQemu: a streamOptimized image qemu-img created
// takes whole grains (the last one up to the disk's end) as QEMU's does,
// each once, deflated behind its marker (KD12): qemu-img check finds
// nothing, qemu-img reads our grains and maps them compressed, and we
// read the grain qemu-io adds; a partial grain, a second write or zeros
// into a written grain are refused, as QEMU refuses them, before
// anything changes (the CID too); zeros take whole grains, as QEMU's
// fallback writes them.
func TestWrite_StreamMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "s.vmdk")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=streamOptimized", p, "1028K")
	d := openRW(t, p)
	size, _ := d.Size()
	model := make([]byte, size)
	for _, w := range []struct{ off, n int64 }{{0, 64 << 10}, {192 << 10, 64 << 10}, {1 << 20, 4 << 10}} {
		b := fill(int(w.n), byte(w.off>>16)+1)
		if err := d.Writev(w.off, [][]byte{b[:w.n/2], b[w.n/2:]}); err != nil {
			t.Fatalf("write at %d: %v", w.off, err)
		}
		copy(model[w.off:], b)
	}
	for _, c := range []struct {
		err  error
		what string
		call func() error
	}{
		{ErrStreamPartial, "a partial grain", func() error { return d.Writev(128<<10, [][]byte{make([]byte, 4096)}) }},
		{ErrStreamPartial, "a grain's tail", func() error { return d.Writev(128<<10+512, [][]byte{make([]byte, 64<<10-512)}) }},
		{ErrStreamAllocated, "a second write", func() error { return d.Writev(0, [][]byte{make([]byte, 64<<10)}) }},
		// QEMU asks whether the first grain is written first.
		{ErrStreamAllocated, "a partial write into a written grain", func() error { return d.Writev(512, [][]byte{make([]byte, 512)}) }},
		{ErrStreamAllocated, "a written grain's head", func() error { return d.Writev(0, [][]byte{make([]byte, 512)}) }},
		{ErrStreamAllocated, "zeros into a written grain", func() error { return d.WriteZeroes(0, 4096, 0) }},
		// QEMU's fallback writes zeros: whole grains only, then a
		// grain of zeros taken (a write there is refused after).
		{ErrStreamPartial, "zeros into part of a new grain", func() error { return d.WriteZeroes(512<<10, 4096, 0) }},
		{nil, "zeros over a new grain", func() error { return d.WriteZeroes(512<<10, 64<<10, 0) }},
		{ErrStreamAllocated, "a write over zeros", func() error { return d.Writev(512<<10, [][]byte{make([]byte, 64<<10)}) }},
		// Whole grains, the second written: nothing is written.
		{ErrStreamAllocated, "grains up to a written one", func() error { return d.Writev(128<<10, [][]byte{make([]byte, 128<<10)}) }},
	} {
		if err := c.call(); !errors.Is(err, c.err) {
			t.Errorf("%s: %v, want %v", c.what, err, c.err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, p)
	testkit.MustEqual(t, testkit.QemuReadRaw(t, "vmdk", p), model, "qemu-img's read")
	if m := testkit.MustRun(t, "qemu-img", "map", "-f", "vmdk", "--output=json", p); strings.Count(m, `"data": true`) != 4 || strings.Contains(m, "offset") {
		t.Errorf("qemu-img map: %s", m)
	}
	// A refused write changes nothing, the CID included (QEMU changes
	// it after a write only): an image made over this one still reads.
	before, _ := os.ReadFile(p)
	d = openRW(t, p)
	if err := d.Writev(0, [][]byte{make([]byte, 64<<10)}); !errors.Is(err, ErrStreamAllocated) {
		t.Errorf("a second write after reopening: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
		t.Error("a refused write changed the image")
	}
	testkit.MustRun(t, "qemu-io", "-f", "vmdk", "-c", "write -P 0x77 320k 64k", p)
	copy(model[320<<10:], bytes.Repeat([]byte{0x77}, 64<<10))
	d = openRW(t, p)
	got := make([]byte, size)
	if err := d.Readv(0, [][]byte{got}); err != nil {
		t.Fatal(err)
	}
	testkit.MustEqual(t, got, model, "qemu-io's grain and ours")
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestWrite_WrappedDirectoryRefused: a capacity whose directory size
// wraps in QEMU's 32-bit arithmetic (2^32+5 sectors of one-sector
// grains, one entry per table: 5 directory entries) leaves tables that
// map less than the disk; such an image opens read-only, but writable
// it is refused (a write past the tables panicked on the missing
// entry).
func TestWrite_WrappedDirectoryRefused(t *testing.T) {
	m := memdev.New(memdev.Options{})
	if _, err := Create(m, CreateOptions{NewOptions: format.NewOptions{Size: 1 << 20}}); err != nil {
		t.Fatal(err)
	}
	b := m.Bytes()
	le := binary.LittleEndian
	le.PutUint32(b[8:], format.FlagNLDetect) // no redundant directory
	le.PutUint64(b[12:], 1<<32+5)            // capacity, sectors
	le.PutUint64(b[20:], 1)                  // granularity
	le.PutUint32(b[44:], 1)                  // entries per table
	le.PutUint64(b[56:], 100)                // gd_offset
	for i := range 5 {
		le.PutUint32(b[100*512+4*i:], uint32(101+i))
	}
	if _, err := Open(memdev.FromBytes(b, memdev.Options{}), Options{}); err != nil {
		t.Fatalf("read-only open: %v", err)
	}
	d, err := Open(memdev.FromBytes(b, memdev.Options{}), Options{Writable: true})
	if err == nil {
		defer d.Close()
		err = d.Writev(5120, [][]byte{make([]byte, 512)}) // panicked
		t.Fatalf("writable open accepted; a write past the tables: %v", err)
	}
	if !errors.Is(err, format.ErrCorrupt) {
		t.Errorf("writable open: %v", err)
	}
}

// flushHook runs on before and after each of its memdev's flushes
// (the nth, from 1).
type flushHook struct {
	*memdev.Dev
	n  int
	on func(n int, after bool)
}

func (f *flushHook) Flush() error {
	f.n++
	f.on(f.n, false)
	err := f.Dev.Flush()
	f.on(f.n, true)
	return err
}

// TestWrite_FlushEntriesAsGrown: a grain zeroed and written anew while a
// Flush runs (a zeroed_grain image) gets a grain past the length that
// Flush grew the file to; that Flush writes the entries as they were
// when it grew the file, so no crash clone taken before its last flush
// maps a grain past the end of the file (KD10). It wrote the newer
// entry: a quarter of the clones opened to a grain past the end.
func TestWrite_FlushEntriesAsGrown(t *testing.T) {
	m := memdev.New(memdev.Options{})
	if _, err := Create(m, CreateOptions{NewOptions: format.NewOptions{Size: 1 << 20, ZeroedGrain: true}}); err != nil {
		t.Fatal(err)
	}
	const gb = 64 << 10
	var d *Disk
	var clones []*memdev.Dev
	rng := rand.New(rand.NewPCG(1, 2))
	fh := &flushHook{Dev: m, on: func(int, bool) {}}
	d, err := Open(fh, Options{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Writev(gb, [][]byte{fill(gb, 1)}); err != nil { // grain 1, and the CID's flush
		t.Fatal(err)
	}
	first := fh.n
	fh.on = func(n int, after bool) {
		switch {
		case n == first+1 && after: // past the Flush's first: grain 1 zeroed, then written anew
			if err := d.WriteZeroes(gb, gb, 0); err != nil {
				t.Error(err)
			}
			if err := d.Writev(gb, [][]byte{fill(gb, 2)}); err != nil {
				t.Error(err)
			}
		case n == first+2 && !after: // its last: the entries are written, not durable
			for range 64 {
				clones = append(clones, m.CrashClone(rng, 0.5))
			}
		}
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	fh.on = func(int, bool) {}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if len(clones) == 0 {
		t.Fatal("no clone taken")
	}
	for i, c := range clones {
		cd, err := Open(c, Options{Writable: true})
		if err != nil {
			t.Fatalf("clone %d: %v", i, err)
		}
		b := make([]byte, gb)
		if err := cd.Readv(gb, [][]byte{b}); err != nil {
			t.Fatalf("clone %d: %v", i, err)
		}
		cd.Close()
	}
}

// TestWrite_ReadErrorIsNotARefusal: a read that fails while Open sets a
// writable image up (its header, tables, grain markers) fails the open
// with that error, not as a refusal (ErrNotWritable), which callers take
// for "open it read-only" (imgopen's ErrVMDKReadOnly).
func TestWrite_ReadErrorIsNotARefusal(t *testing.T) {
	for _, stream := range []bool{false, true} {
		m := memdev.New(memdev.Options{})
		o := CreateOptions{NewOptions: format.NewOptions{Size: 4 << 20}}
		if stream {
			o.Stream = true
		}
		if _, err := Create(m, o); err != nil {
			t.Fatal(err)
		}
		d, err := Open(m, Options{Writable: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Writev(0, [][]byte{bytes.Repeat([]byte{7}, 64<<10)}); err != nil {
			t.Fatal(err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		img := m.Bytes()
		failed := 0
		for i := int64(0); ; i++ {
			inj := errordev.OnOp(errordev.Read, i, errordev.ErrInjectedEIO)
			d, err := Open(errordev.New(memdev.FromBytes(img, memdev.Options{}), inj, errordev.Options{}), Options{Writable: true})
			if inj.Fired() == 0 {
				if err != nil {
					t.Fatalf("stream %v: open without a fault: %v", stream, err)
				}
				d.Close()
				break
			}
			failed++
			if err == nil {
				d.Close()
				t.Fatalf("stream %v: read %d failed, the open did not", stream, i)
			}
			if !errors.Is(err, errordev.ErrInjected) || errors.Is(err, ErrNotWritable) {
				t.Errorf("stream %v: read %d failed: %v (want the read's error, not a refusal)", stream, i, err)
			}
		}
		if failed < 3 {
			t.Errorf("stream %v: only %d reads to fail", stream, failed)
		}
	}
}

// TestWrite_StreamRefusedChangesNothing: a write a streamOptimized image
// refuses for its shape (a partial grain) is refused before the first
// write's new CID (KD11): the file stays as it was, as QEMU, which
// changes the CID only after a write succeeded. The CID changed, so an
// image made on top of it no longer read through it.
func TestWrite_StreamRefusedChangesNothing(t *testing.T) {
	testkit.NeedQemu(t)
	p := filepath.Join(t.TempDir(), "s.vmdk")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=streamOptimized", p, "1028K")
	before, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	d := openRW(t, p)
	for _, w := range []struct{ off, n int64 }{{128 << 10, 4096}, {128<<10 + 512, 64<<10 - 512}, {0, 64<<10 + 512}} {
		if err := d.Writev(w.off, [][]byte{make([]byte, w.n)}); !errors.Is(err, ErrStreamPartial) {
			t.Errorf("write [%d, +%d): %v, want ErrStreamPartial", w.off, w.n, err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("refused writes changed the file")
	}
}

// TestWrite_StreamZerosRaceWrite: a whole-grain write that lands while
// whole-grain zeros of a streamOptimized image with zeroed grains are
// about to mark that grain zeroed (testHookZeroGrain) is not lost: the
// zeros, which come after it, are refused (a written grain takes none,
// as QEMU serializes them; KD12). The zeros' entry overwrote the
// written grain's and the acknowledged write was lost (17 of 6144 under
// the race detector, found by the session's review).
func TestWrite_StreamZerosRaceWrite(t *testing.T) {
	const gb = 64 << 10
	m := memdev.New(memdev.Options{})
	if _, err := Create(m, CreateOptions{NewOptions: format.NewOptions{Size: 4 * gb, Stream: true, ZeroedGrain: true}}); err != nil {
		t.Fatal(err)
	}
	d, err := Open(m, Options{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	want := bytes.Repeat([]byte{0x3c}, gb)
	testHookZeroGrain = func(gi int64) {
		testHookZeroGrain = nil
		if err := d.Writev(gi*gb, [][]byte{want}); err != nil {
			t.Errorf("the racing write: %v", err)
		}
	}
	defer func() { testHookZeroGrain = nil }()
	if err := d.WriteZeroes(gb, gb, 0); !errors.Is(err, ErrStreamAllocated) {
		t.Errorf("zeros after the write: %v, want ErrStreamAllocated", err)
	}
	got := make([]byte, gb)
	if err := d.Readv(gb, [][]byte{got}); err != nil {
		t.Fatal(err)
	}
	testkit.MustEqual(t, got, want, "the acknowledged write")
}
