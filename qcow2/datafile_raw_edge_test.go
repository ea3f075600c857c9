package qcow2

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/uring"
)

// dfrGarbage fills a raw data file with nonzero bytes, as one made with
// data_file_raw over an existing raw disk holds.
func dfrGarbage(t *testing.T, path string, size int64) {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(0x80 | (i*7+i/4096)%127)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

type dfrOp struct {
	cmd      string
	do       func(im *Image) error
	fallback *dfrOp // after a refusal on either side
}

// dfrRun applies ops to a qemu-io image and a qring twin, both made with
// data_file_raw over a data file of garbage, and after each op compares
// the two raw data files byte for byte (QEMU's contract: the data file
// is the disk's raw image) and the two qcow2 views.
func dfrRun(t *testing.T, opts string, size int64, ops []dfrOp) {
	dfrRunOpts(t, opts, size, ops, false)
}

// dfrRunOpts is dfrRun; noPass opens both without pass-discard-request
// (QEMU's pass-discard-request=off, Options.NoPassDiscard).
func dfrRunOpts(t *testing.T, opts string, size int64, ops []dfrOp, noPass bool) {
	dir := testkit.Dir(t)
	q, r := filepath.Join(dir, "q.qcow2"), filepath.Join(dir, "r.qcow2")
	for _, p := range []string{q, r} {
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o",
			opts+",data_file="+p+".data,data_file_raw=on", p, fmt.Sprint(size))
		st, err := os.Stat(p + ".data")
		if err != nil {
			t.Fatal(err)
		}
		dfrGarbage(t, p+".data", st.Size())
	}
	// The opener qimg and qnbd use (io_uring files): block.OSFile has
	// no Allocate zeroing at all.
	im, err := Open(r, Options{Opener: uring.Opener(uring.Options{}), NoPassDiscard: noPass})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if im != nil {
			im.Close()
		}
	}()
	var log []string
	for i, o := range ops {
		log = append(log, o.cmd)
		qio := func(cmd string) (string, string, int) {
			if noPass {
				return testkit.Run(t, "qemu-io", "-c", cmd, "--image-opts", "driver=qcow2,pass-discard-request=off,file.filename="+q)
			}
			return testkit.Run(t, "qemu-io", "-f", "qcow2", "-c", cmd, q)
		}
		out, _, _ := qio(o.cmd)
		qok := !strings.Contains(out, "failed")
		err := o.do(im)
		if err != nil && !errors.Is(err, block.ErrNotSupported) {
			t.Fatalf("op %d %s: %v", i, o.cmd, err)
		}
		if qok != (err == nil) {
			t.Errorf("op %d %s: qemu-io %q, qring %v", i, o.cmd, strings.TrimSpace(out), err)
		}
		if (!qok || err != nil) && o.fallback != nil {
			// A refused write -z -n: both fall back to write -z, as
			// qemu-img convert does.
			if _, _, rc := qio(o.fallback.cmd); rc != 0 {
				t.Fatalf("qemu-io %s failed", o.fallback.cmd)
			}
			if err := o.fallback.do(im); err != nil {
				t.Fatalf("op %d %s: %v", i, o.fallback.cmd, err)
			}
		}
		qd, err := os.ReadFile(q + ".data")
		if err != nil {
			t.Fatal(err)
		}
		rd, err := os.ReadFile(r + ".data")
		if err != nil {
			t.Fatal(err)
		}
		if d := testkit.FirstDiff(qd, rd); d >= 0 || len(qd) != len(rd) {
			var a, b byte
			if d >= 0 && d < len(qd) && d < len(rd) {
				a, b = qd[d], rd[d]
			}
			t.Fatalf("after op %d (%s): raw data files differ at %d (qemu %#x, qring %#x; sizes %d %d)\nops:\n%s",
				i, o.cmd, d, a, b, len(qd), len(rd), strings.Join(log, "\n"))
		}
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	im = nil
	testkit.MustRun(t, "qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", q, r)
	testkit.MustRun(t, "qemu-img", "check", r)
}

