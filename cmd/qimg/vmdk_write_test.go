package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// vmdkMap is qemu-img map's JSON of a VMDK image without host offsets,
// neighbours alike merged (grains are allocated in the order writes
// come, which splits QEMU's runs where their offsets do not follow).
func vmdkMap(t *testing.T, p string) string {
	t.Helper()
	var m []struct {
		Start, Length       int64
		Depth               int
		Present, Zero, Data bool
	}
	if err := json.Unmarshal([]byte(testkit.MustRun(t, "qemu-img", "map", "-f", "vmdk", "--output=json", p)), &m); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(m); i++ {
		a, b := m[i-1], m[i]
		if a.Start+a.Length == b.Start && a.Depth == b.Depth && a.Present == b.Present && a.Zero == b.Zero && a.Data == b.Data {
			m[i-1].Length += b.Length
			m = append(m[:i], m[i+1:]...)
			i--
		}
	}
	return fmt.Sprintf("%+v", m)
}

// sameVMDK checks that qemu-img check finds nothing in ours, and that
// qemu-img reads and maps the VMDK images ours and theirs alike (but for
// host offsets).
func sameVMDK(t *testing.T, what, ours, theirs string) {
	t.Helper()
	if o, e, code := testkit.Run(t, "qemu-img", "check", "-f", "vmdk", ours); code != 0 || strings.TrimSpace(o) != "No errors were found on the image." {
		t.Errorf("%s: qemu-img check: exit %d\n%s%s", what, code, o, e)
	}
	if o, e, code := testkit.Run(t, "qemu-img", "compare", "-f", "vmdk", "-F", "vmdk", ours, theirs); code != 0 {
		t.Errorf("%s: qemu-img compare: exit %d\n%s%s", what, code, o, e)
	}
	if a, b := vmdkMap(t, ours), vmdkMap(t, theirs); a != b {
		t.Errorf("%s: qemu-img map:\nours:\n%s\nqemu-img's:\n%s", what, a, b)
	}
}

