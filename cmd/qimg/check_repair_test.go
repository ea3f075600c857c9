package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestCheck_RepairsLikeQemu: damaged images that qimg check judged or
// repaired otherwise than qemu-img 7.2 (found by a differential run):
// the exit statuses of check, -r leaks and -r all match qemu-img's, the
// repaired image passes qemu-img check, and the guest data reads as
// before the repair.
func TestCheck_RepairsLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	cases := []struct {
		name   string
		create []string // qemu-img create -o
		setup  func(t *testing.T, p string)
		edit   func(f imageFile)
		// exit statuses of check, check -r leaks, check -r all
		check, leaks, all int
	}{
		{
			// With 1-bit refcounts a refcount block that is also a data
			// cluster counts 1 once the overflow is dropped: it passed
			// for a refcount block, and -r leaks and -r all wrote
			// refcount fixes into the guest's data.
			name: "refcount block on data, 1-bit refcounts", create: []string{"cluster_size=4096,refcount_bits=1"},
			setup: func(t *testing.T, p string) { qio(t, p, "write -P 0x11 0 64k") },
			edit: func(f imageFile) {
				l2 := int64(f.u64(int64(f.u64(40))) & entryMask)
				data := f.u64(l2+8*4) & entryMask
				f.putU64(int64(f.u64(48)), data)
			},
			check: 2, leaks: 1, all: 0,
		},
		{
			// A snapshot whose count went missing: its references are
			// leaks, and once -r leaks fixed them the COPIED flags are
			// set right as well, as QEMU does when nothing else is
			// wrong.
			name: "snapshot count dropped", create: []string{"cluster_size=4096"},
			setup: func(t *testing.T, p string) {
				qio(t, p, "write -P 0x11 0 64k")
				testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s1", p)
			},
			edit:  func(f imageFile) { f.write(60, []byte{0, 0, 0, 0}) },
			check: 3, leaks: 0, all: 0,
		},
		{
			// A version 3 snapshot entry without its disk size.
			name: "snapshot entry incomplete", create: []string{"cluster_size=4096"},
			setup: func(t *testing.T, p string) {
				qio(t, p, "write -P 0x11 0 8k")
				testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s1", p)
			},
			edit: func(f imageFile) {
				so := int64(f.u64(64))
				extra := int64(f.u32(so + 36))
				n := int(binary.BigEndian.Uint16(f.read(so+12, 2))) + int(binary.BigEndian.Uint16(f.read(so+14, 2)))
				idName := f.read(so+40+extra, n)
				f.write(so+36, binary.BigEndian.AppendUint32(nil, 0))
				f.write(so+40, idName)
			},
			check: 2, leaks: 2, all: 0,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := t.TempDir() // damaged on purpose: no check at the end
			orig := filepath.Join(d, "orig.qcow2")
			testkit.MustRun(t, "qemu-img", append(append([]string{"create", "-q", "-f", "qcow2"}, flagArgs("-o", tc.create)...), orig, "4M")...)
			tc.setup(t, orig)
			damage(t, orig, tc.edit)
			for i, mode := range [][]string{nil, {"-r", "leaks"}, {"-r", "all"}} {
				want := []int{tc.check, tc.leaks, tc.all}[i]
				q, g := filepath.Join(d, "q.qcow2"), filepath.Join(d, "g.qcow2")
				cp(t, orig, q)
				cp(t, orig, g)
				_, qe, qcode := testkit.Run(t, "qemu-img", append(append([]string{"check"}, mode...), q)...)
				_, e, code := runQ(t, append(append([]string{"check"}, mode...), g)...)
				if qcode != want {
					t.Fatalf("check %v: qemu-img exit %d, the test expects %d\n%s", mode, qcode, want, qe)
				}
				if code != qcode {
					t.Errorf("check %v: exit %d, qemu-img %d\nqimg:\n%s\nqemu-img:\n%s", mode, code, qcode, e, qe)
				}
				if mode == nil {
					continue
				}
				// A repair that succeeded leaves what qemu-img calls clean,
				// with the guest's data as qemu-img's repair leaves it.
				if code == 0 {
					if out, _, c := testkit.Run(t, "qemu-img", "check", g); c != 0 {
						t.Errorf("check %v: qemu-img check afterwards: exit %d\n%s", mode, c, out)
					}
				}
				if out, _, c := testkit.Run(t, "qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", q, g); c != 0 && qcode == 0 {
					t.Errorf("check %v: guest data differs from qemu-img's repair: %s", mode, strings.TrimSpace(out))
				}
			}
		})
	}
}

