package qcow2

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// TestRegress_CheckHugeBitmapTable: a bitmap whose table claims 2^27
// entries (QEMU's table bound, but 1 GiB of data clusters, past its
// 512 MiB one: QEMU refuses to open the image). Check read the whole
// table (1 GiB of memory for each entry naming it) and counted what it
// named; a dirty image's open repaired from those counts and grew the
// file by 131 MB before failing (review 53). It is a corruption now,
// its table not read.
func TestRegress_CheckHugeBitmapTable(t *testing.T) {
	testkit.NeedQemu(t)
	p := filepath.Join(t.TempDir(), "h.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "64M")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", p, "b")
	b, h := fileAndHeader(t, p)
	var ext format.BitmapsExt
	var err error
	for _, e := range h.Extensions {
		if e.Type == format.ExtBitmaps {
			if ext, err = format.ParseBitmapsExt(e.Data); err != nil {
				t.Fatal(err)
			}
		}
	}
	binary.BigEndian.PutUint32(b[ext.DirOffset+8:], 0x8000000) // the entry's table size
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 2<<30); err != nil { // the table lies within the file
		t.Fatal(err)
	}
	im, err := Open(p, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	r, err := im.Check(CheckOptions{})
	runtime.ReadMemStats(&m1)
	if err != nil || r.Corruptions == 0 || !strings.Contains(strings.Join(r.Messages, "\n"), "past QEMU's bounds") {
		t.Errorf("check: %v, %d corruptions: %v", err, r.Corruptions, head(r.Messages, 4))
	}
	if a := m1.TotalAlloc - m0.TotalAlloc; a > 64<<20 {
		t.Errorf("the check allocated %d MiB", a>>20)
	}
}
