package main

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// diffImage is what the differential test knows of the images of one
// seed (differential_test.go): img.qcow2, the image the commands work
// on, over base.qcow2 or base.raw or nothing; other.qcow2, a copy of
// img.qcow2 taken during its writes, for compare; new.qcow2, another
// image of the same size, for rebase; tgt.raw, a raw image as large as
// img.qcow2, for convert -n.
type diffImage struct {
	clusterSize  int64
	compat       string
	refcountBits int
	lazy, extL2  bool
	size         int64
	backing      string // "", "base.qcow2" or "base.raw"
	baseSize     int64
	snapshots    []string
	bitmaps      []string
	zstd         bool
	leak         bool // a leaked cluster was put in img.qcow2
	crashed      bool // qemu-io was killed after its last writes (lazy refcounts: left dirty)
	outs         int  // files the commands made so far (out1, out2...)
}

func (m *diffImage) v3() bool { return m.compat == "1.1" }

func (m *diffImage) backingFmt() string {
	if strings.HasSuffix(m.backing, ".raw") {
		return "raw"
	}
	return "qcow2"
}

// pick returns one of xs.
func pick[T any](r *rand.Rand, xs ...T) T { return xs[r.IntN(len(xs))] }

// newDiffImage draws an image's parameters.
func newDiffImage(r *rand.Rand) *diffImage {
	m := &diffImage{compat: pick(r, "1.1", "1.1", "1.1", "0.10"), refcountBits: 16}
	// Cluster sizes from 512 to 2M, the middle more often (2M clusters
	// make every command slower).
	m.clusterSize = int64(1) << pick(r, 9, 10, 12, 13, 14, 16, 16, 16, 17, 19, 21)
	if m.v3() {
		m.refcountBits = pick(r, 1, 2, 4, 8, 16, 16, 16, 32, 64)
		m.lazy = r.IntN(4) == 0
		m.extL2 = m.clusterSize >= 16384 && r.IntN(4) == 0
		m.zstd = r.IntN(5) == 0
	}
	m.size = int64(1+r.IntN(32)) << 20
	if r.IntN(4) == 0 {
		m.size += int64(1+r.IntN(2047)) * 512 // not a whole cluster
	}
	switch r.IntN(4) {
	case 0:
		m.backing = "base.qcow2"
	case 1:
		m.backing = "base.raw"
	}
	m.baseSize = m.size
	if r.IntN(3) == 0 {
		m.baseSize = int64(1+r.IntN(32)) << 20
	}
	return m
}

// createOpts is img.qcow2's -o list.
func (m *diffImage) createOpts() string {
	o := fmt.Sprintf("cluster_size=%d,compat=%s", m.clusterSize, m.compat)
	if m.v3() {
		o += fmt.Sprintf(",refcount_bits=%d", m.refcountBits)
		if m.lazy {
			o += ",lazy_refcounts=on"
		}
		if m.extL2 {
			o += ",extended_l2=on"
		}
		if m.zstd {
			o += ",compression_type=zstd"
		}
	}
	return o
}

// ioOps draws n qemu-io commands on an image of size bytes with clusters
// of cs bytes: writes of patterns, zero writes (with and without
// unmapping), discards and compressed writes.
func ioOps(r *rand.Rand, size, cs int64, n int) []string {
	var ops []string
	sectors := size / 512
	for i := 0; i < n; i++ {
		off := r.Int64N(sectors) * 512
		maxLen := min(size-off, 4*cs, 512<<10)
		l := (1 + r.Int64N(max(maxLen/512, 1))) * 512
		l = min(l, size-off)
		switch k := r.IntN(10); {
		case k < 5:
			ops = append(ops, fmt.Sprintf("write -P %d %d %d", 1+r.IntN(254), off, l))
		case k < 7:
			ops = append(ops, fmt.Sprintf("write -z %s%d %d", pick(r, "", "-u "), off, l))
		case k < 9:
			ops = append(ops, fmt.Sprintf("discard %d %d", off, l))
		default:
			c := off / cs * cs
			if c+cs <= size {
				ops = append(ops, fmt.Sprintf("write -c -P %d %d %d", 1+r.IntN(254), c, cs))
			}
		}
	}
	return ops
}