// TestVMDK_CreateLikeQemu: qimg create -f vmdk prints qemu-img's lines
// and errors for the vmdk options (adapter types, versions, compat6,
// zeroed_grain, refused values), and the images it makes are
// qemu-img's but for the CID (vmdk's KD7, checked byte for byte there).
// So are monolithicFlat, twoGbMaxExtentFlat and twoGbMaxExtentSparse
// images, a descriptor file and its extents' files.
func TestVMDK_CreateLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := testkit.Dir(t)
	for i, args := range [][]string{
		{}, {"1.5k"}, {"-q", "100M"}, {"-o", "size=2M"},
		{"-o", "adapter_type=lsilogic,hwversion=7,toolsversion=5", "1G"}, {"-o", "compat6=yes,zeroed_grain=on", "1M"},
		{"-o", "adapter_type=bad", "1M"}, {"-o", "adapter_type=IDE", "1M"}, {"-o", "compat6=on,hwversion=7", "1M"},
		{"-o", "zeroed_grain=maybe", "1M"}, {"-o", "subformat=bad", "1M"}, {"-o", "subformat=monolithicSparse", "1M"},
		{"-o", "bogus=1", "1M"}, {"-o", "backing_fmt=qcow2", "1M"}, {"-o", "hwversion=undefined", "1M"},
		{"-o", "subformat=streamOptimized", "1M"}, {"-o", "subformat=streamOptimized,zeroed_grain=on", "3G"},
		// The file driver's preallocation: shown, checked after
		// "Formatting", nothing else.
		{"-o", "preallocation=full", "1M"}, {"-o", "preallocation=bogus", "1M"}, {"-o", "preallocation=bogus,adapter_type=bad", "1M"},
	} {
		q, o := filepath.Join(dir, fmt.Sprintf("q%d.vmdk", i)), filepath.Join(dir, fmt.Sprintf("o%d.vmdk", i))
		qcode := createBoth(t, "vmdk", q, o, args)
		_, qerr := os.Stat(q)
		_, oerr := os.Stat(o)
		if (qerr == nil) != (oerr == nil) {
			t.Errorf("create %q: file made %v, qemu-img's %v", args, oerr == nil, qerr == nil)
		}
		if qcode == 0 {
			sameVMDK(t, fmt.Sprint(args), o, q)
			// Byte for byte but for the descriptor's CID and name.
			a, _ := os.ReadFile(o)
			b, _ := os.ReadFile(q)
			const desc = 21 * 512
			cid := regexp.MustCompile(`\nCID=[0-9a-f]+\n`)
			da := string(cid.ReplaceAll(bytes.ReplaceAll(a[512:desc], []byte(filepath.Base(o)), []byte("N")), []byte("\nCID=\n")))
			db := string(cid.ReplaceAll(bytes.ReplaceAll(b[512:desc], []byte(filepath.Base(q)), []byte("N")), []byte("\nCID=\n")))
			if len(a) != len(b) || !bytes.Equal(a[:512], b[:512]) || !bytes.Equal(a[desc:], b[desc:]) || strings.TrimRight(da, "\x00") != strings.TrimRight(db, "\x00") {
				t.Errorf("create %q: the image differs from qemu-img's (%d bytes, %d)", args, len(a), len(b))
			}
			infoMapLikeQemu(t, o, []string{"-f", "vmdk", o})
		}
	}
	// preallocation=metadata: the file driver's refusal (qemu-img
	// leaves an empty file behind; qimg none).
	if _, e, code := runQ(t, "create", "-f", "vmdk", "-o", "preallocation=metadata", filepath.Join(dir, "m.vmdk"), "1M"); code != 1 || !strings.Contains(e, "Unsupported preallocation mode: metadata") {
		t.Errorf("preallocation=metadata: exit %d, %s", code, e)
	}
	// Descriptor files and their extents: qemu-img's files, named as
	// its are, but for the CID (format's KF8), and its refusals.
	for i, args := range [][]string{
		{"-o", "subformat=monolithicFlat", "1000"}, {"-o", "subformat=twoGbMaxExtentFlat", "3G"},
		{"-o", "subformat=twoGbMaxExtentSparse,zeroed_grain=on,adapter_type=lsilogic", "3G"},
		{"-o", "subformat=twoGbMaxExtentFlat", "0"}, {"-o", "subformat=monolithicFlat,zeroed_grain=on", "1M"},
		{"-o", "subformat=monolithicFlat,compat6=on,hwversion=7", "1M"},
	} {
		qd, od := filepath.Join(dir, fmt.Sprint("dq", i)), filepath.Join(dir, fmt.Sprint("do", i))
		os.Mkdir(qd, 0o755)
		os.Mkdir(od, 0o755)
		createBoth(t, "vmdk", filepath.Join(qd, "x.vmdk"), filepath.Join(od, "x.vmdk"), args)
		qs, _ := os.ReadDir(qd)
		ofs, _ := os.ReadDir(od)
		if len(qs) != len(ofs) {
			t.Errorf("create %q: %d files, qemu-img's %d", args, len(ofs), len(qs))
			continue
		}
		cid := regexp.MustCompile(`\nCID=[0-9a-f]+\n`)
		for k, q := range qs {
			a, an := readHead(t, filepath.Join(od, ofs[k].Name()))
			b, bn := readHead(t, filepath.Join(qd, q.Name()))
			if q.Name() == "x.vmdk" {
				an, bn = 0, 0 // CIDs of different lengths
			}
			if ofs[k].Name() != q.Name() || string(cid.ReplaceAll(a, nil)) != string(cid.ReplaceAll(b, nil)) || an != bn {
				t.Errorf("create %q: %s differs from qemu-img's %s", args, ofs[k].Name(), q.Name())
			}
		}
		if len(qs) > 0 {
			sameVMDK(t, fmt.Sprint(args), filepath.Join(od, "x.vmdk"), filepath.Join(qd, "x.vmdk"))
		}
	}
}

