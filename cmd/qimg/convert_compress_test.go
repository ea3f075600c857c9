package main

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// compressSource writes a raw image of text-like (compressible) clusters,
// a zero range, and an incompressible cluster.
func compressSource(t *testing.T, path string) []byte {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	words := []string{"alpha ", "beta ", "gamma ", "qcow2 ", "cluster "}
	var b bytes.Buffer
	for b.Len() < 3<<20 {
		b.WriteString(words[rng.IntN(len(words))])
		b.WriteByte(byte(rng.Uint32()))
	}
	src := b.Bytes()[:3<<20+4608]
	clear(src[1<<20 : 1<<20+200000])
	for i := 2 << 20; i < 2<<20+65536; i++ {
		src[i] = byte(rng.Uint32())
	}
	if err := os.WriteFile(path, src, 0o644); err != nil {
		t.Fatal(err)
	}
	return src
}

// The acceptance: `qimg convert -c -O qcow2 src.raw c.qcow2` gives
// an image that qemu-img check passes, that qemu-img map shows compressed
// and that converts back equal to src.raw; the same with
// compression_type=zstd. The map matches qemu-img's own convert -c
// output's, up to host offsets.
func TestConvert_Compressed(t *testing.T) {
	d := qemuDir(t)
	p := func(n string) string { return filepath.Join(d, n) }
	src := compressSource(t, p("src.raw"))
	for _, ct := range []string{"", "zstd"} {
		name := "zlib"
		var opt []string
		if ct != "" {
			name, opt = ct, []string{"-o", "compression_type=" + ct}
		}
		t.Run(name, func(t *testing.T) {
			c, q := p("c-"+name+".qcow2"), p("q-"+name+".qcow2")
			mustQ(t, append(append([]string{"convert", "-c", "-O", "qcow2"}, opt...), p("src.raw"), c)...)
			testkit.MustRun(t, "qemu-img", append(append([]string{"convert", "-c", "-O", "qcow2"}, opt...), p("src.raw"), q)...)
			testkit.QemuCheck(t, c)
			if info := testkit.MustRun(t, "qemu-img", "info", c); !strings.Contains(info, "compression type: "+name) {
				t.Errorf("qemu-img info:\n%s", info)
			}
			ours := decodeMap(t, testkit.MustRun(t, "qemu-img", "map", "--output=json", c))
			theirs := decodeMap(t, testkit.MustRun(t, "qemu-img", "map", "--output=json", q))
			compressed := 0
			for _, e := range ours {
				if e.Data && e.Offset == nil { // QEMU 7.2: compressed data has no offset
					compressed++
				}
			}
			if compressed == 0 {
				t.Errorf("qemu-img map shows no compressed cluster: %+v", ours)
			}
			// The source's zero range stays zero: no data in its whole
			// clusters (64 KiB) in qemu-img's map.
			const zlo, zhi = 1 << 20, 1<<20 + 3*65536
			for _, e := range ours {
				if e.Start < zhi && e.Start+e.Length > zlo && (e.Data || !e.Zero) {
					t.Errorf("zero range [%d, %d) maps to %+v", zlo, zhi, e)
				}
			}
			if !strings.Contains(mustQ(t, "map", "--output=json", c), `"compressed": true`) {
				t.Errorf("qimg map shows no compressed cluster")
			}
			for _, m := range [][]mapEntry{ours, theirs} {
				for i := range m {
					m[i].Offset = nil
				}
			}
			if !equalMaps(dropZeroOffsets(ours), dropZeroOffsets(theirs)) {
				t.Errorf("qemu-img map of qimg's image:\n%+v\nof qemu-img's:\n%+v", ours, theirs)
			}
			testkit.MustRun(t, "qemu-img", "convert", "-O", "raw", c, p("back-"+name+".raw"))
			back, err := os.ReadFile(p("back-" + name + ".raw"))
			if err != nil {
				t.Fatal(err)
			}
			testkit.MustEqual(t, back, src, "qemu-img convert -O raw of qimg's compressed image")
			mustQ(t, "convert", "-O", "raw", c, p("cback-"+name+".raw"))
			cback, err := os.ReadFile(p("cback-" + name + ".raw"))
			if err != nil {
				t.Fatal(err)
			}
			testkit.MustEqual(t, cback, src, "qimg convert -O raw of qimg's compressed image")
			// qimg reads qemu-img's compressed image back the same.
			mustQ(t, "convert", "-O", "raw", q, p("qback-"+name+".raw"))
			qback, err := os.ReadFile(p("qback-" + name + ".raw"))
			if err != nil {
				t.Fatal(err)
			}
			testkit.MustEqual(t, qback, src, "qimg convert -O raw of qemu-img's compressed image")
		})
	}
	if _, errOut, code := runQ(t, "convert", "-c", "-O", "raw", p("src.raw"), p("x.raw")); code != 1 || !strings.Contains(errOut, "Compression not supported") {
		t.Errorf("convert -c -O raw: exit %d, %q", code, errOut)
	}
}

