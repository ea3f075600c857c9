package vmdk

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/vmdk/format"
)

const testDesc = "# Disk DescriptorFile\nversion=1\nCID=0000002a\nparentCID=ffffffff\ncreateType=\"monolithicSparse\"\n"

// sparse builds a hosted sparse extent as qemu-img lays one out: header,
// descriptor at sector 1, one grain directory sector at 21, one grain
// table at 22 (512 entries of 64 KiB grains: 32 MiB), grains from 128.
// grains maps a grain number to its 64 KiB (or, compressed, to its
// bytes deflated behind a marker). Entry 1 with zeroGrain is a zeroed
// grain.
func sparse(t testing.TB, capacity int64, flags uint32, compressed bool, grains map[int][]byte, zeroedGrains ...int) []byte {
	t.Helper()
	return sparseG(t, 128, capacity, flags, compressed, grains, zeroedGrains...)
}

// sparseG is sparse with grains of grainSecs sectors; small ones get a
// compact layout (16-entry tables, directory at sector 2, table at 3,
// grains from 4): small fuzz seeds.
func sparseG(t testing.TB, grainSecs int, capacity int64, flags uint32, compressed bool, grains map[int][]byte, zeroedGrains ...int) []byte {
	t.Helper()
	grainOff, gtes, gdSec, gtSec := 128, 512, 21, 22
	if grainSecs < 128 {
		grainOff, gtes, gdSec, gtSec = 4, 16, 2, 3
	}
	img := make([]byte, grainOff*512)
	copy(img, "KDMV")
	le := binary.LittleEndian
	le.PutUint32(img[4:], 1)
	le.PutUint32(img[8:], flags)
	le.PutUint64(img[12:], uint64(capacity/512))
	le.PutUint64(img[20:], uint64(grainSecs))
	le.PutUint64(img[28:], 1)
	le.PutUint64(img[36:], 1)
	le.PutUint32(img[44:], uint32(gtes))
	le.PutUint64(img[56:], uint64(gdSec))
	le.PutUint64(img[64:], uint64(grainOff))
	if compressed {
		le.PutUint16(img[77:], format.CompressDeflate)
	}
	copy(img[512:], testDesc)
	le.PutUint32(img[gdSec*512:], uint32(gtSec))
	for _, g := range zeroedGrains {
		le.PutUint32(img[gtSec*512+4*g:], format.GTEZeroed)
	}
	for g := 0; g < gtes; g++ {
		data, ok := grains[g]
		if !ok {
			continue
		}
		le.PutUint32(img[gtSec*512+4*g:], uint32(len(img)/512))
		if compressed {
			var z bytes.Buffer
			w := zlib.NewWriter(&z)
			w.Write(data)
			w.Close()
			m := make([]byte, format.MarkerSize)
			le.PutUint64(m, uint64(g*grainSecs))
			le.PutUint32(m[8:], uint32(z.Len()))
			data = append(m, z.Bytes()...)
			data = append(data, make([]byte, (512-len(data)%512)%512)...)
		}
		img = append(img, data...)
	}
	return img
}

func open(t testing.TB, b []byte) (*Disk, error) {
	t.Helper()
	return Open(memdev.FromBytes(b, memdev.Options{}), Options{Name: "t.vmdk"})
}

