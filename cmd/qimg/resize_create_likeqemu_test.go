package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestResize_ShrinkNamedOtherwiseLikeQemu: a shrink of a qcow2 image
// named otherwise than by its plain path (file: prefix, json:, an
// encrypted image through --image-opts, a data file given by
// data-file.filename) succeeds as qemu-img's does. qimg shrank the
// image, then failed reopening it by the raw argument to cut the file
// (trimFile), and exited 1 over an image it had changed.
func TestResize_ShrinkNamedOtherwiseLikeQemu(t *testing.T) {
	d := qemuDir(t)
	t.Parallel()
	base := qemuImage(t, filepath.Join(d, "base.qcow2"), "qcow2", "64M", "write -P 1 0 4M", "write -P 2 60M 4M")
	d2 := testkit.Dir(t) // encrypted and data file images: checkAll cannot open them
	enc := filepath.Join(d2, "enc.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "--object", "secret,id=s0,data=pw",
		"-o", "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10", enc, "64M")
	dfq := filepath.Join(d2, "df.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+filepath.Join(d2, "gone.raw"), dfq, "64M")
	os.Remove(filepath.Join(d2, "gone.raw")) // the header's name: only data-file.filename opens
	for _, tc := range []struct {
		name, src string
		args      func(img string) []string
	}{
		{"file-prefix", base, func(img string) []string { return []string{"resize", "--shrink", "file:" + img, "32M"} }},
		{"json", base, func(img string) []string {
			return []string{"resize", "--shrink", `json:{"driver":"qcow2","file":{"driver":"file","filename":"` + img + `"}}`, "32M"}
		}},
		{"encrypted-image-opts", enc, func(img string) []string {
			return []string{"resize", "--object", "secret,id=s0,data=pw", "--image-opts", "--shrink",
				"driver=qcow2,file.filename=" + img + ",encrypt.key-secret=s0", "32M"}
		}},
		{"data-file-option", dfq, func(img string) []string {
			return []string{"resize", "--image-opts", "--shrink",
				"driver=qcow2,file.filename=" + img + ",data-file.filename=" + img + ".raw", "32M"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := d
			if tc.src != base {
				dir = d2
			}
			ours, theirs := filepath.Join(dir, tc.name+"-ours.qcow2"), filepath.Join(dir, tc.name+"-theirs.qcow2")
			cp(t, tc.src, ours)
			cp(t, tc.src, theirs)
			if tc.src == dfq {
				for _, p := range []string{ours, theirs} {
					if err := os.WriteFile(p+".raw", nil, 0o644); err != nil {
						t.Fatal(err)
					}
					os.Truncate(p+".raw", 64<<20)
				}
			}
			o1, e1, c1 := runQ(t, tc.args(ours)...)
			o2, e2, c2 := testkit.Run(t, "qemu-img", tc.args(theirs)...)
			if c1 != c2 || o1 != o2 {
				t.Errorf("qimg exit %d %q %q; qemu-img exit %d %q %q", c1, o1, e1, c2, o2, e2)
			}
			if tc.src == dfq {
				return // the header names a missing data file: no plain open
			}
			vs := func(p string) any {
				return decodeJSON(t, testkit.MustRun(t, "qemu-img", "info", "-U", "--output=json", p))["virtual-size"]
			}
			if a, b := vs(ours), vs(theirs); a != b {
				t.Errorf("virtual size: ours %v, qemu-img's %v", a, b)
			}
		})
	}
}

// TestResize_DataFilePreallocLikeQemu: --preallocation=falloc and full
// reserve the grown range of an external data file, as qemu-img's do;
// qimg only linked the clusters (metadata).
func TestResize_DataFilePreallocLikeQemu(t *testing.T) {
	d := qemuDir(t)
	t.Parallel()
	for _, mode := range []string{"falloc", "full"} {
		var blocks [2]int64
		for i, tool := range []string{"qimg", "qemu-img"} {
			img := filepath.Join(d, mode+"-"+tool+".qcow2")
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+img+".raw", img, "1M")
			args := []string{"resize", "--preallocation=" + mode, img, "64M"}
			if tool == "qimg" {
				mustQ(t, args...)
			} else {
				testkit.MustRun(t, "qemu-img", args...)
			}
			st, err := os.Stat(img + ".raw")
			if err != nil {
				t.Fatal(err)
			}
			blocks[i] = st.Sys().(*syscall.Stat_t).Blocks * 512
		}
		if blocks[1] >= 60<<20 && blocks[0] < 60<<20 {
			t.Errorf("%s: data file allocates %d bytes with qimg, %d with qemu-img", mode, blocks[0], blocks[1])
		}
	}
}

var _ = strings.Contains

// TestCreate_Qcow2OptionRefusalsLikeQemu: what QEMU's qcow2 driver
// refuses after the "Formatting" line, qimg refuses too, in its words:
// refcount_bits=0 (qimg took it as the default 16 and created the
// image), refcount_bits=128 (refused before "Formatting" in qimg's own
// words), -F without -b (qimg created the image), and the v3-only
// features of compat=0.10 (qimg's "qcow2: unsupported feature" words).
func TestCreate_Qcow2OptionRefusalsLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := workDir(t)
	for _, args := range [][]string{
		{"-o", "refcount_bits=0", "1M"},
		{"-o", "refcount_bits=128", "1M"},
		{"-F", "qcow2", "1M"},
		{"-o", "compat=0.10,refcount_bits=8", "1M"},
		{"-o", "compat=0.10,extended_l2=on", "1M"},
		{"-o", "compat=0.10,compression_type=zstd", "1M"},
		{"-o", "extended_l2=on,cluster_size=8k", "1M"},
	} {
		createLikeQemu(t, d, args)
	}
}

