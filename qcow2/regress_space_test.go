package qcow2

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// Regression tests for "Never lose a byte", bugs 1, 7, 8, 9: host space
// (SP1 in doc.go) and buffers sized "up to a cluster".

// spaceGuard wraps a memdev and records every byte written with data or
// metadata (everything but fill pieces and zeroing requests). A reserve
// zeroing (an Allocate request longer than one cluster) or a fill piece
// over such a byte breaks SP1: nothing below the high-water mark is ever
// zeroed.
type spaceGuard struct {
	*memdev.Dev
	cs int64

	mu         sync.Mutex
	used       []uint64 // bitmap of 512-byte sectors holding data or metadata
	violations []string
}

func newSpaceGuard(t *testing.T, mem *memdev.Dev, cs int64) *spaceGuard {
	g := &spaceGuard{Dev: mem, cs: cs}
	n, err := mem.Size()
	if err != nil {
		t.Fatal(err)
	}
	g.mark(0, n) // the image as created
	return g
}

func (g *spaceGuard) mark(off, n int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for s := off / 512; s < (off+n+511)/512; s++ {
		for int(s/64) >= len(g.used) {
			g.used = append(g.used, 0)
		}
		g.used[s/64] |= 1 << (s % 64)
	}
}

func (g *spaceGuard) check(what string, off, n int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for s := off / 512; s < (off+n+511)/512; s++ {
		if int(s/64) < len(g.used) && g.used[s/64]&(1<<(s%64)) != 0 {
			g.violations = append(g.violations, fmt.Sprintf("%s [%d, %d) covers written byte %d", what, off, off+n, s*512))
			return
		}
	}
}

func (g *spaceGuard) Writev(off int64, bufs [][]byte) error {
	n := block.VecLen(bufs)
	if isFillWrite(bufs) {
		g.check("fill piece", off, n)
	} else {
		g.mark(off, n)
	}
	return g.Dev.Writev(off, bufs)
}

func (g *spaceGuard) WriteZeroes(off, n int64, f block.Flags) error {
	if f&block.Allocate != 0 && n > g.cs {
		g.check("reserve zeroing", off, n)
	}
	return g.Dev.WriteZeroes(off, n, f)
}

func (g *spaceGuard) Close() error { return nil }

func (g *spaceGuard) assertClean(t *testing.T) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.violations) > 0 {
		t.Fatalf("%d zeroings over data or metadata (SP1), first: %s", len(g.violations), g.violations[0])
	}
}

