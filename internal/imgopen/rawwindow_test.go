package imgopen

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOpenSpec_RawWindow: a raw driver's offset and size are checked as
// QEMU 7.2's raw_apply_options checks them, in its order, against the
// file's length in whole sectors: an offset past it, a window past it,
// a size not a multiple of 512 (accepted before), in QEMU's words alone
// (qimg put "image spec:" and the node's path before them); an unaligned
// offset, and a window up to the rounded-up end, are fine.
func TestOpenSpec_RawWindow(t *testing.T) {
	dir := t.TempDir()
	big := mkRaw(t, dir, "big.raw", 1<<20)
	odd := filepath.Join(dir, "odd.raw")
	if err := os.WriteFile(odd, make([]byte, 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	const (
		notMultiple = "Specified size is not multiple of 512"
		pastOffset  = "Offset (2097152) cannot be greater than size of the containing file (1048576)"
		pastSum     = "The sum of offset (0) and size (4194304) has to be smaller or equal to the  actual size of the containing file (1048576)"
	)
	for _, c := range []struct {
		spec, err string
		size      int64
	}{
		{"driver=raw,size=1000,file.filename=" + big, notMultiple, 0},
		{"driver=raw,size=4M,file.filename=" + big, pastSum, 0},
		{"driver=raw,offset=2M,file.filename=" + big, pastOffset, 0},
		{"driver=raw,offset=2M,size=1000,file.filename=" + big, pastOffset, 0},
		{"driver=raw,offset=1025,file.filename=" + odd, "Offset (1025) cannot be greater than size of the containing file (1024)", 0},
		{"driver=throttle,file.driver=raw,file.size=1000,file.file.filename=" + big, "Specified size is not multiple of 512", 0},
		{"driver=raw,offset=100,size=1024,file.filename=" + big, "", 1024},
		{"driver=raw,size=1024,file.filename=" + odd, "", 1024},
		{"driver=raw,offset=1024,file.filename=" + odd, "", 0},
		// size=0 is an empty disk, as QEMU's (it was the whole file);
		// an empty size or offset is refused (it was no window).
		{"driver=raw,size=0,file.filename=" + big, "", 0},
		{"driver=raw,size=,file.filename=" + big, "Parameter 'size' expects a non-negative number", 0},
		{"driver=raw,offset=,file.filename=" + big, "Parameter 'offset' expects a non-negative number", 0},
	} {
		o, err := OpenSpec(c.spec, Spec{AIO: "threads", ReadOnly: true})
		if c.err != "" {
			if err == nil || !strings.HasPrefix(err.Error(), c.err) {
				t.Errorf("%s: %v, want %q", c.spec, err, c.err)
			}
			if err == nil {
				o.Close()
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.spec, err)
			continue
		}
		if n, err := o.Dev.Size(); n != c.size || err != nil {
			t.Errorf("%s: size %d, %v; want %d", c.spec, n, err, c.size)
		}
		o.Close()
	}
}

// TestOpenSpec_RawWindowDecimal: a window's offset with a leading 0 is
// decimal, as QEMU reads sizes (it was octal: offset=01000 wrote at 512,
// not 1000).
func TestOpenSpec_RawWindowDecimal(t *testing.T) {
	p := filepath.Join(t.TempDir(), "pat.raw")
	pat := make([]byte, 8192)
	for i := range pat {
		pat[i] = byte(i % 251)
	}
	if err := os.WriteFile(p, pat, 0o644); err != nil {
		t.Fatal(err)
	}
	o, err := OpenSpec("driver=raw,offset=01000,size=512,file.filename="+p, Spec{AIO: "threads", ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	b := make([]byte, 512)
	if err := o.Dev.Readv(0, [][]byte{b}); err != nil {
		t.Fatal(err)
	}
	if b[0] != pat[1000] {
		t.Fatalf("byte 0 of the window is %#x, the file's byte 1000 is %#x", b[0], pat[1000])
	}
}
