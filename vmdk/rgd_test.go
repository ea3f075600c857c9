package vmdk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/vmdk/format"
)

// TestOpen_BadRGDMatchesQemu: a redundant grain directory offset QEMU's
// vmdk_init_tables cannot read (rgd_offset << 9 negative, or past the
// block layer's largest offset less the directory) is refused at Open,
// read-only too, in QEMU's words; one past the end of the file, over the
// header or descriptor, or over the grain directory opens as in QEMU
// (only writes use the redundant directory, and QEMU writes new grains'
// entries through it into the header or anywhere: qring refuses those
// writable, KD8); one that wraps to 0 is none, as in QEMU, and the image
// is written and checked clean by qemu-img.
func TestOpen_BadRGDMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.vmdk")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", src, "100M")
	testkit.MustRun(t, "qemu-io", "-f", "vmdk", "-c", "write -P 5 0 64k", src)
	clean, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	for _, c := range []struct {
		name     string
		rgd      uint64
		refused  bool // by Open, as by QEMU
		writable bool
	}{
		{"past EOF", 1 << 20, false, false},
		{"over the descriptor", 1, false, false},
		{"over the grain directory", le.Uint64(clean[56:]), false, false},
		{"at the largest offset QEMU reads", uint64(maxSize-512) / 512, false, false},
		{"past the largest offset QEMU reads", uint64(maxSize) / 512, true, false},
		{"negative", 1 << 54, true, false},
		{"shifted to 0", 1 << 55, false, true},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".vmdk")
		img := bytes.Clone(clean)
		le.PutUint64(img[48:], c.rgd)
		if err := os.WriteFile(p, img, 0o644); err != nil {
			t.Fatal(err)
		}
		_, qe, qcode := testkit.Run(t, "qemu-img", "info", p)
		want := "Could not read l1 backup table from extent '" + p + "': Input/output error"
		if (qcode != 0) != c.refused || (c.refused && !strings.Contains(qe, want)) {
			t.Fatalf("%s: qemu-img info exit %d %q", c.name, qcode, qe)
		}
		for _, w := range []bool{false, true} {
			f, err := block.OpenOSFile(p, !w)
			if err != nil {
				t.Fatal(err)
			}
			d, err := Open(f, Options{Name: p, Writable: w})
			switch {
			case c.refused:
				if err == nil || err.Error() != want || !errors.Is(err, format.ErrCorrupt) || errors.Is(err, ErrNotWritable) {
					t.Errorf("%s (writable %v): %v, want %q", c.name, w, err, want)
				}
			case w && !c.writable:
				if !errors.Is(err, ErrNotWritable) {
					t.Errorf("%s: writable open: %v, want ErrNotWritable", c.name, err)
				}
			case err != nil:
				t.Errorf("%s (writable %v): %v", c.name, w, err)
			default:
				got := make([]byte, 64<<10)
				if err := d.Readv(0, [][]byte{got}); err != nil || !bytes.Equal(got, bytes.Repeat([]byte{5}, 64<<10)) {
					t.Errorf("%s: read %v", c.name, err)
				}
				if err := d.Check(); err != nil {
					t.Errorf("%s: check %v", c.name, err)
				}
				if w {
					if err := d.Writev(1<<20, [][]byte{bytes.Repeat([]byte{7}, 64<<10)}); err != nil {
						t.Errorf("%s: write %v", c.name, err)
					}
				}
				if err := d.Close(); err != nil {
					t.Fatal(err)
				}
				f = nil
			}
			if f != nil {
				f.Close()
			}
		}
		if c.writable {
			qemuCheck(t, p)
			testkit.MustRun(t, "qemu-io", "-f", "vmdk", "-c", "read -P 7 1M 64k", "-c", "read -P 5 0 64k", p)
		}
	}
}
