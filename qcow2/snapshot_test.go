package qcow2

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// snapImage is an open image with a helper that closes it, runs our
// Check and qemu-img check, and opens it again.
type snapImage struct {
	t  *testing.T
	im *Image
	p  string
}

func (s *snapImage) step() {
	s.t.Helper()
	closeCheck(s.t, s.im, s.p)
	im, err := Open(s.p, Options{})
	if err != nil {
		s.t.Fatal(err)
	}
	s.im = im
}

func (s *snapImage) write(b []byte, off int64) {
	s.t.Helper()
	if _, err := s.im.WriteAt(b, off); err != nil {
		s.t.Fatalf("write at %d: %v", off, err)
	}
}

func (s *snapImage) want(b []byte, off int64, what string) {
	s.t.Helper()
	got := make([]byte, len(b))
	if _, err := s.im.ReadAt(got, off); err != nil {
		s.t.Fatalf("read at %d: %v", off, err)
	}
	if !bytes.Equal(got, b) {
		s.t.Fatalf("%s: data at %d differs", what, off)
	}
}

func newSnapImage(t *testing.T, co CreateOptions) *snapImage {
	p := filepath.Join(testkit.Dir(t), "s.qcow2")
	if err := Create(p, co); err != nil {
		t.Fatal(err)
	}
	im, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := &snapImage{t: t, im: im, p: p}
	t.Cleanup(func() { s.im.Close() })
	return s
}

func TestSnapshotCreateApplyDelete(t *testing.T) {
	t.Parallel()
	for _, co := range []CreateOptions{
		{Size: 8 << 20},
		{Size: 8 << 20, ClusterSize: 4096},
		{Size: 8 << 20, LazyRefcounts: true},
		{Size: 8 << 20, Compat: "0.10"},
	} {
		t.Run(fmt.Sprintf("cs%d_lazy%v_compat%s", co.ClusterSize, co.LazyRefcounts, co.Compat), func(t *testing.T) {
			snapshotSequence(t, co)
		})
	}
}

func snapshotSequence(t *testing.T, co CreateOptions) {
	s := newSnapImage(t, co)
	a := pattern(1<<20, 1)
	s.write(a, 0)
	s.write(pattern(4096, 9), 2<<20+512)
	if _, err := s.im.CreateSnapshot("s1"); err != nil {
		t.Fatal(err)
	}
	s.step()
	if got := s.im.Snapshots(); len(got) != 1 || got[0].Name != "s1" || got[0].ID != "1" || got[0].DiskSize != 8<<20 {
		t.Fatalf("snapshots %+v", got)
	}
	// A partial write into a shared cluster: COW of the old data.
	b := pattern(4096, 2)
	s.write(b, 4096)
	after := append([]byte(nil), a...)
	copy(after[4096:], b)
	s.want(after, 0, "after a write into a shared cluster")
	c := pattern(64<<10, 3)
	s.write(c, 128<<10)
	copy(after[128<<10:], c)
	s.want(after, 0, "after a whole-cluster write")
	s.step()
	s.want(after, 0, "reopened")
	if _, err := s.im.CreateSnapshot("s2"); err != nil {
		t.Fatal(err)
	}
	s.write(pattern(8192, 4), 0)
	s.step()
	if err := s.im.ApplySnapshot("s1"); err != nil {
		t.Fatal(err)
	}
	s.want(a, 0, "s1 applied")
	s.want(pattern(4096, 9), 2<<20+512, "s1 applied")
	s.step()
	s.want(a, 0, "s1 applied, reopened")
	if err := s.im.DeleteSnapshot("1"); err != nil { // by ID
		t.Fatal(err)
	}
	s.step()
	s.want(a, 0, "s1 deleted")
	if err := s.im.ApplySnapshot("s2"); err != nil {
		t.Fatal(err)
	}
	s.want(after, 0, "s2 applied")
	s.step()
	if err := s.im.DeleteSnapshot("s2"); err != nil {
		t.Fatal(err)
	}
	if err := s.im.DeleteSnapshot("s2"); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("deleting twice: %v", err)
	}
	s.step()
	s.want(after, 0, "s2 deleted")
	if n := len(s.im.Snapshots()); n != 0 {
		t.Fatalf("%d snapshots left", n)
	}
	// Refcounts are back to 1: writes go in place again.
	before := s.im.Metrics()
	s.write(pattern(4096, 5), 4096)
	if m := s.im.Metrics(); m.ClustersAllocated != before.ClustersAllocated {
		t.Fatalf("write after the last delete allocated %d clusters", m.ClustersAllocated-before.ClustersAllocated)
	}
	s.step()
}