// TestCheck_TableJustPastTruncatedEnd: a file cut short so that a table
// starts less than a cluster past its end (reads there are zeros) holds
// no corruption for qemu-img, and none for qimg, which repairs it; a
// reference a whole cluster or more past the end is still an error
// (TestCheck_TablePastEOF). qimg also reports the refcounts the cut left
// past the end as leaks, which qemu-img does not look at (and which
// become leaks for it too once the file grows over them).
func TestCheck_TableJustPastTruncatedEnd(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	raw, p := filepath.Join(d, "r.img"), filepath.Join(d, "a.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "raw", raw, "4M")
	qio(t, raw, "write -P 0x11 0 64k")
	testkit.MustRun(t, "qemu-img", "convert", "-c", "-O", "qcow2", "-o", "cluster_size=4096", raw, p)
	var l1 uint64
	damage(t, p, func(f imageFile) { l1 = f.u64(40) })
	if err := os.Truncate(p, int64(l1)-2000); err != nil {
		t.Fatal(err)
	}
	if _, e, code := testkit.Run(t, "qemu-img", "check", p); code != 0 {
		t.Fatalf("qemu-img check: exit %d\n%s", code, e)
	}
	if _, e, code := runQ(t, "check", p); code != 0 && code != 3 {
		t.Errorf("check: exit %d, want 0 or 3 (leaks)\n%s", code, e)
	}
	if _, e, code := runQ(t, "check", "-r", "all", p); code != 0 {
		t.Errorf("check -r all: exit %d\n%s", code, e)
	}
	testkit.QemuCheck(t, p)
}

// TestCheck_DirtyLazyRepairsLikeQemu: an image with lazy refcounts
// left dirty by a crash is opened for check -r without the repair an
// ordinary open makes (QEMU's BDRV_O_CHECK): -r all repairs it and
// reports the same corruptions fixed as qemu-img (qimg said "No errors
// were found" once, found by a differential fuzz), and the dirty bit
// goes; -r leaks refuses as qemu-img's does ("need to rebuild", exit 1)
// and leaves the file as it was (qimg repaired it).
func TestCheck_DirtyLazyRepairsLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	orig := filepath.Join(d, "a.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", orig, "8M")
	testkit.Run(t, "qemu-io", "-c", "write -P 5 0 256k", "-c", "abort", orig) // a crash: dirty, refcounts stale
	fixed := func(out string) string {
		var v struct {
			Fixed int `json:"corruptions-fixed"`
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return fmt.Sprint(v.Fixed)
	}
	q, g := filepath.Join(d, "q.qcow2"), filepath.Join(d, "g.qcow2")
	cp(t, orig, q)
	cp(t, orig, g)
	qout, _, qcode := testkit.Run(t, "qemu-img", "check", "-r", "all", "--output=json", q)
	out, e, code := runQ(t, "check", "-r", "all", "--output=json", g)
	if code != qcode || fixed(out) != fixed(qout) || fixed(out) == "0" {
		t.Errorf("check -r all: exit %d, %s corruptions fixed; qemu-img exit %d, %s\n%s", code, fixed(out), qcode, fixed(qout), e)
	}
	testkit.QemuCheck(t, g)
	qio(t, g, "read -P 5 0 256k")
	if info := testkit.MustRun(t, "qemu-img", "info", g); strings.Contains(info, "dirty") {
		t.Errorf("the dirty bit stayed after check -r all:\n%s", info)
	}
	cp(t, orig, g)
	cp(t, orig, q)
	_, _, qcode = testkit.Run(t, "qemu-img", "check", "-r", "leaks", q)
	_, e, code = runQ(t, "check", "-r", "leaks", g)
	if code != qcode || !strings.Contains(e, "need to rebuild refcount structures") {
		t.Errorf("check -r leaks: exit %d, qemu-img's %d\n%s", code, qcode, e)
	}
	if a, b := mustReadFile(t, orig), mustReadFile(t, g); !bytes.Equal(a, b) {
		t.Error("check -r leaks changed the image")
	}
	// An ordinary open still repairs it, and writes.
	qimgIO(t, g, "write -P 6 1M 64k", "read -P 5 0 256k")
	testkit.QemuCheck(t, g)
}

func mustReadFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCheck_CountsBitmaps: the clusters of valid persistent dirty
// bitmaps are in use, for qimg check as for qemu-img's (qimg reported
// them as leaks; found by a differential fuzz), check -r keeps them, and
// a write keeps them valid, as qemu-io's does.
func TestCheck_CountsBitmaps(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	p := filepath.Join(d, "bm.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "4M")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", p, "b0")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", p, "b1")
	qio(t, p, "write -P 0x11 0 64k", "write -P 0x12 1M 64k")
	qout := testkit.MustRun(t, "qemu-img", "check", "--output=json", p)
	out, e, code := runQ(t, "check", "--output=json", p)
	var a, b map[string]any
	if err := json.Unmarshal([]byte(out), &a); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if err := json.Unmarshal([]byte(qout), &b); err != nil {
		t.Fatal(err)
	}
	if code != 0 || !reflect.DeepEqual(a, b) {
		t.Errorf("check: exit %d\n%s\n%s\nqemu-img:\n%s", code, out, e, qout)
	}
	// check -r keeps them valid, as qemu-img's does (the writable open
	// marked them stale, and -r leaks then freed their clusters).
	for _, mode := range []string{"leaks", "all"} {
		g := filepath.Join(d, "g.qcow2")
		cp(t, p, g)
		if _, e, code := runQ(t, "check", "-r", mode, g); code != 0 {
			t.Errorf("check -r %s: exit %d\n%s", mode, code, e)
		}
		out, qe, code := testkit.Run(t, "qemu-img", "check", g)
		if code != 0 || qe != "" {
			t.Errorf("check -r %s: qemu-img check afterwards: exit %d\n%s%s", mode, code, out, qe)
		}
		if info := testkit.MustRun(t, "qemu-img", "info", g); !strings.Contains(info, "name: b1") {
			t.Errorf("check -r %s: the bitmaps are gone:\n%s", mode, info)
		}
	}
	// A write keeps them, as qemu-io's does: maintained (qcow2 Q22).
	theirs := filepath.Join(d, "theirs.qcow2")
	cp(t, p, theirs)
	qio(t, theirs, "write -P 1 2M 4k")
	if _, e, code := runQ(t, "io", "-c", "write -P 1 2M 4k", p); code != 0 {
		t.Fatalf("write: exit %d %s", code, e)
	}
	qi, qe, _ := testkit.Run(t, "qemu-img", "info", p)
	if strings.Contains(qe, "lacking bitmap support") {
		t.Errorf("after a write the bitmaps are marked stale: %q", qe)
	}
	spec := func(info string) string {
		_, after, _ := strings.Cut(info, "Format specific information:")
		return after
	}
	if want := testkit.MustRun(t, "qemu-img", "info", theirs); spec(qi) != spec(want) {
		t.Errorf("qemu-img info after a write:\n%s\nafter qemu-io's:\n%s", qi, want)
	}
	testkit.QemuCheck(t, p)
}

// TestCheck_OpensTheBackingFile: check opens the backing chain, as
// qemu-img check does: an overlay whose backing file is missing fails
// to open (exit 1) where qimg said "No errors were found" (found by a
// differential fuzz).
func TestCheck_OpensTheBackingFile(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir() // a dangling backing file: no check at the end
	b, o := filepath.Join(d, "b.qcow2"), filepath.Join(d, "o.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", b, "4M")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", o)
	if _, e, code := runQ(t, "check", o); code != 0 {
		t.Fatalf("check: exit %d %s", code, e)
	}
	if err := os.Remove(b); err != nil {
		t.Fatal(err)
	}
	for _, mode := range [][]string{nil, {"-r", "all"}} {
		_, _, qcode := testkit.Run(t, "qemu-img", append(append([]string{"check"}, mode...), o)...)
		_, e, code := runQ(t, append(append([]string{"check"}, mode...), o)...)
		if code != qcode || code != 1 {
			t.Errorf("check %v without the backing file: exit %d, qemu-img %d\n%s", mode, code, qcode, e)
		}
	}
}

// TestCheck_RepairMessagesLikeQemu: check -r leaks prints qemu-img's
// lines: "Leaked cluster" from the check, then "Repairing cluster" for
// each leak it fixes (qimg printed only the first).
func TestCheck_RepairMessagesLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	orig := filepath.Join(d, "orig.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", orig, "1M")
	qio(t, orig, "write -P 1 0 8k", "write -P 2 512k 4k")
	damage(t, orig, func(f imageFile) {
		st, err := f.f.Stat()
		if err != nil {
			f.t.Fatal(err)
		}
		f.write(st.Size()+4*4096-1, []byte{0}) // room for the leaked clusters
		rb := int64(f.u64(int64(f.u64(48))))
		for _, k := range []int64{1, 3} {
			f.write(rb+(st.Size()/4096+k)*2, []byte{0, 1})
		}
	})
	q, g := filepath.Join(d, "q.qcow2"), filepath.Join(d, "g.qcow2")
	cp(t, orig, q)
	cp(t, orig, g)
	_, qe, qcode := testkit.Run(t, "qemu-img", "check", "-r", "leaks", q)
	_, e, code := runQ(t, "check", "-r", "leaks", g)
	if code != qcode || e != qe || !strings.Contains(e, "Repairing cluster") {
		t.Errorf("exit %d, qemu-img %d\nqimg:\n%s\nqemu-img:\n%s", code, qcode, e, qe)
	}
}

