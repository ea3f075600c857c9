package format

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

// header builds a sparse extent header as qemu-img create -f vmdk lays
// it out (vmdk_init_extent).
func header(version, flags uint32, capacity, grain uint64, gtes uint32, gd, grainOff uint64, algo uint16) []byte {
	b := make([]byte, 512)
	copy(b, "KDMV")
	le := binary.LittleEndian
	le.PutUint32(b[4:], version)
	le.PutUint32(b[8:], flags)
	le.PutUint64(b[12:], capacity)
	le.PutUint64(b[20:], grain)
	le.PutUint64(b[28:], 1)
	le.PutUint64(b[36:], 20)
	le.PutUint32(b[44:], gtes)
	le.PutUint64(b[56:], gd)
	le.PutUint64(b[64:], grainOff)
	le.PutUint16(b[77:], algo)
	return b
}

func TestHeader_Layout(t *testing.T) {
	h, err := ParseHeader(header(1, FlagNLDetect|FlagRGD, 20480, 128, 512, 24, 128, 0))
	if err != nil {
		t.Fatal(err)
	}
	l, err := h.Layout(384)
	if err != nil {
		t.Fatal(err)
	}
	if l.Sectors != 20480 || l.GrainBytes() != 65536 || l.L1Size != 1 || l.GDOffset != 24*512 || l.Compressed || l.ZeroGrain {
		t.Fatalf("%+v", l)
	}
	// KF4: sector s maps through entry s/(GTEs x grain), then (s/grain) mod GTEs.
	if l1, l2, ok := l.Index(3 << 20); !ok || l1 != 0 || l2 != 48 {
		t.Fatalf("index %d %d %v", l1, l2, ok)
	}
	if _, _, ok := l.Index(64 << 20); ok {
		t.Fatal("past the directory")
	}
	for _, c := range []struct {
		h        []byte
		fileSecs int64
		msg      string
		is       error
	}{
		{header(4, 0, 2048, 128, 512, 24, 128, 0), 384, "Unsupported VMDK version 4", ErrUnsupported},
		{header(1, 0, 2048, 128, 513, 24, 128, 0), 384, "L2 table size too big", ErrCorrupt},
		{header(1, 0, 2048, 0, 512, 24, 128, 0), 384, "L1 entry size is invalid", ErrCorrupt},
		{header(1, 0, 2048, 1<<23, 512, 24, 128, 0), 384, "L1 entry size is invalid", ErrCorrupt},
		{header(1, 0, 2048, 128, 512, 24, 1000, 0), 384, "File truncated, expecting at least 512000 bytes", ErrCorrupt},
		{header(1, 0, 2048, 0x200001, 1, 24, 128, 0), 384, "Invalid granularity, image may be corrupt", ErrTooLarge},
		{header(1, 0, 40<<20, 1, 1, 24, 128, 0), 384, "L1 size too big", ErrTooLarge},
	} {
		h, err := ParseHeader(c.h)
		if err != nil {
			t.Fatal(err)
		}
		_, err = h.Layout(c.fileSecs)
		var fe *Error
		if !errors.As(err, &fe) || err.Error() != c.msg || !errors.Is(err, c.is) {
			t.Errorf("%q: got %v", c.msg, err)
		}
	}
	if _, err := ParseHeader(append([]byte("COWD"), make([]byte, 508)...)); !errors.Is(err, ErrUnsupported) {
		t.Errorf("COWD: %v", err)
	}
	if _, err := ParseHeader(make([]byte, 512)); err == nil || err.Error() != "Image not in VMDK format" {
		t.Errorf("magic: %v", err)
	}
}

func TestParseFooter(t *testing.T) {
	b := make([]byte, FooterSpan)
	binary.LittleEndian.PutUint32(b[12:], MarkerFooter)
	copy(b[512:], header(3, FlagMarker|FlagCompress, 2048, 128, 512, 100, 128, CompressDeflate))
	h, err := ParseFooter(b)
	if err != nil || !h.Compressed() || h.GDOffset != 100 {
		t.Fatalf("%+v %v", h, err)
	}
	b[1024+12] = 9
	if _, err := ParseFooter(b); err == nil || err.Error() != "Invalid footer" {
		t.Fatalf("bad eos: %v", err)
	}
}

