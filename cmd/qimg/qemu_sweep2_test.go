package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestCheck_LeakPunchLikeQemu: check -r leaks and -r all give the host
// space of the leaked clusters they free back to the file system, as
// qemu-img's do (their fixes discard whatever the image's discard
// options: QCOW2_DISCARD_ALWAYS), so the file has qemu-img's holes, and
// its size stays (qimg freed the counts and left the bytes).
func TestCheck_LeakPunchLikeQemu(t *testing.T) {
	t.Parallel()
	dir := qemuDir(t)
	for _, mode := range []string{"leaks", "all"} {
		var files []string
		for _, who := range []string{"ours", "theirs"} {
			p := qemuImage(t, filepath.Join(dir, who+"-"+mode+".qcow2"), "qcow2", "4M",
				"write -P 1 0 256k", "write -P 2 1M 64k", "write -P 3 2M 128k")
			damage(t, p, func(f imageFile) {
				l2 := int64(f.u64(int64(f.u64(40))) & entryMask)
				f.write(l2, make([]byte, 4*8))      // guest clusters 0-3: leaked in the middle
				f.write(l2+32*8, make([]byte, 2*8)) // 2M's two: at the end of the file
			})
			files = append(files, p)
		}
		args := []string{"check", "-r", mode}
		o, e, code := runQ(t, append(args, files[0])...)
		q, qe, qcode := testkit.Run(t, "qemu-img", append(args, files[1])...)
		if o != q || e != qe || code != qcode {
			t.Errorf("-r %s: qimg exit %d\n%s%s\nqemu-img exit %d\n%s%s", mode, code, o, e, qcode, q, qe)
		}
		mapArgs := []string{"map", "-f", "raw", "--output=json"}
		a := testkit.MustRun(t, "qemu-img", append(mapArgs, files[0])...)
		b := testkit.MustRun(t, "qemu-img", append(mapArgs, files[1])...)
		if a != b {
			t.Errorf("-r %s: the files' host maps differ:\nqimg's:\n%s\nqemu-img's:\n%s", mode, a, b)
		}
		// The block counts may differ by a file system block or so
		// where the maps agree; unpunched, qimg's had 6 clusters more.
		var s1, s2 syscall.Stat_t
		if syscall.Stat(files[0], &s1) != nil || syscall.Stat(files[1], &s2) != nil || s1.Size != s2.Size ||
			(s1.Blocks-s2.Blocks)*512 > 64<<10 || (s2.Blocks-s1.Blocks)*512 > 64<<10 {
			t.Errorf("-r %s: qimg's file has %d bytes in %d blocks, qemu-img's %d in %d", mode, s1.Size, s1.Blocks, s2.Size, s2.Blocks)
		}
		testkit.MustRun(t, "qemu-img", "compare", files[0], files[1])
	}
}

// TestConvert_TargetIsZeroBackingLikeQemu: convert -n --target-is-zero
// with -B prints qemu-img 7.2's error and, as it does, exits 0 without
// touching the output (with -p, its progress at 0% and 100%); qimg
// exited 1.
func TestConvert_TargetIsZeroBackingLikeQemu(t *testing.T) {
	dir := qemuDir(t)
	base := qemuImage(t, filepath.Join(dir, "base.qcow2"), "qcow2", "4M", "write -P 1 0 64k")
	src := qemuImage(t, filepath.Join(dir, "src.qcow2"), "qcow2", "4M", "write -P 2 0 64k")
	out := qemuOverlay(t, filepath.Join(dir, "out.qcow2"), "base.qcow2", "qcow2")
	want := mustReadFile(t, out)
	for _, args := range [][]string{
		{"convert", "-n", "--target-is-zero", "-B", base, "-O", "qcow2", src, out},
		{"convert", "-p", "-n", "--target-is-zero", "-B", base, "-F", "qcow2", "-O", "qcow2", src, out},
		{"convert", "--target-is-zero", "-n", "-O", "qcow2", "-B", base, src, filepath.Join(dir, "none.qcow2")},
	} {
		o, e, code := runQ(t, args...)
		q, qe, qcode := testkit.Run(t, "qemu-img", args...)
		if o != q || code != qcode || strings.TrimPrefix(e, "qimg: convert: ") != strings.TrimPrefix(qe, "qemu-img: ") {
			t.Errorf("%q: qimg exit %d %q %q; qemu-img exit %d %q %q", args, code, o, e, qcode, q, qe)
		}
	}
	if !bytes.Equal(mustReadFile(t, out), want) {
		t.Error("the output changed")
	}
	if _, err := os.Stat(filepath.Join(dir, "none.qcow2")); !os.IsNotExist(err) {
		t.Errorf("an output was created: %v", err)
	}
}

