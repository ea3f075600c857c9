package qcow2

import (
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
)

// TestFill_BulkWritesPause: on RAM (prealloc-fill=auto: zeroes) a guest
// writing whole clusters with large requests gets no zeros ahead once
// the filler has seen a window of runs (fill_bulk.go): the device
// receives little more than the guest's bytes, where the zeros doubled
// them, and the image reads back. Small writes after it bring the fill
// back.
func TestFill_BulkWritesPause(t *testing.T) {
	const bulk, chunk = 96 << 20, 2 << 20
	im, mem := memImage(t, CreateOptions{Size: 256 << 20}, Options{}, memdev.Options{Media: block.MediaRAM})
	base := mem.M.BytesWritten.Load()
	p := pattern(chunk, 3)
	for off := int64(0); off < bulk; off += chunk {
		mustWrite(t, im, p, off)
	}
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	im.waitFillIdle()
	m := im.Metrics()
	wa := float64(mem.M.BytesWritten.Load()-base) / bulk
	t.Logf("bulk: device received %.2fx the guest's bytes; %d B filled, %d fill waits, %d clusters in runs (%s)", wa, m.FillBytes, m.FillWaits, m.RunClusters, m.Prealloc)
	// The windows before the filler's first look: at most the first
	// judgment's clusters and the window it claims ahead.
	if m.FillBytes > fillJudgeClusters*(64<<10)+fillLow+fillChunk || wa > 1.5 {
		t.Errorf("%d B of zeros ahead of whole-cluster writes (%.2fx the guest's bytes)", m.FillBytes, wa)
	}
	for off := int64(0); off < bulk; off += chunk {
		got := make([]byte, chunk)
		if _, err := im.ReadAt(got, off); err != nil || string(got) != string(p) {
			t.Fatalf("read back at %#x: %v", off, err)
		}
	}

	// A small sequential writer after it: the fill resumes.
	before := m.FillBytes
	q := pattern(4<<10, 5)
	for off := int64(bulk); off < bulk+16<<20; off += 4 << 10 {
		mustWrite(t, im, q, off)
	}
	im.waitFillIdle()
	if m := im.Metrics(); m.FillBytes == before {
		t.Errorf("no fill after small writes resumed (%d B filled)", m.FillBytes)
	}
}
