//go:build linux

package uring

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/testkit"
	"golang.org/x/sys/unix"
)

// Tests for U1 (misaligned requests on a Direct file never use the page
// cache: bounce buffers and read-modify-write on the O_DIRECT descriptor)
// and U2 (Allocate zeroing only of whole filesystem blocks).

func directConfigs() []config {
	return []config{
		{"ring-direct", Options{Backend: Ring, Direct: true}},
		{"ring-direct-nomerge", Options{Backend: Ring, Direct: true, NoMerge: true}},
		{"ring-direct-hybrid", Options{Backend: Ring, Direct: true, Hybrid: true}},
		{"threads-direct", Options{Backend: Threads, Direct: true}},
	}
}

// kmsgWatch reports kernel log records written while a test ran that
// concern its file: "Page cache invalidation failure on direct I/O"
// (followed by a "File: <path>" record) and ext4 warnings naming its
// inode. The kernel rate-limits the former to a few a day, so a quiet log
// proves little; fdatasync's EIO (the same failure sets it) is the
// reliable signal, and the tests check that too.
type kmsgWatch struct {
	fd   int
	path string
	ino  uint64
}

// watchKmsg starts watching for records about path (nil if /dev/kmsg is
// not readable here: not root, or restricted).
func watchKmsg(t *testing.T, path string) *kmsgWatch {
	t.Helper()
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Logf("kernel log not checked: %v", err)
		return nil
	}
	if _, err := unix.Seek(fd, 0, 2 /* SEEK_END */); err != nil {
		unix.Close(fd)
		t.Logf("kernel log not checked: %v", err)
		return nil
	}
	w := &kmsgWatch{fd: fd, path: path}
	var st unix.Stat_t
	if unix.Stat(path, &st) == nil {
		w.ino = st.Ino
	}
	t.Cleanup(func() { unix.Close(fd) })
	return w
}

// check fails t for every new record about the watched file.
func (w *kmsgWatch) check(t *testing.T) {
	t.Helper()
	if w == nil {
		return
	}
	buf := make([]byte, 8192)
	var recs []string
	for {
		n, err := unix.Read(w.fd, buf)
		if err == unix.EPIPE {
			continue // records overwritten before we read them
		}
		if err != nil || n <= 0 {
			break
		}
		rec := string(buf[:n])
		if i := strings.IndexByte(rec, ';'); i >= 0 {
			rec = rec[i+1:]
		}
		if i := strings.IndexByte(rec, '\n'); i >= 0 {
			rec = rec[:i]
		}
		recs = append(recs, rec)
	}
	inode := fmt.Sprintf("Inode (%d)", w.ino)
	for i, r := range recs {
		switch {
		case strings.Contains(r, "Page cache invalidation failure"):
			file := ""
			if i+1 < len(recs) {
				file = recs[i+1]
			}
			if strings.Contains(file, w.path) {
				t.Errorf("kernel: %s / %s", r, file)
			} else {
				t.Logf("kernel (another file): %s / %s", r, file)
			}
		case w.ino != 0 && strings.Contains(r, "EXT4-fs") && strings.Contains(r, inode):
			t.Errorf("kernel: %s", r)
		}
	}
}

