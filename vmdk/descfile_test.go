package vmdk

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/vmdk/format"
)

// TestCreateDescriptorFile_LikeQemu: NewDescriptorFile names and sizes
// the extents of a monolithicFlat, twoGbMaxExtentFlat or
// twoGbMaxExtentSparse image as qemu-img create does, its text is
// qemu-img's given the same CID, and CreateSparseExtent lays a split
// sparse extent out byte for byte as QEMU's (format's KF8); flat images
// refuse zeroed grains in QEMU's words.
func TestCreateDescriptorFile_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := t.TempDir()
	cases := []struct {
		sub  string
		size int64
		opts string
		o    format.NewOptions
	}{
		{format.MonolithicFlat, 1000, "", format.NewOptions{}},
		{format.MonolithicFlat, 5 << 30, "adapter_type=lsilogic,compat6=on", format.NewOptions{Adapter: "lsilogic", Compat6: true}},
		{format.TwoGbMaxExtentFlat, 2 << 30, "", format.NewOptions{}},
		{format.TwoGbMaxExtentFlat, 2<<30 + 1, "hwversion=7", format.NewOptions{HWVersion: "7"}},
		{format.TwoGbMaxExtentSparse, 5 << 30, "", format.NewOptions{}},
		{format.TwoGbMaxExtentSparse, 3 << 20, "zeroed_grain=on,toolsversion=9", format.NewOptions{ZeroedGrain: true, ToolsVersion: "9"}},
		{format.TwoGbMaxExtentSparse, 0, "", format.NewOptions{}},
	}
	for i, c := range cases {
		qd := filepath.Join(dir, fmt.Sprint("q", i))
		os.Mkdir(qd, 0o755)
		opts := "subformat=" + c.sub
		if c.opts != "" {
			opts += "," + c.opts
		}
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", opts, filepath.Join(qd, "x.vmdk"), fmt.Sprint(c.size))
		want, _ := os.ReadFile(filepath.Join(qd, "x.vmdk"))
		c.o.Size, c.o.Subformat = c.size, c.sub
		text, exts, err := NewDescriptorFile(c.o, "x.vmdk", format.ParseDescriptor(string(want)).CID)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if text != string(want) {
			t.Errorf("case %d: descriptor\n%s\nqemu-img's\n%s", i, text, want)
		}
		names, _ := filepath.Glob(filepath.Join(qd, "x-*"))
		if len(names) != len(exts) {
			t.Errorf("case %d: %d extents, qemu-img made %d files", i, len(exts), len(names))
		}
		for _, e := range exts {
			if e.Flat {
				fi, err := os.Stat(filepath.Join(qd, e.File))
				if err != nil || fi.Size() != e.Sectors*512 {
					t.Errorf("case %d: flat extent %s of %d sectors, qemu-img's: %v", i, e.File, e.Sectors, err)
				}
				continue
			}
			q, err := os.ReadFile(filepath.Join(qd, e.File))
			if err != nil {
				t.Fatalf("case %d: %v", i, err)
			}
			m := memdev.New(memdev.Options{})
			eo := c.o
			eo.Size = e.Sectors * 512
			if err := CreateSparseExtent(m, eo); err != nil {
				t.Fatal(err)
			}
			if got := m.Bytes(); !bytes.Equal(got, q) {
				t.Errorf("case %d: sparse extent %s: %d bytes, qemu-img's %d, first difference at %d", i, e.File, len(got), len(q), testkit.FirstDiff(got, q))
			}
		}
	}
	if _, _, err := NewDescriptorFile(format.NewOptions{Size: 1 << 20, Subformat: format.MonolithicFlat, ZeroedGrain: true}, "x.vmdk", 0); err == nil || err.Error() != "Flat image can't enable zeroed grain" {
		t.Errorf("flat with zeroed grains: %v", err)
	}
}

// window is a range of a large image that a test writes into, with its
// expected bytes.
type window struct {
	off  int64
	want []byte
}