// diffQemuIO runs the qemu-io commands on path, one qemu-io per call,
// and fails t if one of them failed (qemu-io says so on stdout, exit 0).
func diffQemuIO(t *testing.T, path, fmt string, ops []string) {
	t.Helper()
	if len(ops) == 0 {
		return
	}
	var plain []string
	flush := func() {
		if len(plain) == 0 {
			return
		}
		args := []string{"-f", fmt}
		for _, c := range plain {
			args = append(args, "-c", c)
		}
		out := testkit.MustRun(t, "qemu-io", append(args, path)...)
		if strings.Contains(out, "failed") {
			t.Fatalf("qemu-io %q %s:\n%s", plain, path, out)
		}
		plain = nil
	}
	for _, c := range ops {
		if !strings.HasPrefix(c, "write -c ") {
			plain = append(plain, c)
			continue
		}
		// A compressed write fails (EIO) on a cluster that is
		// allocated already: QEMU writes compressed clusters only
		// into unallocated ones. Its failure changes nothing.
		flush()
		testkit.Run(t, "qemu-io", "-f", fmt, "-c", c, path)
	}
	flush()
}

// setup makes the seed's images in d with QEMU's tools only.
func (m *diffImage) setup(t *testing.T, r *rand.Rand, d string) {
	t.Helper()
	qi := func(args ...string) { testkit.MustRun(t, "qemu-img", args...) }
	img := filepath.Join(d, "img.qcow2")
	args := []string{"create", "-q", "-f", "qcow2", "-o", m.createOpts()}
	if m.backing != "" {
		b := filepath.Join(d, m.backing)
		qi("create", "-q", "-f", m.backingFmt(), b, fmt.Sprint(m.baseSize))
		ops := ioOps(r, m.baseSize, 65536, r.IntN(6))
		for i, op := range ops { // no compressed writes in a raw file
			ops[i] = strings.Replace(op, "write -c ", "write ", 1)
		}
		diffQemuIO(t, b, m.backingFmt(), ops)
		args = append(args, "-b", m.backing, "-F", m.backingFmt())
	}
	qi(append(args, img, fmt.Sprint(m.size))...)
	diffQemuIO(t, img, "qcow2", ioOps(r, m.size, m.clusterSize, 2+r.IntN(8)))
	if r.IntN(3) == 0 && m.refcountBits > 1 { // a snapshot needs refcount 2
		m.snapshots = append(m.snapshots, "s1")
		qi("snapshot", "-c", "s1", img)
		diffQemuIO(t, img, "qcow2", ioOps(r, m.size, m.clusterSize, 1+r.IntN(4)))
	}
	if m.v3() && r.IntN(3) == 0 {
		m.bitmaps = append(m.bitmaps, "b1")
		qi("bitmap", "--add", img, "b1")
		diffQemuIO(t, img, "qcow2", ioOps(r, m.size, m.clusterSize, 1+r.IntN(3)))
	}
	cp(t, img, filepath.Join(d, "other.qcow2"))
	if r.IntN(2) == 0 {
		diffQemuIO(t, filepath.Join(d, "other.qcow2"), "qcow2", ioOps(r, m.size, m.clusterSize, 1))
	}
	diffQemuIO(t, img, "qcow2", ioOps(r, m.size, m.clusterSize, r.IntN(3)))
	if m.lazy && r.IntN(3) == 0 {
		// A crash after writes with lazy refcounts: the image is
		// left dirty, its refcounts behind (qemu-io killed).
		m.crashed = true
		args := []string{"-f", "qcow2"}
		for _, c := range ioOps(r, m.size, m.clusterSize, 1+r.IntN(3)) {
			if !strings.HasPrefix(c, "write -c ") {
				args = append(args, "-c", c)
			}
		}
		testkit.Run(t, "qemu-io", append(args, "-c", "sigraise 9", img)...)
	}
	qi("create", "-q", "-f", "qcow2", filepath.Join(d, "new.qcow2"), fmt.Sprint(m.size))
	diffQemuIO(t, filepath.Join(d, "new.qcow2"), "qcow2", ioOps(r, m.size, 65536, r.IntN(3)))
	qi("create", "-q", "-f", "raw", filepath.Join(d, "tgt.raw"), fmt.Sprint(m.size))
	if r.IntN(4) == 0 {
		m.leak = injectLeak(t, img)
	}
}