// TestCreate_LayoutLikeQemu: a new qcow2 image is qemu-img's, byte for
// byte: the file ends after the L1 table's last entry (qimg padded it
// to whole clusters: 256 KiB against qemu-img's 196624 bytes for 1G),
// the refcount blocks the L1 table needs beyond the first follow it, an
// empty image has its L1 table at offset 0, the feature name table is
// left out with clusters of 4 KiB and less (also when amend upgrades
// to compat=1.1), and the backing format extension comes first.
func TestCreate_LayoutLikeQemu(t *testing.T) {
	t.Parallel()
	dir := qemuDir(t)
	qemuImage(t, filepath.Join(dir, "base.qcow2"), "qcow2", "1G")
	for i, c := range []string{
		"1G", "0", "1M", "100G",
		"-o cluster_size=512 1M", "-o cluster_size=512 1G",
		"-o refcount_bits=64,cluster_size=512 1G", "-o cluster_size=4k 100G",
		"-o cluster_size=2M 1G", "-o refcount_bits=1 1G", "-o compat=0.10 1G",
		"-o extended_l2=on,lazy_refcounts=on 1G",
		"-b base.qcow2 -F qcow2", "-b base.qcow2 -F qcow2 -o cluster_size=4k",
	} {
		args := strings.Fields(c)
		ours, theirs := filepath.Join(dir, fmt.Sprintf("o%d.qcow2", i)), filepath.Join(dir, fmt.Sprintf("q%d.qcow2", i))
		mustQ(t, append([]string{"create", "-q", "-f", "qcow2", ours}, args...)...)
		testkit.MustRun(t, "qemu-img", append([]string{"create", "-q", "-f", "qcow2", theirs}, args...)...)
		a, b := mustReadFile(t, ours), mustReadFile(t, theirs)
		if !bytes.Equal(a, b) {
			t.Errorf("create %s: qimg's file (%d bytes) is not qemu-img's (%d bytes)", c, len(a), len(b))
		}
	}
	ours, theirs := filepath.Join(dir, "amend-o.qcow2"), filepath.Join(dir, "amend-q.qcow2")
	for _, p := range []string{ours, theirs} {
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10,cluster_size=4k", p, "64M")
	}
	mustQ(t, "amend", "-o", "compat=1.1", ours)
	testkit.MustRun(t, "qemu-img", "amend", "-o", "compat=1.1", theirs)
	if !bytes.Equal(mustReadFile(t, ours), mustReadFile(t, theirs)) {
		t.Error("amend -o compat=1.1 (4 KiB clusters): qimg's file is not qemu-img's")
	}
}