func TestDisk_Reads(t *testing.T) {
	g1 := bytes.Repeat([]byte{0x5a}, 64<<10)
	g3 := bytes.Repeat([]byte{7}, 64<<10)
	for _, compressed := range []bool{false, true} {
		flags := uint32(format.FlagZeroGrain)
		if compressed {
			flags |= format.FlagMarker
		}
		d, err := open(t, sparse(t, 10<<20, flags, compressed, map[int][]byte{1: g1, 3: g3}, 2))
		if err != nil {
			t.Fatal(err)
		}
		size, _ := d.Size()
		if size != 10<<20 || d.ClusterSize() != 64<<10 || d.CID() != 42 || d.ParentCID() != 0xffffffff {
			t.Fatalf("size %d cluster %d cid %x", size, d.ClusterSize(), d.CID())
		}
		want := map[bool]string{false: "monolithicSparse", true: "streamOptimized"}[compressed]
		if d.CreateType() != want {
			t.Fatalf("create type %q", d.CreateType())
		}
		// A vector read across unallocated, allocated, zeroed and
		// allocated grains, split inside a grain (KD4), and past the end (B2).
		a, b := make([]byte, 100<<10), make([]byte, 156<<10)
		if err := d.Readv(32<<10, [][]byte{a, b}); err != nil {
			t.Fatal(err)
		}
		got := append(a, b...)
		exp := append(append(append(append(make([]byte, 32<<10), g1...), make([]byte, 64<<10)...), g3...), make([]byte, 32<<10)...)
		if !bytes.Equal(got, exp) {
			t.Fatalf("compressed %v: read differs", compressed)
		}
		tail := bytes.Repeat([]byte{1}, 4096)
		if err := d.Readv(10<<20-512, [][]byte{tail}); err != nil || !bytes.Equal(tail, make([]byte, 4096)) {
			t.Fatalf("past the end: %v", err)
		}
		// KD5: map.
		m, err := d.Map()
		if err != nil {
			t.Fatal(err)
		}
		if len(m) != 5 || m[0].Present || !m[1].Data || m[1].Compressed != compressed || !m[2].Present || !m[2].Zero || m[2].Data || !m[3].Data || m[4].Present {
			t.Fatalf("map %+v", m)
		}
		if !compressed && (m[1].Offset != 128*512 || m[3].Offset != 256*512) {
			t.Fatalf("offsets %+v", m)
		}
		// KD1.
		if err := d.Writev(0, [][]byte{make([]byte, 512)}); !errors.Is(err, block.ErrReadOnly) {
			t.Fatal(err)
		}
		d.Close()
	}
}