// residentPages counts the file's pages in the page cache (mincore).
func residentPages(t *testing.T, path string) int {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	if st.Size == 0 {
		return 0
	}
	mem, err := unix.Mmap(fd, 0, int(st.Size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	pg := os.Getpagesize()
	vec := make([]byte, (len(mem)+pg-1)/pg)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&mem[0])), uintptr(len(mem)),
		uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal(e)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

// oddBuf returns n bytes at an address that is not even 2-aligned when
// odd is set, else an aligned buffer.
func oddBuf(n int, odd bool) []byte {
	if !odd {
		return block.AlignedBuf(n, block.DefaultMemAlign)
	}
	return block.AlignedBuf(n+1, block.DefaultMemAlign)[1:]
}

// piece is one request of a round: bytes [off, off+n) of the model get
// data (or zeros).
type piece struct {
	off, n int64
	data   []byte      // nil for a zeroing
	flags  block.Flags // for a zeroing
}

// cutPage splits [base, base+span) at random points, a third of them
// aligned to 512 so that some pieces go to the kernel directly and the
// others need a read-modify-write, and drops a few pieces.
func cutPage(r *rand.Rand, base, span int64) [][2]int64 {
	cuts := []int64{0, span}
	for range 2 + r.IntN(6) {
		c := 1 + r.Int64N(span-1)
		if r.IntN(3) == 0 {
			c = c / 512 * 512
		}
		cuts = append(cuts, c)
	}
	cuts = sortedUnique(cuts)
	var out [][2]int64
	for i := 0; i+1 < len(cuts); i++ {
		if r.IntN(8) == 0 {
			continue
		}
		out = append(out, [2]int64{base + cuts[i], cuts[i+1] - cuts[i]})
	}
	return out
}

func sortedUnique(v []int64) []int64 {
	for i := 1; i < len(v); i++ {
		for j := i; j > 0 && v[j] < v[j-1]; j-- {
			v[j], v[j-1] = v[j-1], v[j]
		}
	}
	out := v[:1]
	for _, x := range v[1:] {
		if x != out[len(out)-1] {
			out = append(out, x)
		}
	}
	return out
}

// runPieces issues the pieces concurrently (released together), with
// readers checking that every byte they see is the old or the new value;
// it returns the new model.
func runPieces(t *testing.T, f *File, r *rand.Rand, old []byte, ps []piece, readers int, lo, hi int64) []byte {
	t.Helper()
	end := max(hi, int64(len(old)))
	for _, p := range ps {
		end = max(end, p.off+p.n)
	}
	want := append(bytes.Clone(old), make([]byte, end-int64(len(old)))...)
	for _, p := range ps {
		if p.data == nil {
			clear(want[p.off : p.off+p.n])
		} else {
			copy(want[p.off:], p.data)
		}
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	errc := make(chan error, len(ps)+readers)
	refused := make([]bool, len(ps))
	for i, p := range ps {
		wg.Go(func() {
			<-start
			var err error
			switch {
			case p.data != nil:
				err = block.WriteAt(f, p.data, p.off)
			default:
				err = f.WriteZeroes(p.off, p.n, p.flags)
				if p.flags&block.Allocate != 0 && errors.Is(err, block.ErrNotSupported) {
					refused[i], err = true, nil
				}
			}
			if err != nil {
				errc <- fmt.Errorf("piece [%d,+%d) zero=%v: %w", p.off, p.n, p.data == nil, err)
			}
		})
	}
	if hi-lo < 2 {
		readers = 0
	}
	for range readers {
		off := lo + r.Int64N(hi-lo-1)
		n := 1 + r.Int64N(hi-off-1)
		odd := r.IntN(2) == 0
		wg.Go(func() {
			<-start
			b := oddBuf(int(n), odd)
			if err := block.ReadAt(f, b, off); err != nil {
				errc <- err
				return
			}
			for i, c := range b {
				o := off + int64(i)
				var was byte
				if o < int64(len(old)) {
					was = old[o]
				}
				if c != was && c != want[o] {
					errc <- fmt.Errorf("concurrent read at %d: byte %#x is neither old %#x nor new %#x", o, c, was, want[o])
					return
				}
			}
		})
	}
	close(start)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	for i, p := range ps {
		if refused[i] {
			copy(want[p.off:p.off+p.n], old[p.off:])
		}
	}
	return want
}

// expectFile compares [0, len(want)) of f with want, through an aligned
// direct read and a misaligned one.
// flushAndExpect flushes f, checks the kernel log and expects the model.
func flushAndExpect(t *testing.T, f *File, w *kmsgWatch, model []byte) {
	t.Helper()
	if err := f.Flush(); err != nil {
		t.Errorf("Flush: %v", err)
	}
	w.check(t)
	expectFile(t, f, model, "after Flush")
}

func expectFile(t *testing.T, f *File, want []byte, what string) {
	t.Helper()
	expectRange(t, f, want, 0, what)
}

// expectRange compares [lo, len(want)) of f with want[lo:] (lo aligned).
func expectRange(t *testing.T, f *File, want []byte, lo int64, what string) {
	t.Helper()
	n := int(alignUp(int64(len(want))-lo, 4096))
	got := readAll(t, f, lo, n)
	if i := testkit.FirstDiff(got[:int64(len(want))-lo], want[lo:]); i >= 0 {
		o := lo + int64(i)
		t.Fatalf("%s: byte %d is %#x, want %#x (a write was lost or misplaced)", what, o, got[i], want[o])
	}
	if int64(len(want))-lo > 2 {
		g := oddBuf(len(want)-int(lo)-2, true)
		if err := block.ReadAt(f, g, lo+1); err != nil {
			t.Fatal(err)
		}
		if i := testkit.FirstDiff(g, want[lo+1:len(want)-1]); i >= 0 {
			o := lo + 1 + int64(i)
			t.Fatalf("%s: misaligned read: byte %d is %#x, want %#x", what, o, g[i], want[o])
		}
	}
}

func randBytes(r *rand.Rand, n int64, odd bool) []byte {
	b := oddBuf(int(n), odd)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestDirect_MixedWrites: concurrent misaligned and aligned writes (and
// zeroings of partial blocks) to the same 4 KiB page of an O_DIRECT file,
// many rounds, with concurrent misaligned reads: every byte matches the
// model after each round, Flush succeeds (a page-cache collision makes
// fdatasync fail with EIO) and the kernel logged nothing about the file.
func TestDirect_MixedWrites(t *testing.T) {
	rounds := 300
	if testing.Short() {
		rounds = 60
	}
	for _, c := range directConfigs() {
		t.Run(c.name, func(t *testing.T) {
			f := openTemp(t, c.opt)
			w := watchKmsg(t, f.path)
			r := rand.New(rand.NewPCG(1, uint64(len(c.name))))
			const span = 4 * 4096
			model := randBytes(r, span, false)
			if err := block.WriteAt(f, model, 0); err != nil {
				t.Fatal(err)
			}
			for round := range rounds {
				page := r.Int64N(span/4096) * 4096
				var ps []piece
				for _, cut := range cutPage(r, page, 4096) {
					p := piece{off: cut[0], n: cut[1]}
					switch r.IntN(8) {
					case 0:
						p.flags = []block.Flags{0, block.MayUnmap, block.Allocate}[r.IntN(3)]
					default:
						p.data = randBytes(r, p.n, r.IntN(4) == 0)
					}
					ps = append(ps, p)
				}
				model = runPieces(t, f, r, model, ps, 2, page, page+4096)
				expectFile(t, f, model, fmt.Sprintf("round %d", round))
			}
			flushAndExpect(t, f, w, model)
			m := f.Metrics()
			if m.RMW == 0 || m.Misaligned == 0 {
				t.Fatalf("no read-modify-write ran: %v", m)
			}
			t.Logf("%v", m)
		})
	}
}

// TestDirect_ZeroThenWritevRMW: a linked ZeroThenWritev(Allocate) of a
// page races a read-modify-write into the same page (disjoint from the
// linked write's data): the page ends up as one of the two orders, never
// with the read-modify-write's padding restoring bytes the zeroing
// cleared.
func TestDirect_ZeroThenWritevRMW(t *testing.T) {
	rounds := 300
	if testing.Short() || raceEnabled {
		rounds = 80
	}
	for _, c := range directConfigs() {
		t.Run(c.name, func(t *testing.T) {
			f := openTemp(t, c.opt)
			if f.Caps().ZeroFlags&block.Allocate == 0 || f.Caps().ZeroAlign > 4096 {
				t.Skip("no Allocate zeroing of 4 KiB here")
			}
			w := watchKmsg(t, f.path)
			r := rand.New(rand.NewPCG(6, uint64(len(c.name))))
			const span = 8 * 4096
			model := randBytes(r, span, false)
			if err := block.WriteAt(f, model, 0); err != nil {
				t.Fatal(err)
			}
			for round := range rounds {
				p := r.Int64N(span/4096) * 4096
				a := r.Int64N(7)
				b := a + 1 + r.Int64N(7-a)
				wdata := randBytes(r, (b-a)*512, false)
				// The misaligned write: before or after the linked data.
				var x, y int64
				if a > 0 && (b == 8 || r.IntN(2) == 0) {
					x = r.Int64N(a*512 - 1)
					y = x + 1 + r.Int64N(a*512-x-1)
				} else {
					x = b*512 + r.Int64N(4096-b*512-1)
					y = x + 1 + r.Int64N(4096-x-1)
				}
				if x%512 == 0 {
					x++ // keep it misaligned
				}
				if y <= x {
					y = x + 1
				}
				rdata := randBytes(r, y-x, r.IntN(2) == 0)
				start := make(chan struct{})
				var wg sync.WaitGroup
				var zerr, rerr error
				wg.Add(2)
				go func() {
					defer wg.Done()
					<-start
					zerr = f.ZeroThenWritev(p, 4096, block.Allocate, p+a*512, [][]byte{wdata})
				}()
				go func() {
					defer wg.Done()
					<-start
					rerr = block.WriteAt(f, rdata, p+x)
				}()
				close(start)
				wg.Wait()
				if zerr != nil || rerr != nil {
					t.Fatalf("round %d: ZeroThenWritev %v, write %v", round, zerr, rerr)
				}
				zfirst := make([]byte, 4096) // zeroing, then the write
				copy(zfirst[a*512:], wdata)
				copy(zfirst[x:], rdata)
				wfirst := make([]byte, 4096) // the write, then the zeroing
				copy(wfirst[a*512:], wdata)
				got := readAll(t, f, p, 4096)
				switch {
				case bytes.Equal(got, zfirst):
					copy(model[p:], zfirst)
				case bytes.Equal(got, wfirst):
					copy(model[p:], wfirst)
				default:
					t.Fatalf("round %d: page %d is neither order (linked write [%d,%d), misaligned write [%d,%d)); first difference from zero-first at %d",
						round, p, a*512, b*512, x, y, testkit.FirstDiff(got, zfirst))
				}
			}
			flushAndExpect(t, f, w, model)
		})
	}
}

// TestDirect_MisalignedWritePastEOF: a misaligned write past (or across)
// EOF leaves the size at its end, with the padding gone, and reads back;
// concurrent with aligned writes into the same page, none is lost.
func TestDirect_MisalignedWritePastEOF(t *testing.T) {
	for _, c := range directConfigs() {
		t.Run(c.name, func(t *testing.T) {
			f := openTemp(t, c.opt)
			w := watchKmsg(t, f.path)
			r := rand.New(rand.NewPCG(2, uint64(len(c.name))))
			var model []byte
			size := func() int64 {
				t.Helper()
				sz, err := f.Size()
				if err != nil {
					t.Fatal(err)
				}
				return sz
			}
			write := func(off int64, b []byte) {
				t.Helper()
				if err := block.WriteAt(f, b, off); err != nil {
					t.Fatal(err)
				}
				if end := off + int64(len(b)); end > int64(len(model)) {
					model = append(model, make([]byte, end-int64(len(model)))...)
				}
				copy(model[off:], b)
				if sz := size(); sz != int64(len(model)) {
					t.Fatalf("write [%d,+%d): size %d, want %d", off, len(b), sz, len(model))
				}
				expectFile(t, f, model, fmt.Sprintf("write [%d,+%d)", off, len(b)))
			}
			// One at a time: from empty, inside one block, across blocks,
			// leaving a gap, from an unaligned EOF, within the last block.
			write(100, randBytes(r, 37, true))
			write(700, randBytes(r, 600, false))
			write(5000, randBytes(r, 3000, true))
			write(int64(len(model)), randBytes(r, 1, false))
			write(int64(len(model))-10, randBytes(r, 20, true))
			write(20000, randBytes(r, 4096, false)) // aligned length, misaligned offset
			write(30720, randBytes(r, 512, true))   // aligned range, misaligned memory
			write(40000, randBytes(r, 100000, true))
			// Concurrent: per round, in a fresh page past EOF, aligned and
			// misaligned writes that extend the file side by side.
			rounds := 200
			if testing.Short() || raceEnabled {
				rounds = 50
			}
			for round := range rounds {
				base := alignUp(int64(len(model)), 4096) + 4096*r.Int64N(2)
				var ps []piece
				for _, cut := range cutPage(r, base, 4096+r.Int64N(4096)) {
					ps = append(ps, piece{off: cut[0], n: cut[1], data: randBytes(r, cut[1], r.IntN(4) == 0)})
				}
				end := int64(len(model))
				for _, p := range ps {
					end = max(end, p.off+p.n)
				}
				model = runPieces(t, f, r, model, ps, 1, base-100, end)[:end]
				if sz := size(); sz != end {
					t.Fatalf("round %d: size %d, want %d", round, sz, end)
				}
				lo := max(min(base-4096, alignDown(end, 4096)), 0)
				expectRange(t, f, model, lo, fmt.Sprintf("round %d", round))
			}
			flushAndExpect(t, f, w, model)
		})
	}
}

// TestDirect_MisalignedReads: reads with misaligned offsets, lengths and
// buffers, inside, across and past EOF (an unaligned one), match the
// model, and leave nothing in the page cache (U1).
func TestDirect_MisalignedReads(t *testing.T) {
	for _, c := range directConfigs() {
		t.Run(c.name, func(t *testing.T) {
			f := openTemp(t, c.opt)
			r := rand.New(rand.NewPCG(3, uint64(len(c.name))))
			const size = 3*131072 + 1234 // more than one bounce buffer
			model := randBytes(r, alignUp(size, 4096), false)
			if err := block.WriteAt(f, model, 0); err != nil {
				t.Fatal(err)
			}
			if err := f.Truncate(size); err != nil {
				t.Fatal(err)
			}
			model = append(model[:size:size], make([]byte, 8192)...)
			// The truncation zeroed the rest of its block in the page
			// cache: write it back and drop it, so that the check below
			// sees what the reads cached.
			if err := f.Flush(); err != nil {
				t.Fatal(err)
			}
			if err := unix.Fadvise(f.fd, 0, 0, unix.FADV_DONTNEED); err != nil {
				t.Fatal(err)
			}
			cached := residentPages(t, f.path)
			reads := 500
			if testing.Short() || raceEnabled {
				reads = 150
			}
			for i := range reads {
				off := r.Int64N(int64(len(model)) - 1)
				n := 1 + r.Int64N(min(int64(len(model))-off, 300000))
				if i%3 == 0 {
					n = 1 + r.Int64N(min(int64(len(model))-off, 5000))
				}
				var bufs [][]byte
				var all []byte
				for rest := n; rest > 0; {
					k := min(rest, 1+r.Int64N(70000))
					b := oddBuf(int(k), r.IntN(2) == 0)
					for j := range b {
						b[j] = 0xEE // must be overwritten, zeros past EOF included
					}
					bufs = append(bufs, b)
					rest -= k
				}
				if err := f.Readv(off, bufs); err != nil {
					t.Fatal(err)
				}
				for _, b := range bufs {
					all = append(all, b...)
				}
				if j := testkit.FirstDiff(all, model[off:off+n]); j >= 0 {
					t.Fatalf("read [%d,+%d) in %d buffers: byte %d is %#x, want %#x", off, n, len(bufs), off+int64(j), all[j], model[off+int64(j)])
				}
			}
			if m := f.Metrics(); m.Misaligned == 0 {
				t.Fatalf("no misaligned request: %v", m)
			}
			if cached != 0 {
				t.Logf("page cache not checked: %d pages cached before the reads", cached)
			} else if n := residentPages(t, f.path); n != 0 {
				t.Fatalf("%d pages of an O_DIRECT file in the page cache after misaligned reads", n)
			}
		})
	}
}

// TestDirect_NoPageCache: misaligned reads and writes, and zeroing of
// partial filesystem blocks, on a Direct file leave nothing in the page
// cache: they never go through it (U1, U2).
func TestDirect_NoPageCache(t *testing.T) {
	for _, c := range directConfigs() {
		t.Run(c.name, func(t *testing.T) {
			f := openTemp(t, c.opt)
			r := rand.New(rand.NewPCG(4, uint64(len(c.name))))
			const size = 64 << 10
			model := randBytes(r, size, false)
			if err := block.WriteAt(f, model, 0); err != nil {
				t.Fatal(err)
			}
			if n := residentPages(t, f.path); n != 0 {
				t.Skipf("%d pages cached after aligned O_DIRECT writes", n)
			}
			write := func(off int64, b []byte) {
				t.Helper()
				if err := block.WriteAt(f, b, off); err != nil {
					t.Fatal(err)
				}
				copy(model[off:], b)
			}
			zero := func(off, n int64, fl block.Flags) {
				t.Helper()
				if err := f.WriteZeroes(off, n, fl); err != nil {
					t.Fatal(err)
				}
				clear(model[off : off+n])
			}
			write(3, randBytes(r, 100, false))
			write(4096+512, randBytes(r, 1024, true))
			write(3*4096-7, randBytes(r, 4110, false))
			zero(5*4096+512, 1024, 0)
			zero(6*4096+512, 3*4096, block.MayUnmap)
			zero(10*4096+100, 5000, 0)
			for i := range 20 {
				off := r.Int64N(size - 5000)
				b := oddBuf(1+r.IntN(4999), i%2 == 0)
				if err := block.ReadAt(f, b, off); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(b, model[off:off+int64(len(b))]) {
					t.Fatalf("read [%d,+%d) differs", off, len(b))
				}
			}
			expectFile(t, f, model, "content")
			if n := residentPages(t, f.path); n != 0 {
				t.Fatalf("%d pages of an O_DIRECT file in the page cache after misaligned I/O", n)
			}
		})
	}
}

// TestFile_AllocateZeroAlign: WriteZeroes(Allocate) and ZeroThenWritev
// on a range aligned to 512 but not to the filesystem block are
// ErrNotSupported and write nothing (U2); whole blocks are zeroed.
func TestFile_AllocateZeroAlign(t *testing.T) {
	var sfs unix.Statfs_t
	if err := unix.Statfs(os.TempDir(), &sfs); err != nil || sfs.Bsize < 4096 {
		t.Skipf("filesystem block %d (%v): need 4 KiB", sfs.Bsize, err)
	}
	for _, c := range configs() {
		t.Run(c.name, func(t *testing.T) {
			f := openTemp(t, c.opt)
			caps := f.Caps()
			if caps.ZeroFlags&block.Allocate == 0 {
				t.Skip("no Allocate here")
			}
			const size = 64 << 10
			aa := fill(size, 0xAA)
			if err := block.WriteAt(f, aa, 0); err != nil {
				t.Fatal(err)
			}
			for _, rg := range [][2]int64{
				{512, 512}, {4096 + 512, 4096}, {8192, 512}, {8192, 4096 + 1024}, {2048, 2048},
				{size - 512, 1024}, {size + 512, 4096}, // across and past EOF
			} {
				if err := f.WriteZeroes(rg[0], rg[1], block.Allocate); !errors.Is(err, block.ErrNotSupported) {
					t.Fatalf("WriteZeroes(%d, %d, Allocate) = %v, want ErrNotSupported", rg[0], rg[1], err)
				}
				if err := f.ZeroThenWritev(rg[0], rg[1], block.Allocate, 0, [][]byte{fill(4096, 0x55)}); !errors.Is(err, block.ErrNotSupported) {
					t.Fatalf("ZeroThenWritev(%d, %d, Allocate) = %v, want ErrNotSupported", rg[0], rg[1], err)
				}
			}
			if sz, _ := f.Size(); sz != size {
				t.Fatalf("size %d after refused zeroing", sz)
			}
			if got := readAll(t, f, 0, size); !bytes.Equal(got, aa) {
				t.Fatal("a refused Allocate zeroing wrote")
			}
			if f.Caps().ZeroFlags&block.Allocate == 0 {
				t.Fatal("a misaligned request dropped Allocate from Caps")
			}
			// Whole blocks still work, inside and past EOF.
			if err := f.WriteZeroes(4096, 8192, block.Allocate); err != nil {
				t.Fatal(err)
			}
			if err := f.WriteZeroes(size, 4096, block.Allocate); err != nil {
				t.Fatal(err)
			}
			want := append(bytes.Clone(aa), make([]byte, 4096)...)
			clear(want[4096 : 3*4096])
			if got := readAll(t, f, 0, size+4096); !bytes.Equal(got, want) {
				t.Fatal("aligned Allocate zeroing")
			}
			if caps.ZeroAlign < 4096 || caps.ZeroAlign < caps.Align {
				t.Fatalf("Caps().ZeroAlign %d (Align %d, filesystem block %d)", caps.ZeroAlign, caps.Align, sfs.Bsize)
			}
		})
	}
}

// TestDirect_Truncate: Truncate to sizes inside a block on a Direct file,
// then misaligned and aligned writes around the old end.
func TestDirect_Truncate(t *testing.T) {
	for _, c := range directConfigs() {
		t.Run(c.name, func(t *testing.T) {
			f := openTemp(t, c.opt)
			r := rand.New(rand.NewPCG(5, 1))
			model := randBytes(r, 16384, false)
			if err := block.WriteAt(f, model, 0); err != nil {
				t.Fatal(err)
			}
			for _, sz := range []int64{10000, 12345, 4097, 20000} {
				if err := f.Truncate(sz); err != nil {
					t.Fatal(err)
				}
				if sz < int64(len(model)) {
					model = model[:sz]
				} else {
					model = append(model, make([]byte, sz-int64(len(model)))...)
				}
				b := randBytes(r, 300, true)
				off := sz - 100
				if err := block.WriteAt(f, b, off); err != nil {
					t.Fatal(err)
				}
				model = append(model, make([]byte, 200)...)
				copy(model[off:], b)
				if got, _ := f.Size(); got != int64(len(model)) {
					t.Fatalf("size %d, want %d", got, len(model))
				}
				expectFile(t, f, model, fmt.Sprintf("truncate %d", sz))
			}
		})
	}
}
