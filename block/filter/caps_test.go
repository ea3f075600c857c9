package filter_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/filter"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// layer builds one filter over children made from opts; it returns the
// device and the counting children (whose calls must not move on a refused
// request).
type layer struct {
	name  string
	nkids int
	build func(t *testing.T, kids []block.Device) block.Device
}

var layers = []layer{
	{"raw", 1, func(t *testing.T, k []block.Device) block.Device {
		r, err := filter.NewRaw(k[0], filter.RawOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}},
	{"blkverify", 2, func(_ *testing.T, k []block.Device) block.Device { return filter.NewBlkverify(k[0], k[1]) }},
	{"quorum", 3, func(t *testing.T, k []block.Device) block.Device {
		q, err := filter.NewQuorum(k, filter.QuorumOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return q
	}},
	{"copy-on-read", 1, func(_ *testing.T, k []block.Device) block.Device {
		return filter.NewCopyOnRead(allocAll{k[0]}, nil)
	}},
	{"throttle", 1, func(_ *testing.T, k []block.Device) block.Device {
		return filter.NewThrottle(k[0], filter.ThrottleLimits{}, nil)
	}},
	{"mirror-source", 1, func(t *testing.T, k []block.Device) block.Device {
		// Only the source decides the mirror's flags (the target is a
		// full-featured memdev with the B9/B10 hints), and its medium
		// unless it is RAM (the target has none: unknown).
		m, err := filter.NewMirror(k[0], memdev.New(memdev.Options{AllocWritten: true, MergesWrites: true}), filter.MirrorOptions{Granularity: 4096})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Wait(); err != nil {
			t.Fatal(err)
		}
		return m
	}},
}

// TestCaps_Inheritance is FL1/FL2 for every layer: the flags a layer reports
// are its receiving children's intersection, and a request with a flag it
// does not report fails with ErrNotSupported before any child is called.
func TestCaps_Inheritance(t *testing.T) {
	full := memdev.Options{}                                               // Allocate|MayUnmap
	noAlloc := memdev.Options{ZeroFlags: block.MayUnmap, NoAllocate: true} // a file without fallocate
	none := memdev.Options{NoAllocate: true}
	cases := []struct {
		name string
		// kid(i) gives child i's options; the last entry repeats.
		kids      []memdev.Options
		aligns    []int64
		wantZero  block.Flags
		wantAlign int64
	}{
		{"all-full", []memdev.Options{full}, []int64{1}, block.Allocate | block.MayUnmap, 1},
		{"no-fallocate", []memdev.Options{noAlloc}, []int64{512}, block.MayUnmap, 512},
		{"no-flags", []memdev.Options{none}, []int64{1}, 0, 1},
		{"last-child-no-fallocate", []memdev.Options{full, full, noAlloc}, []int64{512, 4096, 512}, block.MayUnmap, 4096},
	}
	for _, ly := range layers {
		for _, tc := range cases {
			t.Run(ly.name+"/"+tc.name, func(t *testing.T) {
				kids := make([]block.Device, ly.nkids)
				counts := make([]*countDev, ly.nkids)
				wantZero, wantAlign := block.Allocate|block.MayUnmap, int64(1)
				for i := range kids {
					o := tc.kids[min(i, len(tc.kids)-1)]
					o.Align = tc.aligns[min(i, len(tc.aligns)-1)]
					md := memdev.New(o)
					md.Truncate(1 << 16)
					counts[i] = &countDev{Device: md}
					kids[i] = counts[i]
					wantZero &= md.Caps().ZeroFlags
					wantAlign = max(wantAlign, o.Align)
				}
				d := ly.build(t, kids)
				defer d.Close()
				c := d.Caps()
				if got := c.ZeroFlags & (block.Allocate | block.MayUnmap); got != wantZero {
					t.Fatalf("ZeroFlags = %v, want %v", got, wantZero)
				}
				if c.Align != wantAlign && ly.name != "mirror-source" {
					t.Fatalf("Align = %d, want %d", c.Align, wantAlign)
				}
				if ly.name == "raw" || ly.name == "copy-on-read" || ly.name == "throttle" || ly.name == "mirror-source" {
					if len(tc.kids) > 1 {
						// Single-child layers saw only the first options.
						return
					}
				}
				if tc.wantZero != wantZero && len(tc.kids) == 1 {
					t.Fatalf("table: wantZero %v, computed %v", tc.wantZero, wantZero)
				}
				before := make([]int64, len(counts))
				for i, cd := range counts {
					before[i] = cd.calls.Load()
				}
				for _, fl := range []block.Flags{block.Allocate, block.MayUnmap, block.Serialising | block.NoWait} {
					supported := fl&^(block.Serialising|block.NoWait)&^c.ZeroFlags == 0 &&
						fl&(block.Serialising|block.NoWait)&^c.ReqFlags == 0
					if supported {
						continue
					}
					err := d.WriteZeroes(0, 4096, fl)
					if !errors.Is(err, block.ErrNotSupported) {
						t.Fatalf("WriteZeroes(%v) = %v, want ErrNotSupported", fl, err)
					}
				}
				// A supported Allocate request must go through when aligned.
				if c.ZeroFlags&block.Allocate != 0 {
					if err := d.WriteZeroes(0, 4096, block.Allocate); err != nil {
						t.Fatalf("WriteZeroes(Allocate) = %v", err)
					}
					if err := d.WriteZeroes(1, 4096, block.Allocate); c.Align > 1 && !errors.Is(err, block.ErrNotSupported) {
						t.Fatalf("misaligned Allocate = %v, want ErrNotSupported", err)
					}
					return
				}
				for i, cd := range counts {
					if n := cd.calls.Load(); n != before[i] {
						t.Fatalf("child %d got %d calls for refused requests", i, n-before[i])
					}
				}
			})
		}
	}
}

// TestMirror_ZeroFlagsToTarget: a target without fallocate does not narrow
// the mirror; it gets the zeroing without Allocate.
func TestMirror_ZeroFlagsToTarget(t *testing.T) {
	src := memdev.New(memdev.Options{})
	src.Truncate(1 << 20)
	tgt := memdev.New(memdev.Options{NoAllocate: true})
	m, err := filter.NewMirror(src, tgt, filter.MirrorOptions{Granularity: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Wait(); err != nil {
		t.Fatal(err)
	}
	if m.Caps().ZeroFlags&block.Allocate == 0 {
		t.Fatal("mirror dropped Allocate because of its target")
	}
	block.WriteAt(m, []byte("data"), 4096)
	z0 := tgt.M.Zeroes.Load()
	if err := m.WriteZeroes(0, 64<<10, block.Allocate); err != nil {
		t.Fatal(err)
	}
	if tgt.M.Zeroes.Load() == z0 {
		t.Fatal("target got no zeroing request")
	}
	testkit.MustEqual(t, testkit.ReadAll(t, tgt), testkit.ReadAll(t, src), "target")
}

// TestCaps_Media: every layer reports its (primary) child's medium (FL1),
// except RAM when its writes reach another medium too.
func TestCaps_Media(t *testing.T) {
	for _, ly := range layers {
		for _, m := range []block.Media{block.MediaUnknown, block.MediaRAM, block.MediaSSD, block.MediaHDD} {
			t.Run(ly.name+"/"+m.String(), func(t *testing.T) {
				kids := make([]block.Device, ly.nkids)
				for i := range kids {
					o := memdev.Options{}
					if i == 0 {
						o.Media = m // the others differ: the primary counts, but for RAM
					} else {
						o.Media = block.MediaHDD - m
					}
					md := memdev.New(o)
					md.Truncate(1 << 16)
					kids[i] = md
				}
				d := ly.build(t, kids)
				defer d.Close()
				want := m
				if m == block.MediaRAM {
					switch ly.name {
					case "blkverify", "quorum":
						want = block.MediaHDD - m // the second child's: writes reach it too
					case "mirror-source":
						want = block.MediaUnknown // the target's (a memdev without a medium)
					}
				}
				if got := d.Caps().Media; got != want {
					t.Fatalf("Media = %v, want %v", got, want)
				}
			})
		}
	}
}

// TestCaps_MediaRAMOnlyWhenEveryCopyIs: a layer whose writes reach several
// devices reports RAM only when all of them are RAM (an engine streams
// zeros ahead there, and every copy pays for them); otherwise its
// primary's medium, or, for a RAM primary, that of the first device that
// is not RAM.
func TestCaps_MediaRAMOnlyWhenEveryCopyIs(t *testing.T) {
	ram, ssd, hdd := block.MediaRAM, block.MediaSSD, block.MediaHDD
	dev := func(m block.Media) block.Device {
		d := memdev.New(memdev.Options{Media: m})
		d.Truncate(1 << 16)
		return d
	}
	devs := func(ms []block.Media) []block.Device {
		out := make([]block.Device, len(ms))
		for i, m := range ms {
			out[i] = dev(m)
		}
		return out
	}
	for _, tc := range []struct {
		media []block.Media
		want  block.Media
	}{
		{[]block.Media{ram, ram, ram}, ram},
		{[]block.Media{ram, ram, ssd}, ssd},
		{[]block.Media{ram, hdd, ssd}, hdd},
		{[]block.Media{ssd, ram, ram}, ssd},
		{[]block.Media{hdd, ssd, ram}, hdd},
	} {
		q, err := filter.NewQuorum(devs(tc.media), filter.QuorumOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := q.Caps().Media; got != tc.want {
			t.Errorf("quorum over %v: Media = %v, want %v", tc.media, got, tc.want)
		}
		q.Close()
		// Blkverify and mirror over the first and last of them.
		want := tc.media[0]
		if want == ram {
			want = tc.media[2]
		}
		bv := filter.NewBlkverify(dev(tc.media[0]), dev(tc.media[2]))
		if got := bv.Caps().Media; got != want {
			t.Errorf("blkverify over %v and %v: Media = %v, want %v", tc.media[0], tc.media[2], got, want)
		}
		bv.Close()
		m, err := filter.NewMirror(dev(tc.media[0]), dev(tc.media[2]), filter.MirrorOptions{Granularity: 4096})
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Caps().Media; got != want {
			t.Errorf("mirror from %v to %v: Media = %v, want %v", tc.media[0], tc.media[2], got, want)
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCaps_Fixed: a layer over a child of fixed size (a block device)
// has a fixed size too: nothing may be reserved past its end.
func TestCaps_Fixed(t *testing.T) {
	for _, ly := range layers {
		for i := range ly.nkids {
			t.Run(fmt.Sprintf("%s/child%d", ly.name, i), func(t *testing.T) {
				kids := make([]block.Device, ly.nkids)
				for k := range kids {
					md := memdev.New(memdev.Options{Fixed: k == i})
					md.Truncate(1 << 16)
					kids[k] = md
				}
				d := ly.build(t, kids)
				defer d.Close()
				if !d.Caps().Fixed {
					t.Fatal("not fixed over a fixed child")
				}
			})
		}
	}
}

// TestCaps_Metered: a layer is metered when a child that receives its
// writes is, or when it limits writes itself (throttle).
func TestCaps_Metered(t *testing.T) {
	for _, ly := range layers {
		for i := range ly.nkids {
			t.Run(fmt.Sprintf("%s/child%d", ly.name, i), func(t *testing.T) {
				kids := make([]block.Device, ly.nkids)
				for k := range kids {
					md := memdev.New(memdev.Options{Metered: k == i})
					md.Truncate(1 << 16)
					kids[k] = md
				}
				d := ly.build(t, kids)
				defer d.Close()
				if !d.Caps().Metered {
					t.Fatal("not metered over a metered child")
				}
			})
		}
	}
	mem := memdev.New(memdev.Options{})
	if filter.NewThrottle(mem, filter.ThrottleLimits{IOPSRead: 100}, nil).Caps().Metered {
		t.Error("a read limit meters writes")
	}
	if !filter.NewThrottle(mem, filter.ThrottleLimits{BPSWrite: 1 << 20}, nil).Caps().Metered {
		t.Error("a write limit does not meter")
	}
	m, err := filter.NewMirror(memdev.New(memdev.Options{}), memdev.New(memdev.Options{Metered: true}), filter.MirrorOptions{Granularity: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if !m.Caps().Metered {
		t.Error("mirror over a metered target is not metered")
	}
}

// TestCaps_Hints: AllocWritten (B9) and MergesWrites (B10) pass through a
// layer only when every child that receives its writes has them (FL1).
func TestCaps_Hints(t *testing.T) {
	for _, ly := range layers {
		for without := -1; without < ly.nkids; without++ {
			t.Run(fmt.Sprintf("%s/without%d", ly.name, without), func(t *testing.T) {
				kids := make([]block.Device, ly.nkids)
				for k := range kids {
					md := memdev.New(memdev.Options{AllocWritten: k != without, MergesWrites: k != without})
					md.Truncate(1 << 16)
					kids[k] = md
				}
				d := ly.build(t, kids)
				defer d.Close()
				c := d.Caps()
				want := without < 0
				if c.AllocWritten != want || c.MergesWrites != want {
					t.Fatalf("AllocWritten %v, MergesWrites %v; want %v", c.AllocWritten, c.MergesWrites, want)
				}
			})
		}
	}
	m, err := filter.NewMirror(memdev.New(memdev.Options{AllocWritten: true, MergesWrites: true}), memdev.New(memdev.Options{}), filter.MirrorOptions{Granularity: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if c := m.Caps(); c.AllocWritten || c.MergesWrites {
		t.Errorf("mirror over a plain target: AllocWritten %v, MergesWrites %v", c.AllocWritten, c.MergesWrites)
	}
	// A quorum child that failed to open does not narrow the others.
	hinted := memdev.New(memdev.Options{AllocWritten: true, MergesWrites: true})
	hinted.Truncate(1 << 16)
	if c := filter.CapsOf(hinted, filter.Failed{Err: block.ErrClosed}); !c.AllocWritten || !c.MergesWrites {
		t.Errorf("a Failed child narrowed the hints: AllocWritten %v, MergesWrites %v", c.AllocWritten, c.MergesWrites)
	}
	ram := memdev.New(memdev.Options{Media: block.MediaRAM})
	ram.Truncate(1 << 16)
	if m := filter.CapsOf(filter.Failed{Err: block.ErrClosed}, ram, ram).Media; m != block.MediaRAM {
		t.Errorf("a Failed child changed the medium of RAM children to %v", m)
	}
	// A raw layer at an offset the child cannot zero at refuses Allocate,
	// so it cannot promise what Allocate leaves behind (B9).
	aligned := memdev.New(memdev.Options{Align: 4096, AllocWritten: true})
	aligned.Truncate(1 << 20)
	r, err := filter.NewRaw(aligned, filter.RawOptions{Offset: 512})
	if err != nil {
		t.Fatal(err)
	}
	if c := r.Caps(); c.ZeroFlags&block.Allocate != 0 || c.AllocWritten {
		t.Errorf("raw at a misaligned offset: Allocate %v, AllocWritten %v", c.ZeroFlags&block.Allocate != 0, c.AllocWritten)
	}
}
