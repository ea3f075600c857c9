package qcow2

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// tornRecorder records, for each write of more than one sector, the
// device's bytes before it and the write itself.
type tornRecorder struct {
	block.Device
	mem   *memdev.Dev
	mu    sync.Mutex
	armed bool
	all   bool // record single-sector writes too
	recs  []tornRec
}

type tornRec struct {
	before []byte
	off    int64
	data   []byte
}

func (d *tornRecorder) Writev(off int64, bufs [][]byte) error {
	d.mu.Lock()
	if d.armed {
		data := bytes.Join(bufs, nil)
		if len(data) > memdev.SectorSize || d.all {
			d.recs = append(d.recs, tornRec{before: append([]byte(nil), d.mem.Bytes()...), off: off, data: data})
		}
	}
	d.mu.Unlock()
	return d.Device.Writev(off, bufs)
}

// A write torn between sectors (the first sectors new, the rest old) of
// the bitmap directory that Close writes in place must not leave a
// directory entry naming the new table with the old table's size: a
// shrink's new table is smaller, and QEMU reads (and check counts) the
// clusters past it as the bitmap's.
func TestBitmapsReview80d_TornDirInPlace(t *testing.T) {
	testkit.NeedTools(t, "qemu-img")
	dir := t.TempDir()
	p := filepath.Join(dir, "a.qcow2")
	run := func(args ...string) {
		if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img %v: %v\n%s", args, err, out)
		}
	}
	run("create", "-q", "-f", "qcow2", "-o", "cluster_size=512", p, "200M")
	long := strings.Repeat("n", 480) // its entry: 24+480 bytes, the next at 504
	run("bitmap", "--add", "-g", "512", p, long)
	run("bitmap", "--add", "-g", "512", p, "b2")
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	mem := memdev.FromBytes(raw, memdev.Options{})
	rec := &tornRecorder{Device: mem, mem: mem}
	im, err := OpenDevice(rec, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := im.WriteAt(bytes.Repeat([]byte{7}, 4096), 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := im.Shrink(100 << 20); err != nil {
		t.Fatal(err)
	}
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	rec.armed = true
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	bad := 0
	for i, r := range rec.recs {
		for k := memdev.SectorSize; k < len(r.data); k += memdev.SectorSize {
			img := append([]byte(nil), r.before...)
			if end := int(r.off) + k; end > len(img) {
				img = append(img, make([]byte, end-len(img))...)
			}
			copy(img[r.off:], r.data[:k])
			q := filepath.Join(dir, fmt.Sprintf("t%d-%d.qcow2", i, k))
			if err := os.WriteFile(q, img, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := testkit.QemuCheckReport(q, testkit.QemuCheckResult.NoCorruption); err != nil {
				t.Errorf("write %d at %d (%d bytes) torn after %d bytes: %v", i, r.off, len(r.data), k, err)
				bad++
			}
		}
	}
	if bad == 0 {
		t.Logf("%d multi-sector writes in Close, no torn one corrupt", len(rec.recs))
	}
}