// TestVMDK_SnapshotLikeQemu: qimg create -f vmdk -b makes the snapshot
// qemu-img makes (parentCID, parentFileNameHint as given; sizes from the
// parent or given; twoGbMaxExtentSparse too; a flat one refused in
// QEMU's words, and a parent that is no VMDK image), but for the CID;
// qimg io's writes, zeros and discards into one leave what qemu-io's
// leave in another, the same grains allocated (new grains copy the
// parent's bytes first: vmdk's KD13); qemu-img check finds nothing.
func TestVMDK_SnapshotLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := testkit.Dir(t)
	base := filepath.Join(dir, "base.vmdk")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", base, "10M")
	testkit.MustRun(t, "qemu-io", "-f", "vmdk", "-c", "write -P 0x11 0 1M", "-c", "write -P 0x12 5M 1M", base)
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(dir, "q.qcow2"), "1M")
	cid := regexp.MustCompile(`\nCID=[0-9a-f]+\n`)
	for i, args := range [][]string{
		{"-b", "base.vmdk", "-F", "vmdk"}, {"-b", "base.vmdk", "-F", "vmdk", "20M"}, {"-b", base, "-F", "vmdk", "5M"},
		{"-o", "subformat=twoGbMaxExtentSparse", "-b", "base.vmdk", "-F", "vmdk"},
		{"-o", "subformat=monolithicFlat", "-b", "base.vmdk", "-F", "vmdk"},
		{"-b", "q.qcow2", "-F", "qcow2"},
	} {
		q, o := filepath.Join(dir, fmt.Sprintf("sq%d.vmdk", i)), filepath.Join(dir, fmt.Sprintf("so%d.vmdk", i))
		if createBoth(t, "vmdk", q, o, args) != 0 {
			continue
		}
		a, _ := readHead(t, o)
		b, _ := readHead(t, q)
		norm := func(x []byte, name string) string {
			// The descriptor (sectors 1-20) without its CID and its
			// padding (a CID one digit shorter leaves one more NUL).
			// A descriptor file: all of it.
			head, desc := 512, 21*512
			if x[0] == '#' {
				head, desc = 0, len(x)
			}
			d := bytes.ReplaceAll(x[head:desc], []byte(filepath.Base(name[:len(name)-5])), []byte("N"))
			d = bytes.ReplaceAll(cid.ReplaceAll(d, nil), []byte{0}, nil)
			return string(x[:head]) + string(d) + string(x[desc:])
		}
		if norm(a, o) != norm(b, q) {
			t.Errorf("create %q: the snapshot differs from qemu-img's", args)
		}
		sameVMDK(t, fmt.Sprint(args), o, q)
	}
	cmds := []string{"-c", "write -P 0x21 4096 512", "-c", "write -z 5251072 4096", "-c", "write -P 0x22 9M 512",
		"-c", "write -z -u 2M 64k", "-c", "write -z 3M 4k", "-c", "discard 64k 4k", "-c", "aio_write -P 0x24 5345280 300", "-c", "aio_flush"}
	ours, theirs := filepath.Join(dir, "so0.vmdk"), filepath.Join(dir, "sq0.vmdk")
	oo, oe, code := runQ(t, append(append([]string{"io", "-f", "vmdk"}, cmds...), ours)...)
	qo := testkit.MustRun(t, "qemu-io", append(append([]string{"-f", "vmdk"}, cmds...), theirs)...)
	if code != 0 || timing.ReplaceAllString(oo, "$1, $2 ops") != timing.ReplaceAllString(qo, "$1, $2 ops") {
		t.Errorf("io: exit %d\n%s%s\nqemu-io:\n%s", code, oo, oe, qo)
	}
	sameVMDK(t, "io", ours, theirs)
	if a, b := testkit.MustRun(t, "qemu-img", "map", ours), testkit.MustRun(t, "qemu-img", "map", theirs); strings.ReplaceAll(a, ours, theirs) != b {
		t.Errorf("qemu-img map:\nours:\n%s\nqemu-io's:\n%s", a, b)
	}
	// A snapshot's backing file does not change (QEMU's vmdk driver
	// cannot change it); qemu-img's safe rebase copies the parent's
	// bytes in before it fails, qimg's changes nothing.
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", filepath.Join(dir, "nb.vmdk"), "10M")
	refusedLikeQemu(t, ours, theirs, [][]string{
		{"rebase", "-u", "-b", "nb.vmdk", "-F", "vmdk", ours},
		{"rebase", "-u", "-b", "nb.vmdk", ours},
		{"amend", "-o", "adapter_type=lsilogic", ours},
	})
	before, _ := os.ReadFile(ours)
	if _, e, code := runQ(t, "rebase", "-b", "nb.vmdk", "-F", "vmdk", ours); code != 1 || !strings.Contains(e, "Could not change the backing file to 'nb.vmdk': Operation not supported") {
		t.Errorf("rebase: exit %d, %s", code, e)
	}
	if after, _ := os.ReadFile(ours); !bytes.Equal(before, after) {
		t.Error("a refused rebase changed the snapshot")
	}
}

