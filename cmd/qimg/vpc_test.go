package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// vpcImages creates VHD images with qemu-img create -f vpc (dynamic and
// subformat=fixed, sizes with and without an exact CHS geometry, and
// force_size=on) and fills them with qemu-io; it returns name -> path
// and, for each, whether it needs -f vpc (a fixed disk probes as raw, as
// in QEMU: its footer is at the end of the file only).
func vpcImages(t *testing.T, dir string) (paths map[string]string, fixed map[string]bool) {
	t.Helper()
	paths, fixed = map[string]string{}, map[string]bool{}
	fill := map[string][]string{
		"1M": {"write -P 0x5a 0 64k", "write -P 7 512k 512"},
		// Blocks written whole, in part, and a block left out between.
		"100M":     {"write -P 0x5a 0 64k", "write -P 7 3M 512", "write -P 9 50M 1M", "write -P 3 99M 512"},
		"4095M":    {"write -P 0x5a 0 64k", "write -P 7 3M 512", "write -P 1 4000M 4k"},
		"1000001k": {"write -P 0x5a 0 64k", "write -P 7 3M 512", "write -P 2 976M 512"},
	}
	for size, cmds := range fill {
		for _, sub := range []string{"dynamic", "fixed"} {
			name := sub + "-" + size
			p := filepath.Join(dir, name+".vhd")
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat="+sub, p, size)
			qemuIO(t, p, "vpc", cmds...)
			paths[name], fixed[name] = p, sub == "fixed"
		}
	}
	p := filepath.Join(dir, "force-size.vhd")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vpc", "-o", "force_size=on", p, "1000001k")
	qemuIO(t, p, "vpc", "write -P 0x11 1M 1M")
	paths["force-size"] = p
	return paths, fixed
}

// TestVPC_InfoMapCompareLikeQemu: qimg info, map and compare of VHD
// images agree with qemu-img's, with -f vpc and probed.
func TestVPC_InfoMapCompareLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	paths, fixed := vpcImages(t, workDir(t))
	for name, p := range paths {
		t.Run(name, func(t *testing.T) {
			argsets := [][]string{{"-f", "vpc", p}}
			if !fixed[name] {
				argsets = append(argsets, []string{p}) // probed
			}
			for _, a := range argsets {
				if h, q := qimgAndQemu(t, append([]string{"info"}, a...)...); h != q {
					t.Errorf("info %q differs:\nours:\n%s\nqemu-img:\n%s", a, h, q)
				}
				oj, qj := qimgAndQemu(t, append([]string{"info", "--output=json"}, a...)...)
				ours, qemu := decodeJSON(t, oj), decodeJSON(t, qj)
				agree(t, "info "+name, ours, qemu, "virtual-size", "filename", "format", "actual-size", "dirty-flag")
				if _, ok := qemu["cluster-size"]; ok != (ours["cluster-size"] != nil) {
					t.Errorf("cluster-size: ours %v, qemu-img's %v", ours["cluster-size"], qemu["cluster-size"])
				}
				oj, qj = qimgAndQemu(t, append([]string{"map", "--output=json"}, a...)...)
				if om, qm := decodeMap(t, oj), decodeMap(t, qj); !reflect.DeepEqual(om, qm) {
					t.Errorf("map %q differs\nours: %s\nqemu: %s", a, oj, qj)
				}
				if h, q := qimgAndQemu(t, append([]string{"map"}, a...)...); h != q {
					t.Errorf("map %q differs:\nours:\n%s\nqemu-img:\n%s", a, h, q)
				}
			}
			if h, q := qimgAndQemu(t, "compare", "-f", "vpc", "-F", "vpc", p, p); h != q {
				t.Errorf("compare differs:\nours:\n%s\nqemu-img:\n%s", h, q)
			}
		})
	}
}

