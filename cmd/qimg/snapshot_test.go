package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// The acceptance sequence, verbatim.
func TestSnapshot_Acceptance(t *testing.T) {
	img := filepath.Join(qemuDir(t), "img")
	testkit.MustRun(t, "qemu-img", "create", "-f", "qcow2", img, "64M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", img)
	mustQ(t, "snapshot", "-c", "s1", img)
	mustQ(t, "io", "-c", "write -P 2 0 64k", img)
	mustQ(t, "snapshot", "-a", "s1", img)
	testkit.MustRun(t, "qemu-io", "-c", "read -P 1 0 64k", img)
	testkit.QemuCheck(t, img)
	ours, qemu := qimgAndQemu(t, "snapshot", "-l", img)
	if ours != qemu || !strings.Contains(qemu, "\n1         s1 ") {
		t.Fatalf("qimg snapshot -l:\n%s\nqemu-img snapshot -l:\n%s", ours, qemu)
	}
}

// qemu-img creates snapshots, qimg applies and deletes them.
func TestSnapshot_QemuCreatesQimgApplies(t *testing.T) {
	img := filepath.Join(qemuDir(t), "q.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-f", "qcow2", img, "16M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 192k", "-c", "write -P 5 8M 4k", img)
	testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s1", img)
	testkit.MustRun(t, "qemu-io", "-c", "write -P 3 4k 128k", "-c", "write -P 4 12M 64k", img)
	testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s2", img)
	testkit.MustRun(t, "qemu-io", "-c", "write -P 6 0 4k", img)
	mustQ(t, "snapshot", "-a", "s1", img)
	testkit.QemuCheck(t, img)
	testkit.MustRun(t, "qemu-io", "-c", "read -P 1 0 192k", "-c", "read -P 5 8M 4k", "-c", "read -P 0 12M 64k", img)
	mustQ(t, "snapshot", "-d", "s1", img)
	testkit.QemuCheck(t, img)
	mustQ(t, "snapshot", "-a", "2", img) // by ID
	testkit.QemuCheck(t, img)
	testkit.MustRun(t, "qemu-io", "-c", "read -P 1 0 4k", "-c", "read -P 3 4k 128k", "-c", "read -P 4 12M 64k", img)
	mustQ(t, "snapshot", "-d", "s2", img)
	testkit.QemuCheck(t, img)
	if out := testkit.MustRun(t, "qemu-img", "snapshot", "-l", img); out != "" {
		t.Fatalf("snapshots left:\n%s", out)
	}
}

// qimg creates snapshots, qemu-img lists, applies and deletes them.
func TestSnapshot_QimgCreatesQemuApplies(t *testing.T) {
	img := filepath.Join(qemuDir(t), "o.qcow2")
	mustQ(t, "create", "-f", "qcow2", img, "16M")
	mustQ(t, "io", "-c", "write -P 1 0 192k", "-c", "write -P 5 8M 4k", img)
	mustQ(t, "snapshot", "-c", "s1", img)
	testkit.QemuCheck(t, img)
	mustQ(t, "io", "-c", "write -P 2 4k 8k", "-c", "write -P 7 15M 4k", img)
	mustQ(t, "snapshot", "-c", "s2", img)
	testkit.QemuCheck(t, img)
	ours, qemu := qimgAndQemu(t, "snapshot", "-l", img)
	if ours != qemu || !strings.Contains(qemu, "\n2         s2 ") {
		t.Fatalf("qimg snapshot -l:\n%s\nqemu-img snapshot -l:\n%s", ours, qemu)
	}
	testkit.MustRun(t, "qemu-img", "snapshot", "-a", "s1", img)
	testkit.MustRun(t, "qemu-io", "-c", "read -P 1 0 192k", "-c", "read -P 0 15M 4k", img)
	testkit.MustRun(t, "qemu-img", "snapshot", "-d", "s1", img)
	testkit.QemuCheck(t, img)
	testkit.MustRun(t, "qemu-img", "snapshot", "-a", "s2", img)
	testkit.MustRun(t, "qemu-io", "-c", "read -P 1 0 4k", "-c", "read -P 2 4k 8k", "-c", "read -P 7 15M 4k", img)
	testkit.MustRun(t, "qemu-img", "snapshot", "-d", "s2", img)
	testkit.QemuCheck(t, img)
}

