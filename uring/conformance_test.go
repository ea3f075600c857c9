//go:build linux

package uring

import (
	"bytes"
	"errors"
	"os"
	"sync"
	"testing"

	"github.com/qring/qring/block"
)

// TestConformance runs the block.Device invariants (block/doc.go B1..B7)
// against every backend and mode.
func TestConformance(t *testing.T) {
	cases := []struct {
		name string
		fn   func(t *testing.T, f *File)
	}{
		{"B1_concurrent_disjoint", confB1},
		{"B2_read_past_eof", confB2},
		{"B3_allocate", confB3},
		{"B4_zeroes_fallback", confB4},
		{"B5_serialising_nowait", confB5},
		{"B6_flush", confB6},
		{"B7_closed", confB7},
		{"misaligned", confMisaligned},
		{"truncate", confTruncate},
		{"readonly", confReadOnly},
	}
	for _, c := range configs() {
		for _, tc := range cases {
			t.Run(c.name+"/"+tc.name, func(t *testing.T) {
				tc.fn(t, openTemp(t, c.opt))
			})
		}
	}
}

func fill(n int, v byte) []byte {
	b := block.AlignedBuf(n, block.DefaultMemAlign)
	for i := range b {
		b[i] = v
	}
	return b
}

func confB1(t *testing.T, f *File) {
	// Overlapping writes in flight at once must leave one of the values
	// per 4 KiB block (no tearing finer than the alignment); disjoint ones
	// all land.
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 16 {
				if err := block.WriteAt(f, fill(4096, byte(g+1)), int64(i)*4096); err != nil {
					t.Error(err)
					return
				}
				if err := block.WriteAt(f, fill(4096, byte(g+1)), int64(64+g*16+i)*4096); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for i := range 16 {
		b := readAll(t, f, int64(i)*4096, 4096)
		if !bytes.Equal(b, fill(4096, b[0])) || b[0] == 0 {
			t.Fatalf("block %d torn", i)
		}
	}
	for g := range 16 {
		if !bytes.Equal(readAll(t, f, int64(64+g*16)*4096, 16*4096), fill(16*4096, byte(g+1))) {
			t.Fatalf("goroutine %d writes lost", g)
		}
	}
}

func confB2(t *testing.T, f *File) {
	data := fill(1000, 0x11)
	if err := block.WriteAt(f, data, 0); err != nil {
		t.Fatal(err)
	}
	// Straddling EOF, aligned (short O_DIRECT read at an unaligned EOF).
	b := fill(8192, 0xFF)
	if err := block.ReadAt(f, b, 0); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 8192)
	copy(want, data)
	if !bytes.Equal(b, want) {
		t.Fatal("straddling read: tail not zero")
	}
	// Entirely past EOF, vectored.
	b1, b2 := fill(4096, 0xFF), fill(4096, 0xFF)
	if err := f.Readv(1<<20, [][]byte{b1, b2}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b1, make([]byte, 4096)) || !bytes.Equal(b2, make([]byte, 4096)) {
		t.Fatal("read past EOF not zero")
	}
	// Misaligned and straddling.
	b = fill(777, 0xFF)
	if err := block.ReadAt(f, b, 900); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b[:100], data[:100]) || !bytes.Equal(b[100:], make([]byte, 677)) {
		t.Fatal("misaligned straddling read wrong")
	}
}

func confB3(t *testing.T, f *File) {
	if err := block.WriteAt(f, fill(1<<16, 0xAA), 0); err != nil {
		t.Fatal(err)
	}
	if f.Caps().ZeroFlags&block.Allocate == 0 {
		t.Fatal("ext4 should advertise Allocate")
	}
	if err := f.WriteZeroes(4096, 8192, block.Allocate); err != nil {
		t.Fatal(err)
	}
	// Extending past EOF.
	if err := f.WriteZeroes(1<<16, 1<<16, block.Allocate); err != nil {
		t.Fatal(err)
	}
	if sz, _ := f.Size(); sz != 2<<16 {
		t.Fatalf("size %d after extending Allocate", sz)
	}
	want := fill(2<<16, 0xAA)
	clear(want[4096 : 4096+8192])
	clear(want[1<<16:])
	if !bytes.Equal(readAll(t, f, 0, 2<<16), want) {
		t.Fatal("Allocate content wrong")
	}
	if al := f.Caps().Align; al > 1 {
		if err := f.WriteZeroes(1, al, block.Allocate); !errors.Is(err, block.ErrNotSupported) {
			t.Fatalf("misaligned Allocate = %v", err)
		}
	}
}