// TestVPC_ConvertLikeQemu: qimg convert -f vpc -O raw writes the bytes
// qemu-img convert writes, and -O qcow2 an image qemu-img check passes
// and qemu-img compare finds identical to the VHD.
func TestVPC_ConvertLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	dir := workDir(t)
	paths, fixed := vpcImages(t, dir)
	for name, p := range paths {
		t.Run(name, func(t *testing.T) {
			// 4 GiB raw files are left to the qcow2 comparison; a
			// fixed disk probes as raw, so it is named.
			convertLikeQemu(t, dir, name, p, "vpc", !strings.HasSuffix(name, "4095M"), !fixed[name])
		})
	}
}

// TestVPC_HostileLikeQemu: damaged VHD images are refused by qimg with
// qemu-img's words, never with a panic, a hang or an allocation sized by
// the image (vhd's VD3).
func TestVPC_HostileLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	dir := testkit.Dir(t)
	good := filepath.Join(dir, "good.vhd")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vpc", good, "100M")
	qemuIO(t, good, "vpc", "write -P 1 0 512")
	src, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	footerSum := func(b []byte) {
		binary.BigEndian.PutUint32(b[64:], 0)
		var s uint32
		for _, c := range b[:512] {
			s += uint32(c)
		}
		binary.BigEndian.PutUint32(b[64:], ^s)
	}
	for name, edit := range map[string]func([]byte) []byte{
		"truncated":    func(b []byte) []byte { return b[:1000] },
		"no footer":    func(b []byte) []byte { return b[512:1000] },
		"bad checksum": func(b []byte) []byte { b[100] ^= 1; return b },
		"BAT past EOF": func(b []byte) []byte { binary.BigEndian.PutUint32(b[1536:], 0x100000); return b },
		"huge max_table_entries": func(b []byte) []byte {
			binary.BigEndian.PutUint32(b[512+28:], 0x7fffffff)
			return b
		},
		"big max_table_entries": func(b []byte) []byte {
			binary.BigEndian.PutUint32(b[512+28:], 0x10000000)
			return b
		},
		"BAT offset past EOF": func(b []byte) []byte { binary.BigEndian.PutUint64(b[512+16:], 1<<62); return b },
		"BAT offset unreadable": func(b []byte) []byte {
			binary.BigEndian.PutUint64(b[512+16:], ^uint64(0))
			return b
		},
		// The dynamic header (1024 bytes) ends at QEMU's BDRV_MAX_LENGTH,
		// then a byte past it.
		"header at the limit": func(b []byte) []byte {
			binary.BigEndian.PutUint64(b[16:], 1<<63-1<<30-1024)
			footerSum(b)
			return b
		},
		"header past the limit": func(b []byte) []byte {
			binary.BigEndian.PutUint64(b[16:], 1<<63-1<<30-1023)
			footerSum(b)
			return b
		},
		"block size":   func(b []byte) []byte { binary.BigEndian.PutUint32(b[512+32:], 1000); return b },
		"header magic": func(b []byte) []byte { copy(b[512:], "xxxxxxxx"); return b },
		"header offset": func(b []byte) []byte {
			binary.BigEndian.PutUint64(b[16:], ^uint64(0))
			footerSum(b)
			return b
		},
		"too large": func(b []byte) []byte {
			copy(b[28:], "win ")
			binary.BigEndian.PutUint64(b[48:], 3<<40)
			footerSum(b)
			return b
		},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".vhd")
		if err := os.WriteFile(p, edit(append([]byte(nil), src...)), 0o644); err != nil {
			t.Fatal(err)
		}
		_, qe, qcode := testkit.Run(t, "qemu-img", "info", "-f", "vpc", p)
		_, e, code := runQ(t, "info", "-f", "vpc", p)
		_, want, _ := strings.Cut(qe, "Could not open")
		_, got, _ := strings.Cut(e, "Could not open")
		if code != 1 || qcode != 1 || got != want || want == "" {
			t.Errorf("%s: exit %d, %q; qemu-img exit %d, %q", name, code, e, qcode, qe)
		}
	}
}