// readHead is the first MiB of the file at p, and its length.
func readHead(t *testing.T, p string) ([]byte, int64) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	b := make([]byte, min(fi.Size(), 1<<20))
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b, fi.Size()
}

// TestVMDK_WritesLikeQemu: a VMDK image is writable in qimg as in
// qemu-img (monolithicSparse, streamOptimized, and descriptor files with
// flat or sparse extents): convert (-c too, plain writes there as in QEMU)
// and dd -O vmdk write the images qemu-img writes; qimg io's writes
// leave the bytes qemu-io's leave (and the grains, but for zeros
// written into unallocated ones, which qemu-io allocates and qimg does
// not); commit writes into a VMDK base as qemu-img does; qemu-img check
// finds nothing in any of them; resize, measure, truncate and backing
// files are refused in qemu-img's words, leaving the image as it was.
func TestVMDK_WritesLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := testkit.Dir(t)
	src := filepath.Join(dir, "s.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", src, "100M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", "-c", "write -P 2 5M 3M", "-c", "write -z 20M 4M",
		"-c", "write -P 3 99M 1M", "-c", "write -P 4 50M 512", src)
	for _, o := range [][]string{nil, {"-c"}, {"-o", "adapter_type=buslogic,zeroed_grain=on"}, {"-o", "subformat=streamOptimized"},
		{"-o", "subformat=monolithicFlat"}, {"-o", "subformat=twoGbMaxExtentSparse"}} {
		ours, theirs := filepath.Join(dir, "o.vmdk"), filepath.Join(dir, "q.vmdk")
		os.Remove(ours)
		os.Remove(theirs)
		mustQ(t, append(append([]string{"convert", "-O", "vmdk"}, o...), src, ours)...)
		testkit.MustRun(t, "qemu-img", append(append([]string{"convert", "-O", "vmdk"}, o...), src, theirs)...)
		sameVMDK(t, fmt.Sprintf("convert %q", o), ours, theirs)
		testkit.MustRun(t, "qemu-img", "compare", "-F", "vmdk", src, ours)
		infoMapLikeQemu(t, ours, []string{"-f", "vmdk", ours})
		if o == nil {
			dd, qdd := filepath.Join(dir, "dd.vmdk"), filepath.Join(dir, "qdd.vmdk")
			mustQ(t, "dd", "-O", "vmdk", "bs=1M", "if="+src, "of="+dd)
			testkit.MustRun(t, "qemu-img", "dd", "-O", "vmdk", "bs=1M", "if="+src, "of="+qdd)
			sameVMDK(t, "dd", dd, qdd)
		}
	}
	// io: the same commands through qimg io and qemu-io; with zeroed
	// grains, zeros over whole grains (new and written ones) too.
	cmds := []string{"-c", "write -P 0x11 4k 4k", "-c", "writev -P 0x22 2M 4k 8k", "-c", "write -P 0x33 3145216 1k",
		"-c", "write -z 5k 1k", "-c", "discard 4k 1k", "-c", "aio_write -P 0x44 9M 512", "-c", "aio_flush", "-c", "flush"}
	zcmds := append([]string{"-c", "write -z 1M 128k", "-c", "write -z 2M 64k", "-c", "write -P 0x55 1M 512"}, cmds...)
	var ours, theirs string
	for _, opts := range []string{"zeroed_grain=on", "zeroed_grain=off", "subformat=monolithicFlat", "subformat=twoGbMaxExtentFlat"} {
		ours, theirs = filepath.Join(dir, "io-o.vmdk"), filepath.Join(dir, "io-q.vmdk")
		os.Remove(theirs)
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", opts, theirs, "20M")
		if strings.HasPrefix(opts, "subformat=") {
			mustQ(t, "create", "-q", "-f", "vmdk", "-o", opts, ours, "20M") // extent files of its own
		} else {
			cp(t, theirs, ours)
		}
		c := cmds
		if opts == "zeroed_grain=on" {
			c = zcmds
		}
		oo, oe, code := runQ(t, append(append([]string{"io", "-f", "vmdk"}, c...), ours)...)
		qo := testkit.MustRun(t, "qemu-io", append(append([]string{"-f", "vmdk"}, c...), theirs)...)
		if code != 0 || timing.ReplaceAllString(oo, "$1, $2 ops") != timing.ReplaceAllString(qo, "$1, $2 ops") {
			t.Errorf("io (%s): exit %d\n%s%s\nqemu-io:\n%s", opts, code, oo, oe, qo)
		}
		sameVMDK(t, "io "+opts, ours, theirs)
	}
	// Refusals, as qemu-img's, the image unchanged.
	refusedLikeQemu(t, ours, theirs, [][]string{
		{"resize", "-f", "vmdk", ours, "40M"},
		{"convert", "-O", "vmdk", "-B", src, src, filepath.Join(dir, "b.vmdk")},
		{"measure", "-O", "vmdk", "--size", "1M"},
		{"io", "-f", "vmdk", "-c", "truncate 40M", ours},
		{"check", "-r", "all", ours},
	})
	// commit into a VMDK base.
	o, q := commitLikeQemu(t, dir, "vmdk", ".vmdk")
	sameVMDK(t, "commit", o, q)
}