// TestRegress_ReserveSparesMetadata is bug 1: growing the reserve zeroed
// a new refcount table or refcount block that had been placed at the
// high-water mark past the reserve's end. Sequential writes run across
// many refcount-block boundaries and several refcount-table growths
// with small reserve chunks; no reserve zeroing may cover a written
// byte, and the image must check clean (also after a reopen that writes
// more).
func TestRegress_ReserveSparesMetadata(t *testing.T) {
	t.Parallel()
	cases := []struct {
		cs, rbits    int
		ahead, align int64
		total        int64
		fill         string
	}{
		{512, 16, 4 << 20, 8 << 20, 12 << 20, FillUnwritten}, // the CLI reproduction
		{512, 64, 256 << 10, 1 << 20, 4 << 20, FillUnwritten},
		{512, 64, 256 << 10, 4 << 20, 4 << 20, FillZeroes},
		{1024, 16, 4 << 20, 4 << 20, 10 << 20, FillUnwritten},
		{4096, 64, 1 << 20, 1 << 20, 6 << 20, FillUnwritten},
	}
	for _, c := range cases {
		name := fmt.Sprintf("cs%d-r%d-ahead%d-align%d-%s", c.cs, c.rbits, c.ahead>>10, c.align>>10, c.fill)
		t.Run(name, func(t *testing.T) {
			mem := memdev.New(memdev.Options{})
			if err := CreateDevice(mem, CreateOptions{Size: 64 << 20, ClusterSize: c.cs, RefcountBits: c.rbits}); err != nil {
				t.Fatal(err)
			}
			guard := newSpaceGuard(t, mem, int64(c.cs))
			o := Options{PreallocSize: c.ahead, PreallocAlign: c.align, PreallocFill: c.fill}
			shadow := make([]byte, 64<<20)
			for round := range 2 {
				im, err := OpenDevice(guard, o)
				if err != nil {
					t.Fatal(err)
				}
				base := int64(round) * c.total
				buf := bytes.Repeat([]byte{0xab + byte(round)}, 256<<10)
				for off := int64(0); off < c.total; off += int64(len(buf)) {
					mustWrite(t, im, buf, base+off)
					copy(shadow[base+off:], buf)
				}
				if err := im.Close(); err != nil {
					t.Fatal(err)
				}
				guard.assertClean(t)
			}
			im, err := OpenDevice(mem, Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			mustClean(t, im)
			testkit.MustEqual(t, testkit.ReadAll(t, im), shadow, "guest contents")
		})
	}
}

// TestRegress_ReserveAcceptance is bug 1 on real files through io_uring
// (O_DIRECT), checked by qemu-img check. cmd/qimg's TestRegress_CLI runs
// the whole acceptance matrix (cluster sizes 512 B, 1 KiB and 4 KiB with
// prealloc-align 1M, 4M and 8M) through the CLI.
func TestRegress_ReserveAcceptance(t *testing.T) {
	t.Parallel()
	for _, cs := range []int{512, 4096} {
		for _, align := range []int64{1 << 20, 8 << 20} {
			t.Run(fmt.Sprintf("cs%d-align%dM", cs, align>>20), func(t *testing.T) {
				p := filepath.Join(testkit.Dir(t), "t.qcow2")
				if err := Create(p, CreateOptions{Size: 64 << 20, ClusterSize: cs}); err != nil {
					t.Fatal(err)
				}
				im, err := Open(p, Options{Opener: uringOpener(), PreallocSize: 4 << 20, PreallocAlign: align, PreallocFill: FillUnwritten})
				if err != nil {
					t.Fatal(err)
				}
				buf := bytes.Repeat([]byte{0xab}, 1<<20)
				for off := int64(0); off < 12<<20; off += 1 << 20 {
					mustWrite(t, im, buf, off)
				}
				closeCheck(t, im, p)
			})
		}
	}
}

// TestRegress_MidClusterEOF is bug 7: a torn write that extended the file
// left it ending inside a cluster. The straddling cluster lies below the
// high-water mark, so it may hold data after reopen; growing the reserve
// must not zero it from the old file end.
func TestRegress_MidClusterEOF(t *testing.T) {
	const cs = 64 << 10
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 64 << 20, ClusterSize: cs}); err != nil {
		t.Fatal(err)
	}
	// Allocate a few clusters, then leave the file ending 512 bytes into
	// the next cluster (as a torn write past EOF would).
	im, err := OpenDevice(mem, Options{PreallocSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, im, pattern(3*cs, 1), 0)
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	n, _ := mem.Size()
	if err := block.WriteAt(mem, make([]byte, 512), n); err != nil {
		t.Fatal(err)
	}
	mem.Flush()

	guard := newSpaceGuard(t, mem, cs)
	// A reserve alignment below the cluster size puts the old reserve
	// end's rounding inside the straddling cluster.
	im, err = OpenDevice(guard, Options{PreallocFill: FillUnwritten, PreallocAlign: 4096})
	if err != nil {
		t.Fatal(err)
	}
	a := pattern(cs, 9)
	mustWrite(t, im, a, 8*cs) // lands in the straddling cluster
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, im, pattern(4*cs, 5), 16*cs) // new space: grows the reserve
	got := make([]byte, cs)
	if _, err := im.ReadAt(got, 8*cs); err != nil {
		t.Fatal(err)
	}
	testkit.MustEqual(t, got, a, "flushed cluster after the reserve grew")
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	guard.assertClean(t)
	im, err = OpenDevice(mem, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	mustClean(t, im)
	if _, err := im.ReadAt(got, 8*cs); err != nil {
		t.Fatal(err)
	}
	testkit.MustEqual(t, got, a, "flushed cluster after reopen")
}