// vpcMap is qemu-img map's JSON of a VHD image without host offsets
// (they follow the order blocks were written in).
func vpcMap(t *testing.T, p string) string {
	t.Helper()
	return regexp.MustCompile(`, "offset": \d+`).ReplaceAllString(testkit.MustRun(t, "qemu-img", "map", "-f", "vpc", "--output=json", p), "")
}

// sameVPC checks that qemu-img reads the VHD images ours and theirs
// alike, and maps them alike (but for host offsets).
func sameVPC(t *testing.T, what, ours, theirs string) {
	t.Helper()
	if o, e, code := testkit.Run(t, "qemu-img", "compare", "-f", "vpc", "-F", "vpc", ours, theirs); code != 0 {
		t.Errorf("%s: qemu-img compare: exit %d\n%s%s", what, code, o, e)
	}
	if a, b := vpcMap(t, ours), vpcMap(t, theirs); a != b {
		t.Errorf("%s: qemu-img map:\nours:\n%s\nqemu-img's:\n%s", what, a, b)
	}
}

// TestVPC_CreateLikeQemu: qimg create -f vpc prints qemu-img's lines and
// errors for the vpc options (sizes rounded to a geometry, subformats,
// force_size, refused values and sizes), and the images it makes are
// qemu-img's (vhd's VD10, checked byte for byte there).
func TestVPC_CreateLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := testkit.Dir(t)
	for i, args := range [][]string{
		{"-o", "force_size=on,subformat=fixed", "1M"}, {"-o", "force_size=yes", "1M"}, {"-o", "force_size=bad", "1M"},
		{"-o", "cluster_size=64k", "1M"}, {"-b", "base.qcow2", "-F", "qcow2", "1M"}, {}, {"-o", "subformat=dynamic", "1M"},
		{"-o", "size=2M"}, {"1.5k"}, {"-o", "subformat=bad", "1M"}, {"3T"}, {"-q", "100M"}, {"-o", "subformat=fixed", "3M"},
		{"-o", "subformat=fixed,preallocation=full", "3M"}, {"-o", "preallocation=bogus", "1M"},
	} {
		q, o := filepath.Join(dir, fmt.Sprintf("q%d.vhd", i)), filepath.Join(dir, fmt.Sprintf("o%d.vhd", i))
		qcode := createBoth(t, "vpc", q, o, args)
		if qcode == 0 {
			sameVPC(t, fmt.Sprint(args), o, q)
			infoMapLikeQemu(t, o, []string{"-f", "vpc", o})
		}
	}
}

