package qcow2

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/block/tracedev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/uring"
)

// Tests of the seed (cluster-space preallocation: skip COW for areas that
// read as zero, zero with one efficient Allocate request or not at all,
// early writes into clusters under allocation), modelled on QEMU iotests
// 046, 027, 154/179 and 268 (QEMU tests/qemu-iotests) and the ordering rules of docs/crash-consistency.md.

// seedBacking returns backing data with a per-cluster pattern that is
// never zero (so a lost COW shows as zeros).
func seedBacking(n, cs int) []byte {
	b := make([]byte, n)
	for i := range b {
		v := byte(i/cs*7) ^ byte(i>>9) ^ 0x5a
		if v == 0 {
			v = 1
		}
		b[i] = v
	}
	return b
}

// memImage creates an image on a memdev and opens it; Cleanup closes it
// and runs Check.
func memImage(t testing.TB, co CreateOptions, o Options, mo memdev.Options) (*Image, *memdev.Dev) {
	t.Helper()
	mem := memdev.New(mo)
	if err := CreateDevice(mem, co); err != nil {
		t.Fatal(err)
	}
	im, err := OpenDevice(mem, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := im.Close(); err != nil && err != block.ErrClosed {
			t.Errorf("close: %v", err)
		}
		if t.Failed() {
			return
		}
		im2, err := OpenDevice(mem, Options{ReadOnly: true, NoBacking: true, Passphrase: o.Passphrase})
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		defer im2.Close()
		mustClean(t, im2)
	})
	return im, mem
}

