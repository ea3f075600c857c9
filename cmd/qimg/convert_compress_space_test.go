package main

import (
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestConvert_CompressedSpaceLikeQemu: a compressed output takes about
// the space qemu-img's takes on disk: the engine reserves no space ahead
// for it (its compressed clusters fill a part of a host cluster each,
// and with refcount_bits=1 one host cluster each: the space reserved
// around them stayed allocated, 9.7 MiB for qemu-img's 1 MiB).
func TestConvert_CompressedSpaceLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	src := filepath.Join(d, "src.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", src, "64M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 0x61 0 8M", "-c", "write -P 0x62 20M 4M", src)
	used := func(p string) int64 {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Blocks * 512
	}
	for _, o := range []string{"refcount_bits=1", "cluster_size=2M", "cluster_size=64k"} {
		theirs, ours := filepath.Join(d, "theirs.qcow2"), filepath.Join(d, "ours.qcow2")
		os.Remove(theirs)
		os.Remove(ours)
		testkit.MustRun(t, "qemu-img", "convert", "-c", "-O", "qcow2", "-o", o, src, theirs)
		if _, e, code := runQ(t, "convert", "-c", "-O", "qcow2", "-o", o, src, ours); code != 0 {
			t.Fatalf("%s: exit %d: %s", o, code, e)
		}
		testkit.QemuCheck(t, ours)
		testkit.MustRun(t, "qemu-img", "compare", "-q", src, ours)
		if q, u := used(theirs), used(ours); u > q+q/10+64<<10 {
			t.Errorf("%s: %d KiB on disk, qemu-img's %d KiB", o, u>>10, q>>10)
		}
	}
}

// TestConvert_CompressedRatioLikeQemu: zlib clusters are as small as
// qemu-img's (zlib level 6 in a 4 KiB window; the engine's encoder was
// klauspost's windowed one, whose clusters came out 3-6 % larger: 31.3
// MB for qemu-img's 29.6 MB on a tar of /usr/bin), and qemu-img reads
// them back: Go's sources and a low-entropy text, 64 KiB and 4 KiB
// clusters. The file ends on a whole sector, as qemu-img's (it ended
// where the last compressed cluster did).
func TestConvert_CompressedRatioLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	var corpus []byte
	filepath.WalkDir(filepath.Join(runtime.GOROOT(), "src", "net"), func(p string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() && strings.HasSuffix(p, ".go") && len(corpus) < 4<<20 {
			b, _ := os.ReadFile(p)
			corpus = append(corpus, b...)
		}
		return nil
	})
	if len(corpus) < 1<<20 {
		t.Skipf("only %d bytes of Go sources under GOROOT", len(corpus))
	}
	r := rand.New(rand.NewPCG(1, 2))
	text := make([]byte, 2<<20)
	for i := range text {
		text[i] = "ab"[r.IntN(2)]
	}
	for name, data := range map[string][]byte{"go": corpus[:len(corpus)&^511], "ab": text} {
		src := filepath.Join(d, name+".raw")
		if err := os.WriteFile(src, data, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, cs := range []string{"64k", "4k"} {
			theirs, ours := filepath.Join(d, "theirs.qcow2"), filepath.Join(d, "ours.qcow2")
			os.Remove(theirs)
			os.Remove(ours)
			testkit.MustRun(t, "qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "cluster_size="+cs, src, theirs)
			if _, e, code := runQ(t, "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "cluster_size="+cs, src, ours); code != 0 {
				t.Fatalf("%s %s: exit %d: %s", name, cs, code, e)
			}
			testkit.QemuCheck(t, ours)
			testkit.MustRun(t, "qemu-img", "compare", "-q", "-f", "raw", src, ours)
			if cs == "4k" {
				// Onto an existing image named by a json: spec: the
				// file that spec names is padded too.
				testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size="+cs, ours, strconv.Itoa(len(data)))
				spec := `json:{"driver":"qcow2","file":{"driver":"file","filename":"` + ours + `"}}`
				if _, e, code := runQ(t, "convert", "-n", "-c", "-f", "raw", "-O", "qcow2", src, spec); code != 0 {
					t.Fatalf("%s -n onto %s: exit %d: %s", name, spec, code, e)
				}
				if u := fileSize(t, ours); u%512 != 0 {
					t.Errorf("%s, -n onto a json: spec: %d bytes, not whole sectors", name, u)
				}
				testkit.MustRun(t, "qemu-img", "compare", "-q", "-f", "raw", src, ours)
			}
			if q, u := fileSize(t, theirs), fileSize(t, ours); float64(u) > 1.01*float64(q) {
				t.Errorf("%s, %s clusters: qimg's output %d bytes, qemu-img's %d (%.3fx)", name, cs, u, q, float64(u)/float64(q))
			} else if u%512 != 0 {
				// qemu-img ends the file on a whole sector.
				t.Errorf("%s, %s clusters: qimg's output %d bytes, not whole sectors (qemu-img's %d)", name, cs, u, q)
			}
		}
	}
}