// TestVPC_WritesLikeQemu: a VHD image is writable in qimg as in
// qemu-img: qimg io's writes leave the bytes qemu-io's leave (and the
// blocks, but for zeros written into unallocated ones, which qemu-io
// allocates and qimg does not); convert and dd -O vpc write the images
// qemu-img writes (dynamic, fixed, force_size), commit writes into a
// VHD base as qemu-img does; resize, -c and backing files are refused
// in its words, leaving the image as it was.
func TestVPC_WritesLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := testkit.Dir(t)
	src := filepath.Join(dir, "s.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", src, "100M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", "-c", "write -P 2 5M 3M", "-c", "write -z 20M 4M",
		"-c", "write -P 3 99M 1M", src)
	for _, o := range [][]string{nil, {"-o", "subformat=fixed"}, {"-o", "force_size=on"}} {
		ours, theirs := filepath.Join(dir, "o.vhd"), filepath.Join(dir, "q.vhd")
		os.Remove(ours)
		os.Remove(theirs)
		mustQ(t, append(append([]string{"convert", "-O", "vpc"}, o...), src, ours)...)
		testkit.MustRun(t, "qemu-img", append(append([]string{"convert", "-O", "vpc"}, o...), src, theirs)...)
		sameVPC(t, fmt.Sprintf("convert %q", o), ours, theirs)
		infoMapLikeQemu(t, ours, []string{"-f", "vpc", ours})
		if o == nil {
			// dd -O vpc: qemu-img dd's image (every block written).
			dd, qdd := filepath.Join(dir, "dd.vhd"), filepath.Join(dir, "qdd.vhd")
			mustQ(t, "dd", "-O", "vpc", "bs=1M", "if="+src, "of="+dd)
			testkit.MustRun(t, "qemu-img", "dd", "-O", "vpc", "bs=1M", "if="+src, "of="+qdd)
			sameVPC(t, "dd", dd, qdd)
		}
	}
	// io: the same commands through qimg io and qemu-io.
	ours, theirs := filepath.Join(dir, "io-o.vhd"), filepath.Join(dir, "io-q.vhd")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vpc", theirs, "20M")
	cp(t, theirs, ours)
	cmds := []string{"-c", "write -P 0x11 4k 4k", "-c", "writev -P 0x22 2M 4k 8k", "-c", "write -P 0x33 3145216 1k",
		"-c", "write -z 5k 1k", "-c", "discard 4k 1k", "-c", "aio_write -P 0x44 9M 512", "-c", "aio_flush", "-c", "flush"}
	oo, oe, code := runQ(t, append(append([]string{"io", "-f", "vpc"}, cmds...), ours)...)
	qo := testkit.MustRun(t, "qemu-io", append(append([]string{"-f", "vpc"}, cmds...), theirs)...)
	if code != 0 || timing.ReplaceAllString(oo, "$1, $2 ops") != timing.ReplaceAllString(qo, "$1, $2 ops") {
		t.Errorf("io: exit %d\n%s%s\nqemu-io:\n%s", code, oo, oe, qo)
	}
	sameVPC(t, "io", ours, theirs)
	// Refusals, as qemu-img's, the image unchanged.
	refusedLikeQemu(t, ours, theirs, [][]string{
		{"resize", "-f", "vpc", ours, "40M"},
		{"convert", "-O", "vpc", "-B", src, src, filepath.Join(dir, "b.vhd")},
		{"convert", "-c", "-O", "vpc", src, filepath.Join(dir, "c.vhd")},
		{"measure", "-O", "vpc", "--size", "1M"},
		{"io", "-f", "vpc", "-c", "truncate 40M", ours},
	})
	// commit into a VHD base.
	o, q := commitLikeQemu(t, dir, "vpc", ".vhd")
	sameVPC(t, "commit", o, q)
}

// convertLikeQemu: qimg convert -f format -O raw writes the bytes
// qemu-img convert writes (if raw: the sizes the test can afford), and
// -O qcow2 (the input probed if probed) an image qemu-img check passes
// and both compares find identical to the input.
func convertLikeQemu(t *testing.T, dir, name, p, format string, raw, probed bool) {
	t.Helper()
	if raw {
		ours, theirs := filepath.Join(dir, name+".raw"), filepath.Join(dir, name+".qemu.raw")
		mustQ(t, "convert", "-f", format, "-O", "raw", p, ours)
		testkit.MustRun(t, "qemu-img", "convert", "-f", format, "-O", "raw", p, theirs)
		// Hole-aware: the 1000001k images' raw files took 16 s each to
		// read whole.
		sa, errA := os.Stat(ours)
		sb, errB := os.Stat(theirs)
		if errA != nil || errB != nil || sa.Size() == 0 {
			t.Fatalf("convert -O raw: %v, %v", errA, errB)
		}
		if d, err := testkit.FileDiff(ours, theirs); err != nil || d >= 0 {
			t.Errorf("convert -O raw: %d bytes, qemu-img's %d, first difference at %d (%v)", sa.Size(), sb.Size(), d, err)
		}
		os.Remove(ours)
		os.Remove(theirs)
	}
	q := filepath.Join(dir, name+".qcow2")
	args := []string{"convert", "-O", "qcow2", p, q}
	if !probed {
		args = []string{"convert", "-f", format, "-O", "qcow2", p, q}
	}
	mustQ(t, args...)
	testkit.QemuCheck(t, q)
	testkit.MustRun(t, "qemu-img", "compare", "-f", format, "-F", "qcow2", p, q)
	mustQ(t, "compare", "-f", format, "-F", "qcow2", p, q)
}

