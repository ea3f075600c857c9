package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// A hostile qcow2 header fails to open with qemu-img's message: the
// checks QEMU 7.2's qcow2_do_open makes, in its order (qcow2/format FM7),
// each on an image qemu-img made with one or two header fields changed,
// and files cut short inside the header.
func TestHeaderErrors_LikeQemu(t *testing.T) {
	dir := qemuDir(t)
	base := filepath.Join(dir, "base.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "1M")
	hostile := t.TempDir()
	good, err := os.ReadFile(base)
	if err != nil {
		t.Fatal(err)
	}
	type patch struct {
		off  int
		size int // 1, 4 or 8 bytes, big-endian
		v    uint64
	}
	// qemu-img's feature name table names bit 4 "extended L2 entries": renamed
	// to bit 9, it names an unknown bit, as an image from a newer QEMU
	// would.
	xl2Name := bytes.Index(good, []byte("extended L2 entries"))
	if xl2Name < 2 {
		t.Fatal("no feature name table in qemu-img's image")
	}
	cases := []struct {
		name string
		p    []patch
		cut  int // keep only this many bytes (0: all)
	}{
		{"version 1", []patch{{4, 4, 1}}, 0},
		{"version 4", []patch{{4, 4, 4}}, 0},
		{"cluster bits 8", []patch{{20, 4, 8}}, 0},
		{"cluster bits 22", []patch{{20, 4, 22}}, 0},
		{"header length 96", []patch{{100, 4, 96}}, 0},
		{"header past the cluster", []patch{{20, 4, 9}, {100, 4, 1024}}, 0},
		{"backing offset past the cluster", []patch{{8, 8, 0x20000}, {16, 4, 4}}, 0},
		{"backing name too long", []patch{{8, 8, 0x200}, {16, 4, 2000}}, 0},
		{"unknown incompatible bit", []patch{{72, 8, 1 << 9}}, 0},
		{"unknown incompatible bits", []patch{{72, 8, 1<<5 | 1<<7}}, 0},
		{"named unknown bit", []patch{{72, 8, 1<<9 | 1<<12}, {xl2Name - 1, 1, 9}}, 0},
		{"refcount order 7", []patch{{96, 4, 7}}, 0},
		{"compression type 5", []patch{{104, 1, 5}}, 0},
		{"zstd without the bit", []patch{{104, 1, 1}}, 0},
		{"the bit with zlib", []patch{{72, 8, 1 << 3}}, 0},
		{"compression before features", []patch{{104, 1, 5}, {72, 8, 1 << 9}}, 0},
		{"encryption method 3", []patch{{32, 4, 3}}, 0},
		{"subclusters of 128 bytes", []patch{{20, 4, 12}, {72, 8, 1 << 4}}, 0},
		{"no refcount table", []patch{{56, 4, 0}}, 0},
		{"refcount table too large", []patch{{56, 4, 0x1000000}}, 0},
		{"refcount table unaligned", []patch{{48, 8, 0x10001}}, 0},
		{"too many snapshots", []patch{{60, 4, 70000}, {64, 8, 0x40000}}, 0},
		{"snapshot table unaligned", []patch{{60, 4, 1}, {64, 8, 0x40001}}, 0},
		{"L1 table too large", []patch{{36, 4, 0x10000000}}, 0},
		{"image too big", []patch{{24, 8, 1 << 62}}, 0},
		{"L1 table unaligned", []patch{{40, 8, 0x30001}}, 0},
		{"L1 table too small", []patch{{24, 8, 1 << 40}}, 0},
		{"L1 offset before its size", []patch{{24, 8, 1 << 40}, {40, 8, 0x30001}}, 0},
		{"refcount table before L1", []patch{{48, 8, 0x10001}, {40, 8, 0x30001}}, 0},
		// The first header extension (at 112, qemu-img's feature name
		// table) made another, or too long: checked where QEMU meets it.
		{"extension too large", []patch{{116, 4, 0xffffffff}}, 0},
		{"bitmaps extension of another length", []patch{{112, 4, 0x23852875}}, 0},
		{"backing format extension too long", []patch{{112, 4, 0xe2792aca}}, 0},
		{"crypto extension without LUKS", []patch{{112, 4, 0x0537be77}}, 0},
		{"crypto extension of another length", []patch{{32, 4, 2}, {112, 4, 0x0537be77}}, 0},
		{"cut after the magic", nil, 4},
		{"cut after the version", nil, 8},
		{"cut inside the v3 fields", nil, 60},
		{"cut before header_length", nil, 100},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := bytes.Clone(good)
			for _, p := range tc.p {
				switch p.size {
				case 1:
					b[p.off] = byte(p.v)
				case 4:
					binary.BigEndian.PutUint32(b[p.off:], uint32(p.v))
				default:
					binary.BigEndian.PutUint64(b[p.off:], p.v)
				}
			}
			if tc.cut > 0 {
				b = b[:tc.cut]
			}
			// Not in dir: its images are checked at the end, and
			// these open nowhere.
			p := filepath.Join(hostile, strings.ReplaceAll(tc.name, " ", "-")+".qcow2")
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			out, errOut, code := runQ(t, "info", "-f", "qcow2", p)
			qout, qerr, qcode := testkit.Run(t, "qemu-img", "info", "-f", "qcow2", p)
			if qcode == 0 {
				t.Fatalf("qemu-img opened it:\n%s", qout)
			}
			ours := strings.TrimPrefix(strings.TrimSpace(errOut), "qimg: info: ")
			theirs := strings.TrimPrefix(strings.TrimSpace(qerr), "qemu-img: ")
			if code != qcode || out != qout || ours != theirs {
				t.Errorf("exit %d, stdout %q, stderr:\n%s\nqemu-img: exit %d, stdout %q, stderr:\n%s", code, out, ours, qcode, qout, theirs)
			}
		})
	}
}
