package main

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// An image whose L1 table points past the end of the file: check reports
// it and exits 2 as qemu-img does, info, map and reads work as QEMU's
// do, and a write is refused without changing the image.
func TestCheck_TablePastEOF(t *testing.T) {
	testkit.NeedQemu(t)
	p := filepath.Join(t.TempDir(), "d.qcow2") // damaged on purpose: no check at the end
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "64M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", p)
	damage(t, p, func(f imageFile) {
		f.putU64(int64(f.u64(40)), 1<<63|100<<20) // L2 table at 100 MiB
	})
	before, _ := os.ReadFile(p)

	_, _, qcode := testkit.Run(t, "qemu-img", "check", p)
	_, e, code := runQ(t, "check", p)
	if code != 2 || qcode != 2 || !strings.Contains(e, "exceeding the end of the file") {
		t.Fatalf("check: exit %d (qemu-img %d), want 2\n%s", code, qcode, e)
	}
	if out := mustQ(t, "info", p); !strings.Contains(out, "virtual size: 64 MiB") {
		t.Fatalf("info:\n%s", out)
	}
	mustQ(t, "map", p)
	mustQ(t, "io", "-r", "-c", "read -P 0 0 64k", p)
	if _, e, code = runQ(t, "io", "-c", "write 0 4k", p); code == 0 || !strings.Contains(e, "past the end of the file") {
		t.Fatalf("write into the damaged image: exit %d\n%s", code, e)
	}
	if after, _ := os.ReadFile(p); string(after) != string(before) {
		t.Fatal("the damaged image changed")
	}
}

// imageFile reads and writes the big-endian fields of an image file
// opened by damage; an I/O error fails the test.
type imageFile struct {
	t *testing.T
	f *os.File
}

// damage opens the image file at path, lets fn change it by hand and
// closes it.
func damage(t *testing.T, path string, fn func(f imageFile)) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fn(imageFile{t, f})
}

func (f imageFile) read(off int64, n int) []byte {
	f.t.Helper()
	b := make([]byte, n)
	if _, err := f.f.ReadAt(b, off); err != nil {
		f.t.Fatal(err)
	}
	return b
}

func (f imageFile) write(off int64, b []byte) {
	f.t.Helper()
	if _, err := f.f.WriteAt(b, off); err != nil {
		f.t.Fatal(err)
	}
}

func (f imageFile) u32(off int64) uint32 { return binary.BigEndian.Uint32(f.read(off, 4)) }
func (f imageFile) u64(off int64) uint64 { return binary.BigEndian.Uint64(f.read(off, 8)) }

func (f imageFile) putU64(off int64, v uint64) {
	f.t.Helper()
	f.write(off, binary.BigEndian.AppendUint64(nil, v))
}

// entryMask keeps the offset of an L1, L2 or refcount table entry.
const entryMask = 0x00fffffffffffe00

// leakCluster drops the L2 entry of guest cluster 0 (which must be
// allocated) so that its data cluster is leaked: the image stays
// consistent otherwise. It works on v3 images with 64 KiB clusters.
func leakCluster(t *testing.T, path string) {
	t.Helper()
	damage(t, path, func(f imageFile) {
		l2off := int64(f.u64(int64(f.u64(40))) & entryMask)
		if l2off == 0 {
			t.Fatal("leakCluster: no L2 table")
		}
		f.write(l2off, make([]byte, 8))
	})
}

// zeroRefcount sets the refcount of the data cluster behind guest cluster
// 0 to zero (16-bit refcounts): a corruption that -r all repairs.
func zeroRefcount(t *testing.T, path string) {
	t.Helper()
	damage(t, path, func(f imageFile) {
		cbits := f.u32(20)
		if order := f.u32(96); order != 4 {
			t.Fatalf("zeroRefcount: refcount order %d", order)
		}
		l2 := int64(f.u64(int64(f.u64(40))) & entryMask)
		data := f.u64(l2) & entryMask
		cl := data >> cbits
		perBlock := uint64(1) << (cbits - 1) // 16-bit entries
		rb := int64(f.u64(int64(f.u64(48))+int64(cl/perBlock)*8) & entryMask)
		f.write(rb+int64(cl%perBlock)*2, []byte{0, 0})
	})
}