func equalMaps(a, b []mapEntry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestConvertCompressedSparseZero: convert -c -S 0 writes every cluster
// compressed, those that read as zeros too, as qemu-img does (it left
// them unallocated, as without -S 0): qemu-img map of the output is
// qemu-img's own.
func TestConvertCompressedSparseZero(t *testing.T) {
	dir := qemuDir(t)
	src := qemuImage(t, filepath.Join(dir, "s.qcow2"), "qcow2", "2M", "write -P 1 0 4k", "write -P 0 256k 64k",
		"write -P 2 1M 100k")
	ours, theirs := filepath.Join(dir, "ours.qcow2"), filepath.Join(dir, "theirs.qcow2")
	mustQ(t, "convert", "-c", "-S", "0", "-O", "qcow2", src, ours)
	testkit.MustRun(t, "qemu-img", "convert", "-c", "-S", "0", "-O", "qcow2", src, theirs)
	a := testkit.MustRun(t, "qemu-img", "map", "--output=json", ours)
	b := testkit.MustRun(t, "qemu-img", "map", "--output=json", theirs)
	if a != b {
		t.Errorf("qemu-img map of ours:\n%s\nof qemu-img's:\n%s", a, b)
	}
	testkit.MustRun(t, "qemu-img", "compare", ours, theirs)
}

// TestConvert_CompressedPackedLikeQemu: on a buffered file compressed
// streams are packed byte to byte, as qemu-img packs them: 512 clusters
// of one repeated byte (each a stream of a few dozen bytes) made a file
// five times qemu-img's when every stream started on a sector. With
// -t none (O_DIRECT) streams stay sector aligned; both images read the
// same and pass qemu-img check.
func TestConvert_CompressedPackedLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := workDir(t)
	src := filepath.Join(d, "src.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", src, "32M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 32M", src)
	size := func(p string) int64 {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	theirs := filepath.Join(d, "theirs.qcow2")
	testkit.MustRun(t, "qemu-img", "convert", "-c", "-O", "qcow2", src, theirs)
	for _, c := range []struct {
		name  string
		cache string
		limit float64 // of qemu-img's size
	}{{"ours.qcow2", "writeback", 1.25}, {"direct.qcow2", "none", 6}} {
		p := filepath.Join(d, c.name)
		mustQ(t, "convert", "-c", "-t", c.cache, "-O", "qcow2", src, p)
		if got, want := size(p), size(theirs); float64(got) > c.limit*float64(want) {
			t.Errorf("-t %s: %d bytes, qemu-img's %d: more than %.2fx", c.cache, got, want, c.limit)
		}
		testkit.MustRun(t, "qemu-img", "compare", src, p)
		testkit.MustRun(t, "qemu-img", "check", p)
	}
}
