package format

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"
)

// footer builds a checksummed footer as qemu-img create -f vpc writes it
// (block/vpc.c, vpc_co_create): creator "qemu", the given geometry and
// size.
func footer(app string, c uint16, h, s uint8, size uint64, typ uint32) []byte {
	b := make([]byte, FooterSize)
	copy(b, FooterCookie)
	binary.BigEndian.PutUint32(b[8:], 2)
	binary.BigEndian.PutUint32(b[12:], 0x10000)
	binary.BigEndian.PutUint64(b[16:], 512)
	copy(b[28:32], app)
	copy(b[36:40], "Wi2k")
	binary.BigEndian.PutUint64(b[40:], size)
	binary.BigEndian.PutUint64(b[48:], size)
	binary.BigEndian.PutUint16(b[56:], c)
	b[58], b[59] = h, s
	binary.BigEndian.PutUint32(b[60:], typ)
	binary.BigEndian.PutUint32(b[64:], Checksum(b, 64))
	return b
}

func TestFooter_Sectors(t *testing.T) {
	for _, c := range []struct {
		name    string
		app     string
		c       uint16
		h, s    uint8
		size    uint64
		calc    SizeCalc
		want    int64
		wantErr error
	}{
		// qemu-img create -f vpc 100M: the CHS product (104865792 bytes).
		{"qemu 100M", "qemu", 963, 12, 17, 104857600, SizeAuto, 963 * 12 * 17, nil},
		// force_size=on writes "qem2" and the maximum geometry.
		{"qem2", "qem2", 65535, 16, 255, 1024001024, SizeAuto, 1024001024 / 512, nil},
		{"max geometry", "qemu", 65535, 16, 255, 1 << 40, SizeAuto, 1 << 31, nil},
		{"win", "win ", 1, 1, 1, 50 << 20, SizeAuto, 50 << 11, nil},
		{"tap", "tap\x00", 1, 1, 1, 50 << 20, SizeAuto, 50 << 11, nil},
		{"tap without NUL", "tapX", 1, 1, 1, 50 << 20, SizeAuto, 1, nil},
		{"forced current", "qemu", 1, 1, 1, 50 << 20, SizeCurrent, 50 << 11, nil},
		{"forced chs", "win ", 2, 2, 2, 50 << 20, SizeCHS, 8, nil},
		{"too large", "win ", 1, 1, 1, 3 << 40, SizeAuto, 0, ErrTooLarge},
	} {
		f, err := ParseFooter(footer(c.app, c.c, c.h, c.s, c.size, TypeDynamic))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got, err := f.Sectors(c.calc)
		if !errors.Is(err, c.wantErr) || got != c.want {
			t.Errorf("%s: Sectors = %d, %v; want %d, %v", c.name, got, err, c.want, c.wantErr)
		}
	}
}

func TestParseFooter_Rejects(t *testing.T) {
	good := footer("qemu", 963, 12, 17, 104857600, TypeDynamic)
	if _, err := ParseFooter(good); err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), good...)
	bad[100] ^= 1
	var fe *Error
	if _, err := ParseFooter(bad); !errors.As(err, &fe) || fe.Msg != "Incorrect header checksum" || !errors.Is(err, ErrCorrupt) {
		t.Errorf("bad checksum: %v", err)
	}
	if _, err := ParseFooter(good[:100]); !errors.Is(err, ErrCorrupt) {
		t.Errorf("short: %v", err)
	}
	if _, err := ParseFooter(make([]byte, 512)); err == nil || err.Error() != "invalid VPC image" {
		t.Errorf("no cookie: %v", err)
	}
}

func dynHeader(entries, blockSize uint32, table uint64) []byte {
	b := make([]byte, FooterSize)
	copy(b, HeaderCookie)
	binary.BigEndian.PutUint64(b[8:], ^uint64(0))
	binary.BigEndian.PutUint64(b[16:], table)
	binary.BigEndian.PutUint32(b[24:], 0x10000)
	binary.BigEndian.PutUint32(b[28:], entries)
	binary.BigEndian.PutUint32(b[32:], blockSize)
	return b
}

func TestCheckDynamic(t *testing.T) {
	const sectors = 100 << 11 // 100 MiB
	for _, c := range []struct {
		name            string
		entries, bs     uint32
		table           uint64
		fileLen         int64
		want            string // "" for success
		wantNeed, wantE int64
	}{
		{"qemu-img's", 50, 2 << 20, 1536, 2560, "", 50, 2048},
		{"extra entries kept out", 60, 2 << 20, 1536, 2560, "", 50, 2048},
		{"bad block size", 50, 1000, 1536, 2560, "Invalid block size 1000", 0, 0},
		{"tiny block size", 50, 256, 1536, 2560, "Invalid block size 256", 0, 0},
		{"table too small", 49, 2 << 20, 1536, 2560, "Page table too small", 0, 0},
		{"huge table", 0x7fffffff, 2 << 20, 1536, 2560, "Max Table Entries too large (2147483647)", 0, 0},
		{"table past EOF", 0x10000000, 2 << 20, 1536, 2560, ErrTruncated().Error(), 0, 0},
		{"table offset past EOF", 50, 2 << 20, 1 << 62, 2560, ErrTruncated().Error(), 0, 0},
		{"table offset 2^64-1", 50, 2 << 20, ^uint64(0), 2560, "Error reading pagetable", 0, 0},
		// 204 bytes end at BDRV_MAX_LENGTH, 203 bytes before it do not
		// (found with qemu-img 7.2).
		{"table offset at QEMU's limit", 51, 2 << 20, 1<<63 - 1<<30 - 204, 2560, ErrTruncated().Error(), 0, 0},
		{"table offset past QEMU's limit", 51, 2 << 20, 1<<63 - 1<<30 - 203, 2560, "Error reading pagetable", 0, 0},
	} {
		h, err := ParseDynHeader(dynHeader(c.entries, c.bs, c.table))
		if err != nil {
			t.Fatal(err)
		}
		l, err := CheckDynamic(h, sectors, c.fileLen)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || err.Error() != c.want || !errors.Is(err, ErrCorrupt)):
			t.Errorf("%s: err %v, want %q", c.name, err, c.want)
		case c.want == "" && (l.Need != c.wantNeed || l.TableEnd != c.wantE || l.BitmapSize != 512):
			t.Errorf("%s: layout %+v", c.name, l)
		}
	}
	if _, err := ParseDynHeader(make([]byte, 512)); err == nil || err.Error() != "Invalid header magic" {
		t.Errorf("no cookie: %v", err)
	}
}