// Images whose tables a writable open refuses (Q19): an L1 or refcount
// table entry that is not cluster aligned or has reserved bits set, an
// L2 table on a refcount block. check walks them and exits as qemu-img
// does; reads work where the damage is not, and through it succeed or
// fail as qemu-io's; writes are refused. -r all rebuilds the refcount
// structures where the damage lies in them only (qemu-img check then
// finds the image clean), and elsewhere repairs nothing and leaves the
// image as it was.
func TestCheck_DamagedTablesMatchQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	l1 := func(f imageFile) int64 { return int64(f.u64(40)) }
	rt := func(f imageFile) int64 { return int64(f.u64(48)) }
	cases := []struct {
		name    string
		edit    func(f imageFile)
		rebuilt bool
	}{
		{"unaligned L1 entry", func(f imageFile) { f.putU64(l1(f), f.u64(l1(f))+512) }, false},
		{"L1 entry reserved bits", func(f imageFile) { f.putU64(l1(f), f.u64(l1(f))|2) }, false},
		{"unaligned refcount block", func(f imageFile) { f.putU64(rt(f), f.u64(rt(f))+512) }, true},
		{"refcount table entry reserved bits", func(f imageFile) { f.putU64(rt(f), f.u64(rt(f))|8) }, true},
		// Its "L2 entries" (refcounts) point far past the file: no rebuild.
		{"L2 table on the refcount block", func(f imageFile) { f.putU64(l1(f), 1<<63|f.u64(rt(f))) }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "d.qcow2") // damaged on purpose: no check at the end
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "1G")
			testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", "-c", "write -P 2 600M 64k", p)
			damage(t, p, tc.edit)
			before, _ := os.ReadFile(p)

			_, qe, qcode := testkit.Run(t, "qemu-img", "check", p)
			_, e, code := runQ(t, "check", p)
			if code != qcode || code == 0 || code == 3 {
				t.Fatalf("check: exit %d, qemu-img %d\n%s\nqemu-img:\n%s", code, qcode, e, qe)
			}
			mustQ(t, "info", p)
			mustQ(t, "io", "-r", "-c", "read -P 2 600M 64k", p)
			testkit.MustRun(t, "qemu-io", "-r", "-c", "read -P 2 600M 64k", p)
			_, _, qcode = testkit.Run(t, "qemu-io", "-r", "-c", "read -P 1 0 64k", p)
			if _, e, code = runQ(t, "io", "-r", "-c", "read -P 1 0 64k", p); code != qcode {
				t.Fatalf("reading through the damage: exit %d, qemu-io %d\n%s", code, qcode, e)
			}
			if _, e, code = runQ(t, "io", "-c", "write 600M 4k", p); code == 0 {
				t.Fatalf("write into the damaged image: exit 0\n%s", e)
			}
			if after, _ := os.ReadFile(p); string(after) != string(before) {
				t.Fatal("the damaged image changed")
			}
			_, e, code = runQ(t, "check", "-r", "all", p)
			if tc.rebuilt {
				if code != 0 || !strings.Contains(e, "Rebuilding refcount structure") {
					t.Fatalf("check -r all: exit %d, want 0 (rebuilt)\n%s", code, e)
				}
				testkit.QemuCheck(t, p)
				testkit.MustRun(t, "qemu-io", "-c", "read -P 1 0 64k", "-c", "read -P 2 600M 64k", p)
				return
			}
			if code != 1 || !strings.Contains(e, "damaged") {
				t.Fatalf("check -r all: exit %d, want 1 (refused)\n%s", code, e)
			}
			if after, _ := os.ReadFile(p); string(after) != string(before) {
				t.Fatal("the refused repair changed the image")
			}
		})
	}
}

// commit on a top image whose tables are damaged: opened read-only, the
// image now opens (Q19), but committing would empty it afterwards, so
// commit refuses and neither file changes (found by review).
func TestCommit_RefusesDamagedTop(t *testing.T) {
	testkit.NeedQemu(t)
	dir := t.TempDir()
	base, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "64M")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top)
	testkit.MustRun(t, "qemu-io", "-c", "write -P 3 0 64k", top)
	damage(t, top, func(f imageFile) {
		l1 := int64(f.u64(40))
		f.putU64(l1, f.u64(l1)|2) // reserved bits in L1[0]
	})
	b0, _ := os.ReadFile(base)
	t0, _ := os.ReadFile(top)
	if _, e, code := runQ(t, "commit", top); code != 1 || !strings.Contains(e, "reserved bits") {
		t.Fatalf("commit of a damaged top: exit %d\n%s", code, e)
	}
	b1, _ := os.ReadFile(base)
	t1, _ := os.ReadFile(top)
	if string(b0) != string(b1) || string(t0) != string(t1) {
		t.Fatal("a refused commit changed the images")
	}
}

