package vhd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/vhd/format"
)

// image builds a dynamic VHD as qemu-img create -f vpc lays it out
// (block/vpc.c, create_dynamic_disk): footer copy at 0, dynamic header
// at 512, BAT at 1536, then blocks (bitmap, data) and the footer. blocks
// maps a block number to its contents (a whole block, 2 MiB).
func image(t testing.TB, sectors int64, c uint16, h, s uint8, blocks map[int][]byte) []byte {
	t.Helper()
	const bs = 2 << 20
	entries := (sectors*512 + bs - 1) / bs
	foot := make([]byte, 512)
	copy(foot, "conectix")
	binary.BigEndian.PutUint64(foot[16:], 512)
	copy(foot[28:], "qemu")
	binary.BigEndian.PutUint64(foot[48:], uint64(sectors*512))
	binary.BigEndian.PutUint16(foot[56:], c)
	foot[58], foot[59] = h, s
	binary.BigEndian.PutUint32(foot[60:], format.TypeDynamic)
	binary.BigEndian.PutUint32(foot[64:], format.Checksum(foot, 64))
	hdr := make([]byte, 1024)
	copy(hdr, "cxsparse")
	binary.BigEndian.PutUint64(hdr[16:], 1536)
	binary.BigEndian.PutUint32(hdr[28:], uint32(entries))
	binary.BigEndian.PutUint32(hdr[32:], bs)
	bat := bytes.Repeat([]byte{0xff}, int((entries*4+511)&^511))
	var img bytes.Buffer
	img.Write(foot)
	img.Write(hdr)
	img.Write(bat)
	for i := 0; i < int(entries); i++ {
		b, ok := blocks[i]
		if !ok {
			continue
		}
		binary.BigEndian.PutUint32(img.Bytes()[1536+4*i:], uint32(img.Len()/512))
		img.Write(bytes.Repeat([]byte{0xff}, 512))
		img.Write(b)
	}
	img.Write(foot)
	return img.Bytes()
}

func open(t testing.TB, b []byte) (*Disk, error) {
	t.Helper()
	return Open(memdev.FromBytes(b, memdev.Options{}), Options{Name: "t.vhd"})
}

func TestDisk_Reads(t *testing.T) {
	b1 := bytes.Repeat([]byte{0x5a}, 2<<20)
	b3 := bytes.Repeat([]byte{7}, 2<<20)
	// 1004 x 12 x 17 sectors: qemu-img's geometry for 100M.
	d, err := open(t, image(t, 1004*12*17, 1004, 12, 17, map[int][]byte{1: b1, 3: b3}))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	size, _ := d.Size()
	if size != 104865792 || d.BlockSize() != 2<<20 {
		t.Fatalf("size %d, block size %d", size, d.BlockSize())
	}
	// A vector read across an unallocated block and two allocated ones
	// (VD4), and past the end (B2).
	a, bb := make([]byte, 3<<20), make([]byte, 2<<20+100)
	if err := d.Readv(1<<20, [][]byte{a, bb}); err != nil {
		t.Fatal(err)
	}
	got := append(a, bb...)
	want := append(append(make([]byte, 1<<20), b1...), make([]byte, 2<<20)...)
	want = append(want, b3[:100]...)
	if !bytes.Equal(got, want) {
		t.Fatal("contents differ")
	}
	tail := bytes.Repeat([]byte{1}, 1024)
	if err := block.ReadAt(d, tail, size-512); err != nil || !bytes.Equal(tail, make([]byte, 1024)) {
		t.Fatalf("tail: %v", err)
	}
	// Map (VD5): blocks 1 and 3 data, the rest zero.
	m, err := d.Map()
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 5 || !m[1].Data || m[1].Offset != 2560 || m[2].Data || !m[2].Zero || m[4].Start+m[4].Length != size {
		t.Fatalf("map %+v", m)
	}
	if data, n, _ := d.DataRun(0, size); data || n != 2<<20 {
		t.Errorf("DataRun(0) = %t %d", data, n)
	}
	if data, n, _ := d.DataRun(8<<20, size); data || n != size {
		t.Errorf("DataRun(8M) = %t %d: a hole to the end", data, n)
	}
	// Read-only (VD1), then closed (B7).
	for _, err := range []error{d.Writev(0, [][]byte{{1}}), d.WriteZeroes(0, 512, 0), d.Truncate(0)} {
		if !errors.Is(err, block.ErrReadOnly) {
			t.Errorf("write: %v", err)
		}
	}
	d.Close()
	if err := d.Readv(0, [][]byte{a}); !errors.Is(err, block.ErrClosed) {
		t.Errorf("after close: %v", err)
	}
}