func dfrZero(off, n int64, fl block.Flags) dfrOp {
	cmd := "write -z"
	if fl&block.MayUnmap != 0 {
		cmd += " -u"
	}
	if fl&block.Allocate != 0 {
		cmd += " -n"
	}
	op := dfrOp{cmd: fmt.Sprintf("%s %d %d", cmd, off, n), do: func(im *Image) error { return im.WriteZeroes(off, n, fl) }}
	if fl&block.Allocate != 0 {
		fb := dfrZero(off, n, fl&^block.Allocate)
		op.fallback = &fb
	}
	return op
}

func dfrWrite(pat byte, off, n int64) dfrOp {
	return dfrOp{cmd: fmt.Sprintf("write -P %d %d %d", pat, off, n), do: func(im *Image) error {
		_, err := im.WriteAt(bytes.Repeat([]byte{pat}, int(n)), off)
		return err
	}}
}

func dfrDiscard(off, n int64) dfrOp {
	return dfrOp{cmd: fmt.Sprintf("discard %d %d", off, n), do: func(im *Image) error { return im.Discard(off, n) }}
}

var dfrCases = []struct{ name, opts string }{
	{"v3-64k", "cluster_size=65536"},
	{"v3-4k", "cluster_size=4096"},
	{"xl2-64k", "cluster_size=65536,extended_l2=on"},
	{"xl2-32k", "cluster_size=32768,extended_l2=on"},
}

// TestDFRaw_UnalignedZeroEdgeMatchesQemu: an unaligned zero write whose
// edge (sub)cluster reads as zeros makes it a zero (sub)cluster; QEMU
// 7.2's qcow2_subcluster_zeroize then zeroes the whole (sub)cluster in
// the raw data file, qring only the range asked for.
func TestDFRaw_UnalignedZeroEdgeMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	for _, c := range dfrCases {
		t.Run(c.name, func(t *testing.T) {
			dfrRun(t, c.opts, 1<<20, []dfrOp{
				dfrZero(1000, 300, 0),
				dfrZero(70000, 5000, 0),
				dfrZero(131072, 65536, 0), // a whole cluster: zero
				dfrZero(140000, 3000, 0),  // inside a zero cluster
				dfrZero(300000, 10, block.Allocate),
				dfrZero(500000, 100000, block.MayUnmap),
			})
		})
	}
}

// TestDFRaw_RandomMatchesQemu: random writes, zero writes (plain,
// unmapping, no-fallback) and discards.
func TestDFRaw_RandomMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	seeds, nops := 2, 30
	if s := os.Getenv("QRING_DFRAW_SEEDS"); s != "" {
		fmt.Sscan(s, &seeds)
	}
	for _, c := range dfrCases {
		for s := 0; s < seeds; s++ {
			t.Run(fmt.Sprintf("%s/%d", c.name, s), func(t *testing.T) {
				size := int64(1 << 20)
				if s%2 == 1 { // a last (sub)cluster past the disk's end
					size += 1536
				}
				rng := rand.New(rand.NewSource(int64(s)*7919 + int64(len(c.name))))
				var ops []dfrOp
				for i := 0; i < nops; i++ {
					off, n := rng.Int63n(size), randOpLen(rng)
					if rng.Intn(4) == 0 { // sector aligned
						off = off / 512 * 512
						n = (n + 511) / 512 * 512
					}
					n = min(n, size-off)
					switch rng.Intn(7) {
					case 0:
						ops = append(ops, dfrWrite(byte(1+rng.Intn(250)), off, n))
					case 1, 2:
						ops = append(ops, dfrZero(off, n, 0))
					case 3:
						ops = append(ops, dfrZero(off, n, block.MayUnmap))
					case 4:
						ops = append(ops, dfrZero(off, n, block.Allocate))
					case 5, 6:
						ops = append(ops, dfrDiscard(off, n))
					}
				}
				dfrRun(t, c.opts, size, ops)
			})
		}
	}
}

