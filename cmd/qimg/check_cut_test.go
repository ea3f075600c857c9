package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

var cutLeakLine = regexp.MustCompile(`^(Leaked|Repairing) cluster (\d+) `)

// cutCheckNorm is a check report without what the README documents as
// qimg's own: refcounts left past the end of the file (fsize bytes,
// counted in whole sectors as QEMU counts it) reported as leaks, and
// so the leak summary, the image end offset and the exit code 3.
func cutCheckNorm(stdout, stderr string, code int, fsize int64, cs int) string {
	ncl := ((fsize+511)&^511 + int64(cs) - 1) / int64(cs)
	var out []string
	for _, l := range strings.Split(stderr+stdout, "\n") {
		if m := cutLeakLine.FindStringSubmatch(l); m != nil {
			if k, _ := strconv.ParseInt(m[2], 10, 64); k >= ncl {
				continue
			}
		}
		if strings.Contains(l, "leaked clusters were found") || strings.Contains(l, "This means waste") ||
			strings.HasPrefix(l, "Image end offset") || strings.TrimSpace(l) == "" || l == "No errors were found on the image." {
			continue
		}
		for _, p := range []string{"qemu-img: ", "qimg: check: "} {
			l = strings.TrimPrefix(l, p)
		}
		out = append(out, l)
	}
	if code == 3 {
		code = 0
	}
	return fmt.Sprintf("%s\nexit %d", strings.Join(out, "\n"), code)
}

// TestCheckCut_MetadataSweepMatchesQemu: a file cut at many points
// inside its metadata (header, refcount table and block, L1 table, L2
// tables, snapshot table and snapshot L1 tables), for several cluster
// sizes, v2 and v3, with and without a snapshot, is checked by qimg as
// by qemu-img 7.2 (beyond the documented leaks past the end of the
// file): QEMU counts the file's length in whole sectors, counts no
// cluster of a region that reaches a cluster or more past the end (the
// clusters of it inside the file are leaks), reads a snapshot table past
// the end of the file as zeros, and reports incomplete snapshot entries
// first. qimg refused to open a cut snapshot table, reported a partly
// cut table as past the end, and counted the part inside the file.
func TestCheckCut_MetadataSweepMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	type cfg struct {
		cs   int
		opts string
		snap bool
	}
	cfgs := []cfg{{512, "compat=1.1", false}, {512, "compat=0.10", true}, {4096, "compat=1.1", true},
		{4096, "compat=1.1,refcount_bits=1", false}, {65536, "compat=1.1,extended_l2=on", true}}
	for ci, c := range cfgs {
		base := filepath.Join(d, fmt.Sprintf("base%d.qcow2", ci))
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", fmt.Sprintf("cluster_size=%d,%s", c.cs, c.opts), base, "8M")
		qio(t, base, fmt.Sprintf("write -P 0x5a 0 %d", 4*c.cs), fmt.Sprintf("write -P 0x11 4M %d", c.cs))
		if c.snap {
			testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s1", base)
			qio(t, base, fmt.Sprintf("write -P 0x33 0 %d", 2*c.cs))
		}
		data, err := os.ReadFile(base)
		if err != nil {
			t.Fatal(err)
		}
		for k := 1; k*c.cs < len(data); k++ {
			for _, delta := range []int{0, 8, c.cs / 2} {
				cut := k*c.cs + delta
				if cut >= len(data) {
					continue
				}
				p := filepath.Join(d, fmt.Sprintf("cut%d-%d.qcow2", ci, cut))
				if err := os.WriteFile(p, data[:cut], 0o644); err != nil {
					t.Fatal(err)
				}
				wo, we, wc := testkit.Run(t, "qemu-img", "check", p)
				go_, ge, gc := runQ(t, "check", p)
				want, got := cutCheckNorm(wo, we, wc, int64(cut), c.cs), cutCheckNorm(go_, ge, gc, int64(cut), c.cs)
				if got != want {
					t.Errorf("cluster %d %s snapshot %v, cut at %d: qimg check:\n%s\nqemu-img check:\n%s", c.cs, c.opts, c.snap, cut, got, want)
				}
				if c.snap {
					for _, args := range [][]string{{"info"}, {"snapshot", "-l"}} {
						wo, _, wc := testkit.Run(t, "qemu-img", append(args, p)...)
						go_, ge, gc := runQ(t, append(args, p)...)
						if go_ != wo || gc != wc {
							t.Errorf("cluster %d %s, cut at %d: qimg %q (exit %d):\n%s%s\nqemu-img (exit %d):\n%s", c.cs, c.opts, cut, args, gc, ge, go_, wc, wo)
						}
					}
				}
				os.Remove(p)
			}
		}
	}
}