// TestResize_PreallocQcow2LikeQemu: resize --preallocation=metadata,
// falloc and full grow a qcow2 image with the new range's clusters
// allocated, as qemu-img's do (qimg refused them): metadata gives
// qemu-img's file byte for byte (L1 growth and an old end inside a
// cluster included); falloc and full allocate every new cluster and
// its host space, with the same contents and guest map (their host
// offsets differ: QEMU moves the refcount table to the end of the file
// first).
func TestResize_PreallocQcow2LikeQemu(t *testing.T) {
	t.Parallel()
	dir := qemuDir(t)
	for _, c := range []struct{ mode, opts, from, to string }{
		{"metadata", "cluster_size=64k", "4M", "8M"},
		{"metadata", "cluster_size=4k", "1000448", "3072000"},
		{"falloc", "cluster_size=64k", "4M", "8M"},
		{"full", "cluster_size=4k", "1000448", "3072000"},
	} {
		name := c.mode + "-" + c.opts + "-" + c.to
		var files []string
		for _, who := range []string{"ours", "theirs"} {
			p := filepath.Join(dir, who+"-"+name+".qcow2")
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", c.opts, p, c.from)
			qemuIO(t, p, "qcow2", "write -P 1 0 64k")
			files = append(files, p)
		}
		args := []string{"resize", "--preallocation=" + c.mode}
		o, e, code := runQ(t, append(args, files[0], c.to)...)
		q, qe, qcode := testkit.Run(t, "qemu-img", append(args, files[1], c.to)...)
		if o != q || code != qcode || e != "" || qe != "" {
			t.Errorf("%s: qimg exit %d %q %q; qemu-img exit %d %q %q", name, code, o, e, qcode, q, qe)
			continue
		}
		if c.mode == "metadata" {
			if !bytes.Equal(mustReadFile(t, files[0]), mustReadFile(t, files[1])) {
				t.Errorf("%s: qimg's file is not qemu-img's", name)
			}
			continue
		}
		testkit.MustRun(t, "qemu-img", "compare", files[0], files[1])
		a := guestMap(t, testkit.MustRun(t, "qemu-img", "map", "--output=json", files[0]))
		b := guestMap(t, testkit.MustRun(t, "qemu-img", "map", "--output=json", files[1]))
		if a != b {
			t.Errorf("%s: the guest maps differ:\nqimg's:\n%s\nqemu-img's:\n%s", name, a, b)
		}
		var s1, s2 syscall.Stat_t
		// Every new cluster has its space: QEMU's file has one cluster
		// more (the refcount table it moved), and the file system may
		// give either a few blocks more (68 KiB more for QEMU's in one
		// clean-clone CI run, 64 KiB in others): two clusters of slack.
		if syscall.Stat(files[0], &s1) != nil || syscall.Stat(files[1], &s2) != nil || s1.Blocks*512 < s2.Blocks*512-128<<10 {
			t.Errorf("%s: qimg's file has %d blocks, qemu-img's %d", name, s1.Blocks, s2.Blocks)
		}
	}
}

// TestAmend_BackingLikeQemu: amend -o backing_file/backing_fmt naming
// the image's own backing file and format is no change, as in qemu-img
// 7.2 (qimg refused any): the other options apply and amend exits 0;
// anything else (one left out, another name) fails after what QEMU
// changes first (the refcount width), as qemu-img's.
func TestAmend_BackingLikeQemu(t *testing.T) {
	t.Parallel()
	dir := qemuDir(t)
	qemuImage(t, filepath.Join(dir, "base.qcow2"), "qcow2", "4M", "write -P 1 0 64k")
	info := regexp.MustCompile(`(?m)^.*"(filename|actual-size)".*\n`)
	for _, opts := range []string{
		"backing_file=base.qcow2,backing_fmt=qcow2",
		"backing_file=base.qcow2,backing_fmt=qcow2,lazy_refcounts=on",
		"backing_file=base.qcow2",
		"backing_fmt=qcow2,refcount_bits=8",
		"backing_file=other.qcow2,backing_fmt=qcow2,lazy_refcounts=on",
	} {
		var files []string
		for _, who := range []string{"ours", "theirs"} {
			p := filepath.Join(dir, who+".qcow2")
			os.Remove(p)
			files = append(files, qemuOverlay(t, p, "base.qcow2", "qcow2", "write -P 2 64k 64k"))
		}
		o, e, code := runQ(t, "amend", "-o", opts, files[0])
		q, qe, qcode := testkit.Run(t, "qemu-img", "amend", "-o", opts, files[1])
		if o != q || code != qcode || firstWords(e, "qimg: amend: ") != firstWords(qe, "qemu-img: ") {
			t.Errorf("%s: qimg exit %d %q %q; qemu-img exit %d %q %q", opts, code, o, e, qcode, q, qe)
		}
		a := info.ReplaceAllString(testkit.MustRun(t, "qemu-img", "info", "--output=json", files[0]), "")
		b := info.ReplaceAllString(testkit.MustRun(t, "qemu-img", "info", "--output=json", files[1]), "")
		if a != b {
			t.Errorf("%s: the images differ:\nqimg's:\n%s\nqemu-img's:\n%s", opts, a, b)
		}
	}
}

