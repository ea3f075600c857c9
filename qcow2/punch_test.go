package qcow2_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
)

// Q21 on a real file: a Discard and an unmapping WriteZeroes give the
// freed clusters' space back to the file system (the file's allocation
// falls, Metrics().PunchedBytes counts it); pass-discard-request=off
// keeps it. Both images read back zeros and check clean with qemu-img.
func TestPunch_FreedClusters(t *testing.T) {
	t.Parallel()
	for _, pass := range []bool{true, false} {
		for _, unmapZero := range []bool{false, true} {
			p := filepath.Join(t.TempDir(), "p.qcow2")
			if err := qcow2.Create(p, qcow2.CreateOptions{Size: 64 << 20}); err != nil {
				t.Fatal(err)
			}
			o := qcow2.Options{Opener: qcow2.Opener(uring.Opener(uring.Options{Direct: true})), PreallocSize: -1}
			if !pass {
				if err := o.Set("pass-discard-request", "off"); err != nil {
					t.Fatal(err)
				}
			}
			im, err := qcow2.Open(p, o)
			if err != nil {
				t.Fatal(err)
			}
			data := make([]byte, 16<<20)
			for i := range data {
				data[i] = byte(i>>12) | 1
			}
			if _, err := im.WriteAt(data, 0); err != nil {
				t.Fatal(err)
			}
			if err := im.Flush(); err != nil {
				t.Fatal(err)
			}
			before := allocated(t, p)
			if unmapZero {
				err = im.WriteZeroes(0, 16<<20, block.MayUnmap)
			} else {
				err = im.Discard(0, 16<<20)
			}
			if err != nil {
				t.Fatal(err)
			}
			punched := im.Metrics().PunchedBytes
			got := make([]byte, 16<<20)
			if _, err := im.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if testkit.FirstDiff(got, make([]byte, len(got))) >= 0 {
				t.Fatal("the freed range does not read as zeros")
			}
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			after := allocated(t, p)
			if pass && (punched != 16<<20 || after > before-15<<20) {
				t.Errorf("unmapping zero %v: %d B punched, the file uses %d B after, %d B before", unmapZero, punched, after, before)
			}
			if !pass && (punched != 0 || after < before) {
				t.Errorf("pass-discard-request=off, unmapping zero %v: %d B punched, the file uses %d B after, %d B before", unmapZero, punched, after, before)
			}
			testkit.QemuCheck(t, p)
		}
	}
}

func allocated(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}