func TestBitmap(t *testing.T) {
	// QEMU's formula: blocks below 4 KiB get no bitmap at all.
	if BitmapSize(2<<20) != 512 || BitmapSize(512) != 0 || BitmapSize(1<<31) != 524288 {
		t.Errorf("BitmapSize: %d %d %d", BitmapSize(2<<20), BitmapSize(512), BitmapSize(1<<31))
	}
	bm := []byte{0x80, 0x01}
	for i, want := range map[int]bool{0: true, 1: false, 15: true, 14: false, 16: false, -1: false} {
		if SectorMapped(bm, i) != want {
			t.Errorf("SectorMapped(%d) != %t", i, want)
		}
	}
}

// FuzzParse feeds the footer and dynamic header parsers and the layout
// check arbitrary bytes: they never panic (VF1), reject with an *Error
// (VF2), and a layout they accept keeps its table within the file.
func FuzzParse(f *testing.F) {
	f.Add(footer("qemu", 963, 12, 17, 104857600, TypeDynamic), dynHeader(50, 2<<20, 1536), int64(2560))
	f.Add(footer("qem2", 65535, 16, 255, 1<<40, TypeFixed), dynHeader(0x7fffffff, 512, 1<<62), int64(1<<20))
	f.Fuzz(func(t *testing.T, fb, hb []byte, fileLen int64) {
		ft, err := ParseFooter(fb)
		var fe *Error
		if err != nil {
			if !errors.As(err, &fe) {
				t.Fatalf("footer: %T %v", err, err)
			}
			return
		}
		sectors, err := ft.Sectors(SizeAuto)
		if err != nil {
			if !errors.Is(err, ErrTooLarge) {
				t.Fatal(err)
			}
			return
		}
		if sectors < 0 || sectors > MaxSectors {
			t.Fatalf("sectors %d", sectors)
		}
		h, err := ParseDynHeader(hb)
		if err != nil {
			if !errors.As(err, &fe) {
				t.Fatalf("header: %T %v", err, err)
			}
			return
		}
		if fileLen < 0 {
			fileLen = -fileLen
			if fileLen < 0 {
				fileLen = 0
			}
		}
		fileLen = min(fileLen, 1<<62) &^ 511
		l, err := CheckDynamic(h, sectors, fileLen)
		if err != nil {
			if !errors.As(err, &fe) {
				t.Fatalf("check: %T %v", err, err)
			}
			return
		}
		if l.TableEnd > fileLen || l.Need > l.Entries || l.Need*l.BlockSize < sectors*SectorSize {
			t.Fatalf("layout %+v for file of %d, %d sectors", l, fileLen, sectors)
		}
	})
}

// TestNewPlan_Encode: a new image's plan is QEMU's (100M rounds up to
// 1004 x 12 x 17 sectors; force_size keeps the size under the largest
// geometry), and what Encode writes, Parse reads back.
func TestNewPlan_Encode(t *testing.T) {
	p, err := NewPlan(100<<20, false)
	if err != nil || p.Size != 104865792 || p.Geometry != (Geometry{1004, 12, 17}) {
		t.Fatalf("NewPlan(100M) = %+v, %v", p, err)
	}
	p, err = NewPlan(100<<20+1, true)
	if err != nil || p.Size != 100<<20+512 || p.Geometry.Sectors() != MaxGeometry {
		t.Fatalf("NewPlan(100M+1, force) = %+v, %v", p, err)
	}
	if _, err := NewPlan(2041<<30, false); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("NewPlan(2041G): %v", err)
	}
	f := NewFooter(p, true, true, time.Unix(timestampBase+5, 0), [16]byte{1, 2})
	got, err := ParseFooter(f.Encode())
	if err != nil {
		t.Fatal(err)
	}
	f.Checksum = got.Checksum
	if got != f || got.Timestamp != 5 || got.CreatorApp != [4]byte{'q', 'e', 'm', '2'} {
		t.Fatalf("footer round trip: %+v, want %+v", got, f)
	}
	if n, _ := got.Sectors(SizeAuto); n*SectorSize != p.Size {
		t.Fatalf("a forced size reads back as %d sectors", n)
	}
	h := NewDynHeader(p.Size)
	hb, err := ParseDynHeader(h.Encode())
	if err != nil || hb.MaxTableEntries != 51 || hb.TableOffset != NewTableOffset || hb.BlockSize != NewBlockSize {
		t.Fatalf("dynamic header round trip: %+v, %v", hb, err)
	}
	if Checksum(h.Encode(), 36) != hb.Checksum {
		t.Fatal("dynamic header checksum")
	}
}
