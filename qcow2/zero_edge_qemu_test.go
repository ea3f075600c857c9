package qcow2

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/testkit"
)

// Unaligned zero writes whose edges lie in (sub)clusters that read as
// zeros, done by qemu-io on one image and by WriteZeroes on its twin:
// the same requests succeed or are refused (write -z -n: Allocate), and
// the two maps show the same zero, data and unallocated extents. QEMU
// zeroes such an edge's whole (sub)cluster instead of writing zeros
// into a new one (qcow2_co_pwrite_zeroes' head and tail), and on
// version 2 without a backing file leaves an unallocated one as it is.
// qring wrote zero buffers there (a cluster allocated for zeros) and,
// with extended L2, refused the Allocate that QEMU performs.
func TestZeroEdgesReadingZeroMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	type zop struct {
		off, n int64
		alloc  bool // write -z -n
		data   bool // write -P 7 (setup)
		unmap  bool // write -z -u
		comp   bool // write -c -P 9: the cluster must be unallocated
	}
	ops := []zop{
		{off: 1000, n: 5000, alloc: true},          // inside unallocated subclusters 0-2
		{off: 65536, n: 65536, data: true},         // cluster 1 holds data
		{off: 66000, n: 3000, alloc: true},         // refused: its edges hold data
		{off: 200000, n: 3000},                     // no allocation for zeros
		{off: 196608, n: 4000, alloc: true},        // reads zeros already
		{off: 300000, n: 300},                      // inside one subcluster
		{off: 400000, n: 1000, data: true},         // data in one subcluster
		{off: 399360, n: 2048, alloc: true},        // its neighbour, unaligned both ends
		{off: 401408, n: 2048, alloc: true},        // refused: tail holds data
		{off: 524288 + 512, n: 65536, alloc: true}, // two partial clusters
		{off: 700000, n: 100000},                   // head, whole clusters, tail
		{off: 1<<20 - 1536, n: 1536, alloc: true},  // up to the end
		{off: 1<<20 - 2048 - 700, n: 700, data: true},
		// An edge in a zero cluster that holds its host cluster, with
		// unmap: QEMU widens it to the cluster and frees that (a
		// compressed write then finds it unallocated; qring kept it).
		{off: 851968, n: 65536, data: true},
		{off: 851968, n: 65536},
		{off: 851968 - 4096, n: 4096 + 1024, unmap: true},
		{off: 851968, n: 65536, comp: true},
	}
	cases := []struct {
		name, opts string
		backing    string // its format
	}{
		{"v3", "cluster_size=65536", ""},
		{"v2", "cluster_size=65536,compat=0.10", ""},
		{"xl2", "cluster_size=65536,extended_l2=on", ""},
		{"xl2-backing", "cluster_size=65536,extended_l2=on", "qcow2"},
		{"v2-backing", "cluster_size=65536,compat=0.10", "qcow2"},
		// A raw backing file's holes read as zeros (SEEK_HOLE, as
		// QEMU's file driver answers block status).
		{"v3-raw-backing", "cluster_size=65536", "raw"},
		{"xl2-raw-backing", "cluster_size=65536,extended_l2=on", "raw"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := testkit.Dir(t)
			q, r := filepath.Join(dir, "q.qcow2"), filepath.Join(dir, "r.qcow2")
			for _, p := range []string{q, r} {
				args := []string{"create", "-q", "-f", "qcow2", "-o", c.opts}
				if c.backing != "" {
					b := filepath.Join(dir, "base."+c.backing)
					if p == q {
						testkit.MustRun(t, "qemu-img", "create", "-q", "-f", c.backing, b, "1M")
						// Data beside some edges' subclusters, zeros elsewhere.
						testkit.MustRun(t, "qemu-io", "-f", c.backing, "-c", "write -P 5 2048 100", "-c", "write -P 5 198000 10", "-c", "write -z 600000 4096", b)
					}
					args = append(args, "-b", b, "-F", c.backing)
				}
				testkit.MustRun(t, "qemu-img", append(args, p, "1M")...)
			}
			im, err := Open(r, Options{})
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range ops {
				cmd := fmt.Sprintf("write -z %d %d", o.off, o.n)
				switch {
				case o.data:
					cmd = fmt.Sprintf("write -P 7 %d %d", o.off, o.n)
				case o.alloc:
					cmd = fmt.Sprintf("write -z -n %d %d", o.off, o.n)
				case o.unmap:
					cmd = fmt.Sprintf("write -z -u %d %d", o.off, o.n)
				case o.comp:
					cmd = fmt.Sprintf("write -c -P 9 %d %d", o.off, o.n)
				}
				out, _, _ := testkit.Run(t, "qemu-io", "-f", "qcow2", "-c", cmd, q)
				qok := !strings.Contains(out, "failed")
				var err error
				switch {
				case o.data:
					b := make([]byte, o.n)
					for i := range b {
						b[i] = 7
					}
					_, err = im.WriteAt(b, o.off)
				case o.alloc:
					err = im.WriteZeroes(o.off, o.n, block.Allocate)
				case o.unmap:
					err = im.WriteZeroes(o.off, o.n, block.MayUnmap)
				case o.comp:
					b := make([]byte, o.n)
					for i := range b {
						b[i] = 9
					}
					if err = im.WriteCompressed(o.off, b); err != nil {
						err = fmt.Errorf("%w: %v", block.ErrNotSupported, err) // compared below
					}
				default:
					err = im.WriteZeroes(o.off, o.n, 0)
				}
				if err != nil && !errors.Is(err, block.ErrNotSupported) {
					t.Fatalf("%s: %v", cmd, err)
				}
				if qok != (err == nil) {
					t.Errorf("%s: qemu-io %q, qring %v", cmd, strings.TrimSpace(out), err)
				}
				if !qok && o.alloc {
					// A refused Allocate: QEMU may have zeroed the part
					// before the refused edge, qring nothing. A caller
					// then zeroes with fallback, as qemu-img convert.
					cmd = fmt.Sprintf("write -z %d %d", o.off, o.n)
					testkit.MustRun(t, "qemu-io", "-f", "qcow2", "-c", cmd, q)
					if err := im.WriteZeroes(o.off, o.n, 0); err != nil {
						t.Fatalf("%s: %v", cmd, err)
					}
				}
			}
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			testkit.MustRun(t, "qemu-img", "compare", q, r)
			testkit.MustRun(t, "qemu-img", "check", r)
			strip := func(m []MapEntry) []MapEntry {
				for i := range m {
					m[i].Offset = nil
				}
				return m
			}
			mq, mr := strip(qemuMap(t, q)), strip(qemuMap(t, r))
			// Host-level holes split QEMU's view of a data cluster: merge
			// adjacent data extents on both sides.
			merge := func(m []MapEntry) []MapEntry {
				var out []MapEntry
				for _, e := range m {
					if e.Data {
						e.Zero = false
					}
					if k := len(out) - 1; k >= 0 && out[k].Start+out[k].Length == e.Start &&
						out[k].Depth == e.Depth && out[k].Present == e.Present && out[k].Zero == e.Zero && out[k].Data == e.Data {
						out[k].Length += e.Length
						continue
					}
					out = append(out, e)
				}
				return out
			}
			mq, mr = merge(mq), merge(mr)
			if i, a, b, ok := firstMapDiff(mq, mr); ok {
				t.Fatalf("maps differ at extent %d:\nqemu  %s\nqring %s", i, fmtMapEntry(a), fmtMapEntry(b))
			}
		})
	}
}