func mustClean(t testing.TB, im *Image) {
	t.Helper()
	r, err := im.Check(CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Clean() {
		t.Fatalf("check: %d corruptions, %d leaks: %v", r.Corruptions, r.Leaks, head(r.Messages, 10))
	}
}

func mustWrite(t testing.TB, im *Image, p []byte, off int64) {
	t.Helper()
	if _, err := im.WriteAt(p, off); err != nil {
		t.Fatalf("write %d+%d: %v", off, len(p), err)
	}
}

// uringOpener is the io_uring backend with O_DIRECT.
func uringOpener() Opener {
	return uring.Opener(uring.Options{Direct: true})
}

// seedConfigs are the engine variants of the seed switch.
// runBackedSeed runs fn in a subtest per seed configuration on a
// memImage of size bytes (64 KiB clusters) over a backing device as long
// as the image holding seedBacking data, with its model: a copy of that
// data.
func runBackedSeed(t *testing.T, size int, fn func(t *testing.T, im *Image, model []byte)) {
	for _, sc := range seedConfigs {
		t.Run(sc.name, func(t *testing.T) {
			bdata := seedBacking(size, 64<<10)
			o := sc.o
			o.Backing = memdev.FromBytes(bdata, memdev.Options{})
			im, _ := memImage(t, CreateOptions{Size: int64(size)}, o, memdev.Options{})
			fn(t, im, append([]byte(nil), bdata...))
		})
	}
}

var seedConfigs = []struct {
	name string
	o    Options
}{
	{"prealloc-on", Options{PreallocSize: -1}},
	{"prealloc-on-ahead", Options{}},
	{"prealloc-off", Options{Prealloc: "off"}},
}

// TestSeed_Concurrent046 is iotest 046: concurrent allocating writes
// into the same cluster and its neighbours over a backing file with a
// per-cluster pattern. The byte range is cut into random non-overlapping
// pieces (many inside one cluster, some spilling into the next, gaps
// left unwritten), and the pieces are written all at once by many
// goroutines. Neighbours are in every state: unallocated (backing),
// allocated beforehand, or zero after a discard (QEMU's "preallocated
// via discard"). Every byte is then compared with the model: written
// bytes read back, unwritten ones read the backing pattern (or zeros).
func TestSeed_Concurrent046(t *testing.T) {
	t.Parallel()
	const cs = 64 << 10
	const size = 4 << 20
	rounds := 3
	if testing.Short() {
		rounds = 1
	}
	rng := testkit.Rand(t)
	for _, sc := range seedConfigs {
		t.Run(sc.name, func(t *testing.T) {
			for round := 0; round < rounds; round++ {
				seed := rng.Uint64()
				t.Run(fmt.Sprint("round", round), func(t *testing.T) {
					run046(t, seed, sc.o, cs, size)
				})
			}
		})
	}
}

func run046(t *testing.T, seed uint64, o Options, cs, size int64) {
	r := rand.New(rand.NewPCG(seed, 46))
	bdata := seedBacking(int(size*3/4)+777, int(cs)) // shorter than the image
	o.Backing = memdev.FromBytes(bdata, memdev.Options{})
	im, mem := memImage(t, CreateOptions{Size: size, ClusterSize: int(cs)}, o, memdev.Options{})
	model := make([]byte, size)
	copy(model, bdata)
	// Neighbour states: some clusters allocated, some discarded (zero).
	for c := int64(0); c < size/cs; c++ {
		switch r.IntN(6) {
		case 0:
			p := pattern(int(cs), byte(c))
			mustWrite(t, im, p, c*cs)
			copy(model[c*cs:], p)
		case 1:
			mustWrite(t, im, pattern(int(cs), byte(c)), c*cs)
			if err := im.Discard(c*cs, cs); err != nil {
				t.Fatal(err)
			}
			clear(model[c*cs : c*cs+cs])
		}
	}
	if r.IntN(2) == 0 {
		if err := im.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	// Random pieces.
	type piece struct{ off, n int64 }
	var pieces []piece
	for pos := int64(0); pos < size; {
		var n int64
		switch k := r.IntN(10); {
		case k < 6:
			n = int64(1+r.IntN(16)) * 512
			if r.IntN(3) == 0 {
				n += int64(r.IntN(511)) // unaligned end
			}
		case k < 9:
			n = 1 + r.Int64N(cs)
		default:
			n = cs + r.Int64N(cs) // spills into the next cluster
		}
		n = min(n, size-pos)
		if r.IntN(4) != 0 {
			pieces = append(pieces, piece{pos, n})
		}
		pos += n
	}
	r.Shuffle(len(pieces), func(i, j int) { pieces[i], pieces[j] = pieces[j], pieces[i] })
	const G = 32
	var start sync.WaitGroup
	start.Add(1)
	var wg sync.WaitGroup
	errs := make(chan error, G)
	for g := 0; g < G; g++ {
		wg.Go(func() {
			start.Wait()
			for i := g; i < len(pieces); i += G {
				p := pieces[i]
				if _, err := im.WriteAt(pattern(int(p.n), byte(i)), p.off); err != nil {
					errs <- fmt.Errorf("piece %d (%d+%d): %w", i, p.off, p.n, err)
					return
				}
			}
		})
	}
	for i, p := range pieces {
		copy(model[p.off:], pattern(int(p.n), byte(i)))
	}
	start.Done()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	testkit.MustEqual(t, testkit.ReadAll(t, im), model, "image vs model")
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	// Reopen from the device: the data survives a close and reopen.
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	im2, err := OpenDevice(mem, Options{ReadOnly: true, Backing: o.Backing})
	if err != nil {
		t.Fatal(err)
	}
	defer im2.Close()
	testkit.MustEqual(t, testkit.ReadAll(t, im2), model, "reopened image vs model")
}

// TestSeed_PartialWriteZeros027 is iotest 027: a sub-cluster allocating
// write leaves zeros around the written data (no backing file), in fresh
// space, in a cluster reused after a discard, and across a cluster
// boundary, whatever the prealloc mode.
func TestSeed_PartialWriteZeros027(t *testing.T) {
	for _, sc := range seedConfigs {
		for _, align := range []int64{1, 4096} {
			t.Run(fmt.Sprintf("%s/align%d", sc.name, align), func(t *testing.T) {
				const cs = 64 << 10
				const size = 2 << 20
				im, _ := memImage(t, CreateOptions{Size: size}, sc.o, memdev.Options{Align: align})
				model := make([]byte, size)
				w := func(off int64, n int, seed byte) {
					p := pattern(n, seed)
					mustWrite(t, im, p, off)
					copy(model[off:], p)
				}
				// Reused clusters first: write, discard, flush.
				w(8*cs, 2*cs, 1)
				if err := im.Discard(8*cs, 2*cs); err != nil {
					t.Fatal(err)
				}
				clear(model[8*cs : 10*cs])
				if err := im.Flush(); err != nil {
					t.Fatal(err)
				}
				w(512, 512, 2)         // fresh, head and tail
				w(2*cs+1000, 3000, 3)  // unaligned
				w(4*cs-4096, 8192, 4)  // straddles clusters 3 and 4
				w(8*cs+cs/2, 512, 5)   // reused (freed) cluster
				w(9*cs+cs-512, 512, 6) // reused, tail of cluster
				w(12*cs, cs, 7)        // whole cluster, no COW at all
				w(14*cs+cs-1, 2, 8)    // 1 byte in each of two clusters
				testkit.MustEqual(t, testkit.ReadAll(t, im), model, "image vs model")
			})
		}
	}
}

// TestSeed_WriteZeroes154 is iotests 154/179: WriteZeroes with and
// without MayUnmap over a backing file, on partial and whole clusters,
// over unallocated and allocated clusters. Whole clusters read zero; the
// rest of a partial cluster keeps the backing data (or the old data).
func TestSeed_WriteZeroes154(t *testing.T) {
	runBackedSeed(t, 4<<20, func(t *testing.T, im *Image, model []byte) {
		const cs = 64 << 10
		// Clusters 16..23 hold image data.
		for c := int64(16); c < 24; c++ {
			p := pattern(cs, byte(c))
			mustWrite(t, im, p, c*cs)
			copy(model[c*cs:], p)
		}
		cases := []struct {
			off, n int64
			flags  block.Flags
		}{
			{cs + 4096, 4096, 0},                  // inside an unallocated cluster
			{2*cs + 512, 4096, block.MayUnmap},    // same, unmap allowed
			{4*cs - 4096, 8192, 0},                // straddles two unallocated clusters
			{6*cs + 100, 3 * cs, 0},               // partial + 2 whole + partial
			{10*cs + 100, 3 * cs, block.MayUnmap}, // same with unmap
			{16 * cs, cs, 0},                      // whole allocated cluster, kept
			{17 * cs, cs, block.MayUnmap},         // whole allocated cluster, freed
			{18*cs + 4096, 4096, block.MayUnmap},  // inside an allocated cluster
			{20*cs - 512, 2*cs + 1024, 0},         // allocated partial + whole + partial
			{30 * cs, 2 * cs, block.Allocate},     // aligned NO_FALLBACK: zero clusters
		}
		for _, c := range cases {
			if err := im.WriteZeroes(c.off, c.n, c.flags); err != nil {
				t.Fatalf("WriteZeroes(%d, %d, %v): %v", c.off, c.n, c.flags, err)
			}
			clear(model[c.off : c.off+c.n])
		}
		// NO_FALLBACK on a partial cluster must refuse, not write
		// zero buffers (block B3).
		if err := im.WriteZeroes(40*cs+512, 4096, block.Allocate); !errors.Is(err, block.ErrNotSupported) {
			t.Errorf("misaligned Allocate zeroing: %v, want ErrNotSupported", err)
		}
		testkit.MustEqual(t, testkit.ReadAll(t, im), model, "image vs model")
		// Whole zeroed clusters are zero clusters (no data read).
		for _, c := range []int64{7, 8, 11, 12, 16, 17, 20, 30, 31} {
			if !im.IsZeroFast(c*cs, cs) {
				t.Errorf("cluster %d not a known-zero cluster after WriteZeroes", c)
			}
		}
		// A partial cluster written later keeps zeros, not backing.
		p := pattern(512, 9)
		mustWrite(t, im, p, 7*cs+1024)
		copy(model[7*cs+1024:], p)
		testkit.MustEqual(t, testkit.ReadAll(t, im), model, "after rewrite of a zero cluster")
	})
}

// TestSeed_AlignedDevice268 is iotest 268: cluster size 2 KiB (and 512)
// on a device with 4 KiB request alignment. A 512-byte write into a new
// cluster must succeed: where zeroing is needed (a reused cluster) the
// Allocate request is misaligned, the device refuses it with
// ErrNotSupported, and the engine falls back to zero buffers (block B3).
func TestSeed_AlignedDevice268(t *testing.T) {
	for _, cs := range []int64{2048, 512} {
		t.Run(fmt.Sprint("c", cs), func(t *testing.T) {
			const size = 1 << 20
			im, _ := memImage(t, CreateOptions{Size: size, ClusterSize: int(cs)}, Options{PreallocSize: -1}, memdev.Options{Align: 4096})
			model := make([]byte, size)
			w := func(off int64, n int, seed byte) {
				p := pattern(n, seed)
				mustWrite(t, im, p, off)
				copy(model[off:], p)
			}
			w(0, 512, 1) // iotest 268 literally: write 0 512
			testkit.MustEqual(t, testkit.ReadAll(t, im), model, "fresh")
			// Reused clusters: write, discard, flush, write 512 bytes.
			w(64*cs, int(8*cs), 2)
			if err := im.Discard(64*cs, 8*cs); err != nil {
				t.Fatal(err)
			}
			clear(model[64*cs : 72*cs])
			if err := im.Flush(); err != nil {
				t.Fatal(err)
			}
			m0 := im.Metrics()
			for c := int64(64); c < 72; c++ {
				w(c*cs+cs/4, 128, byte(c))
			}
			d := im.Metrics().Sub(m0)
			if d.ZeroingRefused == 0 && d.ZeroPadBytes == 0 {
				t.Errorf("misaligned zeroing was neither refused nor replaced by zero buffers: %v", d)
			}
			if d.Fallocates != 0 {
				t.Errorf("%d Allocate zeroings succeeded on a %d-byte span of a 4 KiB-aligned device", d.Fallocates, cs)
			}
			testkit.MustEqual(t, testkit.ReadAll(t, im), model, "reused")
		})
	}
}

// TestSeed_NoSkipWithBackingData: backing data under the COW areas must
// be copied, never skipped (QEMU 46cd1e8a47 skips COW only where it reads
// as zero): COWBytes > 0, no Allocate
// zeroing, and the data is right.
func TestSeed_NoSkipWithBackingData(t *testing.T) {
	runBackedSeed(t, 2<<20, func(t *testing.T, im *Image, model []byte) {
		const cs = 64 << 10
		mustWrite(t, im, pattern(cs, 1), 0) // the L2 table exists
		copy(model, pattern(cs, 1))
		m0 := im.Metrics()
		p := pattern(4096, 2)
		mustWrite(t, im, p, 5*cs+8192)
		copy(model[5*cs+8192:], p)
		d := im.Metrics().Sub(m0)
		if d.COWBytes != cs-4096 {
			t.Errorf("COWBytes %d, want %d", d.COWBytes, cs-4096)
		}
		if d.Fallocates != 0 || d.FreshSkips != 0 || d.ZeroPadBytes != 0 {
			t.Errorf("COW over backing data was skipped or zero-filled: %v", d)
		}
		testkit.MustEqual(t, testkit.ReadAll(t, im), model, "image vs model")
	})
}

// seqWrite is qemu-img bench's write stream: G goroutines take request
// i from an atomic counter and write n bytes of pattern at base+i*n.
func seqWrite(im *Image, G int, base int64, count, n int64) error {
	var next atomic.Int64
	return testkit.Parallel(G, func(int) error {
		buf := block.AlignedBuf(int(n), 4096)
		for {
			i := next.Add(1) - 1
			if i >= count {
				return nil
			}
			fillPiece(buf, i)
			if _, err := im.WriteAt(buf, base+i*n); err != nil {
				return fmt.Errorf("request %d: %w", i, err)
			}
		}
	})
}

// fillPiece fills buf with a pattern unique to request i (never all
// zero).
func fillPiece(buf []byte, i int64) {
	for k := range buf {
		buf[k] = byte(i) ^ byte(i>>8) ^ byte(k>>3) | 0x10
	}
}

// verifySeq checks requests [first, first+count) of a seqWrite at base.
func verifySeq(t testing.TB, im *Image, base, first, count, n int64) {
	t.Helper()
	got := make([]byte, count*n)
	if err := block.ReadAt(im, got, base+first*n); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, n)
	for i := int64(0); i < count; i++ {
		fillPiece(want, first+i)
		testkit.MustEqual(t, got[i*n:(i+1)*n], want, fmt.Sprintf("request %d", first+i))
	}
}

// TestSeed_Stress: 64 goroutines write 4 KiB pieces of the same fresh
// clusters (piece i at i*4096, handed out by an atomic counter, as
// qemu-img bench), prealloc on and off, with and without preallocate-
// ahead, on a memdev and on a real file through io_uring with O_DIRECT.
// Every image passes Check (and qemu-img check for files) and reads back
// as written; with prealloc=on in fresh space on the real file, writers
// go early (Q10).
func TestSeed_Stress(t *testing.T) {
	t.Parallel()
	const G = 64
	const cs = 64 << 10
	count := int64(2048) // 8 MiB: 128 clusters
	if testing.Short() {
		count = 512
	}
	for _, devName := range []string{"mem", "uring"} {
		for _, sc := range seedConfigs {
			t.Run(devName+"/"+sc.name, func(t *testing.T) {
				var im *Image
				co := CreateOptions{Size: 256 << 20, ClusterSize: cs}
				if devName == "mem" {
					im, _ = memImage(t, co, sc.o, memdev.Options{})
				} else {
					o := sc.o
					o.Opener = uringOpener()
					im, _ = testImage(t, co, o)
				}
				// Twice: fresh clusters, then (after a discard of the
				// first half and a flush) reused ones.
				if err := seqWrite(im, G, 0, count, 4096); err != nil {
					t.Fatal(err)
				}
				verifySeq(t, im, 0, 0, count, 4096)
				m := im.Metrics()
				t.Logf("fresh: %v", m)
				if sc.o.Prealloc != "off" {
					if m.ZeroPadBytes != 0 {
						t.Errorf("prealloc=on wrote %d zero-pad bytes into fresh clusters", m.ZeroPadBytes)
					}
					// Early writes need fresh clusters (inside space
					// reserved ahead) and a device slow enough for
					// others to arrive during an allocation (not a
					// memdev).
					if devName == "uring" && sc.o.PreallocSize == 0 && m.EarlyWrites == 0 {
						t.Errorf("no early writes into clusters under allocation (Q10): %v", m)
					}
				} else if m.ZeroPadBytes == 0 {
					t.Errorf("prealloc=off wrote no zero padding")
				}
				if err := im.Flush(); err != nil {
					t.Fatal(err)
				}
				half := count * 4096 / 2
				if err := im.Discard(0, half); err != nil {
					t.Fatal(err)
				}
				if err := im.Flush(); err != nil {
					t.Fatal(err)
				}
				if err := seqWrite(im, G, 0, count/2, 4096); err != nil {
					t.Fatal(err)
				}
				verifySeq(t, im, 0, 0, count/2, 4096)
				verifySeq(t, im, 0, count/2, count/2, 4096) // kept from the first pass
				if err := im.Flush(); err != nil {
					t.Fatal(err)
				}
				mustClean(t, im)
			})
		}
	}
}

// countOps counts trace entries.
func countOps(tr *tracedev.Dev, pred func(tracedev.Entry) bool) int {
	n := 0
	for _, e := range tr.Entries() {
		if pred(e) {
			n++
		}
	}
	return n
}

// TestSeed_TraceZeroing pins the zeroing economy of the seed with the op
// trace of 64 concurrent sequential 4 KiB writers:
//
//   - prealloc=on, no preallocate-ahead: no zero-buffer bytes at all
//     (no write classified "zeros", ZeroPadBytes == 0); at most one
//     one-cluster zeroing op per new cluster past EOF (since 84b8884 the
//     engine zeroes them to extend the file, as QEMU); exactly one
//     Allocate zeroing per reused (discarded, then rewritten) cluster;
//   - preallocate-ahead: far fewer zeroing ops than new clusters;
//   - prealloc=off: zero-padded data writes and no zeroing op at all.
func TestSeed_TraceZeroing(t *testing.T) {
	t.Parallel()
	const cs = 64 << 10
	const G = 64
	const clusters = 128 // 8 MiB: past the first 4 MiB reservation ahead
	count := int64(clusters * cs / 4096)
	for _, sc := range seedConfigs {
		t.Run(sc.name, func(t *testing.T) {
			mem := memdev.New(memdev.Options{})
			if err := CreateDevice(mem, CreateOptions{Size: 64 << 20}); err != nil {
				t.Fatal(err)
			}
			tr := tracedev.New(mem, tracedev.Options{OmitReads: true, ClusterSize: cs})
			im, err := OpenDevice(tr, sc.o)
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			// The L2 table exists before the traced part.
			base := int64(cs)
			mustWrite(t, im, pattern(cs, 1), 0)
			if err := im.Flush(); err != nil {
				t.Fatal(err)
			}
			zeroOps := func(e tracedev.Entry) bool { return e.Kind == tracedev.Zero }
			zeroWrites := func(e tracedev.Entry) bool { return e.Kind == tracedev.Write && e.Zeros }

			// Fresh clusters.
			tr.Reset()
			m0 := im.Metrics()
			if err := seqWrite(im, G, base, count, 4096); err != nil {
				t.Fatal(err)
			}
			d := im.Metrics().Sub(m0)
			nz, nzw := countOps(tr, zeroOps), countOps(tr, zeroWrites)
			t.Logf("fresh: %d zeroing ops, %d zero writes; %v", nz, nzw, d)
			switch {
			case sc.o.Prealloc == "off":
				if nz != 0 || d.ZeroPadBytes == 0 {
					t.Errorf("prealloc=off: %d zeroing ops, %d zero-pad bytes; want 0 and > 0", nz, d.ZeroPadBytes)
				}
			case sc.o.PreallocSize < 0:
				// Past EOF without reserved space: at most one zeroing
				// per new cluster (the engine zeroes such clusters to
				// extend the file, as QEMU; 0 is also fine).
				per := map[int64]int{}
				for _, e := range tr.Entries() {
					if e.Kind == tracedev.Zero {
						if e.Len != cs || e.Off%cs != 0 {
							t.Errorf("zeroing %s is not one cluster", tr.Format(e))
						}
						per[e.Off/cs]++
					}
				}
				for c, k := range per {
					if k > 1 {
						t.Errorf("cluster %d zeroed %d times", c, k)
					}
				}
				if nz > clusters || nzw != 0 || d.ZeroPadBytes != 0 {
					t.Errorf("prealloc=on, fresh: %d zeroing ops for %d clusters, %d zero writes, %d zero-pad bytes", nz, clusters, nzw, d.ZeroPadBytes)
				}
			default:
				if nz > clusters/8 || nzw != 0 || d.ZeroPadBytes != 0 {
					t.Errorf("preallocate-ahead: %d zeroing ops for %d new clusters, %d zero writes, %d zero-pad bytes", nz, clusters, nzw, d.ZeroPadBytes)
				}
			}
			verifySeq(t, im, base, 0, count, 4096)

			// Reused clusters: discard all, flush, rewrite.
			if err := im.Discard(base, count*4096); err != nil {
				t.Fatal(err)
			}
			if err := im.Flush(); err != nil {
				t.Fatal(err)
			}
			tr.Reset()
			m0 = im.Metrics()
			if err := seqWrite(im, G, base, count, 4096); err != nil {
				t.Fatal(err)
			}
			d = im.Metrics().Sub(m0)
			perCluster := map[int64]int{}
			for _, e := range tr.Entries() {
				if e.Kind == tracedev.Zero {
					for c := e.Off / cs; c < (e.Off+e.Len+cs-1)/cs; c++ {
						perCluster[c]++
					}
				}
			}
			nz, nzw = countOps(tr, zeroOps), countOps(tr, zeroWrites)
			t.Logf("reused: %d zeroing ops over %d clusters, %d zero writes; %v", nz, len(perCluster), nzw, d)
			if sc.o.Prealloc == "off" {
				if nz != 0 || d.ZeroPadBytes == 0 {
					t.Errorf("prealloc=off: %d zeroing ops, %d zero-pad bytes; want 0 and > 0", nz, d.ZeroPadBytes)
				}
			} else {
				if nzw != 0 || d.ZeroPadBytes != 0 {
					t.Errorf("prealloc=on, reused: %d zero writes, %d zero-pad bytes; want none", nzw, d.ZeroPadBytes)
				}
				if nz != clusters || len(perCluster) != clusters {
					t.Errorf("prealloc=on, reused: %d zeroing ops over %d clusters; want exactly one per cluster (%d)", nz, len(perCluster), clusters)
				}
				for c, k := range perCluster {
					if k != 1 {
						t.Errorf("cluster %d zeroed %d times", c, k)
					}
				}
			}
			verifySeq(t, im, base, 0, count, 4096)
			if err := im.Flush(); err != nil {
				t.Fatal(err)
			}
			mustClean(t, im)
		})
	}
}

// TestSeed_Acceptance is the seed's acceptance run: 64k sequential 4 KiB
// writes at depth 64 on a fresh image (a real file, io_uring, O_DIRECT):
// the engine reports zero-padding bytes == 0 with prealloc=on and > 0
// with prealloc=off, and both images pass qemu-img check and read back.
// Under -race or -short the run is 8k requests unless
// QRING_SEED_ACCEPT_FULL=1.
func TestSeed_Acceptance(t *testing.T) {
	t.Parallel()
	count := int64(64 << 10)
	if (raceEnabled || testing.Short()) && os.Getenv("QRING_SEED_ACCEPT_FULL") == "" {
		count = 8 << 10
	}
	for _, prealloc := range []string{"on", "off"} {
		t.Run("prealloc-"+prealloc, func(t *testing.T) {
			p := filepath.Join(testkit.Dir(t), "seed.qcow2")
			if err := Create(p, CreateOptions{Size: 4 << 30, ClusterSize: 64 << 10}); err != nil {
				t.Fatal(err)
			}
			im, err := Open(p, Options{Prealloc: prealloc, Opener: uringOpener()})
			if err != nil {
				t.Fatal(err)
			}
			if err := seqWrite(im, 64, 0, count, 4096); err != nil {
				t.Fatal(err)
			}
			if err := im.Flush(); err != nil {
				t.Fatal(err)
			}
			m := im.Metrics()
			t.Logf("prealloc=%s, %d requests: %v", prealloc, count, m)
			if prealloc == "on" && m.ZeroPadBytes != 0 {
				t.Errorf("prealloc=on: %d zero-padding bytes, want 0", m.ZeroPadBytes)
			}
			if prealloc == "off" && m.ZeroPadBytes == 0 {
				t.Errorf("prealloc=off: no zero-padding bytes")
			}
			verifySeq(t, im, 0, 0, count, 4096)
			closeCheck(t, im, p)
		})
	}
}