// TestResize_V2SnapshotsWordedLikeQemu: the refusal to resize a v2
// image with snapshots is qemu-img's message.
func TestResize_V2SnapshotsWordedLikeQemu(t *testing.T) {
	d := qemuDir(t)
	ours := filepath.Join(d, "ours.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", ours, "1M")
	testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s", ours)
	theirs := filepath.Join(d, "theirs.qcow2")
	cp(t, ours, theirs)
	for _, a := range [][]string{{"resize", "IMG", "2M"}, {"resize", "--shrink", "IMG", "512k"}} {
		sameResize(t, ours, theirs, a...)
	}
}

// TestCommands_SmallRefusalsLikeQemu: create -u -b without a size is
// refused (qimg opened the backing file anyway and took its size),
// resize has no -U (qimg accepted and ignored it), and snapshot without
// an action opens the image and does nothing (qimg listed the
// snapshots); bitmap's refusals say what qemu-img says (a merge source
// that does not open is no failed operation); so do resize's of sizes
// past 2^62 (qimg's size parser stopped there) and L1 tables past 32
// MiB. Exit codes, messages and
// the files as qemu-img leaves them.
func TestCommands_SmallRefusalsLikeQemu(t *testing.T) {
	d := qemuDir(t)
	t.Chdir(d)
	qemuImage(t, filepath.Join(d, "base.qcow2"), "qcow2", "1M", "write -P 5 0 64k")
	testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s0", "base.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "--object", "secret,id=s0,data=pw", "-f", "qcow2",
		"-o", "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10", "enc.qcow2", "1M")
	t.Cleanup(func() { os.Remove(filepath.Join(d, "enc.qcow2")) }) // checkAll has no secret
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+filepath.Join(d, "dfi.raw"), "dfi.qcow2", "1M")
	for _, args := range [][]string{
		{"check", "enc.qcow2"},                                                     // without its secret: QEMU's words, without the library's prefix
		{"snapshot", "-c", "s", "dfi.qcow2"}, {"snapshot", "-a", "s", "dfi.qcow2"}, // a data file: no internal snapshots
		{"create", "-f", "qcow2", "-u", "-b", "base.qcow2", "-F", "qcow2", "new.qcow2"},
		{"resize", "-U", "base.qcow2", "2M"},
		{"snapshot", "base.qcow2"},
		{"snapshot", "-U", "base.qcow2"},
		{"bitmap", "--merge", "b1", "-F", "qcow2", "base.qcow2", "b1"},
		{"bitmap", "--add", "base.qcow2", ""},
		{"bitmap", "--merge", "b1", "-b", "nosuch.qcow2", "base.qcow2", "b1"},
		{"resize", "base.qcow2", "8E"}, {"resize", "base.qcow2", "+8E"}, {"resize", "base.qcow2", "16E"},
		{"resize", "base.qcow2", "99999999999999999999"}, {"resize", "base.qcow2", "5E"}, {"resize", "base.qcow2", "1.5E"},
		{"info", "--image-opts", "driver=qcow2,file.filename=base.qcow2,file.aio=foo"},
	} {
		before, err := os.ReadFile("base.qcow2")
		if err != nil {
			t.Fatal(err)
		}
		out, oerr, code := runQ(t, args...)
		_, statErr := os.Stat("new.qcow2")
		os.Remove("new.qcow2")
		after, _ := os.ReadFile("base.qcow2")
		tout, terr, qcode := testkit.Run(t, "qemu-img", args...)
		_, qstatErr := os.Stat("new.qcow2")
		os.Remove("new.qcow2")
		if out != tout || code != qcode || ourMessage(oerr) != qemuMessage(terr) || (statErr == nil) != (qstatErr == nil) {
			t.Errorf("%q: exit %d, qemu-img %d; created %v, qemu-img %v\nours:\n%s%s\nqemu-img:\n%s%s",
				args, code, qcode, statErr == nil, qstatErr == nil, out, oerr, tout, terr)
		}
		if !bytes.Equal(before, after) {
			t.Errorf("%q changed base.qcow2", args)
		}
	}
}