func confB4(t *testing.T, f *File) {
	if err := block.WriteAt(f, fill(1<<16, 0xAA), 0); err != nil {
		t.Fatal(err)
	}
	for _, fl := range []block.Flags{0, block.MayUnmap} {
		if err := f.WriteZeroes(513, 3000, fl); err != nil {
			t.Fatal(err)
		}
		if err := f.WriteZeroes(8192, 8192, fl); err != nil {
			t.Fatal(err)
		}
	}
	// Beyond EOF, unaligned: grows the file.
	if err := f.WriteZeroes(1<<16+10, 5000, block.MayUnmap); err != nil {
		t.Fatal(err)
	}
	if sz, _ := f.Size(); sz != 1<<16+5010 {
		t.Fatalf("size %d", sz)
	}
	want := fill(1<<16+5010, 0xAA)
	clear(want[513:3513])
	clear(want[8192:16384])
	clear(want[1<<16:])
	if got := readAll(t, f, 0, len(want)); !bytes.Equal(got, want) {
		t.Fatal("WriteZeroes content wrong")
	}
}

func confB5(t *testing.T, f *File) {
	if f.Caps().ReqFlags != 0 {
		t.Skip("device honours request flags")
	}
	for _, fl := range []block.Flags{block.Serialising, block.Serialising | block.NoWait} {
		if err := f.WriteZeroes(0, 4096, fl); !errors.Is(err, block.ErrNotSupported) {
			t.Fatalf("WriteZeroes(%v) = %v", fl, err)
		}
		if err := f.ZeroThenWritev(0, 4096, fl|block.Allocate, 0, [][]byte{fill(4096, 1)}); !errors.Is(err, block.ErrNotSupported) {
			t.Fatalf("ZeroThenWritev(%v) = %v", fl, err)
		}
	}
	if sz, _ := f.Size(); sz != 0 {
		t.Fatal("refused request had side effects")
	}
}

func confB6(t *testing.T, f *File) {
	if err := block.WriteAt(f, fill(4096, 1), 0); err != nil {
		t.Fatal(err)
	}
	before := f.Metrics().Fsyncs
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	if f.Metrics().Fsyncs != before+1 {
		t.Fatal("Flush did not fdatasync")
	}
}

func confB7(t *testing.T, f *File) {
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	b := fill(4096, 0)
	_, szErr := f.Size()
	for name, err := range map[string]error{
		"Readv":          block.ReadAt(f, b, 0),
		"Writev":         block.WriteAt(f, b, 0),
		"WriteZeroes":    f.WriteZeroes(0, 4096, 0),
		"ZeroThenWritev": f.ZeroThenWritev(0, 4096, block.Allocate, 0, [][]byte{b}),
		"Flush":          f.Flush(),
		"Size":           szErr,
		"Truncate":       f.Truncate(0),
		"Close":          f.Close(),
	} {
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("%s after Close = %v", name, err)
		}
	}
}

func confMisaligned(t *testing.T, f *File) {
	// Offsets, lengths and buffer addresses that break O_DIRECT rules.
	raw := make([]byte, 10000)
	buf := raw[3 : 3+5000]
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	if err := block.WriteAt(f, buf, 4099); err != nil {
		t.Fatal(err)
	}
	if err := f.Writev(20000, [][]byte{buf[:100], buf[100:4196]}); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 5001)[1:]
	if err := block.ReadAt(f, got, 4099); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, buf) {
		t.Fatal("misaligned round trip")
	}
	g2 := make([]byte, 4196)
	if err := f.Readv(20000, [][]byte{g2[:1], g2[1:]}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(g2, buf[:4196]) {
		t.Fatal("misaligned vectored round trip")
	}
	// Aligned I/O sees what the buffered path wrote (coherence).
	a := readAll(t, f, 4096, 8192)
	if !bytes.Equal(a[3:5003], buf) {
		t.Fatal("direct read does not see buffered write")
	}
}

func confTruncate(t *testing.T, f *File) {
	if err := block.WriteAt(f, fill(8192, 0x33), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(4096); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(12288); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 12288)
	copy(want, fill(4096, 0x33))
	if !bytes.Equal(readAll(t, f, 0, 12288), want) {
		t.Fatal("truncate content wrong")
	}
	if sz, _ := f.Size(); sz != 12288 {
		t.Fatalf("size %d", sz)
	}
}

func confReadOnly(t *testing.T, f *File) {
	if err := block.WriteAt(f, fill(4096, 0x44), 0); err != nil {
		t.Fatal(err)
	}
	o := Options{Backend: f.Backend(), Direct: f.direct}
	d, err := Opener(o)(f.path, true)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := block.WriteAt(d, fill(4096, 1), 0); !errors.Is(err, block.ErrReadOnly) {
		t.Fatalf("write on read-only = %v", err)
	}
	if err := d.WriteZeroes(0, 4096, block.Allocate); !errors.Is(err, block.ErrReadOnly) {
		t.Fatalf("zero on read-only = %v", err)
	}
	b := fill(4096, 0)
	if err := block.ReadAt(d, b, 0); err != nil || !bytes.Equal(b, fill(4096, 0x44)) {
		t.Fatalf("read-only read: %v", err)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
}