// injectLeak grows the qcow2 image at path by one cluster and counts
// that cluster as used in its refcount block: a leak, as qemu-img check
// reports it. It reports false, changing nothing, where no refcount
// block covers the cluster.
func injectLeak(t *testing.T, path string) bool {
	t.Helper()
	b := mustReadFile(t, path)
	be := binary.BigEndian
	cbits := be.Uint32(b[20:])
	cs := int64(1) << cbits
	order := uint32(4)
	if be.Uint32(b[4:]) >= 3 {
		order = be.Uint32(b[96:])
	}
	rtOff := int64(be.Uint64(b[48:]))
	fileSize := int64(len(b))
	idx := (fileSize + cs - 1) / cs
	perBlock := cs * 8 >> order
	tIdx := idx / perBlock
	if rtOff+tIdx*8+8 > fileSize {
		return false
	}
	blk := int64(be.Uint64(b[rtOff+tIdx*8:])) &^ 511
	if blk == 0 || blk+cs > fileSize {
		return false
	}
	b = append(b, make([]byte, (idx+1)*cs-fileSize)...)
	e := idx % perBlock
	bits := int64(1) << order
	switch {
	case bits < 8:
		p := blk + e*bits/8
		b[p] |= byte(1) << (e * bits % 8)
	case bits == 8:
		b[blk+e] = 1
	case bits == 16:
		be.PutUint16(b[blk+e*2:], 1)
	case bits == 32:
		be.PutUint32(b[blk+e*4:], 1)
	default:
		be.PutUint64(b[blk+e*8:], 1)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return true
}

// diffCmd is one command of a seed's sequence: its arguments after the
// program name ({d} for the directory), and the files it may write.
type diffCmd struct {
	args []string
}

func (m *diffImage) out(ext string) string {
	m.outs++
	return fmt.Sprintf("{d}/out%d.%s", m.outs, ext)
}

// sizes draws a size for measure, resize and the like, in the forms
// qemu-img reads: bytes, suffixes, relative.
func (m *diffImage) newSize(r *rand.Rand) (arg string, shrink bool) {
	switch r.IntN(5) {
	case 0:
		return fmt.Sprintf("+%dM", 1+r.IntN(8)), false
	case 1:
		return fmt.Sprintf("-%dK", 64*(1+r.IntN(8))), true
	case 2:
		n := int64(1+r.IntN(40)) << 20
		return fmt.Sprint(n), n < m.size
	case 3:
		n := m.size + int64(r.IntN(64)+1)*512
		return fmt.Sprint(n), false
	}
	n := m.size - int64(r.IntN(64)+1)*512
	return fmt.Sprint(n), true
}

// nextCmd draws the next command of the sequence and updates m to what
// it does when it succeeds.
func (m *diffImage) nextCmd(r *rand.Rand) diffCmd {
	img := "{d}/img.qcow2"
	opt := func(p int, a ...string) []string {
		if r.IntN(p) == 0 {
			return a
		}
		return nil
	}
	cat := func(parts ...[]string) []string {
		var a []string
		for _, p := range parts {
			a = append(a, p...)
		}
		return a
	}
	// target is the image of a command that only reads it: now and
	// then a raw file, the backing file or a file that does not
	// exist, and the format given or not (given wrong, too).
	target := func() []string {
		t := pick(r, img, img, img, img, "{d}/other.qcow2", "{d}/new.qcow2", "{d}/tgt.raw", "{d}/nosuch.qcow2")
		if m.backing != "" && r.IntN(6) == 0 {
			t = "{d}/" + m.backing
		}
		if r.IntN(5) == 0 {
			return []string{"-f", pick(r, "qcow2", "raw"), t}
		}
		return []string{t}
	}
	switch r.IntN(16) {
	case 0:
		return diffCmd{cat([]string{"info"}, opt(2, "--output=json"), opt(3, "--backing-chain"), opt(4, "-U"), target())}
	case 1:
		a := []string{"map"}
		a = append(a, opt(2, "--output=json")...)
		if r.IntN(3) == 0 {
			a = append(a, fmt.Sprintf("--start-offset=%d", r.Int64N(m.size/512)*512))
		}
		if r.IntN(3) == 0 {
			a = append(a, fmt.Sprintf("--max-length=%d", 1+r.Int64N(m.size)))
		}
		return diffCmd{append(a, target()...)}
	case 2, 3:
		// qemu-img 7.2's check -r of an image with internal snapshots
		// and a persistent bitmap drops its snapshot table (and the
		// snapshots' references to their clusters): not drawn there.
		if len(m.snapshots) > 0 && len(m.bitmaps) > 0 {
			return diffCmd{cat([]string{"check"}, opt(2, "--output=json"), []string{img})}
		}
		return diffCmd{cat([]string{"check"}, opt(2, "--output=json"), opt(3, "-r", pick(r, "leaks", "all")), []string{img})}
	case 4:
		if r.IntN(4) == 0 {
			return diffCmd{cat([]string{"measure", "--size", fmt.Sprintf("%dM", 1+r.IntN(100))}, opt(2, "--output=json"), []string{"-O", "qcow2"}, opt(2, "-o", fmt.Sprintf("cluster_size=%d", 1<<(9+r.IntN(13)))))}
		}
		a := cat([]string{"measure"}, opt(2, "--output=json"), []string{"-O", pick(r, "qcow2", "raw")})
		if a[len(a)-1] == "qcow2" {
			a = append(a, opt(2, "-o", fmt.Sprintf("cluster_size=%d", 1<<(9+r.IntN(13))))...)
		}
		if len(m.snapshots) > 0 && r.IntN(4) == 0 {
			a = append(a, "-l", pick(r, m.snapshots...))
		}
		if r.IntN(4) == 0 {
			a = append(a, "-o", pick(r, "preallocation=metadata", "preallocation=full", "compat=0.10", "extended_l2=on"))
		}
		return diffCmd{append(a, target()...)}
	case 5:
		a := cat([]string{"compare"}, opt(3, "-s"), opt(3, "-p"))
		switch {
		case m.backing != "" && r.IntN(3) == 0:
			a = append(a, "-f", "qcow2", "-F", m.backingFmt(), img, "{d}/"+m.backing)
		case r.IntN(3) == 0:
			a = append(a, "-f", "qcow2", "-F", "qcow2", img, "{d}/other.qcow2")
		default:
			a = append(a, img, pick(r, "{d}/other.qcow2", "{d}/new.qcow2", "{d}/tgt.raw"))
		}
		return diffCmd{a}
	case 6, 7:
		if r.IntN(5) == 0 {
			return diffCmd{[]string{"convert", "-n", "-O", "raw", img, "{d}/tgt.raw"}}
		}
		f := pick(r, "qcow2", "qcow2", "raw")
		a := []string{"convert", "-O", f}
		a = append(a, opt(6, "-S", pick(r, "0", "4k", "64k"))...)
		var o []string
		if f == "qcow2" {
			a = append(a, opt(3, "-c")...)
			if r.IntN(2) == 0 {
				o = append(o, fmt.Sprintf("cluster_size=%d", 1<<(9+r.IntN(13))))
			}
			if r.IntN(4) == 0 {
				o = append(o, "compat=0.10")
			} else if r.IntN(3) == 0 {
				o = append(o, pick(r, "lazy_refcounts=on", "extended_l2=on", "refcount_bits=8", "refcount_bits=1"))
			}
		}
		if r.IntN(5) == 0 {
			o = append(o, "preallocation="+pick(r, "off", "metadata", "falloc", "full"))
		}
		if len(o) > 0 {
			a = append(a, "-o", strings.Join(o, ","))
		}
		if f == "qcow2" {
			if m.backing != "" && r.IntN(2) == 0 {
				a = append(a, "-B", m.backing, "-F", m.backingFmt())
			}
		}
		if len(m.snapshots) > 0 && r.IntN(4) == 0 {
			a = append(a, "-l", pick(r, append(m.snapshots, "nosuch")...))
		}
		if len(m.bitmaps) > 0 && f == "qcow2" && r.IntN(3) == 0 {
			a = append(a, "--bitmaps")
		}
		return diffCmd{append(a, img, m.out(f))}
	case 8:
		s, shrink := m.newSize(r)
		a := []string{"resize"}
		if shrink || r.IntN(5) == 0 {
			a = append(a, opt(5, "--shrink")...)
			if r.IntN(5) > 0 {
				a = append(a, "--shrink")
			}
		}
		// qimg refuses --preallocation of an image with a backing
		// file (README, "Where qimg deliberately differs from
		// qemu-img"): only images without one are given it.
		if !shrink && m.backing == "" && r.IntN(3) == 0 {
			a = append(a, "--preallocation="+pick(r, "off", "metadata", "falloc", "full"))
		}
		return diffCmd{append(a, img, s)}
	case 9:
		switch k := r.IntN(4); {
		case k == 0 || len(m.snapshots) == 0 && k > 1:
			n := fmt.Sprintf("s%d", len(m.snapshots)+2)
			if r.IntN(4) == 0 && len(m.snapshots) > 0 {
				n = m.snapshots[0] // a name in use
			}
			m.snapshots = append(m.snapshots, n)
			return diffCmd{[]string{"snapshot", "-c", n, img}}
		case k == 1:
			return diffCmd{[]string{"snapshot", "-l", img}}
		case k == 2:
			return diffCmd{[]string{"snapshot", "-a", pick(r, m.snapshots...), img}}
		}
		n := pick(r, append(m.snapshots, "nosuch")...)
		return diffCmd{[]string{"snapshot", "-d", n, img}}
	case 10:
		if m.backing == "" {
			return diffCmd{[]string{"commit", img}}
		}
		return diffCmd{cat([]string{"commit"}, opt(3, "-d"), opt(4, "-p"), opt(4, "-b", m.backing), []string{img})}
	case 11:
		a := cat([]string{"rebase"}, opt(2, "-u"))
		switch r.IntN(4) {
		case 0:
			a = append(a, "-b", "")
		case 1:
			if m.backing != "" {
				a = append(a, "-b", m.backing, "-F", m.backingFmt())
				break
			}
			fallthrough
		default:
			a = append(a, "-b", "new.qcow2", "-F", "qcow2")
		}
		return diffCmd{append(a, img)}
	case 12:
		var o []string
		if r.IntN(2) == 0 {
			o = append(o, "compat="+pick(r, "0.10", "1.1"))
		}
		if r.IntN(2) == 0 {
			o = append(o, "lazy_refcounts="+pick(r, "on", "off"))
		}
		// qemu-img 7.2 never finishes a change of refcount_bits of an
		// image whose refcount blocks cover 16 GiB or more each
		// (clusters of 256k or more, 64k clusters of 1- or 2-bit
		// refcounts; even a new, empty image): not drawn there.
		if (r.IntN(2) == 0 || len(o) == 0) && m.clusterSize*m.clusterSize*8/int64(m.refcountBits) < 1<<34 {
			o = append(o, fmt.Sprintf("refcount_bits=%d", pick(r, 1, 2, 4, 8, 16, 32, 64)))
		}
		if len(o) == 0 {
			o = append(o, "lazy_refcounts=off")
		}
		return diffCmd{[]string{"amend", "-o", strings.Join(o, ","), img}}
	case 13:
		all := append([]string{"b1", "b2"}, m.bitmaps...)
		name := pick(r, all...)
		var a []string
		for i := 0; i < 1+r.IntN(2); i++ {
			switch r.IntN(6) {
			case 0:
				a = append(a, "--add")
				a = append(a, opt(3, "-g", fmt.Sprint(1<<(9+r.IntN(12))))...)
				a = append(a, opt(4, "--disabled")...)
			case 1:
				a = append(a, "--remove")
			case 2:
				a = append(a, "--enable")
			case 3:
				a = append(a, "--disable")
			case 4:
				a = append(a, "--clear")
			default:
				a = append(a, "--merge", pick(r, all...))
			}
		}
		return diffCmd{append(append([]string{"bitmap"}, a...), img, name)}
	case 14:
		f := pick(r, "raw", "qcow2")
		a := []string{"dd", "-f", "qcow2", "-O", f}
		bs := int64(512) << r.IntN(8)
		a = append(a, fmt.Sprintf("bs=%d", bs))
		a = append(a, opt(2, fmt.Sprintf("count=%d", 1+r.Int64N(max(m.size/bs, 1))))...)
		a = append(a, opt(3, fmt.Sprintf("skip=%d", r.Int64N(max(m.size/bs, 1))))...)
		return diffCmd{append(a, "if="+img, "of="+m.out(f))}
	}
	return diffCmd{cat([]string{"check"}, opt(2, "--output=json"), []string{img})}
}
