package main

import (
	"bytes"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/errordev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2"
)

// R5: a growth over a backing file whose header write failed leaves zero
// clusters past the virtual end. SetVersion(2) now refuses them
// (ErrZeroClusters, 13b059a), but qimg amend's expandZeroClusters
// writes out only [0, size): "qimg amend -o compat=0.10" fails, and no
// guest request can reach past the end to clear them. qemu-img amend
// expands zero clusters in every L1 entry and succeeds.
func TestRegress_AmendDowngradeAfterFailedGrowth(t *testing.T) {
	testkit.NeedQemu(t)
	dir := testkit.Dir(t)
	base := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(base, bytes.Repeat([]byte{0xbd}, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "top.qcow2")
	if err := qcow2.Create(p, qcow2.CreateOptions{Size: 2 << 20, ClusterSize: 64 << 10, BackingFile: base, BackingFormat: "raw"}); err != nil {
		t.Fatal(err)
	}
	var armed atomic.Bool
	im, err := qcow2.Open(p, qcow2.Options{Opener: func(path string, ro bool) (block.Device, error) {
		d, err := qcow2.DefaultOpener(path, ro)
		if err != nil || path != p {
			return d, err
		}
		return errordev.New(d, errordev.InjectorFunc(func(op errordev.Op, off, n int64) error {
			if armed.Load() && op == errordev.Write && off == 0 {
				armed.Store(false)
				return errordev.ErrInjectedEIO
			}
			return nil
		}), errordev.Options{}), nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	armed.Store(true)
	if err := im.Truncate(4 << 20); err == nil {
		t.Fatal("growth succeeded despite the failed header write")
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	q := filepath.Join(dir, "q.qcow2")
	b, _ := os.ReadFile(p)
	os.WriteFile(q, b, 0o644)
	if out, eout, code := testkit.Run(t, "qemu-img", "amend", "-o", "compat=0.10", q); code != 0 {
		t.Logf("qemu-img amend: exit %d %s%s", code, out, eout)
	} else {
		t.Log("qemu-img amend -o compat=0.10: ok")
	}
	if o, e, code := runQ(t, "amend", "-o", "compat=0.10", p); code != 0 {
		t.Fatalf("qimg amend -o compat=0.10 after a failed growth: exit %d: %s%s", code, o, e)
	}
}
