package main

import (
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestConvert_CompressBackingLikeQemu: convert -c -B writes a compressed
// output over a backing file as qemu-img 7.2 does: whole clusters the
// source leaves to its backing file stay unallocated, its zero clusters
// become zero clusters, its data clusters are written compressed, and a
// cluster the source holds only in part (its clusters are smaller) is
// read through its chain and written whole. Over the source's own
// backing file the output reads as the source; over another one, shorter
// than the source, what the source leaves to its backing file reads as
// that one (zeros past its end are left out). With -S 0, and with -n into
// an existing overlay of the backing file. Ours and
// qemu-img's outputs have the same contents and the same map, byte for
// byte, and pass qemu-img check (qemuDir).
func TestConvert_CompressBackingLikeQemu(t *testing.T) {
	t.Parallel()
	d := qemuDir(t)
	qemuImage(t, filepath.Join(d, "base.qcow2"), "qcow2", "1M", "write -P 7 0 1M")
	qemuImage(t, filepath.Join(d, "short.qcow2"), "qcow2", "256k", "write -P 7 0 256k")
	top := qemuOverlay(t, filepath.Join(d, "top.qcow2"), "base.qcow2", "qcow2", "write -P 8 64k 64k",
		"write -P 9 200k 4k", "write -z 300k 64k", "write -P 7 512k 64k", "write -z 640k 128k")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", "-b", "base.qcow2", "-F", "qcow2",
		filepath.Join(d, "top4.qcow2"), "2M")
	top4 := filepath.Join(d, "top4.qcow2")
	qemuIO(t, top4, "qcow2", "write -P 8 4k 4k", "write -P 9 100k 68k", "write -z 300k 8k", "write -z 1200k 100k",
		"write -P 1 1500k 4k")
	n := 0
	for _, src := range []string{top, top4} {
		for _, back := range []string{"base.qcow2", "short.qcow2"} {
			for _, sparse := range []string{"4k", "0"} {
				n++
				ours := filepath.Join(d, "ours"+string(rune('0'+n)))
				theirs := filepath.Join(d, "theirs"+string(rune('0'+n)))
				args := []string{"convert", "-O", "qcow2", "-c", "-S", sparse, "-B", back, "-F", "qcow2", src}
				mustQ(t, append(args, ours)...)
				testkit.MustRun(t, "qemu-img", append(args, theirs)...)
				what := filepath.Base(src) + " -B " + back + " -S " + sparse
				if out, _, code := testkit.Run(t, "qemu-img", "compare", theirs, ours); code != 0 {
					t.Errorf("%s: qemu-img compare: exit %d: %s", what, code, out)
				}
				if out, _, code := testkit.Run(t, "qemu-img", "compare", src, ours); back == "base.qcow2" && code != 0 {
					t.Errorf("%s: qemu-img compare with the source: exit %d: %s", what, code, out)
				}
				sameMap(t, what, ours, theirs)
			}
		}
	}
	// -n: into an existing overlay of the backing file.
	ours := qemuOverlay(t, filepath.Join(d, "n-ours.qcow2"), "base.qcow2", "qcow2")
	theirs := qemuOverlay(t, filepath.Join(d, "n-theirs.qcow2"), "base.qcow2", "qcow2")
	testkit.MustRun(t, "qemu-img", "resize", "-q", ours, "2M")
	testkit.MustRun(t, "qemu-img", "resize", "-q", theirs, "2M")
	args := []string{"convert", "-n", "-O", "qcow2", "-c", "-B", "base.qcow2", top4}
	mustQ(t, append(args, ours)...)
	testkit.MustRun(t, "qemu-img", append(args, theirs)...)
	if out, _, code := testkit.Run(t, "qemu-img", "compare", top4, ours); code != 0 {
		t.Errorf("-n: qemu-img compare with the source: exit %d: %s", code, out)
	}
	sameMap(t, "-n", ours, theirs)
}

// sameMap fails t unless qemu-img map --output=json of the qcow2 images
// ours and theirs is the same, byte for byte.
func sameMap(t *testing.T, what, ours, theirs string) {
	t.Helper()
	a := testkit.MustRun(t, "qemu-img", "map", "--output=json", ours)
	b := testkit.MustRun(t, "qemu-img", "map", "--output=json", theirs)
	if a != b {
		t.Errorf("%s: map of ours:\n%s\nof qemu-img's:\n%s", what, a, b)
	}
}
