package vmdk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/vmdk/format"
)

func setCaps(t *testing.T, loaded, read int64) {
	oldL, oldR := maxLoadedGTEs, maxReadGTEs
	maxLoadedGTEs, maxReadGTEs = loaded, read
	t.Cleanup(func() { maxLoadedGTEs, maxReadGTEs = oldL, oldR })
}

func memZG(t *testing.T, size int64, zg bool) (*memdev.Dev, *Disk) {
	m := memdev.New(memdev.Options{})
	if _, err := Create(m, CreateOptions{NewOptions: format.NewOptions{Size: size, ZeroedGrain: zg}, Name: "m.vmdk"}); err != nil {
		t.Fatal(err)
	}
	d, err := Open(m, Options{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	return m, d
}

const tspan = 512 * 64 << 10 // bytes one table maps

// A WriteZeroes refused with ErrTooManyTables (it needs two tables at
// once, the bound holds one) must leave the CID alone (KD11: the CID
// changes only once the write is not refused).
func TestWrite_TooManyTablesZerosKeepCID(t *testing.T) {
	setCaps(t, 512, 512)
	_, d := memZG(t, 2*tspan, true)
	if err := d.Readv(0, [][]byte{make([]byte, 512)}); err != nil { // loads table 0
		t.Fatal(err)
	}
	old := d.CID()
	err := d.WriteZeroes(tspan-64<<10, 128<<10, 0)
	if !errors.Is(err, ErrTooManyTables) {
		t.Fatalf("zeros across tables 0 and 1: %v", err)
	}
	if d.CID() != old {
		t.Errorf("refused WriteZeroes changed the CID %x -> %x", old, d.CID())
	}
}

// A Writev refused with ErrTooManyTables (which is ErrNotSupported:
// "nothing was done" to callers such as filter.Mirror) after part of it
// was written.
func TestWrite_TooManyTablesWritesNothing(t *testing.T) {
	setCaps(t, 512, 512)
	_, d := memZG(t, 2*tspan, false)
	if err := d.Readv(0, [][]byte{make([]byte, 512)}); err != nil { // loads table 0
		t.Fatal(err)
	}
	off := int64(tspan - 64<<10)
	err := d.Writev(off, [][]byte{fill(128<<10, 7)})
	if !errors.Is(err, block.ErrNotSupported) {
		t.Fatalf("write across tables: %v", err)
	}
	got := make([]byte, 64<<10)
	if err := d.Readv(off, [][]byte{got}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, make([]byte, len(got))) {
		t.Errorf("ErrNotSupported write changed the first grain")
	}
}

// Readers, writers, zeroers and Flush at once over tables not loaded,
// with small caps: every writer reads back what it wrote; reopened, the
// image reads the same.
func TestWrite_LazyTablesConcurrent(t *testing.T) {
	for _, c := range []struct {
		zg  bool
		cap int64
	}{{false, 16 * 512}, {true, 16 * 512}, {false, 8 * 512}, {true, 8 * 512}} {
		zg := c.zg
		// 8 tables of 16: writes load tables in place of others and
		// flush when all have entries to flush (6 writers pin at most
		// 6 at once).
		setCaps(t, c.cap, 3*512)
		m, d := memZG(t, 16*tspan, zg)
		const gb = 64 << 10
		ngrains := int64(16 * 512)
		const writers = 6
		var mu sync.Mutex
		model := map[int64]byte{} // grain -> pattern seed (0 = zeros)
		var wg sync.WaitGroup
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(w), 9))
				for i := range 300 {
					gi := rng.Int64N(ngrains/writers)*writers + int64(w)
					seed := byte(1 + rng.IntN(200))
					if rng.IntN(4) == 0 {
						if err := d.WriteZeroes(gi*gb, gb, 0); err != nil {
							t.Error(err)
							return
						}
						seed = 0
					} else if err := d.Writev(gi*gb, [][]byte{fill(gb, seed)}); err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					model[gi] = seed
					mu.Unlock()
					got := make([]byte, gb)
					if err := d.Readv(gi*gb, [][]byte{got}); err != nil {
						t.Error(err)
						return
					}
					want := make([]byte, gb)
					if seed != 0 {
						want = fill(gb, seed)
					}
					if !bytes.Equal(got, want) {
						t.Errorf("zg=%v writer %d: grain %d read back wrong", zg, w, gi)
						return
					}
					if i%37 == 0 {
						if err := d.Flush(); err != nil {
							t.Error(err)
							return
						}
					}
				}
			}()
		}
		for r := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(r), 77))
				b := make([]byte, gb)
				for range 2000 {
					if err := d.Readv(rng.Int64N(ngrains)*gb, [][]byte{b}); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if n := d.extents[0].sw.tables.loaded.n.Load(); n > c.cap {
			t.Errorf("zg=%v: %d entries loaded, the bound is %d", zg, n, c.cap)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		d2, err := Open(memdev.FromBytes(m.Bytes(), memdev.Options{}), Options{})
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, gb)
		for gi, seed := range model {
			if err := d2.Readv(gi*gb, [][]byte{got}); err != nil {
				t.Fatal(err)
			}
			want := make([]byte, gb)
			if seed != 0 {
				want = fill(gb, seed)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("zg=%v reopened: grain %d wrong", zg, gi)
			}
		}
	}
}

// TestWrite_OverlappingGrainsRefusedEarly: a file whose tables (4 Mi
// entries) all map one grain is refused without holding a span per
// entry (16 bytes each: with no bound on the entries since tables are
// loaded lazily, 20 times the file's size).
// A writable Open of a file whose tables all map one grain allocates
// 16 bytes per entry before the overlap check refuses it (unbounded
// now that maxWritableGTEs is gone).
func TestWrite_OverlappingGrainsRefusedEarly(t *testing.T) {
	m := memdev.New(memdev.Options{})
	if _, err := Create(m, CreateOptions{NewOptions: format.NewOptions{Size: 1 << 20}}); err != nil {
		t.Fatal(err)
	}
	const tables = 8192
	b := m.Bytes()
	gdOff, gtOff := 1<<20, 1<<20+64<<10
	grain := gtOff + tables*2048
	b = append(b, make([]byte, grain+512-len(b))...)
	le := binary.LittleEndian
	le.PutUint32(b[8:], le.Uint32(b[8:])&^format.FlagRGD)
	le.PutUint64(b[12:], tables*512) // capacity, sectors
	le.PutUint64(b[20:], 1)          // granularity
	le.PutUint64(b[56:], uint64(gdOff/512))
	for i := range tables {
		le.PutUint32(b[gdOff+4*i:], uint32(gtOff/512+4*i))
	}
	for i := range tables * 512 {
		le.PutUint32(b[gtOff+4*i:], uint32(grain/512))
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := Open(memdev.FromBytes(b, memdev.Options{}), Options{Writable: true})
	runtime.ReadMemStats(&after)
	if !errors.Is(err, format.ErrCorrupt) || !errors.Is(err, ErrNotWritable) {
		t.Errorf("writable open: %v", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 64<<20 {
		t.Errorf("the refused open of a %d MiB file allocated %d MiB", len(b)>>20, n>>20)
	}
}