// Refcount structures that cannot be trusted: check exits as qemu-img
// does, and -r all rebuilds them, after which qemu-img check finds the
// image clean and the guest data reads back through qemu-io.
func TestCheck_RebuildMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	rt := func(f imageFile) int64 { return int64(f.u64(48)) }
	cases := []struct {
		name string
		edit func(f imageFile)
	}{
		{"refcount block on a data cluster", func(f imageFile) {
			l2 := int64(f.u64(int64(f.u64(40))) & entryMask)
			f.putU64(rt(f)+8, f.u64(l2)&entryMask)
		}},
		{"refcount block past the end", func(f imageFile) { f.putU64(rt(f)+8, 100<<20) }},
		{"refcount block offset with bit 63", func(f imageFile) { f.putU64(rt(f)+8, 1<<63|0x10000) }},
		{"two entries, one block", func(f imageFile) { f.putU64(rt(f)+8, f.u64(rt(f))) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "r.qcow2")
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "64M")
			testkit.MustRun(t, "qemu-io", "-c", "write -P 5 0 1M", p)
			damage(t, p, tc.edit)
			_, qe, qcode := testkit.Run(t, "qemu-img", "check", p)
			if _, e, code := runQ(t, "check", p); code != qcode || code == 0 {
				t.Fatalf("check: exit %d, qemu-img %d\n%s\nqemu-img:\n%s", code, qcode, e, qe)
			}
			if out, e, code := runQ(t, "check", "-r", "all", p); code != 0 || !strings.Contains(e, "Rebuilding refcount structure") {
				t.Fatalf("check -r all: exit %d\n%s%s", code, out, e)
			}
			testkit.QemuCheck(t, p)
			testkit.MustRun(t, "qemu-io", "-c", "read -P 5 0 1M", p)
		})
	}
}

