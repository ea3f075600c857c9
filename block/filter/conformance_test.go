package filter_test

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/blocktest"
	"github.com/qring/qring/block/filter"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// allocTop is a memdev top for copy-on-read with an allocation map at
// 4 KiB granularity (a written block counts as allocated as a whole; with
// copy-on-read's source reading zeros that is indistinguishable).
type allocTop struct {
	*memdev.Dev
	mu    sync.Mutex
	alloc map[int64]bool
}

const allocBlock = 4096

func (a *allocTop) mark(off, n int64) {
	a.mu.Lock()
	for b := off / allocBlock; b*allocBlock < off+n; b++ {
		a.alloc[b] = true
	}
	a.mu.Unlock()
}

func (a *allocTop) Writev(off int64, b [][]byte) error {
	err := a.Dev.Writev(off, b)
	if err == nil {
		a.mark(off, block.VecLen(b))
	}
	return err
}

func (a *allocTop) WriteZeroes(off, n int64, f block.Flags) error {
	err := a.Dev.WriteZeroes(off, n, f)
	if err == nil {
		a.mark(off, n)
	}
	return err
}

func (a *allocTop) Allocated(off, n int64) (bool, int64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	b := off / allocBlock
	v := a.alloc[b]
	end := (b + 1) * allocBlock
	for end < off+n && a.alloc[end/allocBlock] == v {
		end += allocBlock
	}
	return v, min(end, off+n) - off, nil
}

func (a *allocTop) Unwrap() block.Device { return a.Dev }

func clone(d *memdev.Dev) *memdev.Dev { return d.CrashClone(rand.New(rand.NewPCG(1, 2)), 0) }

// TestConformance runs the block.Device conformance kit on every filter,
// over memdevs (the first, or primary, child carries the Stall).
func TestConformance(t *testing.T) {
	const fixed = 8 << 20
	type built struct {
		d     block.Device
		crash func() block.Device
	}
	layers := []struct {
		name  string
		build func(t *testing.T, mem func() *memdev.Dev) built
		cfg   blocktest.Config
	}{
		{"raw", func(t *testing.T, mem func() *memdev.Dev) built {
			r, err := filter.NewRaw(mem(), filter.RawOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return built{d: r}
		}, blocktest.Config{}},
		{"raw-offset", func(t *testing.T, mem func() *memdev.Dev) built {
			m := mem()
			r, err := filter.NewRaw(m, filter.RawOptions{Offset: 4096})
			if err != nil {
				t.Fatal(err)
			}
			return built{d: r, crash: func() block.Device {
				c, _ := filter.NewRaw(clone(m), filter.RawOptions{Offset: 4096})
				return c
			}}
		}, blocktest.Config{}},
		{"raw-window", func(t *testing.T, mem func() *memdev.Dev) built {
			m := mem()
			m.Truncate(fixed + 8192)
			r, err := filter.NewRaw(m, filter.RawOptions{Offset: 4096, Size: fixed})
			if err != nil {
				t.Fatal(err)
			}
			return built{d: r, crash: func() block.Device {
				c, _ := filter.NewRaw(clone(m), filter.RawOptions{Offset: 4096, Size: fixed})
				return c
			}}
		}, blocktest.Config{FixedSize: true, Truncate: blocktest.TruncateNone}},
		{"throttle", func(t *testing.T, mem func() *memdev.Dev) built {
			return built{d: filter.NewThrottle(mem(), filter.ThrottleLimits{IOPSTotal: 1e7, BPSWrite: 1e11}, nil)}
		}, blocktest.Config{}},
		{"copy-on-read", func(t *testing.T, mem func() *memdev.Dev) built {
			top := &allocTop{Dev: mem(), alloc: map[int64]bool{}}
			return built{d: filter.NewCopyOnRead(top, nil), crash: func() block.Device { return clone(top.Dev) }}
		}, blocktest.Config{}},
		{"copy-on-read-source", func(t *testing.T, mem func() *memdev.Dev) built {
			top := &allocTop{Dev: mem(), alloc: map[int64]bool{}}
			src := memdev.New(memdev.Options{})
			src.Truncate(fixed)
			return built{d: filter.NewCopyOnRead(top, src), crash: func() block.Device { return clone(top.Dev) }}
		}, blocktest.Config{}},
		{"mirror", func(t *testing.T, mem func() *memdev.Dev) built {
			src := mem()
			src.Truncate(fixed)
			m, err := filter.NewMirror(src, memdev.New(memdev.Options{}), filter.MirrorOptions{Granularity: 64 << 10})
			if err != nil {
				t.Fatal(err)
			}
			return built{d: m, crash: func() block.Device { return clone(src) }}
		}, blocktest.Config{FixedSize: true, Truncate: blocktest.TruncateNone}},
		{"blkverify", func(t *testing.T, mem func() *memdev.Dev) built {
			test, ref := mem(), memdev.New(memdev.Options{})
			return built{d: filter.NewBlkverify(test, ref), crash: func() block.Device {
				return filter.NewBlkverify(clone(test), clone(ref))
			}}
		}, blocktest.Config{}},
		{"quorum", func(t *testing.T, mem func() *memdev.Dev) built {
			kids := []*memdev.Dev{mem(), memdev.New(memdev.Options{}), memdev.New(memdev.Options{})}
			q, err := filter.NewQuorum([]block.Device{kids[0], kids[1], kids[2]}, filter.QuorumOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return built{d: q, crash: func() block.Device {
				c, _ := filter.NewQuorum([]block.Device{clone(kids[0]), clone(kids[1]), clone(kids[2])}, filter.QuorumOptions{})
				return c
			}}
		}, blocktest.Config{}},
	}
	for _, ly := range layers {
		t.Run(ly.name, func(t *testing.T) {
			st := blocktest.NewStall()
			crashes := map[block.Device]func() block.Device{}
			cfg := ly.cfg
			cfg.Stall = st
			cfg.Crash = func(t *testing.T, d block.Device) block.Device {
				if c := crashes[d]; c != nil {
					return c()
				}
				return blocktest.CrashMem(t, d)
			}
			blocktest.Run(t, func(t *testing.T) block.Device {
				b := ly.build(t, func() *memdev.Dev { return memdev.New(memdev.Options{OnWrite: st.Hook}) })
				t.Cleanup(func() { b.d.Close() })
				if b.crash != nil {
					crashes[b.d] = b.crash
				}
				return b.d
			}, cfg)
		})
	}
}

// TestMirror_ConformanceConverges: after the conformance workload's kind
// of guest I/O (disjoint writes in one chunk, concurrently with the
// copier), the mirror still converges to a target equal to the source.
func TestMirror_ConformanceConverges(t *testing.T) {
	src, tgt := memdev.New(memdev.Options{}), memdev.New(memdev.Options{})
	src.Truncate(1 << 20)
	m, err := filter.NewMirror(src, tgt, filter.MirrorOptions{Granularity: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	r := rand.New(rand.NewPCG(5, 6))
	var wg sync.WaitGroup
	for g := range 8 {
		data := randBytes(r, 4096)
		wg.Go(func() {
			for i := range 64 {
				// Writers share chunks but never bytes.
				off := int64(i%16)*(64<<10) + int64(g)*4096
				if err := block.WriteAt(m, data, off); err != nil {
					t.Error(err)
					return
				}
				if i%8 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	tg, err := m.Complete()
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	testkit.MustEqual(t, tgt.Bytes(), src.Bytes(), "target after mirror")
}