func TestDisk_Hostile(t *testing.T) {
	good := sparse(t, 10<<20, 0, false, map[int][]byte{0: make([]byte, 64<<10)})
	le := binary.LittleEndian
	for name, c := range map[string]struct {
		edit    func([]byte) []byte
		openErr bool
	}{
		"tiny":              {func(b []byte) []byte { return b[:3] }, true},
		"truncated":         {func(b []byte) []byte { return b[:1000] }, true},
		"gd past EOF":       {func(b []byte) []byte { le.PutUint64(b[56:], 1<<40); return b }, true},
		"gd at the end":     {func(b []byte) []byte { le.PutUint64(b[56:], uint64(len(b)/512)); return b }, true},
		"huge capacity":     {func(b []byte) []byte { le.PutUint64(b[12:], 1<<62); return b }, true},
		"bad version":       {func(b []byte) []byte { le.PutUint32(b[4:], 9); return b }, true},
		"bad magic":         {func(b []byte) []byte { copy(b, "KDMW"); return b }, true},
		"no CID":            {func(b []byte) []byte { copy(b[512:], bytes.Repeat([]byte{'#'}, 100)); return b }, true},
		"parent, no opener": {func(b []byte) []byte { copy(b[512+len(testDesc):], "parentFileNameHint=\"x\"\n"); return b }, true},
		"open parent hint":  {func(b []byte) []byte { copy(b[512+len(testDesc):], "parentFileNameHint=\"x\n"); return b }, true},
		"gt past EOF":       {func(b []byte) []byte { le.PutUint32(b[21*512:], 1<<30); return b }, false},
		"grain past EOF":    {func(b []byte) []byte { le.PutUint32(b[22*512:], 1<<30); return b }, false},
	} {
		d, err := open(t, c.edit(append([]byte(nil), good...)))
		var fe *format.Error
		if c.openErr {
			if err == nil || !errors.As(err, &fe) {
				t.Errorf("%s: %v", name, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := d.Readv(0, [][]byte{make([]byte, 4096)}); err == nil {
			t.Errorf("%s: read", name)
		}
		if _, err := d.Map(); err == nil {
			t.Errorf("%s: map", name)
		}
		d.Close()
	}
	// No capacity and a descriptor: QEMU reads that descriptor as a
	// descriptor file's, and refuses a monolithicSparse one so.
	m := memdev.New(memdev.Options{})
	if _, err := Create(m, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := open(t, m.Bytes()); err == nil || err.Error() != "Unsupported image type 'monolithicSparse'" {
		t.Errorf("no capacity: %v", err)
	}
	// A damaged compressed grain fails its read.
	z := sparse(t, 10<<20, format.FlagMarker, true, map[int][]byte{0: bytes.Repeat([]byte{3}, 64<<10)})
	z[128*512+20] ^= 0xff
	d, err := open(t, z)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Readv(0, [][]byte{make([]byte, 512)}); err == nil {
		t.Error("corrupt compressed grain read")
	}
	d.Close()
}

// FuzzOpen opens arbitrary bytes as an image and reads and maps it:
// never a panic (KD3).
func FuzzOpen(f *testing.F) {
	f.Add(sparseG(f, 1, 8<<10, format.FlagZeroGrain, false, map[int][]byte{1: bytes.Repeat([]byte{1}, 512)}, 2))
	f.Add(sparseG(f, 1, 8<<10, format.FlagMarker, true, map[int][]byte{0: bytes.Repeat([]byte{1}, 512)}))
	// A writable image as Create makes it, with a grain written.
	m := memdev.New(memdev.Options{})
	if _, err := Create(m, CreateOptions{NewOptions: format.NewOptions{Size: 256 << 10, ZeroedGrain: true}}); err != nil {
		f.Fatal(err)
	}
	if d, err := Open(m, Options{Writable: true}); err != nil || d.Writev(64<<10, [][]byte{bytes.Repeat([]byte{2}, 512)}) != nil || d.Close() != nil {
		f.Fatal("seed image", err)
	}
	f.Add(m.Bytes())
	m = memdev.New(memdev.Options{})
	if _, err := Create(m, CreateOptions{NewOptions: format.NewOptions{Size: 256 << 10, Stream: true}}); err != nil {
		f.Fatal(err)
	}
	if d, err := Open(m, Options{Writable: true}); err != nil || d.Writev(64<<10, [][]byte{bytes.Repeat([]byte{2}, 64<<10)}) != nil || d.Close() != nil {
		f.Fatal("stream seed image", err)
	}
	f.Add(m.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := open(t, b)
		if err != nil {
			return
		}
		defer d.Close()
		size, _ := d.Size()
		// Small requests: a grain can be one sector, a lookup each.
		d.Readv(0, [][]byte{make([]byte, min(size, 64<<10))})
		d.Readv(size/2, [][]byte{make([]byte, 4096)})
		d.Status(0, min(size, 1<<20))
		d.Status(size/3, 1<<20)
		if size <= 1<<20 {
			d.Map()
		}
		// Writable too, where it opens so (KD8): writes and a Flush
		// never panic, and what was written reads back.
		w, err := Open(memdev.FromBytes(b, memdev.Options{}), Options{Writable: true})
		if err != nil {
			return
		}
		defer w.Close()
		want := bytes.Repeat([]byte{7}, int(min(size, 4096)))
		if w.Writev(0, [][]byte{want}) == nil && w.Flush() == nil {
			got := make([]byte, len(want))
			if err := w.Readv(0, [][]byte{got}); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("read back after a write: %v", err)
			}
		}
		w.Writev(size/2, [][]byte{make([]byte, min(size-size/2, 512))})
		if g := w.GrainSize(); g > 0 && g <= 1<<20 && g <= size {
			w.Writev(0, [][]byte{make([]byte, g)}) // a whole grain (a stream image's)
			w.Writev(size-size%g, [][]byte{make([]byte, size%g)})
		}
		w.WriteZeroes(0, min(size, 1<<20), 0)
	})
}

// TestDisk_Descriptor: a descriptor file's extents, flat and sparse, are
// laid end to end, their names resolved against the descriptor's
// directory; sizes that would overflow are refused, not wrapped.
func TestDisk_Descriptor(t *testing.T) {
	a := bytes.Repeat([]byte{0xa}, 4096)
	sp := sparse(t, 1<<20, 0, false, map[int][]byte{0: bytes.Repeat([]byte{0xb}, 64<<10)})
	files := map[string][]byte{"/d/a-flat.vmdk": append(make([]byte, 512), a...), "/abs/s.vmdk": sp}
	var opened []string
	openExt := func(p string, _ bool) (block.Device, error) {
		opened = append(opened, p)
		b, ok := files[p]
		if !ok {
			return nil, errors.New("no such file")
		}
		return memdev.FromBytes(b, memdev.Options{}), nil
	}
	desc := "version=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"twoGbMaxExtentSparse\"\n" +
		"RW 8 FLAT \"a-flat.vmdk\" 1\nRW 2048 SPARSE \"/abs/s.vmdk\"\n"
	d, err := Open(memdev.FromBytes([]byte(desc), memdev.Options{}), Options{Name: "/d/x.vmdk", OpenExtent: openExt})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	size, _ := d.Size()
	if size != 4096+1<<20 || d.CID() != 0xfffffffe || d.CreateType() != "twoGbMaxExtentSparse" || d.ClusterSize() != 0 ||
		len(opened) != 2 || opened[0] != "/d/a-flat.vmdk" {
		t.Fatalf("size %d cid %x type %s cluster %d opened %q", size, d.CID(), d.CreateType(), d.ClusterSize(), opened)
	}
	got := make([]byte, 8192)
	if err := d.Readv(0, [][]byte{got}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:4096], a) || !bytes.Equal(got[4096:], bytes.Repeat([]byte{0xb}, 4096)) {
		t.Fatal("read across the extents differs")
	}
	ext := d.Extents()
	if len(ext) != 2 || ext[0].Format != "FLAT" || ext[0].ClusterSize != 0 || ext[1].ClusterSize != 64<<10 || ext[1].Filename != "/abs/s.vmdk" {
		t.Fatalf("%+v", ext)
	}
	// Four extents of 2^52 sectors: their sum overflows int64.
	big := "version=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n" +
		strings.Repeat("RW 4503599627370496 FLAT \"a-flat.vmdk\" 0\n", 4)
	if _, err := Open(memdev.FromBytes([]byte(big), memdev.Options{}), Options{Name: "/d/x.vmdk", OpenExtent: openExt}); !errors.Is(err, format.ErrTooLarge) {
		t.Fatalf("overflow: %v", err)
	}
}

// TestDisk_Check: QEMU's vmdk_co_check verdicts: a good image passes, a
// grain past the end of the file is its ERROR line.
func TestDisk_Check(t *testing.T) {
	good := sparse(t, 10<<20, format.FlagZeroGrain, false, map[int][]byte{0: make([]byte, 64<<10)}, 1)
	d, err := open(t, good)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
	d.Close()
	bad := append([]byte(nil), good...)
	binary.LittleEndian.PutUint32(bad[22*512+4*3:], 1<<20)
	if d, err = open(t, bad); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var ce *CheckError
	if err := d.Check(); !errors.As(err, &ce) || ce.Line != "ERROR: cluster offset for sector 384 points after EOF" || ce.Errno != "Invalid argument" {
		t.Fatalf("%v", err)
	}
}

// TestDisk_DescriptorBounds: the CIDs are read from the descriptor's
// first DESC_SIZE bytes, as QEMU reads them; extents naming one sparse
// file many times hold no more directory entries than QEMU allows one.
func TestDisk_DescriptorBounds(t *testing.T) {
	sp := sparseG(t, 1, 3<<20, 0, false, nil) // 6144 grains: 384 directory entries
	openExt := func(p string, _ bool) (block.Device, error) { return memdev.FromBytes(sp, memdev.Options{}), nil }
	late := "version=1\ncreateType=\"monolithicFlat\"\nRW 1 FLAT \"a\" 0\n" + strings.Repeat("#", format.DescSize) + "\nCID=1\nparentCID=2\n"
	if _, err := Open(memdev.FromBytes([]byte(late), memdev.Options{}), Options{Name: "x", OpenExtent: openExt}); err == nil ||
		!strings.Contains(err.Error(), "Invalid argument") {
		t.Fatalf("late CID: %v", err)
	}
	// A 64 KiB file whose directory (at 0) has 16 Ki entries.
	big := append(append([]byte(nil), sp[:512]...), make([]byte, 64<<10-512)...)
	binary.LittleEndian.PutUint64(big[56:], 0)
	binary.LittleEndian.PutUint64(big[12:], 16<<10*16)
	binary.LittleEndian.PutUint64(big[64:], 1)
	shared := memdev.FromBytes(big, memdev.Options{})
	openBig := func(p string, _ bool) (block.Device, error) { return shared, nil }
	n := format.MaxL1Size/(16<<10) + 1
	many := "version=1\nCID=1\nparentCID=ffffffff\ncreateType=\"twoGbMaxExtentSparse\"\n" + strings.Repeat("RW 1 SPARSE \"s\"\n", n)
	_, err := Open(memdev.FromBytes([]byte(many), memdev.Options{}), Options{Name: "x", OpenExtent: openBig})
	if !errors.Is(err, format.ErrTooLarge) {
		t.Fatalf("many extents: %v", err)
	}
}