// A damaged image with a persistent bitmap, cured by the rebuild: the
// rebuild does not count the bitmaps' clusters, so the same header write
// clears their consistency bit, as a writable open does; qemu-img check
// then finds the image clean (review: it found the bitmap clusters at
// refcount 0 while QEMU still trusted them).
func TestCheck_RebuildDropsBitmaps(t *testing.T) {
	testkit.NeedQemu(t)
	p := filepath.Join(t.TempDir(), "b.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "64M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 6 0 1M", p)
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", p, "bm0")
	damage(t, p, func(f imageFile) {
		rt := int64(f.u64(48))
		f.putU64(rt, f.u64(rt)|8) // reserved bits in refcount table entry 0
	})
	if out, e, code := runQ(t, "check", "-r", "all", p); code != 0 {
		t.Fatalf("check -r all: exit %d\n%s%s", code, out, e)
	}
	// qemu-img warns that a program lacking bitmap support modified the
	// file, as after any writable open by qimg: that is the cleared bit.
	qemuCheckClean := func() {
		t.Helper()
		out, e, code := testkit.Run(t, "qemu-img", "check", p)
		if code != 0 || !strings.Contains(out, "No errors were found") {
			t.Fatalf("qemu-img check: exit %d\n%s%s", code, out, e)
		}
	}
	qemuCheckClean()
	testkit.MustRun(t, "qemu-io", "-c", "read -P 6 0 1M", "-c", "write -P 7 2M 1M", p)
	qemuCheckClean()
}

// An L2 entry whose host offset is not cluster aligned still references
// the clusters it touches, as qemu-img counts them: -r all must not free
// its data cluster as a leak, which handed it out again under the guest
// data (found by a differential fuzz against qemu-img). Both tools leave
// the entry as it is; qemu-img check then finds the same on either copy.
func TestCheck_MisalignedL2EntryKeepsItsCluster(t *testing.T) {
	testkit.NeedQemu(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "m.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "64M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 1M", p)
	damage(t, p, func(f imageFile) {
		l2 := int64(f.u64(int64(f.u64(40))) & entryMask)
		f.putU64(l2, f.u64(l2)+512)
	})
	q := filepath.Join(dir, "q.qcow2")
	b, _ := os.ReadFile(p)
	if err := os.WriteFile(q, b, 0o644); err != nil {
		t.Fatal(err)
	}
	testkit.Run(t, "qemu-img", "check", "-r", "all", q)
	runQ(t, "check", "-r", "all", p)
	qout, _, qcode := testkit.Run(t, "qemu-img", "check", q)
	out, e, code := testkit.Run(t, "qemu-img", "check", p)
	if code != qcode || strings.Contains(out+e, "refcount=0 reference=1") {
		t.Fatalf("qemu-img check after qimg's repair: exit %d (after qemu-img's own: %d)\n%s%s\nafter qemu-img's:\n%s", code, qcode, out, e, qout)
	}
	testkit.MustRun(t, "qemu-io", "-c", "read -P 1 64k 960k", p)
}

// An L2 entry with reserved bits set (Q20): check reports it as
// qemu-img does, reads through it return the data as qemu-io's do (both
// mask the bits off), with and without extended L2 entries; a write
// there is refused without changing the image.
func TestIO_L2ReservedBitsReadAsQemu(t *testing.T) {
	testkit.NeedQemu(t)
	for _, tc := range []struct {
		name string
		opts []string
		bit  uint64
	}{
		{"low bit", nil, 1 << 4},
		{"high bit", nil, 1 << 60},
		{"extended L2", []string{"-o", "extended_l2=on"}, 1 << 57},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "d.qcow2") // damaged on purpose: no check at the end
			testkit.MustRun(t, "qemu-img", append(append([]string{"create", "-q", "-f", "qcow2"}, tc.opts...), p, "64M")...)
			testkit.MustRun(t, "qemu-io", "-c", "write -P 7 0 64k", "-c", "write -P 8 64k 64k", p)
			damage(t, p, func(f imageFile) {
				l2 := int64(f.u64(int64(f.u64(40))) & entryMask)
				f.putU64(l2, f.u64(l2)|tc.bit)
			})
			before, _ := os.ReadFile(p)

			_, qe, qcode := testkit.Run(t, "qemu-img", "check", p)
			_, e, code := runQ(t, "check", p)
			if code != qcode || code != 2 || !strings.Contains(e, "reserved bits") {
				t.Fatalf("check: exit %d, qemu-img %d, want 2\n%s\nqemu-img:\n%s", code, qcode, e, qe)
			}
			testkit.MustRun(t, "qemu-io", "-r", "-c", "read -P 7 0 64k", p)
			mustQ(t, "io", "-r", "-c", "read -P 7 0 64k", "-c", "read -P 8 64k 64k", p)
			mustQ(t, "io", "-c", "read -P 7 0 64k", "-c", "read -P 8 64k 64k", p) // a writable open reads it too
			if o, e, code := runQ(t, "io", "-c", "write 0 4k", p); code == 0 || !strings.Contains(o+e, "reserved bits") {
				t.Fatalf("write through the entry: exit %d\n%s%s", code, o, e)
			}
			if after, _ := os.ReadFile(p); string(after) != string(before) {
				t.Fatal("the damaged image changed")
			}
		})
	}
}