// The snapshot's view never changes through writes after it: every write
// shape into shared clusters (partial, whole, zero-filled old data).
func TestSnapshotWritesKeepSnapshotView(t *testing.T) {
	s := newSnapImage(t, CreateOptions{Size: 4 << 20})
	zeros := make([]byte, 64<<10)
	old := pattern(256<<10, 7)
	s.write(old, 0)
	s.write(zeros, 256<<10) // allocated, but zeros: COW must still copy
	if _, err := s.im.CreateSnapshot("base"); err != nil {
		t.Fatal(err)
	}
	s.write(pattern(512, 8), 100)
	s.write(pattern(64<<10, 8), 64<<10)
	s.write(pattern(512, 8), 256<<10+4096)
	s.write(pattern(4096, 8), 3<<20)
	s.step()
	if err := s.im.ApplySnapshot("base"); err != nil {
		t.Fatal(err)
	}
	s.want(old, 0, "snapshot view")
	s.want(zeros, 256<<10, "snapshot view")
	s.want(make([]byte, 4096), 3<<20, "snapshot view")
	s.step()
}

// Snapshots taken, applied and deleted while writers run: the image stays
// consistent (Check and qemu-img check), every operation either runs or
// reports ErrSnapshotBusy, and applying each snapshot afterwards leaves
// the image consistent too.
func TestSnapshotConcurrentWriters(t *testing.T) {
	t.Parallel()
	s := newSnapImage(t, CreateOptions{Size: 4 << 20, ClusterSize: 4096})
	s.write(pattern(4<<20, 1), 0)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			b := pattern(6000, byte(w))
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := s.im.WriteAt(b, rng.Int64N(4<<20-6000)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	busy := 0
	for i := range 6 {
		var err error
		switch i % 3 {
		case 0, 1:
			_, err = s.im.CreateSnapshot(fmt.Sprint("c", i))
		case 2:
			err = s.im.DeleteSnapshot(fmt.Sprint("c", i-2))
		}
		if errors.Is(err, ErrSnapshotBusy) {
			busy++
		} else if err != nil && !errors.Is(err, ErrNoSnapshot) {
			t.Fatal(err)
		}
	}
	t.Logf("%d of 6 operations refused as busy", busy)
	close(stop)
	wg.Wait()
	s.step()
	for _, sn := range s.im.Snapshots() {
		if err := s.im.ApplySnapshot(sn.Name); err != nil {
			t.Fatal(err)
		}
		s.step()
	}
}

// Zero writes and discards of shared clusters leave the snapshot's data.
func TestSnapshotZeroAndDiscardShared(t *testing.T) {
	s := newSnapImage(t, CreateOptions{Size: 4 << 20})
	old := pattern(1<<20, 3)
	s.write(old, 0)
	if _, err := s.im.CreateSnapshot("z"); err != nil {
		t.Fatal(err)
	}
	if err := s.im.WriteZeroes(0, 64<<10, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.im.WriteZeroes(128<<10, 64<<10, block.MayUnmap); err != nil {
		t.Fatal(err)
	}
	if err := s.im.WriteZeroes(300<<10, 5000, 0); err != nil { // partial: COW
		t.Fatal(err)
	}
	if err := s.im.Discard(512<<10, 128<<10); err != nil {
		t.Fatal(err)
	}
	s.want(make([]byte, 64<<10), 0, "zeroed")
	s.step()
	if err := s.im.ApplySnapshot("z"); err != nil {
		t.Fatal(err)
	}
	s.want(old, 0, "snapshot after zero and discard")
	s.step()
}

// A snapshot whose increments overflow a refcount (2-bit refcounts, a
// host cluster three compressed clusters share) fails with
// ErrUnsupported, as QEMU's fails, and leaves the image as consistent as
// it was: not marked corrupt, Check clean, data intact, writable (found
// by review: the image was marked corrupt).
func TestCreateSnapshot_RefcountOverflow(t *testing.T) {
	im, d := memImage(t, CreateOptions{Size: 16 << 20, RefcountBits: 2}, Options{}, memdev.Options{})
	mustWrite(t, im, pattern(1<<20, 2), 4<<20) // plain clusters before the compressed ones
	small := bytes.Repeat([]byte("compress me "), 64<<10/12+1)[:64<<10]
	for i := range 4 {
		if err := im.WriteCompressed(int64(i)*64<<10, small); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := im.CreateSnapshot("s"); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("snapshot: %v, want ErrUnsupported (refcount overflow)", err)
	}
	if im.ReadOnly() {
		t.Fatal("a refused snapshot left the image read-only")
	}
	if r, err := im.Check(CheckOptions{}); err != nil || !r.Clean() {
		t.Fatalf("check after the refused snapshot: %v %+v", err, r)
	}
	mustWrite(t, im, pattern(4096, 3), 8<<20)
	for i := range 4 {
		testkit.MustEqual(t, readBack(t, im, int64(i)*64<<10, 64<<10), small, "compressed cluster")
	}
	testkit.MustEqual(t, readBack(t, im, 4<<20, 1<<20), pattern(1<<20, 2), "plain clusters")
	if len(im.Snapshots()) != 0 {
		t.Fatal("a refused snapshot is listed")
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "overflow.qcow2")
	if err := d.WriteFile(p); err != nil {
		t.Fatal(err)
	}
	testkit.QemuCheck(t, p)
}
