package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// mapLikeQemu is qimg's map --output=json as QEMU 7.2 prints it: without
// the "compressed" field that 8.2 added.
func mapLikeQemu(s string) string {
	return strings.ReplaceAll(s, `, "compressed": false`, "")
}

// TestMap_HostHoles: where the host file holds far fewer clusters than
// the refcounts say are in use (metadata preallocation), qemu-img map
// shows data clusters lying in holes as zero, its human map leaves them
// out, and measure does not count them; a raw backing file's holes are
// zeros, not data. qimg says the same, byte for byte.
func TestMap_HostHoles(t *testing.T) {
	dir := qemuDir(t)
	meta := filepath.Join(dir, "meta.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", meta, "4M")
	qemuIO(t, meta, "qcow2", "write -P 1 64k 4k", "write -P 2 1M 128k")
	raw := filepath.Join(dir, "back.raw")
	if err := os.WriteFile(raw, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(raw, 4<<20); err != nil {
		t.Fatal(err)
	}
	qemuIO(t, raw, "raw", "write -P 3 1M 4k")
	over := qemuOverlay(t, filepath.Join(dir, "over.qcow2"), "back.raw", "raw", "write -P 4 2M 64k")
	// An ordinary image: a data cluster is data wherever the host put it.
	plain := qemuImage(t, filepath.Join(dir, "plain.qcow2"), "qcow2", "4M", "write -P 5 0 4k")
	// Over a raw file of an odd length, which QEMU counts in sectors.
	if err := os.WriteFile(filepath.Join(dir, "odd.raw"), make([]byte, 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	odd := filepath.Join(dir, "odd.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "odd.raw", "-F", "raw", odd, "64k")

	for _, img := range []string{meta, over, plain, odd} {
		ours, qemu := qimgAndQemu(t, "map", "--output=json", img)
		if mapLikeQemu(ours) != qemu {
			t.Errorf("map --output=json %s:\nqimg:\n%s\nqemu-img:\n%s", filepath.Base(img), ours, qemu)
		}
		if ours, qemu = qimgAndQemu(t, "map", img); ours != qemu {
			t.Errorf("map %s:\nqimg:\n%s\nqemu-img:\n%s", filepath.Base(img), ours, qemu)
		}
		if ours, qemu = qimgAndQemu(t, "measure", "-O", "qcow2", img); ours != qemu {
			t.Errorf("measure %s:\nqimg:\n%s\nqemu-img:\n%s", filepath.Base(img), ours, qemu)
		}
	}
	if ours := mustQ(t, "map", "--output=json", meta); !strings.Contains(ours, `"zero": true, "data": true`) {
		t.Errorf("map of a metadata-preallocated image shows no data in holes:\n%s", ours)
	}
}

// TestRaw_OddSize: a raw file whose length is not a multiple of 512 is,
// to qemu-img, as long as the next multiple, the tail reading as zeros:
// in info, map, measure and convert, and compare finds it identical to
// itself converted.
func TestRaw_OddSize(t *testing.T) {
	dir := qemuDir(t)
	raw := filepath.Join(dir, "odd.raw")
	data := make([]byte, 1000)
	for i := range data {
		data[i] = byte(i%251 + 1)
	}
	if err := os.WriteFile(raw, data, 0o644); err != nil {
		t.Fatal(err)
	}
	ours, qemu := qimgAndQemu(t, "info", "--output=json", "-f", "raw", raw)
	for _, want := range []string{`"virtual-size": 1024`} {
		if !strings.Contains(qemu, want) {
			t.Fatalf("qemu-img info lacks %s:\n%s", want, qemu)
		}
		if !strings.Contains(ours, want) {
			t.Errorf("qimg info lacks %s:\n%s", want, ours)
		}
	}
	if ours, qemu = qimgAndQemu(t, "map", "--output=json", "-f", "raw", raw); mapLikeQemu(ours) != qemu {
		t.Errorf("map:\nqimg:\n%s\nqemu-img:\n%s", ours, qemu)
	}
	if ours, qemu = qimgAndQemu(t, "measure", "-O", "qcow2", "-f", "raw", raw); ours != qemu {
		t.Errorf("measure:\nqimg:\n%s\nqemu-img:\n%s", ours, qemu)
	}
	conv := filepath.Join(dir, "odd.qcow2")
	mustQ(t, "convert", "-f", "raw", "-O", "qcow2", raw, conv)
	testkit.MustRun(t, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, conv)
	if out := testkit.MustRun(t, "qemu-img", "info", "--output=json", conv); !strings.Contains(out, `"virtual-size": 1024`) {
		t.Errorf("converted image:\n%s", out)
	}
	// The file itself is not touched by reading it.
	if fi, err := os.Stat(raw); err != nil || fi.Size() != 1000 {
		t.Errorf("odd.raw after the reads: %v, %v", fi.Size(), err)
	}
}
