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

// runQ runs the qimg CLI in-process.
func runQ(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return o.String(), e.String(), code
}

// mustQ runs qimg and fails the test on a non-zero exit.
func mustQ(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := runQ(t, args...)
	if code != 0 {
		t.Fatalf("qimg %q: exit %d\nstdout: %s\nstderr: %s", args, code, out, errOut)
	}
	return out
}

// qimgAndQemu runs the same command through qimg and through qemu-img, and
// returns the output of each; either failing fails t.
func qimgAndQemu(t *testing.T, args ...string) (ours, qemu string) {
	t.Helper()
	return mustQ(t, args...), testkit.MustRun(t, "qemu-img", args...)
}

// workDir is a temporary directory (a testkit.Dir: kept when the test
// fails) whose qcow2 images must all pass qemu-img check when the test
// ends.
func workDir(t *testing.T) string {
	t.Helper()
	d := testkit.Dir(t)
	t.Cleanup(func() { checkAll(t, d) })
	return d
}

func checkAll(t *testing.T, dir string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, f := range files {
		b := make([]byte, 4)
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		fh.Read(b)
		fh.Close()
		if string(b) != "QFI\xfb" {
			continue
		}
		if err := testkit.QemuCheckReport(f, testkit.QemuCheckResult.Clean); err != nil {
			t.Errorf("at the end of the test: %v", err)
		}
	}
}

// splitWords splits a shell word list with "..." and '...' quoting.
func splitWords(s string) []string {
	var out []string
	var cur strings.Builder
	in, quote := false, byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
			cur.WriteByte(c)
		case c == '"' || c == '\'':
			quote, in = c, true
		case c == ' ' || c == '\t':
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	if in {
		out = append(out, cur.String())
	}
	return out
}

// dataImage creates a 4M qcow2 image called name in a new workDir, with
// its first 128k written (pattern 3), for a check case to damage.
func dataImage(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(workDir(t), name)
	mustQ(t, "create", "-q", p, "4M")
	mustQ(t, "io", p, "-c", "write -P 3 0 128k")
	return p
}

// leakCluster drops the L2 entry of guest cluster 0 (which must be
// allocated) so that its data cluster is leaked: the image stays
// consistent otherwise. It works on v3 images with 64 KiB clusters.
func leakCluster(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hdr := make([]byte, 48)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		t.Fatal(err)
	}
	l1off := int64(binary.BigEndian.Uint64(hdr[40:]))
	e := make([]byte, 8)
	if _, err := f.ReadAt(e, l1off); err != nil {
		t.Fatal(err)
	}
	l2off := int64(binary.BigEndian.Uint64(e) & 0x00fffffffffffe00)
	if l2off == 0 {
		t.Fatal("leakCluster: no L2 table")
	}
	if _, err := f.WriteAt(make([]byte, 8), l2off); err != nil {
		t.Fatal(err)
	}
}

// zeroRefcount sets the refcount of the data cluster behind guest cluster
// 0 to zero (16-bit refcounts): a corruption that -r all repairs.
func zeroRefcount(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u64 := func(off int64) uint64 {
		b := make([]byte, 8)
		if _, err := f.ReadAt(b, off); err != nil {
			t.Fatal(err)
		}
		return binary.BigEndian.Uint64(b)
	}
	hdr := make([]byte, 104)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		t.Fatal(err)
	}
	cbits := binary.BigEndian.Uint32(hdr[20:])
	if order := binary.BigEndian.Uint32(hdr[96:]); order != 4 {
		t.Fatalf("zeroRefcount: refcount order %d", order)
	}
	const mask = 0x00fffffffffffe00
	l2 := int64(u64(int64(binary.BigEndian.Uint64(hdr[40:]))) & mask)
	data := u64(l2) & mask
	cl := data >> cbits
	perBlock := uint64(1) << (cbits - 1) // 16-bit entries
	rb := int64(u64(int64(binary.BigEndian.Uint64(hdr[48:]))+int64(cl/perBlock)*8) & mask)
	if _, err := f.WriteAt([]byte{0, 0}, rb+int64(cl%perBlock)*2); err != nil {
		t.Fatal(err)
	}
}
