package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/nbd"
)

// holeNotZero is a block status whose first half is NBD_STATE_HOLE
// without NBD_STATE_ZERO: the spec promises nothing of such a hole's
// bytes (here 0xAA), and QEMU reads them.
type holeNotZero struct{ half int64 }

func (h holeNotZero) Extent(off, n int64) (nbd.Extent, error) {
	if off < h.half {
		return nbd.Extent{Len: min(n, h.half-off), Hole: true}, nil
	}
	return nbd.Extent{Len: n, Depth: 1}, nil
}

// TestNBDClient_HoleNotZeroLikeQemu: an export's hole without the zero
// flag holds data as far as a client knows: qimg maps it as qemu-img
// does (not present, neither data nor zero, no offset), and convert, a
// qcow2 overlay over it and compare read its bytes (qimg took it for
// zeros and wrote zeros where the export holds 0xAA). qemu-img compare
// takes such a range for zeros (unallocated: a mismatch with the 0xAA
// file) where qimg compares what it reads: the images are identical.
func TestNBDClient_HoleNotZeroLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := qemuDir(t)
	sd, err := os.MkdirTemp("", "nbdh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sd) })
	sock := filepath.Join(sd, "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	content := bytes.Repeat([]byte{0xaa}, 1<<20)
	srv := &nbd.Server{Exports: []*nbd.Export{{Dev: memdev.FromBytes(content, memdev.Options{}), ReadOnly: true, Status: holeNotZero{512 << 10}}}}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Shutdown(t.Context()) })
	uri := "nbd+unix:///?socket=" + sock
	ref := filepath.Join(d, "ref.raw")
	if err := os.WriteFile(ref, content, 0o644); err != nil {
		t.Fatal(err)
	}
	ov := filepath.Join(d, "ov.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", uri, "-F", "raw", ov)
	t.Cleanup(func() { os.Remove(ov) }) // its backing export is gone by the directory's check
	for _, c := range [][]string{
		{"map", "-f", "raw", "--output=json", uri},
		{"map", "-f", "raw", uri},
		{"map", "--output=json", ov},
	} {
		o, e, code := runQ(t, c...)
		qo, qe, qcode := testkit.Run(t, "qemu-img", c...)
		o = strings.ReplaceAll(o, `, "compressed": false`, "") // the 8.2 layout (documented)
		if code != qcode || o != qo || asQemu(e) != oneLine(qe) && qe != "" {
			t.Errorf("%q: exit %d\n%s%s\nqemu-img: exit %d\n%s%s", c, code, o, e, qcode, qo, qe)
		}
	}
	for _, c := range [][]string{{"-f", "raw", uri}, {ov}} {
		out := filepath.Join(d, "out.raw")
		mustQ(t, append(append([]string{"convert"}, c...), "-O", "raw", out)...)
		testkit.MustEqual(t, mustReadFile(t, out), content, "convert "+c[len(c)-1])
		os.Remove(out)
	}
	for _, c := range [][]string{{"-f", "raw", "-F", "raw", uri, ref}, {ov, ref}} {
		if o := mustQ(t, append([]string{"compare"}, c...)...); o != "Images are identical.\n" {
			t.Errorf("compare %q: %s", c, o)
		}
	}
	if o := mustQ(t, "io", "-c", "read -P 0xaa 0 1M", ov); !strings.Contains(o, "read 1048576/1048576") {
		t.Errorf("read through the overlay: %s", o)
	}
}