// TestCheck_RepairOverlapMatchesQemu: a snapshot's L1 entry naming a
// refcount block, whose bytes read as L2 entries of unaligned
// preallocated clusters. -r all "repaired" the first such entry by
// writing the table in place: it zeroed refcounts of clusters in use,
// said the image was left as it was, and the next allocations took
// those clusters again (guest data lost). As QEMU's overlap check: the
// image is marked corrupt, nothing else is written, and the check
// fails (EIO), byte for byte and word for word qemu-img's.
func TestCheck_RepairOverlapMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	d := t.TempDir()
	orig := filepath.Join(d, "orig.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=2048,refcount_bits=8,lazy_refcounts=on", orig, "8M")
	qio(t, orig, "write -P 0x15 0 10k", "write -c -P 0x26 1M 2k", "write -P 0x37 5M 4k")
	testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s1", orig)
	qio(t, orig, "write -P 0x48 0 2k")
	damage(t, orig, func(f imageFile) {
		rb := f.u64(int64(f.u64(48))) & entryMask // refcount block 0
		snapL1 := int64(f.u64(int64(f.u64(64))))  // the first snapshot's L1 table
		f.putU64(snapL1, rb)
	})
	q, g := filepath.Join(d, "q.qcow2"), filepath.Join(d, "g.qcow2")
	cp(t, orig, q)
	cp(t, orig, g)
	qo, qe, qcode := testkit.Run(t, "qemu-img", "check", "-r", "all", q)
	o, e, code := runQ(t, "check", "-r", "all", g)
	if code != qcode || o != qo || strings.Replace(e, "qimg: check: ", "qemu-img: ", 1) != qe || !strings.Contains(e, "ERROR: Overlap check failed") {
		t.Errorf("exit %d, qemu-img %d\nqimg:\n%s%s\nqemu-img:\n%s%s", code, qcode, o, e, qo, qe)
	}
	if a, b := mustReadFile(t, q), mustReadFile(t, g); !bytes.Equal(a, b) {
		t.Error("the image differs from qemu-img's after the refused repair")
	}
	// Its data reads as it did (read-only: the image is marked corrupt).
	if out := testkit.MustRun(t, "qemu-io", "-r", "-c", "read -P 0x48 0 2k", "-c", "read -P 0x15 2k 8k",
		"-c", "read -P 0x26 1M 2k", "-c", "read -P 0x37 5M 4k", g); strings.Contains(out, "Pattern verification failed") {
		t.Error(out)
	}
}