const qemuDesc = `# Disk DescriptorFile
version=1
CID=e10edba5
parentCID=ffffffff
createType="twoGbMaxExtentFlat"

# Extent description
RW 4192256 FLAT "x-f001.vmdk" 0
RW 2048 FLAT "x-f002.vmdk" 0
RDONLY 2048 FLAT "ro.vmdk" 0
RW 0 SPARSE "zero.vmdk"
RW 100 ZAP "zap.vmdk"
NOACCESS 1 FLAT "n.vmdk" 0

ddb.geometry.cylinders = "4161"
`

func TestParseDescriptor(t *testing.T) {
	d := ParseDescriptor(qemuDesc)
	if !d.HasCreateType || d.CreateType != "twoGbMaxExtentFlat" || d.CID != 0xe10edba5 || d.ParentCID != 0xffffffff || d.ParentHint != "" || d.Invalid != "" {
		t.Fatalf("%+v", d)
	}
	want := []ExtentLine{{"RW", 4192256, "FLAT", "x-f001.vmdk", 0}, {"RW", 2048, "FLAT", "x-f002.vmdk", 0}}
	if len(d.Extents) != 2 || d.Extents[0] != want[0] || d.Extents[1] != want[1] {
		t.Fatalf("%+v", d.Extents)
	}
	for line, bad := range map[string]bool{
		`RW 10 FLAT "a"`:        true,
		`RW 10 FLAT "a" -1`:     true,
		`RW 10 SPARSE "a" 5`:    true,
		`RW 10 VMFS "a" 5`:      true,
		`RW 10 SPARSE "a"`:      false,
		`RW 10 VMFSSPARSE "a"`:  false,
		`RW 10 FLAT "a" 7`:      false,
		"RW 10 FLAT \"a\"\r\n7": false, // sscanf reads across lines
	} {
		d := ParseDescriptor("createType=\"monolithicFlat\"\n" + line + "\n")
		if bad != (d.Invalid != "") || (!bad && len(d.Extents) != 1) {
			t.Errorf("%q: %+v", line, d)
		}
	}
	for text, want := range map[string]Descriptor{
		`parentFileNameHint="base.vmdk"` + "\nCID=1\n": {ParentHint: "base.vmdk", CID: 1, HasCID: true},
		`parentFileNameHint=""`:                        {},
		`parentFileNameHint=base.vmdk` + "\nx=\"y\"":   {ParentHint: "ase.vmdk\nx="}, // two bytes skipped, to the next quote
		`parentFileNameHint="base.vmdk`:                {ParentHintOpen: true},
		`parentFileNameHint`:                           {ParentHintOpen: true},
	} {
		d := ParseDescriptor(text)
		if d.ParentHint != want.ParentHint || d.ParentHintOpen != want.ParentHintOpen || d.CID != want.CID || d.HasCID != want.HasCID || d.HasCreateType {
			t.Errorf("%q: %+v, want %+v", text, d, want)
		}
	}
}

func TestMarkerInflate(t *testing.T) {
	grain := bytes.Repeat([]byte("qring"), 1000)
	var z bytes.Buffer
	w := zlib.NewWriter(&z)
	w.Write(grain)
	w.Close()
	m := make([]byte, MarkerSize)
	binary.LittleEndian.PutUint32(m[8:], uint32(z.Len()))
	mk, err := ParseMarker(m, 8192)
	if err != nil || int(mk.Size) != z.Len() {
		t.Fatal(mk, err)
	}
	dst := make([]byte, 100)
	if err := Inflate(bytes.NewReader(z.Bytes()), 8192, 1000, dst); err != nil || !bytes.Equal(dst, grain[1000:1100]) {
		t.Fatalf("%v %q", err, dst)
	}
	// KF5: more than the grain, a damaged or cut stream, and a read past
	// the inflated bytes fail.
	if err := Inflate(bytes.NewReader(z.Bytes()), 4096, 0, dst); err == nil {
		t.Error("inflated past the grain")
	}
	bad := append([]byte(nil), z.Bytes()...)
	bad[len(bad)-1] ^= 1
	if err := Inflate(bytes.NewReader(bad), 8192, 0, dst); err == nil {
		t.Error("bad checksum")
	}
	if err := Inflate(bytes.NewReader(z.Bytes()[:20]), 8192, 0, dst); err == nil {
		t.Error("cut stream")
	}
	if err := Inflate(bytes.NewReader(z.Bytes()), 8192, 4950, dst); err == nil {
		t.Error("read past the inflated bytes")
	}
	binary.LittleEndian.PutUint32(m[8:], 0)
	if _, err := ParseMarker(m, 8192); err == nil {
		t.Error("size 0")
	}
	binary.LittleEndian.PutUint32(m[8:], 16385)
	if _, err := ParseMarker(m, 8192); err == nil {
		t.Error("size past two grains")
	}
}