// TestDFRaw_AllocateUnalignedMatchesQemu: write -z -n whose unaligned
// edges lie in (sub)clusters that read as zeros is performed by QEMU 7.2
// on a data_file_raw image (its file driver zeroes the data file's
// partial blocks with fallocate); qring refused it (ErrNotSupported):
// the io_uring data file refuses an Allocate zeroing not aligned to the
// file system block (U2), and dfZeroRaw passed the range as it was.
func TestDFRaw_AllocateUnalignedMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	for _, c := range dfrCases {
		t.Run(c.name, func(t *testing.T) {
			dfrRun(t, c.opts, 1<<20, []dfrOp{
				dfrZero(0, 262144, 0), // zero clusters
				dfrZero(1000, 3000, block.Allocate),
				dfrZero(70000, 10, block.Allocate),
				dfrZero(131072+512, 4096, block.Allocate),
				dfrZero(600000, 100, block.Allocate), // xl2: unallocated subclusters
			})
		})
	}
}

// TestDFRaw_NoPassDiscardEdgeMatchesQemu: without pass-discard-request
// a discarded cluster keeps its data file bytes under a zero entry; an
// unaligned zero write into it then zeroes the whole (sub)cluster of
// the raw data file in QEMU 7.2 (qcow2_co_pwrite_zeroes widens the
// edge, qcow2_subcluster_zeroize zeroes the data file), in qring only
// the range asked for.
func TestDFRaw_NoPassDiscardEdgeMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	for _, c := range dfrCases {
		t.Run(c.name, func(t *testing.T) {
			dfrRunOpts(t, c.opts, 1<<20, []dfrOp{
				dfrWrite(9, 65536, 65536),
				dfrDiscard(65536, 65536),
				dfrZero(70000, 100, 0),
				dfrZero(81920+512, 1024, block.Allocate),
				dfrZero(131072+100, 10, block.MayUnmap),
			}, true)
		})
	}
}

// TestDFRaw_ConcurrentEdges: goroutines write data, zeroes and
// unaligned zero writes (with and without Allocate) into disjoint
// 512-byte slots of shared subclusters and clusters of a data_file_raw
// image over io_uring: an edge's zeroing of its whole (sub)cluster in
// the data file, done with mu dropped, never zeroes another writer's
// acknowledged bytes. Each read-back matches, and at the end the raw
// data file is byte for byte the guest's view (QEMU's contract).
func TestDFRaw_ConcurrentEdges(t *testing.T) {
	for _, xl2 := range []bool{true, false} {
		dir := testkit.Dir(t)
		p := filepath.Join(dir, fmt.Sprintf("c-%v.qcow2", xl2))
		const size = 1 << 20
		op := uring.Opener(uring.Options{})
		if err := Create(p, CreateOptions{Size: size, ClusterSize: 65536, ExtendedL2: xl2,
			DataFile: p + ".data", DataFileRaw: true, Opener: op}); err != nil {
			t.Fatal(err)
		}
		im, err := Open(p, Options{Opener: op})
		if err != nil {
			t.Fatal(err)
		}
		if err := slotWorkers(im, 4, 4*65536, 1500, 40); err != nil {
			t.Errorf("xl2=%v: %v", xl2, err)
		}
		view := make([]byte, size)
		if _, err := im.ReadAt(view, 0); err != nil {
			t.Fatal(err)
		}
		if err := im.Close(); err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(p + ".data")
		if err != nil {
			t.Fatal(err)
		}
		raw = append(raw, make([]byte, max(0, size-len(raw)))...)
		if d := testkit.FirstDiff(raw[:size], view); d >= 0 {
			t.Errorf("xl2=%v: the raw data file differs from the guest's view at %d: %d vs %d", xl2, d, raw[d], view[d])
		}
		testkit.QemuCheck(t, p)
	}
}