// TestCheck_RefcountOverflowMatchesQemu: a cluster referenced more
// often than 1-bit refcounts hold: the ERROR line and qemu-img's advice
// after it (qimg left the advice out), in check and in -r all.
func TestCheck_RefcountOverflowMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	d := t.TempDir()
	orig := filepath.Join(d, "orig.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096,refcount_bits=1", orig, "1M")
	qio(t, orig, "write -P 1 0 4k", "write -P 2 4k 4k")
	damage(t, orig, func(f imageFile) {
		l2 := int64(f.u64(int64(f.u64(40))) & entryMask)
		f.putU64(l2+8, f.u64(l2)) // guest cluster 1 shares cluster 0's data
	})
	for _, args := range [][]string{{"check"}, {"check", "-r", "all"}} {
		q, g := filepath.Join(d, "q.qcow2"), filepath.Join(d, "g.qcow2")
		cp(t, orig, q)
		cp(t, orig, g)
		qo, qe, qcode := testkit.Run(t, "qemu-img", append(args, q)...)
		o, e, code := runQ(t, append(args, g)...)
		if code != qcode || o != qo || strings.Replace(e, "qimg: check: ", "qemu-img: ", 1) != qe || !strings.Contains(e, "Use qemu-img amend") {
			t.Errorf("%q: exit %d, qemu-img %d\nqimg:\n%s%s\nqemu-img:\n%s%s", args, code, qcode, o, e, qo, qe)
		}
	}
}

