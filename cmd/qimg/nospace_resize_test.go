package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/uring/looptest"
)

// growRun is one tool's resize on a nearly full file system: its exit
// code, the first line of its stderr without the tool's prefix (paths
// as DIR), the file's length after, qemu-img check's output and exit
// code, and whether the image reads as before.
type growRun struct {
	code       int
	stderr     string
	size       int64
	check      string
	checkCode  int
	readsAfter bool
}

// growNearlyFull makes a 1 GiB qcow2 image with clusters of cs bytes and
// data at 0 and 512M on its own small file system (a tmpfs, or a loop
// ext4), leaves free bytes free, runs tool (qemu-img or qimg) with args
// (IMG for the image) and reports what it left.
func growNearlyFull(t *testing.T, tool string, ext4 bool, cs int, free int64, args ...string) growRun {
	t.Helper()
	var dir string
	if ext4 {
		dir = looptest.Ext4Dir(t, 48<<20)
	} else {
		dir = looptest.SmallTmpfs(t, 16<<20)
	}
	img := filepath.Join(dir, "img.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", fmt.Sprintf("cluster_size=%d", cs), img, "1G")
	reads := []string{"-c", "read -P 1 0 64k", "-c", "read -P 2 512M 64k"}
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", "-c", "write -P 2 512M 64k", img)
	looptest.FillFS(t, dir, free)
	a := make([]string, len(args))
	for i, s := range args {
		a[i] = strings.ReplaceAll(s, "IMG", img)
	}
	var r growRun
	if tool == "qemu-img" {
		_, r.stderr, r.code = testkit.Run(t, "qemu-img", a...)
	} else {
		_, r.stderr, r.code = runQ(t, a...)
		r.stderr = asQemu(r.stderr)
	}
	r.stderr, _, _ = strings.Cut(r.stderr, "\n")
	r.stderr = strings.ReplaceAll(strings.TrimPrefix(r.stderr, "qemu-img: "), dir, "DIR")
	st, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	r.size = st.Size()
	r.check, _, r.checkCode = testkit.Run(t, "qemu-img", "check", img)
	r.check = strings.ReplaceAll(r.check, dir, "DIR")
	out, e, code := testkit.Run(t, "qemu-io", append(append([]string{"-r"}, reads...), img)...)
	r.readsAfter = code == 0 && e == "" && !strings.Contains(out, "Pattern verification failed")
	return r
}

// TestResize_PreallocNoSpaceLikeQemu: qimg resize --preallocation=full
// or falloc on a nearly full file system fails where qemu-img fails, in
// its words (the first line: qemu-img's close adds "Failed to flush the
// refcount block cache" where its refcount block could not be written),
// and leaves the file as long as qemu-img's, with qemu-img check saying
// the same (no errors, or the same leaked clusters) and the data reading
// as before. As QEMU's qcow2_co_truncate, the growth writes a new
// refcount table (exactly the size it needs) and the refcount blocks
// for the new clusters first ("Failed to resize refcount structures"),
// then gives the data their space ("Failed to resize underlying file:
// ..."), and cuts the file back to its length before that when it
// fails. qimg linked the clusters first: it failed writing an L2 table
// back into the sparse range ("qcow2: preallocating the grown range:
// cache l2: table at 0x200a0000: No space left on device") and left the
// file gigabytes longer (sparse; 64 MiB longer for 64 KiB clusters at
// 64 KiB free, where qemu-img's is one cluster longer: its new refcount
// table).
func TestResize_PreallocNoSpaceLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root (tmpfs and loop mounts)")
	}
	type point struct {
		ext4 bool
		cs   int
		free int64
		grow string
	}
	var points []point
	// 64 KiB clusters, +3G: the L1 table grows, a new refcount block
	// is needed past 2 GiB; the refcount structures fail up to 128 KiB
	// free, the data past.
	for _, f := range []int64{4 << 10, 64 << 10, 128 << 10, 192 << 10, 384 << 10} {
		points = append(points, point{false, 64 << 10, f, "+3G"})
	}
	// 64 KiB free: the data fail (qimg's file grew by the range).
	points = append(points, point{false, 64 << 10, 64 << 10, "+72M"}, point{true, 64 << 10, 64 << 10, "+3G"})
	// 2 MiB clusters: the new refcount table is a 2 MiB cluster.
	for _, f := range []int64{0, 64 << 10, 2 << 20, 3 << 20} {
		points = append(points, point{false, 2 << 20, f, "+64M"})
	}
	points = append(points, point{true, 2 << 20, 64 << 10, "+64M"})
	for _, mode := range []string{"full", "falloc"} {
		for _, p := range points {
			name := fmt.Sprintf("%s/cs=%d/free=%d/%s/ext4=%v", mode, p.cs, p.free, p.grow, p.ext4)
			t.Run(name, func(t *testing.T) {
				args := []string{"resize", "--preallocation=" + mode, "IMG", p.grow}
				theirs := growNearlyFull(t, "qemu-img", p.ext4, p.cs, p.free, args...)
				ours := growNearlyFull(t, "qimg", p.ext4, p.cs, p.free, args...)
				if theirs.code == 0 {
					t.Fatalf("qemu-img %q succeeded: the case no longer runs out of space", args)
				}
				if ours.code != theirs.code || ours.stderr != theirs.stderr {
					t.Errorf("qimg exit %d %q; qemu-img exit %d %q", ours.code, ours.stderr, theirs.code, theirs.stderr)
				}
				if ours.size != theirs.size {
					t.Errorf("qimg left a file of %d bytes, qemu-img %d", ours.size, theirs.size)
				}
				if ours.checkCode != theirs.checkCode || ours.check != theirs.check {
					t.Errorf("qemu-img check of qimg's image: exit %d\n%s\nof qemu-img's: exit %d\n%s", ours.checkCode, ours.check, theirs.checkCode, theirs.check)
				}
				if !ours.readsAfter || !theirs.readsAfter {
					t.Errorf("the data read back: qimg's %v, qemu-img's %v", ours.readsAfter, theirs.readsAfter)
				}
			})
		}
	}
}

