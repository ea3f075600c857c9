package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
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

// TestVPC_WritesRefused: a VHD image is read-only in qimg; qemu-img
// convert -O vpc stays refused as a format qimg does not write.
func TestVPC_WritesRefused(t *testing.T) {
	testkit.NeedQemu(t)
	dir := testkit.Dir(t)
	p := filepath.Join(dir, "a.vhd")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vpc", p, "1M")
	before, _ := os.ReadFile(p)
	if _, e, code := runQ(t, "io", "-f", "vpc", "-c", "write 0 512", p); code == 0 || !strings.Contains(e, "read-only") {
		t.Errorf("io write: exit %d, %s", code, e)
	}
	if _, e, code := runQ(t, "convert", "-O", "vpc", p, filepath.Join(dir, "b.vhd")); code == 0 ||
		!strings.Contains(e, "Format driver 'vpc' is not supported by qimg") {
		t.Errorf("convert -O vpc: exit %d, %s", code, e)
	}
	if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
		t.Error("the image changed")
	}
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
		a, _ := os.ReadFile(ours)
		b, _ := os.ReadFile(theirs)
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Errorf("convert -O raw: %d bytes, qemu-img's %d, equal %v", len(a), len(b), bytes.Equal(a, b))
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