// openFiles opens the image at p writable, its extent files too.
func openFiles(t *testing.T, p string) *Disk {
	t.Helper()
	f, err := block.OpenOSFile(p, false)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Open(f, Options{Name: p, Writable: true, OpenExtent: func(q string, w bool) (block.Device, error) { return block.OpenOSFile(q, !w) }})
	if err != nil {
		f.Close()
		t.Fatal(err)
	}
	return d
}

// TestWrite_DescriptorFilesMatchQemu: monolithicFlat,
// twoGbMaxExtentFlat and twoGbMaxExtentSparse images qemu-img created
// take writes and zeros, across the 2 GiB boundary between split
// extents too, and concurrent writers into several extents (KD8);
// qemu-img compares them with the bytes written and check finds
// nothing; the descriptor file has a new CID, written as QEMU writes it
// (its length rounded up to a sector, KD11); QEMU's writes into the
// image are what the Disk reads after.
func TestWrite_DescriptorFilesMatchQemu(t *testing.T) {
	testkit.NeedQemu(t)
	const size = 2<<30 + 8<<20
	for _, sub := range []string{format.MonolithicFlat, format.TwoGbMaxExtentFlat, format.TwoGbMaxExtentSparse} {
		t.Run(sub, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "x.vmdk")
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat="+sub, p, fmt.Sprint(size))
			before, _ := os.ReadFile(p)
			old := format.ParseDescriptor(string(before)).CID
			wins := []*window{{off: 0}, {off: 2<<30 - 2<<20}, {off: size - 1<<20}}
			wins[0].want, wins[1].want, wins[2].want = make([]byte, 2<<20), make([]byte, 4<<20), make([]byte, 1<<20)
			rng := rand.New(rand.NewPCG(3, uint64(len(sub))))
			d := openFiles(t, p)
			for step := 0; step < 60; step++ {
				w := wins[rng.IntN(len(wins))]
				off := rng.Int64N(int64(len(w.want)))
				n := min(1+rng.Int64N(300<<10), int64(len(w.want))-off)
				if w == wins[1] && step%5 == 0 {
					off, n = 2<<20-5000, 12000 // across the extents' boundary
				}
				if rng.IntN(4) == 0 {
					if err := d.WriteZeroes(w.off+off, n, block.MayUnmap); err != nil {
						t.Fatal(err)
					}
					clear(w.want[off : off+n])
				} else {
					b := make([]byte, n)
					for i := range b {
						b[i] = byte(rng.Uint32())
					}
					// Two vectors, the first one odd.
					k := rng.Int64N(n + 1)
					if err := d.Writev(w.off+off, [][]byte{b[:k], b[k:]}); err != nil {
						t.Fatal(err)
					}
					copy(w.want[off:], b)
				}
				if rng.IntN(8) == 0 {
					if err := d.Flush(); err != nil {
						t.Fatal(err)
					}
				}
			}
			// Writers into both split extents at once.
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					w := wins[1]
					off := int64(g) * (256 << 10)
					b := bytes.Repeat([]byte{byte(g + 1)}, 256<<10)
					if err := d.Writev(w.off+off, [][]byte{b}); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			for g := range 8 {
				copy(wins[1].want[g*(256<<10):], bytes.Repeat([]byte{byte(g + 1)}, 256<<10))
			}
			for _, w := range wins {
				got := make([]byte, len(w.want))
				if err := d.Readv(w.off, [][]byte{got}); err != nil {
					t.Fatal(err)
				}
				testkit.MustEqual(t, got, w.want, "read back")
			}
			if err := d.Writev(size-512, [][]byte{make([]byte, 1024)}); !errors.Is(err, ErrOutOfRange) {
				t.Errorf("write past the end: %v", err)
			}
			if err := d.WriteZeroes(0, 512, block.Allocate); !errors.Is(err, block.ErrNotSupported) {
				t.Errorf("zeros with Allocate: %v", err)
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			after, _ := os.ReadFile(p)
			nd := format.ParseDescriptor(string(after))
			if len(after) != (len(before)+511)&^511 || nd.CID == old || len(fmt.Sprintf("%x", nd.CID)) != len(fmt.Sprintf("%x", old)) ||
				!strings.HasPrefix(string(after), strings.Replace(string(before), fmt.Sprintf("CID=%x\n", old), fmt.Sprintf("CID=%x\n", nd.CID), 1)) {
				t.Errorf("descriptor file after the writes (CID was %x):\n%q", old, after)
			}
			qemuCheck(t, p)
			compareWindows(t, p, size, wins)
			// QEMU writes into the image; we read it.
			testkit.MustRun(t, "qemu-io", "-f", "vmdk", "-c", "write -P 0x5c 2147479552 8192", "-c", "write -z 1024 2048", p)
			copy(wins[1].want[2<<20-4096:], bytes.Repeat([]byte{0x5c}, 8192))
			clear(wins[0].want[1024:3072])
			d = openFiles(t, p)
			for _, w := range wins {
				got := make([]byte, len(w.want))
				if err := d.Readv(w.off, [][]byte{got}); err != nil {
					t.Fatal(err)
				}
				testkit.MustEqual(t, got, w.want, "qemu-io's writes")
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// compareWindows has qemu-img compare the image at p with a raw file
// holding the windows' bytes and zeros elsewhere.
func compareWindows(t *testing.T, p string, size int64, wins []*window) {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "want.raw")
	f, err := os.Create(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range wins {
		if _, err := f.WriteAt(w.want, w.off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if out, stderr, code := testkit.Run(t, "qemu-img", "compare", "-f", "raw", "-F", "vmdk", raw, p); code != 0 {
		t.Errorf("qemu-img compare: exit %d\n%s%s", code, out, stderr)
	}
}

// TestWrite_DescriptorFileCrashClones: power cuts while a
// twoGbMaxExtentSparse image of two sparse extents and a flat one takes
// writes, whole grains zeroed and flushes, its files cut at the same
// instant (each keeping some of its unflushed writes): every clone
// opens writable, flushed sectors read what was written, the others
// that or zeros (KD10 in each extent), and a new grain reads zeros
// but for its write.
func TestWrite_DescriptorFileCrashClones(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 5))
	const extSecs = 4096 // 2 MiB extents
	files := map[string]*memdev.Dev{}
	o := format.NewOptions{Size: extSecs * 512, ZeroedGrain: true}
	for _, n := range []string{"a", "b"} {
		files[n] = memdev.New(memdev.Options{})
		if err := CreateSparseExtent(files[n], o); err != nil {
			t.Fatal(err)
		}
	}
	files["f"] = memdev.New(memdev.Options{})
	if err := files["f"].Truncate(extSecs * 512); err != nil {
		t.Fatal(err)
	}
	desc := fmt.Sprintf("# Disk DescriptorFile\nversion=1\nCID=abcdef12\nparentCID=ffffffff\ncreateType=\"twoGbMaxExtentSparse\"\n\n# Extent description\n"+
		"RW %d SPARSE \"a\"\nRW %d FLAT \"f\" 0\nRW %d SPARSE \"b\"\n", extSecs, extSecs, extSecs)
	files["desc"] = memdev.FromBytes([]byte(desc), memdev.Options{})
	g := &cloneGroup{devs: files}
	open := func(devs map[string]*memdev.Dev, wrap bool) *Disk {
		t.Helper()
		dev := func(n string) block.Device {
			if wrap {
				return &groupDev{Dev: devs[n], g: g}
			}
			return devs[n]
		}
		d, err := Open(dev("desc"), Options{Name: "desc", Writable: true, OpenExtent: func(p string, _ bool) (block.Device, error) { return dev(p), nil }})
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		return d
	}
	d := open(files, true)
	size, _ := d.Size()
	const sec, gb = 512, 64 << 10
	zeroed := map[int64]bool{}
	pat := func(s int64) []byte {
		if zeroed[s] {
			return make([]byte, sec)
		}
		return fill(sec, byte(s*5+3))
	}
	written := map[int64]bool{}
	flushed := func() {
		for x := range written {
			written[x] = true
		}
		for x := range zeroed {
			zeroed[x] = true
		}
	}
	check := func(devs map[string]*memdev.Dev) {
		t.Helper()
		c := open(devs, false)
		got := make([]byte, size)
		if err := c.Readv(0, [][]byte{got}); err != nil {
			t.Fatal(err)
		}
		testkit.CheckCrashSectors(t, got, written, pat)
		// A new grain in each sparse extent's never-written last quarter.
		for _, at := range []int64{extSecs*sec - 4*gb, 3*extSecs*sec - 4*gb} {
			if err := c.Writev(at+512, [][]byte{fill(512, 9)}); err != nil {
				t.Fatal(err)
			}
			b := make([]byte, gb)
			if err := c.Readv(at, [][]byte{b}); err != nil {
				t.Fatal(err)
			}
			want := make([]byte, gb)
			copy(want[512:], fill(512, 9))
			testkit.MustEqual(t, b, want, "a new grain in a crash clone")
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	perm := rng.Perm(int(size/sec) * 3 / 4)
	clones := 0
	for step := 0; step < 150; step++ {
		s := int64(perm[step])
		if s%extSecs >= extSecs*3/4 {
			continue // each extent's last quarter stays unwritten
		}
		if !writeNew(t, d, s, int64(1+rng.IntN(8)), size/sec, written, pat) {
			continue
		}
		if e := d.find(s * sec); !e.flat && rng.IntN(6) == 0 {
			zeroWhole(t, d, s*sec/gb, written, zeroed)
		}
		clones += g.step(t, step, rng, d, flushed, check)
	}
	if clones == 0 {
		t.Fatal("no crash clone taken")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// cloneGroup cuts the power to several files at once: each file's crash
// clone, taken at the same instant.
type cloneGroup struct {
	devs map[string]*memdev.Dev
	rng  *rand.Rand               // armed: a cut before each write, truncate and flush
	cuts []map[string]*memdev.Dev // taken while armed
}

// step is the end of a crash test's step: now and then a Flush; every
// 6th step power cuts keeping none, half and all of the unflushed
// writes, and every 12th one a cut at each write, truncate and flush of
// a Flush (KD10's order) too, each cut handed to check; flushed records
// a completed Flush. It returns the number of cuts checked.
func (g *cloneGroup) step(t *testing.T, step int, rng *rand.Rand, d *Disk, flushed func(), check func(map[string]*memdev.Dev)) int {
	t.Helper()
	if rng.IntN(5) == 0 {
		if err := d.Flush(); err != nil {
			t.Fatal(err)
		}
		flushed()
	}
	if step%6 != 0 {
		return 0
	}
	n := 0
	if step%12 == 0 {
		g.rng = rng
		if err := d.Flush(); err != nil {
			t.Fatal(err)
		}
		cuts := g.cuts
		g.rng, g.cuts = nil, nil
		for _, c := range cuts {
			n++
			check(c)
		}
		flushed()
	}
	for _, keep := range []float64{0, 0.5, 1} {
		n++
		check(g.cut(rng, keep))
	}
	return n
}

func (g *cloneGroup) cut(rng *rand.Rand, keep float64) map[string]*memdev.Dev {
	out := map[string]*memdev.Dev{}
	for n, d := range g.devs {
		out[n] = d.CrashClone(rng, keep)
	}
	return out
}

func (g *cloneGroup) take() {
	if g.rng != nil {
		g.cuts = append(g.cuts, g.cut(g.rng, 0.5))
	}
}

// groupDev is one file of a cloneGroup.
type groupDev struct {
	*memdev.Dev
	g *cloneGroup
}

func (d *groupDev) Writev(off int64, bufs [][]byte) error {
	d.g.take()
	return d.Dev.Writev(off, bufs)
}

func (d *groupDev) Truncate(n int64) error {
	d.g.take()
	return d.Dev.Truncate(n)
}

func (d *groupDev) Flush() error {
	d.g.take()
	return d.Dev.Flush()
}

// TestWrite_FlatOffsetLikeQemu: a flat extent that starts inside its
// file (an offset in its extent line) takes writes there, as QEMU
// writes them, and the bytes of the file before and after it stay.
func TestWrite_FlatOffsetLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := t.TempDir()
	data := fill(3<<20, 7)
	os.WriteFile(filepath.Join(dir, "d.bin"), data, 0o644)
	p := filepath.Join(dir, "x.vmdk")
	os.WriteFile(p, []byte("# Disk DescriptorFile\nversion=1\nCID=1234abcd\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n"+
		"# Extent description\nRW 2048 FLAT \"d.bin\" 1024\n"), 0o644)
	d := openFiles(t, p)
	if err := d.Writev(1000, [][]byte{bytes.Repeat([]byte{0xa1}, 5000)}); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteZeroes(1<<20-700, 700, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	copy(data[512<<10+1000:], bytes.Repeat([]byte{0xa1}, 5000))
	clear(data[512<<10+1<<20-700 : 512<<10+1<<20])
	got, _ := os.ReadFile(filepath.Join(dir, "d.bin"))
	testkit.MustEqual(t, got, data, "the extent's file")
	q := testkit.QemuReadRaw(t, "vmdk", p)
	testkit.MustEqual(t, q, data[512<<10:512<<10+1<<20], "qemu-img's read")
	qemuCheck(t, p)
}

// FuzzDescriptorWrite: a descriptor file of any text over a fixed set of
// extent files (two sparse extents, one a snapshot's, a flat file) and a
// parent, opened writable where it opens so (KD8, KD13): writes, zeros
// and a Flush never panic or hang, and what was written reads back.
func FuzzDescriptorWrite(f *testing.F) {
	const head = "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=%s\ncreateType=\"%s\"\n%s\n# Extent description\n"
	f.Add(fmt.Sprintf(head, "ffffffff", "twoGbMaxExtentSparse", "") + "RW 2048 SPARSE \"a\"\nRW 1024 FLAT \"f\" 8\nRW 2048 SPARSE \"b\"\n")
	f.Add(fmt.Sprintf(head, "ffffffff", "monolithicFlat", "") + "RW 2048 FLAT \"f\" 0\n")
	f.Add(fmt.Sprintf(head, "abcdef01", "twoGbMaxExtentSparse", "parentFileNameHint=\"p\"") + "RW 2048 SPARSE \"a\"\n")
	f.Add(fmt.Sprintf(head, "abcdef01", "twoGbMaxExtentSparse", "") + "RW 2048 SPARSE \"a\"\n\nRW 2048 SPARSE \"a\"\n")
	sparseExt := func(zg bool) []byte {
		m := memdev.New(memdev.Options{})
		if err := CreateSparseExtent(m, format.NewOptions{Size: 1 << 20, ZeroedGrain: zg}); err != nil {
			f.Fatal(err)
		}
		return m.Bytes()
	}
	a, b := sparseExt(false), sparseExt(true)
	parent := memdev.New(memdev.Options{})
	if _, err := Create(parent, CreateOptions{NewOptions: format.NewOptions{Size: 2 << 20}, CID: 0xabcdef01}); err != nil {
		f.Fatal(err)
	}
	if d, err := Open(parent, Options{Writable: true}); err != nil || d.Writev(0, [][]byte{bytes.Repeat([]byte{9}, 2<<20)}) != nil || d.Close() != nil {
		f.Fatal("parent", err)
	}
	pb := parent.Bytes()
	if p, err := Open(memdev.FromBytes(pb, memdev.Options{}), Options{}); err != nil {
		f.Fatal(err)
	} else {
		f.Add(fmt.Sprintf(head, fmt.Sprintf("%x", p.CID()), "twoGbMaxExtentSparse", "parentFileNameHint=\"p\"") + "RW 2048 SPARSE \"a\"\nRW 2048 SPARSE \"b\"\n")
		p.Close()
	}
	f.Fuzz(func(t *testing.T, desc string) {
		files := map[string][]byte{"a": a, "b": b, "f": make([]byte, 1<<20)}
		d, err := Open(memdev.FromBytes([]byte(desc), memdev.Options{}), Options{Name: "d", Writable: true,
			OpenExtent: func(p string, _ bool) (block.Device, error) {
				if b, ok := files[p]; ok {
					return memdev.FromBytes(b, memdev.Options{}), nil
				}
				return nil, os.ErrNotExist
			},
			OpenParent: func(p string) (*Disk, error) {
				if p != "p" {
					return nil, os.ErrNotExist
				}
				return Open(memdev.FromBytes(pb, memdev.Options{}), Options{})
			}})
		if err != nil {
			return
		}
		defer d.Close()
		size, _ := d.Size()
		for _, at := range []int64{0, size / 3, size - min(size, 4096)} {
			want := bytes.Repeat([]byte{byte(at) | 1}, int(min(size-at, 4096)))
			if d.Writev(at, [][]byte{want}) != nil {
				continue
			}
			got := make([]byte, len(want))
			if err := d.Readv(at, [][]byte{got}); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("read back at %d: %v", at, err)
			}
		}
		d.WriteZeroes(size/2, min(size-size/2, 128<<10), 0)
		d.Flush()
	})
}

// TestOpen_NoExtentDescriptorLikeQemu: a descriptor file naming no
// extent (what qemu-img create -f vmdk -o subformat=monolithicFlat makes
// of a size of 0) opens as QEMU's vmdk_open opens it: an image of 0
// bytes, read and written (nothing) and checked, writable too.
func TestOpen_NoExtentDescriptorLikeQemu(t *testing.T) {
	for _, ct := range []string{format.MonolithicFlat, format.TwoGbMaxExtentSparse, format.TwoGbMaxExtentFlat} {
		desc := "# Disk DescriptorFile\nversion=1\nCID=c1165d5a\nparentCID=ffffffff\ncreateType=\"" + ct + "\"\n# Extent description\n"
		for _, w := range []bool{false, true} {
			d, err := Open(memdev.FromBytes([]byte(desc), memdev.Options{}), Options{Name: "/d/x.vmdk", Writable: w,
				OpenExtent: func(string, bool) (block.Device, error) { return nil, errors.New("no extent to open") }})
			if err != nil {
				t.Fatalf("%s writable %v: %v", ct, w, err)
			}
			size, err := d.Size()
			if size != 0 || err != nil || d.ClusterSize() != 0 || d.GrainSize() != 0 || len(d.Extents()) != 0 ||
				d.CreateType() != ct || d.CID() != 0xc1165d5a {
				t.Fatalf("%s: size %d %v cluster %d grain %d extents %v", ct, size, err, d.ClusterSize(), d.GrainSize(), d.Extents())
			}
			if err := d.Readv(0, [][]byte{{}}); err != nil {
				t.Fatal(err)
			}
			if err := d.Check(); err != nil {
				t.Fatal(err)
			}
			if m, err := d.Map(); err != nil || len(m) != 0 {
				t.Fatalf("map %v %v", m, err)
			}
			if w {
				if err := d.Writev(0, [][]byte{{}}); err != nil {
					t.Fatal(err)
				}
				if err := d.WriteZeroes(0, 0, 0); err != nil {
					t.Fatal(err)
				}
				if err := d.Writev(0, [][]byte{{1}}); !errors.Is(err, ErrOutOfRange) {
					t.Fatalf("write past the end: %v", err)
				}
				if err := d.Flush(); err != nil {
					t.Fatal(err)
				}
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
}
