//go:build linux

package uring

import (
	"encoding/binary"
	"fmt"
	"os"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/uring/looptest"
	"golang.org/x/sys/unix"
)

// TestBlockDeviceBigVector (U1, R6): an O_DIRECT vector of more than
// 2 GiB, written and read back in one call on block devices with 4, 8
// and 64 KiB logical sectors. The kernel moves at most MAX_RW_COUNT
// (2 GiB - 4 KiB) a call, which is no multiple of a sector above 4 KiB:
// File must split such vectors itself at aligned offsets. It costs
// 2.2 GiB of memory and 4.4 GiB of disk I/O per sector size, so it runs
// only with QRING_BIG_VECTORS=1 (not in make test).
func TestBlockDeviceBigVector(t *testing.T) {
	if os.Getenv("QRING_BIG_VECTORS") != "1" || testing.Short() {
		t.Skip("QRING_BIG_VECTORS=1 runs it (2.2 GiB of memory)")
	}
	const bufLen, nBufs = 4 << 20, 544 // 2176 MiB
	bufs := make([][]byte, nBufs)
	for i := range bufs {
		bufs[i] = block.AlignedBuf(bufLen, block.DefaultMemAlign)
	}
	fill := func(seed uint64) {
		for i, b := range bufs {
			for j := 0; j < len(b); j += 8 {
				binary.LittleEndian.PutUint64(b[j:], seed^uint64(i)<<32^uint64(j))
			}
		}
	}
	check := func(seed uint64) {
		t.Helper()
		for i, b := range bufs {
			for j := 0; j < len(b); j += 8 {
				if got, want := binary.LittleEndian.Uint64(b[j:]), seed^uint64(i)<<32^uint64(j); got != want {
					t.Fatalf("byte %d of the vector: %#x, want %#x", int64(i)*bufLen+int64(j), got, want)
				}
			}
		}
	}
	for _, sector := range []uint32{4096, 8192, 65536} {
		dev := looptest.LoopFile(t, t.TempDir(), nBufs*bufLen+1<<20, sector)
		for _, c := range []config{configs()[1], configs()[4]} { // ring-direct, threads-direct
			t.Run(fmt.Sprintf("%d/%s", sector, c.name), func(t *testing.T) {
				f, err := Open(dev, c.opt)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if a := f.Caps().Align; a != int64(sector) {
					t.Fatalf("Align %d on %d-byte sectors", a, sector)
				}
				seed := uint64(sector) << 48
				fill(seed)
				if err := f.Writev(0, bufs); err != nil {
					t.Fatalf("writing %d MiB: %v", nBufs*bufLen>>20, err)
				}
				fill(^seed)
				if err := f.Readv(0, bufs); err != nil {
					t.Fatalf("reading %d MiB: %v", nBufs*bufLen>>20, err)
				}
				check(seed)
			})
		}
	}
}

// TestNextChunk: vectors are cut at IOV_MAX buffers and maxRW bytes,
// between buffers, or inside a first buffer longer than maxRW; a vector
// within both limits goes whole, without allocating (R5). The buffers
// are views of an address range mapped without access: nothing is read.
func TestNextChunk(t *testing.T) {
	m, err := unix.Mmap(-1, 0, 2*maxRW, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		t.Skip(err)
	}
	defer unix.Munmap(m)
	lens := func(v [][]byte) []int {
		var l []int
		for _, b := range v {
			l = append(l, len(b))
		}
		return l
	}
	many := make([][]byte, maxIov+5)
	for i := range many {
		many[i] = m[:4096]
	}
	for _, c := range []struct {
		name    string
		v       [][]byte
		c, rest []int
	}{
		{"small", [][]byte{m[:4096], m[:8192]}, []int{4096, 8192}, nil},
		{"iov-max", many, lens(many[:maxIov]), lens(many[maxIov:])},
		{"between", [][]byte{m[:maxRW/2], m[:maxRW/2], m[:4096]}, []int{maxRW / 2, maxRW / 2}, []int{4096}},
		{"before-long", [][]byte{m[:4096], m[:maxRW]}, []int{4096}, []int{maxRW}},
		{"inside-first", [][]byte{m[:maxRW+8192], m[:4096]}, []int{maxRW}, []int{8192, 4096}},
	} {
		got, n, rest := nextChunk(c.v)
		want := int64(0)
		for _, l := range c.c {
			want += int64(l)
		}
		if fmt.Sprint(lens(got)) != fmt.Sprint(c.c) || n != want || fmt.Sprint(lens(rest)) != fmt.Sprint(c.rest) {
			t.Errorf("%s: chunk %v (%d bytes), rest %v; want %v, %v", c.name, lens(got), n, lens(rest), c.c, c.rest)
		}
	}
	inside, _, rest := nextChunk([][]byte{m[:maxRW+8192]})
	if &inside[0][0] != &m[0] || &rest[0][0] != &m[maxRW] {
		t.Error("the cut inside a buffer is not at maxRW")
	}
	v := [][]byte{m[:4096], m[:8192]}
	if a := testing.AllocsPerRun(100, func() { nextChunk(v) }); a != 0 {
		t.Errorf("%v allocations for a vector within the limits", a)
	}
}