// A header size that is no multiple of 512 is taken in whole sectors,
// as QEMU takes it: info, map and convert say 4 MiB where qimg's info
// said 4194305, its map ran a byte longer and convert made a file of
// 4194816 bytes; a write past the last whole sector fails as qemu-io's,
// and a header qimg writes (a resize) keeps whole sectors.
func TestDamaged_UnalignedSizeLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := t.TempDir() // damaged on purpose
	p := qemuImage(t, filepath.Join(dir, "s.qcow2"), "qcow2", "4M", "write -P 5 4190208 4096")
	damage(t, p, func(f imageFile) { f.putU64(24, 4<<20+1) })
	// (qimg's map JSON adds qemu-img 8.2's "compressed".)
	ours := strings.ReplaceAll(mustQ(t, "map", "--output=json", p), `, "compressed": false`, "")
	if theirs := testkit.MustRun(t, "qemu-img", "map", "--output=json", p); ours != theirs {
		t.Errorf("map: qimg\n%s\nqemu-img\n%s", ours, theirs)
	}
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal([]byte(mustQ(t, "info", "--output=json", p)), &info); err != nil || info.VirtualSize != virtualSize(t, p) {
		t.Errorf("info: virtual size %d (%v), qemu-img's %d", info.VirtualSize, err, virtualSize(t, p))
	}
	a, b := filepath.Join(dir, "a.raw"), filepath.Join(dir, "b.raw")
	mustQ(t, "convert", "-O", "raw", p, a)
	testkit.MustRun(t, "qemu-img", "convert", "-O", "raw", p, b)
	if fa, fb := fileSize(t, a), fileSize(t, b); fa != fb || fa != 4<<20 {
		t.Errorf("convert: qimg's %d bytes, qemu-img's %d", fa, fb)
	}
	_, _, code := runQ(t, "io", "-c", "write -P 6 4194300 5", p)
	_, _, qcode := testkit.Run(t, "qemu-io", "-c", "write -P 6 4194300 5", p)
	if code == 0 || qcode == 0 {
		t.Errorf("a write past the last whole sector: qimg exit %d, qemu-io %d", code, qcode)
	}
	mustQ(t, "resize", p, "8M")
	mustQ(t, "resize", "--shrink", p, "4M")
	if got := virtualSize(t, p); got != 4<<20 {
		t.Errorf("after qimg's resizes: virtual size %d", got)
	}
	testkit.MustRun(t, "qemu-io", "-c", "read -P 5 4190208 4096", p)
}

// A compressed L2 entry with COPIED set (Q20): check reports it as
// qemu-img does, reads, map and convert take the cluster as qemu-img's
// do (both read the offset and size under the flags; qimg refused every
// lookup that met it); a write there is refused without changing the
// image.
func TestIO_CompressedCopiedReadAsQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := t.TempDir() // damaged on purpose
	src := qemuImage(t, filepath.Join(dir, "src.qcow2"), "qcow2", "1M", "write -P 7 0 64k", "write -P 8 64k 64k")
	p := filepath.Join(dir, "c.qcow2")
	testkit.MustRun(t, "qemu-img", "convert", "-c", "-O", "qcow2", src, p)
	damage(t, p, func(f imageFile) {
		l2 := int64(f.u64(int64(f.u64(40))) & entryMask)
		if f.u64(l2)&(1<<62) == 0 {
			t.Fatal("the first cluster is not compressed")
		}
		f.putU64(l2, f.u64(l2)|1<<63)
	})
	before, _ := os.ReadFile(p)
	_, qe, qcode := testkit.Run(t, "qemu-img", "check", p)
	_, e, code := runQ(t, "check", p)
	if code != qcode || code != 2 || !strings.Contains(e, "copied flag must never be set for compressed clusters") {
		t.Fatalf("check: exit %d, qemu-img %d, want 2\n%s\nqemu-img:\n%s", code, qcode, e, qe)
	}
	mustQ(t, "io", "-r", "-c", "read -P 7 0 64k", "-c", "read -P 8 64k 64k", p)
	ours := strings.ReplaceAll(mustQ(t, "map", "--output=json", p), `, "compressed": true`, "")
	ours = strings.ReplaceAll(ours, `, "compressed": false`, "")
	if theirs := testkit.MustRun(t, "qemu-img", "map", "--output=json", p); ours != theirs {
		t.Errorf("map: qimg\n%s\nqemu-img\n%s", ours, theirs)
	}
	a, b := filepath.Join(dir, "a.raw"), filepath.Join(dir, "b.raw")
	mustQ(t, "convert", "-O", "raw", p, a)
	testkit.MustRun(t, "qemu-img", "convert", "-O", "raw", p, b)
	testkit.MustRun(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", a, b)
	if o, e, code := runQ(t, "io", "-c", "write 0 4k", p); code == 0 || !strings.Contains(o+e, "COPIED") {
		t.Fatalf("write through the entry: exit %d\n%s%s", code, o, e)
	}
	if after, _ := os.ReadFile(p); string(after) != string(before) {
		t.Fatal("the damaged image changed")
	}
}