func TestDisk_Fixed(t *testing.T) {
	data := bytes.Repeat([]byte{9}, 4*17*16*512)
	foot := make([]byte, 512)
	copy(foot, "conectix")
	binary.BigEndian.PutUint64(foot[16:], ^uint64(0))
	copy(foot[28:], "qemu")
	binary.BigEndian.PutUint64(foot[48:], uint64(len(data)))
	binary.BigEndian.PutUint16(foot[56:], 16)
	foot[58], foot[59] = 4, 17
	binary.BigEndian.PutUint32(foot[60:], format.TypeFixed)
	binary.BigEndian.PutUint32(foot[64:], format.Checksum(foot, 64))
	d, err := open(t, append(data, foot...))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if n, _ := d.Size(); n != int64(len(data)) || d.BlockSize() != 0 {
		t.Fatalf("size %d", n)
	}
	got := make([]byte, len(data)+512)
	if err := block.ReadAt(d, got, 0); err != nil || !bytes.Equal(got[:len(data)], data) || !bytes.Equal(got[len(data):], make([]byte, 512)) {
		t.Fatalf("read: %v", err)
	}
}

// TestDisk_Hostile: damaged images are refused with QEMU's words, never
// a panic or an allocation sized by the image (VD3).
func TestDisk_Hostile(t *testing.T) {
	good := image(t, 1004*12*17, 1004, 12, 17, map[int][]byte{0: make([]byte, 2<<20)})
	put32 := func(off int, v uint32) []byte {
		b := append([]byte(nil), good...)
		binary.BigEndian.PutUint32(b[off:], v)
		return b
	}
	truncated := truncatedText
	// A dynamic disk whose footer copy at the start is gone: its end
	// footer says dynamic, not fixed (QEMU refuses it; qring read it as
	// zeros).
	headless := append([]byte(nil), good...)
	clear(headless[:512])
	for _, c := range []struct {
		name string
		img  []byte
		want string
	}{
		{"empty", nil, "File too small for a VHD header"},
		{"tiny", []byte("abc"), "invalid VPC image"},
		{"truncated", good[:1000], truncated},
		{"truncated block", good[:len(good)-4096], truncated},
		{"bad checksum", put32(100, 1), "Incorrect header checksum"},
		{"BAT past EOF", put32(1536, 0x100000), truncated},
		{"huge max_table_entries", put32(512+28, 0x7fffffff), "Max Table Entries too large (2147483647)"},
		{"big max_table_entries", put32(512+28, 0x10000000), truncated},
		{"bad block size", put32(512+32, 1000), "Invalid block size 1000"},
		{"bad header magic", put32(512, 0), "Invalid header magic"},
		{"no footer at the start", headless, "invalid VPC image"},
	} {
		d, err := open(t, c.img)
		if err == nil {
			d.Close()
			t.Errorf("%s: opened", c.name)
			continue
		}
		if err.Error() != c.want {
			t.Errorf("%s: %q, want %q", c.name, err, c.want)
		}
	}
	// A differencing disk is refused as unsupported.
	b := put32(60, format.TypeDifferencing)
	binary.BigEndian.PutUint32(b[64:], format.Checksum(b[:512], 64))
	if _, err := open(t, b); !errors.Is(err, format.ErrUnsupported) {
		t.Errorf("differencing: %v", err)
	}
}

var truncatedText = format.ErrTruncated().Error()

// FuzzOpen opens arbitrary images built around a valid one: no panic,
// and an image that opens reads its first and last bytes.
func FuzzOpen(f *testing.F) {
	f.Add(image(f, 1004*12*17, 1004, 12, 17, map[int][]byte{1: make([]byte, 2<<20)})[:8192], uint16(0), uint32(0))
	f.Add(image(f, 4*17*16, 16, 4, 17, nil), uint16(512+28), uint32(0xffffffff))
	f.Fuzz(func(t *testing.T, b []byte, at uint16, v uint32) {
		if int(at)+4 <= len(b) {
			binary.BigEndian.PutUint32(b[at:], v)
		}
		d, err := open(t, b)
		if err != nil {
			return
		}
		defer d.Close()
		size, _ := d.Size()
		p := make([]byte, 4096)
		if err := block.ReadAt(d, p, 0); err != nil {
			t.Fatal(err)
		}
		if err := block.ReadAt(d, p, max(0, size-100)); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Map(); err != nil {
			t.Fatal(err)
		}
		// Opened writable, the same image takes a write at each end and
		// a flush, or refuses them with an error (VD6); reads see the
		// write.
		w, err := Open(memdev.FromBytes(b, memdev.Options{}), Options{Writable: true})
		if err != nil {
			return
		}
		defer w.Close()
		for _, off := range []int64{0, max(0, size-512)} {
			if off+512 > size {
				continue
			}
			data := bytes.Repeat([]byte{0xa5}, 512)
			if w.Writev(off, [][]byte{data}) != nil {
				continue
			}
			got := make([]byte, 512)
			if err := block.ReadAt(w, got, off); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("write at %d reads back %x..., %v", off, got[:8], err)
			}
		}
		w.Flush()
	})
}