// TestRegress_ZeroesBigClusters is bug 8: WriteZeroes sliced the shared
// 1 MiB zero buffer to the request length and panicked with 2 MiB
// clusters (v2 has no zero clusters, so a whole cluster goes through
// zero buffers too). QEMU must read zeros there.
func TestRegress_ZeroesBigClusters(t *testing.T) {
	t.Parallel()
	const cs = 2 << 20
	cases := []struct {
		compat string
		off, n int64
	}{
		{"0.10", 0, cs},
		{"1.1", 1024, cs - 1024 - 1024},
		{"1.1", 1024, cs - 1024},
		{"0.10", 512, 3 * cs},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s-%d+%d", c.compat, c.off, c.n), func(t *testing.T) {
			im, p := testImage(t, CreateOptions{Size: 64 << 20, ClusterSize: cs, Compat: c.compat}, Options{})
			want := pattern(4*cs, 1)
			mustWrite(t, im, want, 0)
			if err := im.WriteZeroes(c.off, c.n, 0); err != nil {
				t.Fatal(err)
			}
			clear(want[c.off : c.off+c.n])
			testkit.MustEqual(t, testkit.ReadAll(t, im)[:4*cs], want, "after WriteZeroes")
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			if testkit.HaveQemu() {
				raw := filepath.Join(t.TempDir(), "raw")
				testkit.MustRun(t, "qemu-img", "convert", "-O", "raw", p, raw)
				got := readFile(t, raw)
				testkit.MustEqual(t, got[:4*cs], want, "qemu-img convert")
			}
		})
	}
}

// TestRegress_CreateSmallClusterBacking is bug 9: 512-byte clusters,
// compat 1.1 and a backing file. The feature-name table is optional; as
// QEMU, Create leaves it out when the header cluster cannot hold it.
func TestRegress_CreateSmallClusterBacking(t *testing.T) {
	dir := testkit.Dir(t)
	b := filepath.Join(dir, "b.raw")
	writeFile(t, b, pattern(1<<20, 3))
	p := filepath.Join(dir, "t.qcow2")
	if err := Create(p, CreateOptions{ClusterSize: 512, BackingFile: b, BackingFormat: "raw"}); err != nil {
		t.Fatal(err)
	}
	im, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := pattern(1<<20, 3)
	copy(want[1000:], pattern(4096, 7))
	mustWrite(t, im, want[1000:1000+4096], 1000)
	testkit.MustEqual(t, testkit.ReadAll(t, im), want, "guest contents")
	closeCheck(t, im, p)
	if testkit.HaveQemu() {
		raw := filepath.Join(dir, "out.raw")
		testkit.MustRun(t, "qemu-img", "convert", "-O", "raw", p, raw)
		testkit.MustEqual(t, readFile(t, raw), want, "qemu-img convert")
	}
}

func readFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t testing.TB, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestGrowL1 grows the virtual size past the L1 table (Truncate used to
// refuse): the new table is taken like any other space, data written
// before and after reads back through us and through QEMU, and the old
// table is freed (no leak). Lock-free readers run throughout.
func TestGrowL1(t *testing.T) {
	t.Parallel()
	for _, cs := range []int{512, 4096} {
		t.Run(fmt.Sprint(cs), func(t *testing.T) {
			size := int64(cs) * int64(cs/8) // one L1 entry's worth
			im, p := testImage(t, CreateOptions{Size: size, ClusterSize: cs}, Options{})
			want := pattern(int(size), 1)
			mustWrite(t, im, want, 0)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // lock-free reads while the table is replaced
				defer wg.Done()
				b := make([]byte, 512)
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := im.ReadAt(b, 0); err != nil {
						t.Error(err)
						return
					}
				}
			}()
			for _, grow := range []int64{3, 40, 41} {
				if err := im.Truncate(size * grow); err != nil {
					t.Fatal(err)
				}
				more := pattern(cs*3, byte(grow))
				mustWrite(t, im, more, size*grow-int64(len(more)))
				want = append(want, make([]byte, size*grow-int64(len(want)))...)
				copy(want[size*grow-int64(len(more)):], more)
			}
			close(stop)
			wg.Wait()
			if im.Header().L1Size < 41 {
				t.Fatalf("l1_size %d", im.Header().L1Size)
			}
			testkit.MustEqual(t, testkit.ReadAll(t, im), want, "after growth")
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			if testkit.HaveQemu() {
				raw := filepath.Join(t.TempDir(), "raw")
				testkit.MustRun(t, "qemu-img", "convert", "-O", "raw", p, raw)
				testkit.MustEqual(t, readFile(t, raw), want, "qemu-img convert")
			}
		})
	}
}
