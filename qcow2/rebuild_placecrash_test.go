package qcow2

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// placeCrashCase is an image built with qemu-img and qemu-io, with
// clusters freed inside the file (discard, snapshot delete) before its
// refcount structures are damaged: the rebuild's new placement puts its
// blocks inside the file, in clusters nothing references.
type placeCrashCase struct {
	name   string
	opts   string
	size   string
	build  [][]string // commands, "IMG" replaced by the image path
	damage func(t *testing.T, b []byte)
}

func placeCrashCases() []placeCrashCase {
	be := binary.BigEndian
	rt := func(b []byte) uint64 { return be.Uint64(b[48:]) }
	cs := func(b []byte) uint64 { return 1 << be.Uint32(b[20:]) }
	l1 := func(b []byte) uint64 { return be.Uint64(b[40:]) }
	firstData := func(b []byte) uint64 {
		l2 := be.Uint64(b[l1(b):]) & format.L1OffsetMask
		for i := uint64(0); i < cs(b); i += 8 {
			if v := be.Uint64(b[l2+i:]) & format.L1OffsetMask; v != 0 {
				return v
			}
		}
		panic("no data")
	}
	io := func(c ...string) []string { return append([]string{"qemu-io"}, append(c, "IMG")...) }
	return []placeCrashCase{
		{"discard/block on data", "cluster_size=65536", "64M", [][]string{
			io("-c", "write -P 5 0 4M", "-c", "discard 1M 2M"),
		}, func(t *testing.T, b []byte) { be.PutUint64(b[rt(b)+8:], firstData(b)) }},
		{"snapdelete/zeroed block", "cluster_size=65536", "64M", [][]string{
			io("-c", "write -P 5 0 2M"),
			{"qemu-img", "snapshot", "-c", "s1", "IMG"},
			io("-c", "write -P 6 0 1M"),
			{"qemu-img", "snapshot", "-c", "s2", "IMG"},
			io("-c", "write -P 7 512k 1M"),
			{"qemu-img", "snapshot", "-d", "s1", "IMG"},
		}, func(t *testing.T, b []byte) {
			blk := be.Uint64(b[rt(b):])
			clear(b[blk : blk+cs(b)])
		}},
		{"512/bits4/dup entry", "cluster_size=512,refcount_bits=4", "4M", [][]string{
			io("-c", "write -P 5 0 1M", "-c", "discard 256k 256k", "-c", "write -P 9 3M 512k"),
		}, func(t *testing.T, b []byte) { be.PutUint64(b[rt(b)+16:], be.Uint64(b[rt(b):])) }},
		{"compressed+bitmap/zero entry", "cluster_size=4096", "16M", [][]string{
			{"qemu-img", "bitmap", "--add", "IMG", "b0"},
			io("-c", "write -c -P 5 0 1M", "-c", "write -P 8 2M 1M", "-c", "discard 2M 512k", "-c", "write -c -P 3 8M 64k"),
		}, func(t *testing.T, b []byte) { be.PutUint64(b[rt(b):], 0) }},
		{"xl2/block on L1", "cluster_size=65536,extended_l2=on", "64M", [][]string{
			io("-c", "write -P 5 0 3M", "-c", "discard 64k 1M", "-c", "write -P 4 9M 8k"),
		}, func(t *testing.T, b []byte) { be.PutUint64(b[rt(b)+8:], l1(b)) }},
		{"bits1/no table", "cluster_size=4096,refcount_bits=1", "16M", [][]string{
			io("-c", "write -P 5 0 2M", "-c", "discard 64k 1M", "-c", "write -z 5M 64k"),
		}, func(t *testing.T, b []byte) { be.PutUint32(b[56:], 0) }},
	}
}

// rawViews converts the image's active layer and each snapshot to raw
// and returns their bytes by name ("" for the active layer).
func rawViews(t *testing.T, dir, img string, snaps []string, tolerant bool) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, s := range append([]string{""}, snaps...) {
		raw := filepath.Join(dir, "view.raw")
		args := []string{"convert", "-O", "raw"}
		if s != "" {
			args = append(args, "-l", "snapshot.name="+s)
		}
		args = append(args, img, raw)
		if o, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
			if tolerant {
				return nil
			}
			t.Fatalf("qemu-img %v: %v\n%s", args, err, o)
		}
		b, err := os.ReadFile(raw)
		if err != nil {
			t.Fatal(err)
		}
		out[s] = b
		os.Remove(raw)
	}
	return out
}