// FuzzParse feeds the header and footer parsers and the layout check
// arbitrary bytes: they never panic (KF1), reject with an *Error (KF2),
// and a layout they accept is within QEMU's bounds.
func FuzzParse(f *testing.F) {
	f.Add(header(1, 3, 20480, 128, 512, 24, 128, 0), int64(384))
	f.Add(header(3, FlagMarker|FlagCompress, 1<<40, 1, 1, ^uint64(0), 1, 1), int64(1<<20))
	f.Fuzz(func(t *testing.T, b []byte, fileSecs int64) {
		for _, parse := range []func([]byte) (Header, error){ParseHeader, ParseFooter} {
			h, err := parse(b)
			var fe *Error
			if err != nil {
				if !errors.As(err, &fe) {
					t.Fatalf("%T %v", err, err)
				}
				continue
			}
			l, err := h.Layout(fileSecs)
			if err != nil {
				if !errors.As(err, &fe) {
					t.Fatalf("%T %v", err, err)
				}
				continue
			}
			if l.L1Size > MaxL1Size || l.GrainSectors > MaxGrainSectors || l.GTEs > MaxGTEs || l.GDOffset < 0 || l.Sectors < 0 {
				t.Fatalf("%+v", l)
			}
			l.Index(int64(len(b)) * 12345)
		}
	})
}

// FuzzDescriptor: the descriptor parser never panics, and what it keeps
// is what QEMU keeps (KF3).
func FuzzDescriptor(f *testing.F) {
	f.Add(qemuDesc)
	f.Add("createType=\"\nRW 5 FLAT \"")
	f.Add("CID=0x\nparentCID=-1\nparentFileNameHint=\"")
	f.Fuzz(func(t *testing.T, s string) {
		d := ParseDescriptor(s)
		buf := make([]byte, DescSize)
		copy(buf, s)
		if out, ok := RewriteCID(buf, 0xabc); ok {
			if len(out) != DescSize || out[DescSize-1] != 0 {
				t.Fatalf("RewriteCID: %d bytes, last %d", len(out), out[DescSize-1])
			}
			// The value after the first "CID" is the new one (KF7).
			c := strings.Index(s, "CID")
			if r := ParseDescriptor(string(out)); !strings.ContainsRune(s, 0) && len(s) < DescSize/2 && c+len("CID=") <= len(s) && (!r.HasCID || r.CID != 0xabc) {
				t.Fatalf("RewriteCID: CID %x (%v) in %.200q", r.CID, r.HasCID, out)
			}
		}
		for _, e := range d.Extents {
			if e.Access != "RW" || e.Sectors <= 0 || e.File == "" || e.Offset < 0 || len(e.File) > 511 ||
				strings.ContainsAny(e.File, "\"\r\n") {
				t.Fatalf("%+v", e)
			}
		}
	})
}

// FuzzMarker: a grain marker and its compressed grain never panic, and
// never inflate past the grain (KF5).
func FuzzMarker(f *testing.F) {
	var z bytes.Buffer
	w := zlib.NewWriter(&z)
	w.Write(bytes.Repeat([]byte{7}, 4096))
	w.Close()
	m := make([]byte, MarkerSize)
	binary.LittleEndian.PutUint32(m[8:], uint32(z.Len()))
	f.Add(append(m, z.Bytes()...), int64(4096), int64(0), 512)
	f.Fuzz(func(t *testing.T, b []byte, grain, skip int64, n int) {
		grain = max(min(grain, 1<<20), 0)
		n = max(min(n, 1<<16), 0)
		mk, err := ParseMarker(b, grain)
		if err != nil {
			return
		}
		src := b[MarkerSize:]
		src = src[:min(len(src), int(mk.Size))]
		dst := make([]byte, n)
		_ = Inflate(bytes.NewReader(src), grain, skip, dst)
	})
}