func TestSnapshot_Errors(t *testing.T) {
	img := filepath.Join(workDir(t), "e.qcow2")
	mustQ(t, "create", "-f", "qcow2", img, "1M")
	if out := mustQ(t, "snapshot", "-l", img); out != "" {
		t.Fatalf("empty list printed %q", out)
	}
	if out := mustQ(t, "snapshot", img); out != "" { // no action: nothing, as qemu-img
		t.Fatalf("empty list printed %q", out)
	}
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"-a", "nosuch"}, "Could not apply snapshot 'nosuch': Failed to load snapshot: No such file or directory"},
		{[]string{"-d", "nosuch"}, "Could not delete snapshot 'nosuch': snapshot not found"},
		{[]string{"-c", "x", "-a", "y"}, "Cannot mix '-l', '-a', '-c', '-d'"},
		// One action given twice is refused too, as qemu-img (it
		// created or deleted once).
		{[]string{"-c", "x", "-c", "y"}, "Cannot mix '-l', '-a', '-c', '-d'"},
		{[]string{"-d", "x", "-d", "x"}, "Cannot mix '-l', '-a', '-c', '-d'"},
		{[]string{"-l", "-l"}, "Cannot mix '-l', '-a', '-c', '-d'"},
	} {
		_, e, code := runQ(t, append(append([]string{"snapshot"}, tc.args...), img)...)
		if code != 1 || !strings.Contains(e, tc.msg) {
			t.Errorf("snapshot %q: exit %d, %q; want 1, %q", tc.args, code, e, tc.msg)
		}
	}
	mustQ(t, "snapshot", "-c", "s1", img)
	// -d matches names only, as qemu-img 7.2.
	if _, _, code := runQ(t, "snapshot", "-d", "1", img); code != 1 {
		t.Fatalf("snapshot -d by ID: exit %d", code)
	}
	mustQ(t, "snapshot", "-d", "s1", img)
	if _, _, code := runQ(t, "snapshot", "-l", filepath.Join(filepath.Dir(img), "missing")); code != 1 {
		t.Fatalf("missing file: exit %d", code)
	}
}

// A snapshot of another disk size is applied as QEMU applies it: the
// image takes the snapshot's size and contents. qimg and qemu-img run
// the same steps on two copies (with a backing file, so that the grown
// range must read as zeros, not as the backing file), and the results
// compare equal and check clean.
func TestSnapshot_ApplyOtherSize(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	d := t.TempDir()
	base := filepath.Join(d, "base.raw")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "raw", base, "4M")
	testkit.MustRun(t, "qemu-io", "-f", "raw", "-c", "write -P 9 0 4M", base)
	ours, theirs := filepath.Join(d, "ours.qcow2"), filepath.Join(d, "theirs.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", ours, "1M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", "-c", "write -P 2 960k 64k", ours)
	testkit.MustRun(t, "qemu-img", "snapshot", "-c", "small", ours)
	testkit.MustRun(t, "qemu-img", "resize", "-q", ours, "3M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 3 2M 64k", "-c", "write -P 4 0 4k", ours)
	testkit.MustRun(t, "qemu-img", "snapshot", "-c", "big", ours)
	testkit.MustRun(t, "qemu-img", "resize", "-q", "--shrink", ours, "2M")
	cp(t, ours, theirs)
	for _, step := range [][]string{
		{"snapshot", "-a", "small", "IMG"}, // 2M -> 1M
		{"snapshot", "-a", "big", "IMG"},   // 1M -> 3M: [1M, 2M) zeros, not the backing file
		{"snapshot", "-a", "small", "IMG"},
	} {
		_, e1, c1 := runQ(t, replaceArg(step, "IMG", ours)...)
		_, e2, c2 := testkit.Run(t, "qemu-img", replaceArg(step, "IMG", theirs)...)
		if c1 != 0 || c2 != 0 {
			t.Fatalf("%q: qimg exit %d %q, qemu-img exit %d %q", step, c1, e1, c2, e2)
		}
		if a, b := virtualSize(t, ours), virtualSize(t, theirs); a != b {
			t.Fatalf("%q: virtual size %d, qemu-img's %d", step, a, b)
		}
		testkit.MustRun(t, "qemu-img", "compare", ours, theirs)
		testkit.QemuCheck(t, ours)
		if step[2] == "big" {
			testkit.MustRun(t, "qemu-io", "-c", "read -P 4 0 4k", "-c", "read -P 2 960k 64k", "-c", "read -P 0 1M 1M", "-c", "read -P 3 2M 64k", ours)
		}
	}
	testkit.MustRun(t, "qemu-io", "-c", "read -P 1 0 64k", "-c", "read -P 2 960k 64k", ours)
}