// TestCheck_RepairLikeQemu: check -r repairs as qemu-img's do, to the
// byte: a referenced cluster whose refcount is 0 makes -r all rebuild
// the refcount structures (qimg fixed the count in place) and give the
// old ones' space back; -r leaks then stops before the COPIED flags (qimg
// reported them); a COPIED flag it sets says "Repairing" (qimg said
// "ERROR"); and -r leaks clears the corrupt bit of an image it finds
// consistent (qimg kept it).
func TestCheck_RepairLikeQemu(t *testing.T) {
	t.Parallel()
	dir := qemuDir(t)
	l2Of := func(f imageFile) int64 { return int64(f.u64(int64(f.u64(40))) & entryMask) }
	refOf := func(f imageFile, off int64) int64 { // its 16-bit refcount entry (refcount block 0)
		return int64(f.u64(int64(f.u64(48)))&entryMask) + off/65536*2
	}
	for _, c := range []struct {
		name string
		fn   func(f imageFile)
	}{
		{"copied-l1", func(f imageFile) { l1 := int64(f.u64(40)); f.putU64(l1, f.u64(l1)&^(1<<63)) }},
		{"copied-l2", func(f imageFile) { l2 := l2Of(f); f.putU64(l2, f.u64(l2)&^(1<<63)) }},
		{"data-refcount-0", func(f imageFile) { f.write(refOf(f, int64(f.u64(l2Of(f))&entryMask)), []byte{0, 0}) }},
		{"l2-refcount-0", func(f imageFile) { f.write(refOf(f, l2Of(f)), []byte{0, 0}) }},
		{"corrupt-bit", func(f imageFile) { f.putU64(72, 2) }},
	} {
		for _, mode := range []string{"leaks", "all"} {
			var files []string
			for _, who := range []string{"ours", "theirs"} {
				p := filepath.Join(dir, who+".qcow2")
				os.Remove(p)
				qemuImage(t, p, "qcow2", "4M", "write -P 1 0 256k")
				damage(t, p, c.fn)
				files = append(files, p)
			}
			o, e, code := runQ(t, "check", "-r", mode, files[0])
			q, qe, qcode := testkit.Run(t, "qemu-img", "check", "-r", mode, files[1])
			// stderr line for line, the rebuild's "Repairing cluster"
			// lines included, but for the tools' prefixes.
			e = strings.ReplaceAll(e, "qimg: check: ", "")
			qe = strings.ReplaceAll(qe, "qemu-img: ", "")
			if o != q || code != qcode || e != qe {
				t.Errorf("%s, -r %s: qimg exit %d\n%s%s\nqemu-img exit %d\n%s%s", c.name, mode, code, o, e, qcode, q, qe)
			}
			if !bytes.Equal(mustReadFile(t, files[0]), mustReadFile(t, files[1])) {
				t.Errorf("%s, -r %s: qimg's file is not qemu-img's", c.name, mode)
			}
			if code != 0 { // left damaged, as qemu-img leaves it
				os.Remove(files[0])
				os.Remove(files[1])
			}
		}
	}
}
