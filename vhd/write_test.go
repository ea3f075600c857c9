package vhd

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/vhd/format"
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

// TestWrite_QemuReads: what a writable Disk writes into images qemu-img
// created (dynamic and fixed) is what qemu-img reads back, its map says
// which blocks were allocated, and qemu-io's writes into the same
// image are what the Disk reads (VD6, VD7).
func TestWrite_QemuReads(t *testing.T) {
	testkit.NeedQemu(t)
	for _, sub := range []string{"dynamic", "fixed"} {
		t.Run(sub, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "a.vhd")
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat="+sub, p, "20M")
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
			write(4096, fill(4096, 1))                               // block 0, partly
			write(4<<20-512, fill(1000, 2), fill(24, 3))             // across blocks 1 and 2, a vector
			write(size-1536, fill(1536, 4))                          // the last sectors
			write(9<<20+100, fill(1, 5))                             // one byte in block 4
			if err := d.WriteZeroes(4096+512, 1024, 0); err != nil { // in an allocated block
				t.Fatal(err)
			}
			clear(model[4096+512 : 4096+1536])
			if err := d.WriteZeroes(6<<20, 1<<20, block.MayUnmap); err != nil { // an unallocated one
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
			raw := filepath.Join(dir, "a.raw")
			testkit.MustRun(t, "qemu-img", "convert", "-f", "vpc", "-O", "raw", p, raw)
			q, err := os.ReadFile(raw)
			if err != nil {
				t.Fatal(err)
			}
			testkit.MustEqual(t, q, model, "qemu-img's read")
			if sub == "dynamic" {
				var m []struct {
					Start, Length int64
					Data          bool
				}
				if err := json.Unmarshal([]byte(testkit.MustRun(t, "qemu-img", "map", "-f", "vpc", "--output=json", p)), &m); err != nil {
					t.Fatal(err)
				}
				var blocks []int64
				for _, e := range m {
					for o := e.Start; e.Data && o < e.Start+e.Length; o += 2 << 20 {
						blocks = append(blocks, o>>21)
					}
				}
				// The blocks written, not block 3 (zeroed only).
				if want := []int64{0, 1, 2, 4, (size - 1) >> 21}; !slices.Equal(blocks, want) {
					t.Errorf("qemu-img map: blocks %v allocated, want %v", blocks, want)
				}
			}
			// QEMU writes into our blocks and a new one; we read them.
			testkit.MustRun(t, "qemu-io", "-f", "vpc", "-c", "write -P 0x77 8192 4096", "-c", "write -P 0x78 13M 512", p)
			copy(model[8192:], bytes.Repeat([]byte{0x77}, 4096))
			copy(model[13<<20:], bytes.Repeat([]byte{0x78}, 512))
			d = openRW(t, p)
			got = make([]byte, size)
			if err := d.Readv(0, [][]byte{got}); err != nil {
				t.Fatal(err)
			}
			testkit.MustEqual(t, got, model, "qemu-io's writes")
			// And once more ours, after QEMU's: a block QEMU allocated.
			write(13<<20+4096, fill(512, 9))
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			testkit.MustRun(t, "qemu-img", "convert", "-f", "vpc", "-O", "raw", p, raw)
			q, _ = os.ReadFile(raw)
			testkit.MustEqual(t, q, model, "qemu-img's read, last")
		})
	}
}