// TestCheckCut_SectorCutL1MatchesQemu: a file cut 8 bytes into its
// refcount block, so that its L1 table lies wholly past the end but
// within a cluster of the file's length in sectors, is sound for QEMU
// (no errors, repairs and writes work); qimg reported the L1 table past
// the end of the file, and refused check -r and writes.
func TestCheckCut_SectorCutL1MatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	base := filepath.Join(d, "base.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", base, "8M")
	qio(t, base, "write -P 0x5a 0 16k")
	for _, args := range [][]string{{"check"}, {"check", "-r", "leaks"}, {"check", "-r", "all"}} {
		a, b := filepath.Join(d, "a.qcow2"), filepath.Join(d, "b.qcow2")
		for _, p := range []string{a, b} {
			testkit.MustRun(t, "cp", base, p)
			if err := os.Truncate(p, 8200); err != nil {
				t.Fatal(err)
			}
		}
		wo, we, wc := testkit.Run(t, "qemu-img", append(args, a)...)
		go_, ge, gc := runQ(t, append(args, b)...)
		if go_ != wo || ge != we || gc != wc {
			t.Errorf("qimg %q (exit %d):\n%s%s\nqemu-img (exit %d):\n%s%s", args, gc, ge, go_, wc, we, wo)
		}
	}
	a, b := filepath.Join(d, "a.qcow2"), filepath.Join(d, "b.qcow2")
	for _, p := range []string{a, b} {
		testkit.MustRun(t, "cp", base, p)
		if err := os.Truncate(p, 8200); err != nil {
			t.Fatal(err)
		}
	}
	qio(t, a, "write -P 1 0 64k")
	if o, e, code := runQ(t, "io", "-c", "write -P 1 0 64k", b); code != 0 {
		t.Fatalf("qimg io write: exit %d: %s%s", code, o, e)
	}
	if o, e, code := testkit.Run(t, "qemu-img", "check", b); code != 0 {
		t.Errorf("after the write, qemu-img check: exit %d: %s%s", code, o, e)
	}
	if o, e, code := testkit.Run(t, "qemu-img", "compare", a, b); code != 0 {
		t.Errorf("qemu-img compare: exit %d: %s%s", code, o, e)
	}
}

// TestCheckCut_DirtyLazyL2PastEOFMatchesQemu: a dirty image with
// lazy refcounts whose L2 table lies wholly past the end of the file
// (inside the cluster of slack a writable open lets a table have) opens
// for writing as in QEMU, whose automatic repair lets it by: the repair
// counts the table (the engine writes it there), the write lands, and
// the image checks clean with the data QEMU's write leaves. qimg refused
// the writable open (the repair called the table past the end of the
// file and gave up).
func TestCheckCut_DirtyLazyL2PastEOFMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	for _, cs := range []int{4096, 65536} {
		a, b := filepath.Join(d, fmt.Sprintf("a%d.qcow2", cs)), filepath.Join(d, fmt.Sprintf("b%d.qcow2", cs))
		for _, cut := range []int{4 * cs, 3*cs + 8} { // the L2 table is cluster 4
			for _, p := range []string{a, b} {
				testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", fmt.Sprintf("cluster_size=%d,lazy_refcounts=on", cs), p, "8M")
				qio(t, p, fmt.Sprintf("write -P 0x5a 0 %d", 4*cs))
				f, err := os.OpenFile(p, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := f.WriteAt([]byte{1}, 79); err != nil { // incompatible: dirty
					t.Fatal(err)
				}
				f.Close()
				if err := os.Truncate(p, int64(cut)); err != nil {
					t.Fatal(err)
				}
			}
			qio(t, a, "write -P 1 0 4k", "write -P 2 1M 4k")
			if o, e, code := runQ(t, "io", "-c", "write -P 1 0 4k", "-c", "write -P 2 1M 4k", b); code != 0 {
				t.Errorf("cluster %d, cut at %d: qimg io write: exit %d: %s%s", cs, cut, code, o, e)
				continue
			}
			if o, e, code := testkit.Run(t, "qemu-img", "check", b); code != 0 {
				t.Errorf("cluster %d, cut at %d: after the write, qemu-img check: exit %d: %s%s", cs, cut, code, o, e)
			}
			if o, e, code := testkit.Run(t, "qemu-img", "compare", a, b); code != 0 {
				t.Errorf("cluster %d, cut at %d: qemu-img compare: exit %d: %s%s", cs, cut, code, o, e)
			}
		}
	}
}