// convert -c into a flat VMDK fails as qemu-img's does ("invalid cluster
// size": a flat extent has no grains to compress), and leaves no file
// (qemu-img creates the image first and leaves it); qimg wrote it
// uncompressed and exited 0. Into an existing one (-n), both refuse.
func TestConvert_CompressFlatVMDKLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := testkit.Dir(t)
	src := filepath.Join(dir, "src.raw")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "raw", src, "4M")
	for _, sf := range []string{"monolithicFlat", "twoGbMaxExtentFlat"} {
		for _, tool := range []string{"qimg", "qemu-img"} {
			out := filepath.Join(dir, tool, "o.vmdk")
			if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
				t.Fatal(err)
			}
			args := []string{"convert", "-c", "-O", "vmdk", "-o", "subformat=" + sf, src, out}
			_, e, code := runImg(t, tool, args...)
			if code != 1 || !strings.Contains(e, ": invalid cluster size") {
				t.Errorf("%s %s: exit %d (%s), want 1, invalid cluster size", tool, sf, code, e)
			}
			if left, _ := filepath.Glob(filepath.Join(dir, "qimg", "*")); tool == "qimg" && len(left) > 0 {
				t.Errorf("qimg %s left %v", sf, left)
			}
			os.RemoveAll(filepath.Dir(out))
		}
		flat := filepath.Join(dir, "flat.vmdk")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat="+sf, flat, "4M")
		for _, tool := range []string{"qimg", "qemu-img"} {
			args := []string{"convert", "-n", "-c", "-O", "vmdk", src, flat}
			_, e, code := runImg(t, tool, args...)
			if code != 1 || !strings.Contains(e, ": invalid cluster size") {
				t.Errorf("%s -n %s: exit %d (%s), want 1, invalid cluster size", tool, sf, code, e)
			}
		}
	}
}