// refusedLikeQemu runs each of cases through qimg and through qemu-img
// (qemu-io for io), ours standing for theirs: each must fail with
// qemu-img's exit code and message, and leave ours as it was.
func refusedLikeQemu(t *testing.T, ours, theirs string, cases [][]string) {
	t.Helper()
	before, _ := os.ReadFile(ours)
	for _, args := range cases {
		qargs := append([]string(nil), args...)
		tool := "qemu-img"
		if args[0] == "io" {
			tool, qargs = "qemu-io", qargs[1:]
		}
		for i, a := range qargs {
			if a == ours {
				qargs[i] = theirs
			}
		}
		qo, qe, qcode := testkit.Run(t, tool, qargs...)
		oo, e, code := runQ(t, args...)
		want := strings.TrimPrefix(strings.TrimSpace(qe+qo), tool+": ")
		if code != qcode || want == "" || !strings.Contains(e+oo, want) {
			t.Errorf("%q: exit %d, %q; %s: exit %d, %q", args, code, e+oo, tool, qcode, want)
		}
	}
	if after, _ := os.ReadFile(ours); !bytes.Equal(before, after) {
		t.Error("a refused command changed the image")
	}
}

// commitLikeQemu commits a qcow2 image into a base of format fmt (file
// suffix ext), once with qimg and once with qemu-img, from the same
// writes; it returns the two bases (ours, qemu-img's).
func commitLikeQemu(t *testing.T, dir, format, ext string) (string, string) {
	t.Helper()
	for _, who := range []string{"o", "q"} {
		base, top := filepath.Join(dir, "cb-"+who+ext), filepath.Join(dir, "ct-"+who+".qcow2")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", format, base, "10M")
		testkit.MustRun(t, "qemu-io", "-f", format, "-c", "write -P 1 0 1M", base)
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", format, top)
		testkit.MustRun(t, "qemu-io", "-c", "write -P 2 512k 1M", "-c", "write -P 3 6M 64k", top)
		if who == "o" {
			mustQ(t, "commit", top)
		} else {
			testkit.MustRun(t, "qemu-img", "commit", top)
		}
	}
	return filepath.Join(dir, "cb-o"+ext), filepath.Join(dir, "cb-q"+ext)
}

// createBoth runs create -f format with args (the size, if any, last)
// through qemu-img into q and through qimg into o: their output, errors
// and exit codes must be alike (but for the file names). It returns
// qemu-img's exit code.
func createBoth(t *testing.T, format, q, o string, args []string) int {
	t.Helper()
	withPath := func(p string) []string {
		a := append([]string{"create", "-f", format}, args...)
		k := len(a)
		if k > 3 && !strings.HasPrefix(a[k-1], "-") && !strings.Contains(a[k-1], "=") && a[k-2] != "-o" && a[k-2] != "-F" {
			k-- // the size comes after the file name
		}
		return append(append(append([]string(nil), a[:k]...), p), a[k:]...)
	}
	qo, qe, qcode := testkit.Run(t, "qemu-img", withPath(q)...)
	oo, oe, ocode := runQ(t, withPath(o)...)
	norm := func(s, p string) string {
		s = strings.ReplaceAll(s, p, "IMG")
		s = strings.ReplaceAll(s, "qimg: create: ", "")
		return strings.ReplaceAll(s, "qemu-img: ", "")
	}
	if norm(oo, o) != norm(qo, q) || norm(oe, o) != norm(qe, q) || ocode != qcode {
		t.Errorf("create %q: exit %d\n%s%s\nqemu-img: exit %d\n%s%s", args, ocode, oo, oe, qcode, qo, qe)
	}
	return qcode
}
