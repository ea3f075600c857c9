package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestCheck_GrowOverRefblockMatchesQemu: check -r all of an image whose
// refcount table names a block past the end of the file grows the file
// over it as qemu-img 7.2 does ("Repairing refcount block 1 is outside
// image"), and leaves it as long as qemu-img's when no reserve ahead is
// given back at close (prealloc=off). qimg rebuilt without growing the
// file and counted one corruption fixed, qemu-img two.
func TestCheck_GrowOverRefblockMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	for _, cs := range []string{"65536", "512"} {
		t.Run("cluster_size="+cs, func(t *testing.T) {
			d := t.TempDir() // damaged on purpose
			orig := filepath.Join(d, "orig.qcow2")
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size="+cs, orig, "1M")
			qio(t, orig, "write -P 5 0 64k")
			damage(t, orig, func(f imageFile) { f.putU64(int64(f.u64(48))+8, 3<<20) })
			q, g := filepath.Join(d, "q.qcow2"), filepath.Join(d, "g.qcow2")
			cp(t, orig, q)
			cp(t, orig, g)
			qo, qe, qcode := testkit.Run(t, "qemu-img", "check", "-r", "all", q)
			o, e, code := runQ(t, "check", "-r", "all", "-o", "prealloc=off", g)
			if !strings.HasPrefix(qe, "Repairing refcount block 1 is outside image\n") {
				t.Fatalf("qemu-img:\n%s%s", qo, qe)
			}
			if code != qcode || o != qo || e != qe {
				t.Errorf("exit %d, qemu-img %d\nqimg:\n%s%s\nqemu-img:\n%s%s", code, qcode, o, e, qo, qe)
			}
			qs, err := os.Stat(q)
			if err != nil {
				t.Fatal(err)
			}
			gs, err := os.Stat(g)
			if err != nil {
				t.Fatal(err)
			}
			if qs.Size() != gs.Size() || gs.Size() <= 3<<20 {
				t.Errorf("file length %d after the repair, qemu-img's %d", gs.Size(), qs.Size())
			}
			testkit.QemuCheck(t, g)
			if out := testkit.MustRun(t, "qemu-io", "-r", "-c", "read -P 5 0 64k", g); strings.Contains(out, "verification failed") {
				t.Error(out)
			}
		})
	}
}

// TestCheck_UnreadableRefblockMatchesQemu: a refcount block past QEMU's
// largest offset (2^63-2^30) cannot be read: qemu-img check reports one
// internal error for each cluster it should count ("Can't get refcount
// for cluster N: Input/output error"), twice with -r leaks (its second
// comparison), and fails; qimg read the block as zeros and called every
// cluster in use free. Without a repair and with -r leaks the image is
// left as it was.
func TestCheck_UnreadableRefblockMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	d := t.TempDir() // damaged on purpose
	orig := filepath.Join(d, "orig.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", orig, "1M")
	qio(t, orig, "write -P 5 0 64k")
	damage(t, orig, func(f imageFile) { f.putU64(int64(f.u64(48)), 1<<63-1<<30+1<<16) })
	before := mustReadFile(t, orig)
	for _, mode := range [][]string{nil, {"-r", "leaks"}, {"--output=json"}} {
		q, g := filepath.Join(d, "q.qcow2"), filepath.Join(d, "g.qcow2")
		cp(t, orig, q)
		cp(t, orig, g)
		qo, qe, qcode := testkit.Run(t, "qemu-img", append(append([]string{"check"}, mode...), q)...)
		o, e, code := runQ(t, append(append([]string{"check"}, mode...), g)...)
		o = strings.ReplaceAll(o, g, q)
		e = strings.Replace(e, "qimg: check: ", "qemu-img: ", 1)
		if !strings.Contains(qe, "Can't get refcount for cluster 0: Input/output error") {
			t.Fatalf("qemu-img %q:\n%s%s", mode, qo, qe)
		}
		if code != qcode || o != qo || e != qe {
			t.Errorf("check %q: exit %d, qemu-img %d\nqimg:\n%s%s\nqemu-img:\n%s%s", mode, code, qcode, o, e, qo, qe)
		}
		if string(mustReadFile(t, g)) != string(before) {
			t.Errorf("check %q changed the image", mode)
		}
	}
}

// TestCheck_UnalignedRefblockBesideFatalDamageMatchesQemu: check -r
// leaks of an image with an unaligned refcount block beside damage no
// rebuild cures (an unaligned L1 entry) says what qemu-img 7.2 says:
// the comparison's "Can't get refcount" lines, then "ERROR need to
// rebuild refcount structures", and fails without a summary ("Check
// failed: Input/output error"), leaving the image byte for byte as
// qemu-img's (marked corrupt by the block's corruption event). qimg
// printed "ERROR not repaired: ... the image is left as it was" before
// the event that marked it corrupt, and the summary. QEMU reads the L2
// table at the unaligned offset and reports what it finds in it; qimg
// reads nothing through a damaged entry: those lines are left out.
func TestCheck_UnalignedRefblockBesideFatalDamageMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	d := t.TempDir() // damaged on purpose
	orig := filepath.Join(d, "orig.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", orig, "1M")
	qio(t, orig, "write -P 5 0 64k")
	damage(t, orig, func(f imageFile) {
		rt, l1 := int64(f.u64(48)), int64(f.u64(40))
		f.putU64(rt, f.u64(rt)+0x200)
		f.putU64(l1, f.u64(l1)+0x200)
	})
	q, g := filepath.Join(d, "q.qcow2"), filepath.Join(d, "g.qcow2")
	cp(t, orig, q)
	cp(t, orig, g)
	qo, qe, qcode := testkit.Run(t, "qemu-img", "check", "-r", "leaks", q)
	o, e, code := runQ(t, "check", "-r", "leaks", g)
	e = strings.Replace(e, "qimg: check: ", "qemu-img: ", 1)
	var kept []string
	for _, l := range strings.SplitAfter(qe, "\n") {
		if !strings.Contains(l, "l2 entry with reserved bits") && !strings.Contains(l, "Preallocated cluster") && !strings.Contains(l, "exceeding the end of the file") {
			kept = append(kept, l)
		}
	}
	want := strings.Join(kept, "")
	if !strings.Contains(want, "ERROR need to rebuild refcount structures\n") {
		t.Fatalf("qemu-img:\n%s%s", qo, qe)
	}
	if code != qcode || o != qo || e != want {
		t.Errorf("exit %d, qemu-img %d\nqimg:\n%s%s\nqemu-img:\n%s%s", code, qcode, o, e, qo, want)
	}
	if string(mustReadFile(t, g)) != string(mustReadFile(t, q)) {
		t.Error("the image differs from qemu-img's after the check")
	}
}