// virtualSize is qemu-img info's virtual size of img.
func virtualSize(t *testing.T, img string) int64 {
	t.Helper()
	out, _, _ := testkit.Run(t, "qemu-img", "info", "--output=json", img)
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("qemu-img info %s: %v\n%s", img, err, out)
	}
	return info.VirtualSize
}

// TestSnapshot_ApplyOfEmptyDisk: a snapshot of a 0-byte disk records
// size 0, and applying it after a growth makes the disk 0 bytes again,
// as qemu-img does; 0 is a recorded size, not a missing one.
func TestSnapshot_ApplyOfEmptyDisk(t *testing.T) {
	testkit.NeedQemu(t)
	d := workDir(t)
	for _, tool := range []string{"qimg", "qemu-img"} {
		p := filepath.Join(d, tool+".qcow2")
		mustQ(t, "create", "-q", "-f", "qcow2", p, "0")
		img := func(args ...string) {
			if tool == "qimg" {
				mustQ(t, args...)
			} else {
				testkit.MustRun(t, "qemu-img", args...)
			}
		}
		img("snapshot", "-c", "s", p)
		img("resize", "-q", p, "1M")
		qio(t, p, "write -P 1 0 64k")
		img("snapshot", "-a", "s", p)
		if out := testkit.MustRun(t, "qemu-img", "info", p); !strings.Contains(out, "virtual size: 0 B (0 bytes)") {
			t.Errorf("%s: after applying the snapshot of the empty disk:\n%s", tool, out)
		}
	}
}

// TestSnapshot_LongNameListedLikeQemu: a snapshot name of 2000 bytes:
// the image reopens, and qimg info and snapshot -l list it as qemu-img
// does (they read 1200 bytes a snapshot and failed; review 53).
func TestSnapshot_LongNameListedLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	p := filepath.Join(workDir(t), "l.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "1M")
	name := strings.Repeat("n", 2000)
	mustQ(t, "snapshot", "-c", name, p)
	// qemu-img lists names cut at 255 bytes.
	if ours, _, code := runQ(t, "info", "--output=json", p); code != 0 || !strings.Contains(ours, `"`+name[:255]+`"`) {
		t.Errorf("qimg info: exit %d:\n%.300s", code, ours)
	}
	ours, _, code := runQ(t, "snapshot", "-l", p)
	if theirs := testkit.MustRun(t, "qemu-img", "snapshot", "-l", p); code != 0 || ours != theirs {
		t.Errorf("qimg snapshot -l: exit %d:\n%.400s\nqemu-img:\n%.400s", code, ours, theirs)
	}
	testkit.QemuCheck(t, p)
}

// TestSnapshot_ApplyWithBitmapsLikeQemu: qemu-img snapshot -a refuses an
// image with persistent dirty bitmaps, enabled or not (before it looks
// for the snapshot); qimg applied it (review 53).
func TestSnapshot_ApplyWithBitmapsLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := workDir(t)
	for _, c := range []struct{ snap, flag string }{{"s", ""}, {"s", "--disable"}, {"nope", ""}} {
		var got [2]string
		for i, tool := range []string{"qemu-img", "qimg"} {
			p := filepath.Join(dir, tool+".qcow2")
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "16M")
			testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s", p)
			args := []string{"bitmap", "--add", p, "b"}
			if c.flag != "" {
				args = []string{"bitmap", "--add", c.flag, p, "b"}
			}
			testkit.MustRun(t, "qemu-img", args...)
			var errOut string
			var code int
			if tool == "qemu-img" {
				_, errOut, code = testkit.Run(t, "qemu-img", "snapshot", "-a", c.snap, p)
				errOut = strings.TrimPrefix(errOut, "qemu-img: ")
			} else {
				_, errOut, code = runQ(t, "snapshot", "-a", c.snap, p)
				errOut = strings.TrimPrefix(errOut, "qimg: snapshot: ")
			}
			got[i] = fmt.Sprintf("exit %d: %s", code, errOut)
		}
		if got[0] != got[1] {
			t.Errorf("snapshot -a %s with a bitmap %s:\nqemu-img %s\nqimg     %s", c.snap, c.flag, got[0], got[1])
		}
	}
}