// TestResize_PreallocLayoutLikeQemu: a growth with full or falloc
// preallocation lays the image out as qemu-img 7.2 does where the new
// range needs no new L2 table: a new refcount table at the end of the
// file (qcow2_refcount_area, exactly as large as needed), the old one
// freed, the data after it; the files are byte for byte the same. qimg
// kept the refcount table and put the data at the end (the file one
// cluster shorter).
func TestResize_PreallocLayoutLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	for _, mode := range []string{"full", "falloc"} {
		for _, cs := range []string{"65536", "2M"} {
			d := t.TempDir()
			var files [2][]byte
			for i, tool := range []string{"qemu-img", "qimg"} {
				img := filepath.Join(d, tool+".qcow2")
				testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size="+cs, img, "128M")
				testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 1M", "-c", "write -P 2 100M 1M", img)
				args := []string{"resize", "-q", "--preallocation=" + mode, img, "200M"}
				if tool == "qemu-img" {
					testkit.MustRun(t, "qemu-img", args...)
				} else {
					mustQ(t, args...)
				}
				testkit.QemuCheck(t, img)
				b, err := os.ReadFile(img)
				if err != nil {
					t.Fatal(err)
				}
				files[i] = b
			}
			if !bytes.Equal(files[0], files[1]) {
				i := 0
				for i < min(len(files[0]), len(files[1])) && files[0][i] == files[1][i] {
					i++
				}
				t.Errorf("%s, clusters of %s: qimg's image (%d bytes) differs from qemu-img's (%d bytes) at byte %#x", mode, cs, len(files[1]), len(files[0]), i)
			}
		}
	}
}

// TestResize_PreallocMetadataNoSpaceLikeQemu: qimg resize
// --preallocation=metadata out of space fails in qemu-img's words
// (preallocate_co's "Allocating clusters failed: No space left on
// device"; the first line: qemu-img's close may add "Failed to flush
// the refcount block cache"), and qemu-img check says of its image what
// it says of qemu-img's (no errors; qemu-img keeps what it linked past
// the size, qimg takes it back). qimg said "qcow2: preallocating the grown
// range: cache l2: table at 0x90000: No space left on device". The
// file's length is not compared: both leave it sparse past the tables
// they wrote, qemu-img up to where its writes got, qimg over the range.
func TestResize_PreallocMetadataNoSpaceLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root (tmpfs mounts)")
	}
	for _, p := range []struct {
		cs   int
		free int64
		grow string
	}{
		{64 << 10, 4 << 10, "+3G"},
		{64 << 10, 64 << 10, "+3G"},
		{64 << 10, 128 << 10, "+3G"},
		{2 << 20, 64 << 10, "+1T"},
	} {
		t.Run(fmt.Sprintf("cs=%d/free=%d/%s", p.cs, p.free, p.grow), func(t *testing.T) {
			args := []string{"resize", "--preallocation=metadata", "IMG", p.grow}
			theirs := growNearlyFull(t, "qemu-img", false, p.cs, p.free, args...)
			ours := growNearlyFull(t, "qimg", false, p.cs, p.free, args...)
			if theirs.code == 0 {
				t.Fatalf("qemu-img %q succeeded: the case no longer runs out of space", args)
			}
			if ours.code != theirs.code || ours.stderr != theirs.stderr {
				t.Errorf("qimg exit %d %q; qemu-img exit %d %q", ours.code, ours.stderr, theirs.code, theirs.stderr)
			}
			strip := func(s string) string {
				// Not the end offset (the file's length) nor the
				// allocation: qemu-img leaves what it linked past the
				// size linked, qimg takes it back.
				var keep []string
				for _, l := range strings.Split(s, "\n") {
					if !strings.Contains(l, "Image end offset") && !strings.Contains(l, "allocated,") {
						keep = append(keep, l)
					}
				}
				return strings.Join(keep, "\n")
			}
			if ours.checkCode != theirs.checkCode || strip(ours.check) != strip(theirs.check) {
				t.Errorf("qemu-img check of qimg's image: exit %d\n%s\nof qemu-img's: exit %d\n%s", ours.checkCode, ours.check, theirs.checkCode, theirs.check)
			}
			if !ours.readsAfter || !theirs.readsAfter {
				t.Errorf("the data read back: qimg's %v, qemu-img's %v", ours.readsAfter, theirs.readsAfter)
			}
		})
	}
}