// TestRebuild_CrashClonesPlaceInside: a crash at every device operation
// of a -r all rebuild that places its structures inside the file leaves
// the damage as it was (qemu-img check's words) or an image with leaks at
// most; every layer (active, snapshots) reads as before; and a further
// -r all repairs it clean. Three clones are taken at each operation
// (none, all or a random share of the unflushed writes kept); make test
// checks one of them at each (a different one at the next: 94 s for all
// of them on a loaded machine), make crash (QRING_CRASH_POINTS) all.
func TestRebuild_CrashClonesPlaceInside(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	stride := 3
	if os.Getenv("QRING_CRASH_POINTS") != "" {
		stride = 1
	}
	for ci, tc := range placeCrashCases() {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "img.qcow2")
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", tc.opts, img, tc.size)
			var snaps []string
			for _, c := range tc.build {
				args := make([]string, len(c)-1)
				for i, a := range c[1:] {
					args[i] = strings.ReplaceAll(a, "IMG", img)
				}
				testkit.MustRun(t, c[0], args...)
				if c[0] == "qemu-img" && c[1] == "snapshot" {
					switch c[2] {
					case "-c":
						snaps = append(snaps, c[3])
					case "-d":
						for i, s := range snaps {
							if s == c[3] {
								snaps = append(snaps[:i], snaps[i+1:]...)
								break
							}
						}
					}
				}
			}
			golden := rawViews(t, dir, img, snaps, false)
			b, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			tc.damage(t, b)
			dmg := filepath.Join(dir, "damaged.qcow2")
			if err := os.WriteFile(dmg, b, 0o644); err != nil {
				t.Fatal(err)
			}
			// QEMU may not open the damaged image at all (no refcount
			// table): a clone left so is not read.
			dmgUnreadable := rawViews(t, dir, dmg, snaps, true) == nil
			before, err := testkit.QemuImgCheck(dmg)
			if err != nil {
				t.Fatal(err)
			}
			if before.Corruptions == 0 {
				t.Fatalf("the damage is not seen: %v", before)
			}
			mem := memdev.FromBytes(b, memdev.Options{})
			rng := rand.New(rand.NewPCG(uint64(ci), 7))
			h := &hookDev{Dev: mem}
			var clones []*memdev.Dev
			h.before = func() {
				for _, keep := range []float64{0, 1, rng.Float64()} {
					clones = append(clones, mem.CrashClone(rng, keep))
				}
			}
			im, err := OpenDevice(h, Options{Repair: true, Check: true})
			if err != nil {
				t.Fatal(err)
			}
			r, err := im.Check(CheckOptions{Repair: RepairAll})
			if err != nil || !r.Clean() {
				t.Fatalf("-r all: %v %+v", err, r)
			}
			msgs := strings.Join(r.Messages, "\n")
			if !strings.Contains(msgs, "Rebuilding refcount structure") {
				t.Fatalf("no rebuild:\n%s", msgs)
			}
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			clones = append(clones, mem.CrashClone(rng, 0), mem.CrashClone(rng, 1))
			inside := false
			if fi := int64(len(b)); true {
				n, _ := mem.Size()
				inside = n <= fi+int64(1<<binary.BigEndian.Uint32(b[20:]))
			}
			t.Logf("%d crash points; file %d -> grown at most a cluster: %v", len(clones), len(b), inside)
			for i, c := range clones {
				if (i+i/3)%stride != 0 && i < len(clones)-2 {
					continue
				}
				p := filepath.Join(dir, fmt.Sprintf("clone%d.qcow2", i))
				if err := c.WriteFile(p); err != nil {
					t.Fatal(err)
				}
				q, err := testkit.QemuImgCheck(p)
				if err != nil {
					t.Fatalf("clone %d: %v", i, err)
				}
				// (Leaks may differ: a block written past the end of the file
				// brings clusters a damaged block counts into the comparison.)
				asBefore := q.Corruptions == before.Corruptions && q.CheckErrors == before.CheckErrors
				if !asBefore && !q.NoCorruption() {
					t.Fatalf("clone %d: qemu-img check: %v, want the damage as it was (%v) or leaks only\n%s", i, q, before, q.Stderr)
				}
				got := rawViews(t, dir, p, snaps, asBefore && dmgUnreadable)
				for s, g := range golden {
					if got == nil {
						break
					}
					if !bytes.Equal(got[s], g) {
						t.Fatalf("clone %d: layer %q reads differently after the crash", i, s)
					}
				}
				if i%3 != 0 && i < len(clones)-2 {
					os.Remove(p)
					continue
				}
				cim, err := OpenDevice(c, Options{Repair: true, Check: true})
				if err != nil {
					t.Fatalf("clone %d: open: %v", i, err)
				}
				r, err := cim.Check(CheckOptions{Repair: RepairAll})
				if err != nil || !r.Clean() {
					t.Fatalf("clone %d: -r all: %v %+v\n%s", i, err, r, strings.Join(r.Messages, "\n"))
				}
				if err := cim.Close(); err != nil {
					t.Fatal(err)
				}
				if err := c.WriteFile(p); err != nil {
					t.Fatal(err)
				}
				testkit.QemuCheck(t, p)
				got = rawViews(t, dir, p, snaps, false)
				for s, g := range golden {
					if !bytes.Equal(got[s], g) {
						t.Fatalf("clone %d: layer %q reads differently after the second repair", i, s)
					}
				}
				os.Remove(p)
			}
		})
	}
}