// TestCheck_RepairOverlapBitmapDirectory: the same refusal when the
// snapshot's "L2 table" is the bitmap directory (a bitmap named so
// that its name reads as an unaligned preallocated entry): -r all
// wrote the "repair" over the bitmap's name, and the bitmap was lost
// (QEMU's overlap check covers the directory).
func TestCheck_RepairOverlapBitmapDirectory(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	d := t.TempDir()
	p := filepath.Join(d, "i.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "16M")
	qio(t, p, "write -P 1 0 128k")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", p, "abcdefgh")
	testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s1", p)
	var dirOff, dirSize int64
	damage(t, p, func(f imageFile) {
		dirOff, dirSize = f.bitmapDirectory()
		f.write(dirOff+24, []byte("00000021")) // the name: an unaligned preallocated "entry"
		f.putU64(int64(f.u64(int64(f.u64(64)))), uint64(dirOff&^(f.clusterSize()-1)))
	})
	before := mustReadFile(t, p)
	_, e, code := runQ(t, "check", "-r", "all", p)
	if code != 1 || !strings.Contains(e, "(overlaps with bitmap_directory)") || !strings.Contains(e, "ERROR: Overlap check failed") {
		t.Fatalf("exit %d\n%s", code, e)
	}
	after := mustReadFile(t, p)
	if !bytes.Equal(before[dirOff:dirOff+dirSize], after[dirOff:dirOff+dirSize]) {
		t.Error("the bitmap directory was written")
	}
	if n := len(before); !bytes.Equal(before[104:n], after[104:n]) {
		t.Error("more than the header's corrupt bit changed")
	}
}

// clusterSize is the image's cluster size.
func (f imageFile) clusterSize() int64 { return int64(1) << f.u32(20) }

// bitmapDirectory is the offset and size of the bitmap directory the
// image's bitmaps extension names (a version 3 header's extensions).
func (f imageFile) bitmapDirectory() (off, size int64) {
	f.t.Helper()
	for o := int64(f.u32(100)); o < f.clusterSize()-8; {
		typ, n := f.u32(o), int64(f.u32(o+4))
		if typ == 0 {
			break
		}
		if typ == 0x23852875 { // bitmaps
			return int64(f.u64(o + 24)), int64(f.u64(o + 16))
		}
		o += 8 + (n+7)&^7
	}
	f.t.Fatal("no bitmaps extension")
	return 0, 0
}

// TestIO_WriteOnBitmapDirectoryLikeQemu: a guest write through an L2
// entry naming the bitmap directory's cluster is refused and marks the
// image corrupt, as QEMU's overlap check refuses it (qimg wrote the
// guest's bytes over the directory of the bitmaps it maintained).
func TestIO_WriteOnBitmapDirectoryLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	d := t.TempDir()
	orig := filepath.Join(d, "orig.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", orig, "16M")
	qio(t, orig, "write -P 1 0 128k")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", orig, "bm")
	damage(t, orig, func(f imageFile) {
		dir, _ := f.bitmapDirectory()
		l2 := int64(f.u64(int64(f.u64(40))) & entryMask)
		f.putU64(l2+8, 1<<63|uint64(dir&^(f.clusterSize()-1))) // guest cluster 1 on the directory
	})
	q, g := filepath.Join(d, "q.qcow2"), filepath.Join(d, "g.qcow2")
	cp(t, orig, q)
	cp(t, orig, g)
	qo, _, qcode := testkit.Run(t, "qemu-io", "-c", "write -P 5 64k 4k", q)
	o, e, code := runQ(t, "io", "-c", "write -P 5 64k 4k", g)
	if code != qcode || !strings.HasPrefix(qo, "write failed") || !strings.HasPrefix(o, "write failed") ||
		!strings.Contains(o+e, "overlaps the bitmap directory") {
		t.Errorf("exit %d (qemu-io %d)\nqimg: %s%s\nqemu-io: %s", code, qcode, o, e, qo)
	}
	for _, p := range []string{q, g} {
		if out := testkit.MustRun(t, "qemu-img", "info", p); !strings.Contains(out, "corrupt: true") {
			t.Errorf("%s not marked corrupt:\n%s", p, out)
		}
	}
}