// newMem is a new dynamic (or fixed) image of size bytes on a memdev,
// opened writable.
func newMem(t testing.TB, size int64, fixed bool) (*memdev.Dev, *Disk) {
	t.Helper()
	m := memdev.New(memdev.Options{})
	if _, err := Create(m, CreateOptions{Size: size, Fixed: fixed}); err != nil {
		t.Fatal(err)
	}
	d, err := Open(m, Options{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	return m, d
}

// TestWrite_Concurrent: writers into the same new blocks at once each
// wait for the one allocation (VD7), and every byte written is read
// back, before and after a Flush and a reopen.
func TestWrite_Concurrent(t *testing.T) {
	m, d := newMem(t, 64<<20, false)
	size, _ := d.Size()
	const writers, each = 8, 200
	var wg sync.WaitGroup
	pieces := make([][]int64, writers)
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for range each {
				// 512-byte slots, slot%writers == g: no two writers
				// share a slot, many share a block.
				slot := rng.Int64N(size/512/writers)*writers + int64(g)
				if err := d.Writev(slot*512, [][]byte{fill(512, byte(slot))}); err != nil {
					t.Error(err)
					return
				}
				pieces[g] = append(pieces[g], slot)
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
// opens, reads every write a completed Flush covered, and reads each
// other sector as it was or as a later write left it; new blocks
// allocated after the crash read as zeros where nothing was written,
// whatever leaked blocks the crash left in the file (VD7, VD8).
func TestWrite_CrashClones(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	m, d := newMem(t, 16<<20, false)
	size, _ := d.Size()
	const sec = 512
	// Writes go into the first half, so the second has blocks left to
	// allocate after a crash.
	// Each sector is written at most once, with a pattern naming it:
	// a sector reads its pattern or zeros (never written, or the write
	// lost in the crash).
	pat := func(s int64) []byte { return fill(sec, byte(s*7+1)) }
	written := map[int64]bool{} // sector -> covered by a completed Flush
	var order []int64
	perm := rng.Perm(int(size / sec / 2))
	clones := 0
	for step := 0; step < 120; step++ {
		s := int64(perm[step])
		n := int64(1 + rng.IntN(8))
		var bufs [][]byte
		var secs []int64
		for k := int64(0); k < n && s+k < size/sec; k++ {
			if _, ok := written[s+k]; ok {
				break
			}
			bufs = append(bufs, pat(s+k))
			secs = append(secs, s+k)
		}
		if len(secs) == 0 {
			continue
		}
		if err := d.Writev(s*sec, bufs); err != nil {
			t.Fatal(err)
		}
		for _, x := range secs {
			written[x] = false
			order = append(order, x)
		}
		if rng.IntN(5) == 0 {
			if err := d.Flush(); err != nil {
				t.Fatal(err)
			}
			for x := range written {
				written[x] = true
			}
		}
		if step%6 != 0 {
			continue
		}
		for _, keep := range []float64{0, 0.5, 1} {
			clones++
			c := m.CrashClone(rng, keep)
			if keep == 0.5 && step%24 == 0 && testkit.HaveQemu() {
				qemuReadsClone(t, c, size)
			}
			checkClone(t, c, size, written, pat)
		}
	}
	if clones == 0 {
		t.Fatal("no crash clone taken")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// qemuReadsClone checks that qemu-img reads the crash clone c as we
// do, and that a block qemu-io allocates in it then reads zeros but for
// its write (QEMU places it after the last block the table maps,
// whatever a crash left in the file there: VD8).
func qemuReadsClone(t *testing.T, c *memdev.Dev, size int64) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.vhd")
	if err := c.WriteFile(p); err != nil {
		t.Fatal(err)
	}
	q := testkit.QemuReadRaw(t, "vpc", p)
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
	bs := d.layout.BlockSize
	for bi := size/bs - 1; bi >= 0; bi-- {
		if d.bat[bi].Load() != format.Unallocated {
			continue
		}
		testkit.MustRun(t, "qemu-io", "-f", "vpc", "-c", fmt.Sprintf("write -P 0x55 %d 512", bi*bs), p)
		want := slices.Clone(got)
		copy(want[bi*bs:], bytes.Repeat([]byte{0x55}, 512))
		testkit.MustEqual(t, testkit.QemuReadRaw(t, "vpc", p), want, "a block qemu-io allocated in a crash clone")
		break
	}
}

// TestWrite_QemuAllocatesOverCrashLeak: a block written and not flushed
// is leaked by a crash if its entry is not on disk; QEMU puts its next
// block there, and that block's unwritten sectors read the file. With
// the entry written after the data (at the next Flush), they read the
// leaked block's guest data (review 53): now the entry is durable
// before any data is written (VD8).
func TestWrite_QemuAllocatesOverCrashLeak(t *testing.T) {
	testkit.NeedQemu(t)
	for _, keep := range []float64{0, 0.5, 1} {
		m, d := newMem(t, 16<<20, false)
		if err := d.Writev(0, [][]byte{bytes.Repeat([]byte{0xab}, 2<<20)}); err != nil { // block 0, whole
			t.Fatal(err)
		}
		c := m.CrashClone(rand.New(rand.NewPCG(1, 1)), keep)
		p := filepath.Join(t.TempDir(), "c.vhd")
		if err := c.WriteFile(p); err != nil {
			t.Fatal(err)
		}
		testkit.MustRun(t, "qemu-io", "-f", "vpc", "-c", "write -P 0x55 6M 512", p)
		blk := testkit.QemuReadRaw(t, "vpc", p)[6<<20 : 8<<20]
		want := make([]byte, 2<<20)
		copy(want, bytes.Repeat([]byte{0x55}, 512))
		if i := testkit.FirstDiff(blk, want); i >= 0 {
			t.Errorf("keep %v: QEMU's new block 3 reads another block's bytes at +%d: %x", keep, i, blk[i:i+8])
		}
		d.Close()
	}
}

// TestWrite_OpenCloseLeavesFile: a dynamic image opened writable and
// closed without a write is left as it was, also when it does not end
// with a footer (a crash's leak, junk): Flush wrote a footer at its
// end (review 53).
func TestWrite_OpenCloseLeavesFile(t *testing.T) {
	for _, tail := range []int{0, 100, 512, 4096} {
		m := memdev.New(memdev.Options{})
		if _, err := Create(m, CreateOptions{Size: 16 << 20}); err != nil {
			t.Fatal(err)
		}
		img := append(m.Bytes(), bytes.Repeat([]byte{0x5a}, tail)...)
		f := memdev.FromBytes(img, memdev.Options{})
		d, err := Open(f, Options{Writable: true})
		if err != nil {
			t.Fatalf("tail %d: %v", tail, err)
		}
		if err := d.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if got := f.Bytes(); !bytes.Equal(got, img) {
			t.Errorf("tail %d: open writable, Flush and Close changed the file: %d -> %d bytes", tail, len(img), len(got))
		}
	}
}

// checkClone opens a crash clone: flushed sectors read their pattern,
// others their pattern or zeros; then it allocates a new block in the
// clone and reads it back (zeros but for the write).
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
	// A block never written before: the first one whose sectors none
	// was, allocated now.
	bs := d.layout.BlockSize
	for bi := int64(0); bi < size/bs; bi++ {
		if d.bat[bi].Load() != format.Unallocated {
			continue
		}
		if err := d.Writev(bi*bs+512, [][]byte{pat(bi*bs/512 + 1)}); err != nil {
			t.Fatal(err)
		}
		blk := make([]byte, bs)
		if err := d.Readv(bi*bs, [][]byte{blk}); err != nil {
			t.Fatal(err)
		}
		want := make([]byte, bs)
		copy(want[512:], pat(bi*bs/512+1))
		if i := testkit.FirstDiff(blk, want); i >= 0 {
			// A leaked block's bytes, say, read through a new one.
			t.Fatalf("new block %d reads old bytes at %d: %x", bi, i, blk[i:i+8])
		}
		break
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestWrite_OverlapRefused: an image whose blocks share space, or lie
// over its table, opens read-only but not writable: a write into one
// block would change another's bytes or the table (QEMU writes all the
// same).
func TestWrite_OverlapRefused(t *testing.T) {
	b := image(t, 1004*12*17, 1004, 12, 17, map[int][]byte{1: make([]byte, 2<<20), 3: make([]byte, 2<<20)})
	for _, e := range []uint32{binary.BigEndian.Uint32(b[1536+4:]), 3} { // block 1's, the table's sector
		c := bytes.Clone(b)
		binary.BigEndian.PutUint32(c[1536+4*3:], e)
		if _, err := Open(memdev.FromBytes(c, memdev.Options{}), Options{}); err != nil {
			t.Fatalf("entry %d: read-only open: %v", e, err)
		}
		m := memdev.FromBytes(c, memdev.Options{})
		if _, err := Open(m, Options{Writable: true}); !errors.Is(err, format.ErrCorrupt) {
			t.Errorf("entry %d: writable open: %v", e, err)
		}
		if !bytes.Equal(m.Bytes(), c) {
			t.Errorf("entry %d: the refused open changed the image", e)
		}
	}
}

// TestWrite_FixedFooterInside: a fixed disk whose footer lies inside the
// disk's bytes (a truncated file) opens read-only but not writable: a
// write would overwrite the footer.
func TestWrite_FixedFooterInside(t *testing.T) {
	m := memdev.New(memdev.Options{})
	if _, err := Create(m, CreateOptions{Size: 1 << 20, Fixed: true}); err != nil {
		t.Fatal(err)
	}
	b := m.Bytes()
	foot := b[len(b)-512:]
	cut := append(bytes.Clone(b[:len(b)-4096]), foot...) // 3.5 KiB short of the size
	if _, err := Open(memdev.FromBytes(cut, memdev.Options{}), Options{}); err != nil {
		t.Fatalf("read-only open: %v", err)
	}
	if _, err := Open(memdev.FromBytes(cut, memdev.Options{}), Options{Writable: true}); !errors.Is(err, format.ErrCorrupt) {
		t.Errorf("writable open: %v", err)
	}
	if _, err := Open(memdev.FromBytes(b, memdev.Options{}), Options{Writable: true}); err != nil {
		t.Errorf("writable open of the whole image: %v", err)
	}
}
