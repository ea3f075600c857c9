package qcow2

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/testkit"
)

// Images qring writes: QEMU checks them clean and reads the same bytes as
// a raw shadow we keep.
func TestInterop_QEMUReadsWhatWeWrite(t *testing.T) {
	t.Parallel()
	testkit.NeedQemu(t)
	cases := []struct {
		name string
		co   CreateOptions
		size int64
	}{
		{"v3-64k", CreateOptions{}, 64 << 20},
		{"v2", CreateOptions{Compat: "0.10"}, 32 << 20},
		{"c512", CreateOptions{ClusterSize: 512}, 8 << 20},
		{"c512-rb64", CreateOptions{ClusterSize: 512, RefcountBits: 64}, 8 << 20},
		{"c4k-rb1", CreateOptions{ClusterSize: 4096, RefcountBits: 1}, 16 << 20},
		{"c2m", CreateOptions{ClusterSize: 2 << 20}, 64 << 20},
		{"rb8", CreateOptions{RefcountBits: 8}, 32 << 20},
		{"rb32", CreateOptions{RefcountBits: 32, ClusterSize: 16384}, 32 << 20},
		{"lazy", CreateOptions{LazyRefcounts: true}, 32 << 20},
	}
	for _, tc := range cases {
		for _, prealloc := range []string{"on", "off"} {
			t.Run(tc.name+"-prealloc-"+prealloc, func(t *testing.T) {
				co := tc.co
				co.Size = tc.size
				im, p := testImage(t, co, Options{Prealloc: prealloc})
				rng := testkit.Rand(t)
				shadow := make([]byte, tc.size)
				// Sequential partial-cluster pattern, then random writes.
				for off := int64(0); off < tc.size/4; off += 12345 {
					n := min(int64(5000), tc.size-off)
					b := pattern(int(n), byte(off))
					if _, err := im.WriteAt(b, off); err != nil {
						t.Fatal(err)
					}
					copy(shadow[off:], b)
				}
				for i := 0; i < 200; i++ {
					n := int64(1 + rng.IntN(150000))
					off := rng.Int64N(tc.size - n)
					b := pattern(int(n), byte(i))
					if _, err := im.WriteAt(b, off); err != nil {
						t.Fatal(err)
					}
					copy(shadow[off:], b)
				}
				testkit.MustEqual(t, testkit.ReadAll(t, im), shadow, "read back")
				if err := im.Close(); err != nil {
					t.Fatal(err)
				}
				raw := filepath.Join(t.TempDir(), "shadow.raw")
				if err := os.WriteFile(raw, shadow, 0o644); err != nil {
					t.Fatal(err)
				}
				testkit.QemuCheck(t, p)
				testkit.MustRun(t, "qemu-img", "compare", "-f", "qcow2", "-F", "raw", p, raw)
			})
		}
	}
}

// Writes over a backing file: COW from QEMU-written backing data.
func TestInterop_BackingCOW(t *testing.T) {
	testkit.NeedQemu(t)
	for _, bfmt := range []string{"qcow2", "raw"} {
		t.Run(bfmt, func(t *testing.T) {
			dir := testkit.Dir(t)
			b := filepath.Join(dir, "b."+bfmt)
			testkit.MustRun(t, "qemu-img", "create", "-f", bfmt, b, "16M")
			testkit.MustRun(t, "qemu-io", "-f", bfmt, "-c", "write -P 0x11 0 1M", "-c", "write -P 0x33 3M 100k", b)
			o := filepath.Join(dir, "o.qcow2")
			if err := Create(o, CreateOptions{BackingFile: "b." + bfmt, BackingFormat: bfmt}); err != nil {
				t.Fatal(err)
			}
			im, err := Open(o, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if sz, _ := im.Size(); sz != 16<<20 {
				t.Fatalf("size from backing: %d", sz)
			}
			w := func(p byte, off, n int64) {
				if _, err := im.WriteAt(pattern(int(n), p), off); err != nil {
					t.Fatal(err)
				}
			}
			w(0x22, 4096, 512)
			w(0x44, 3<<20+50000, 70000)
			w(0x55, 10<<20+1000, 3000) // over unallocated backing: zeros around
			m := im.Metrics()
			if m.COWBytes == 0 {
				t.Errorf("expected COW from backing data, metrics %s", m)
			}
			closeCheck(t, im, o)
			testkit.MustRun(t, "qemu-io", "-c", "read -P 0x11 0 4096", "-c", "read -P 0x11 4608 1043968", "-c", "read -P 0 10M 1000", o)
			// Every byte, as QEMU reads it, against a raw shadow: the
			// backing data with the same writes applied.
			shadow := filepath.Join(dir, "shadow.raw")
			testkit.MustRun(t, "qemu-img", "convert", "-f", bfmt, "-O", "raw", b, shadow)
			sb, err := os.ReadFile(shadow)
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range []struct {
				p      byte
				off, n int64
			}{{0x22, 4096, 512}, {0x44, 3<<20 + 50000, 70000}, {0x55, 10<<20 + 1000, 3000}} {
				copy(sb[x.off:], pattern(int(x.n), x.p))
			}
			if err := os.WriteFile(shadow, sb, 0o644); err != nil {
				t.Fatal(err)
			}
			testkit.MustRun(t, "qemu-img", "compare", "-f", "qcow2", "-F", "raw", o, shadow)
		})
	}
}

// Images QEMU writes read back identically through qring.
func TestInterop_WeReadWhatQEMUWrites(t *testing.T) {
	t.Parallel()
	testkit.NeedQemu(t)
	cases := []struct {
		name   string
		create []string
		io     []string
	}{
		{"plain", []string{"-o", "cluster_size=65536"}, []string{"write -P 0x11 0 1M", "write -P 0x22 5M 3000", "write -P 0x33 7777 12345"}},
		{"zero", []string{}, []string{"write -P 0x11 0 2M", "write -z 64k 128k", "write -z 1M 4096", "write -z -u 1536k 64k"}},
		{"discard", []string{}, []string{"write -P 0x11 0 2M", "discard 128k 256k", "write -P 0x12 200k 4k"}},
		{"c512", []string{"-o", "cluster_size=512"}, []string{"write -P 0x21 0 100k", "write -P 0x22 1M 3333"}},
		{"c2m", []string{"-o", "cluster_size=2M"}, []string{"write -P 0x31 1M 3M", "write -z 2M 2M"}},
		{"v2", []string{"-o", "compat=0.10"}, []string{"write -P 0x41 0 300k", "write -z 64k 64k"}},
		{"rb1", []string{"-o", "refcount_bits=1"}, []string{"write -P 0x51 0 1M"}},
		{"rb64", []string{"-o", "refcount_bits=64,cluster_size=4096"}, []string{"write -P 0x61 0 1M"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := testkit.Dir(t)
			p := filepath.Join(dir, "q.qcow2")
			testkit.MustRun(t, "qemu-img", append(append([]string{"create", "-f", "qcow2"}, tc.create...), p, "16M")...)
			args := []string{}
			for _, c := range tc.io {
				args = append(args, "-c", c)
			}
			testkit.MustRun(t, "qemu-io", append(args, p)...)
			compareWithQEMU(t, p)
		})
	}
	t.Run("backing-chain", func(t *testing.T) {
		dir := testkit.Dir(t)
		base := filepath.Join(dir, "base.qcow2")
		mid := filepath.Join(dir, "mid.qcow2")
		top := filepath.Join(dir, "top.qcow2")
		testkit.MustRun(t, "qemu-img", "create", "-f", "qcow2", base, "8M")
		testkit.MustRun(t, "qemu-io", "-c", "write -P 0x11 0 4M", base)
		testkit.MustRun(t, "qemu-img", "create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", mid, "12M")
		testkit.MustRun(t, "qemu-io", "-c", "write -P 0x22 1M 1M", "-c", "write -z 3M 64k", mid)
		testkit.MustRun(t, "qemu-img", "create", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", top)
		testkit.MustRun(t, "qemu-io", "-c", "write -P 0x33 1536k 4k", "-c", "write -P 0x34 10M 1M", top)
		compareWithQEMU(t, top)
	})
	for _, ct := range []string{"zlib", "zstd"} {
		t.Run("compressed-"+ct, func(t *testing.T) {
			dir := testkit.Dir(t)
			src := filepath.Join(dir, "src.qcow2")
			testkit.MustRun(t, "qemu-img", "create", "-f", "qcow2", src, "8M")
			testkit.MustRun(t, "qemu-io", "-c", "write -P 0x11 0 1M", "-c", "write -P 0x22 3M 777k", src)
			c := filepath.Join(dir, "c.qcow2")
			testkit.MustRun(t, "qemu-img", "convert", "-c", "-O", "qcow2", "-o", "compression_type="+ct, src, c)
			compareWithQEMU(t, c)
			// Writing into compressed clusters COWs them.
			im, err := Open(c, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := im.WriteAt(pattern(5000, 9), 3<<20+100); err != nil {
				t.Fatal(err)
			}
			closeCheck(t, im, c)
			compareWithQEMU(t, c)
		})
	}
	t.Run("snapshot", func(t *testing.T) {
		dir := testkit.Dir(t)
		p := filepath.Join(dir, "s.qcow2")
		testkit.MustRun(t, "qemu-img", "create", "-f", "qcow2", p, "8M")
		testkit.MustRun(t, "qemu-io", "-c", "write -P 0x11 0 2M", p)
		testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s1", p)
		compareWithQEMU(t, p)
		// Writes after a snapshot must COW the shared L2 and data
		// clusters and leave the snapshot intact.
		im, err := Open(p, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := im.WriteAt(pattern(3000, 7), 100); err != nil {
			t.Fatal(err)
		}
		if err := im.Discard(1<<20, 64<<10); err != nil {
			t.Fatal(err)
		}
		closeCheck(t, im, p)
		compareWithQEMU(t, p)
		testkit.MustRun(t, "qemu-img", "snapshot", "-a", "s1", p)
		testkit.MustRun(t, "qemu-io", "-c", "read -P 0x11 0 2M", p)
		testkit.QemuCheck(t, p)
	})
}

// compareWithQEMU converts p to raw with qemu-img and compares every byte
// with what we read.
func compareWithQEMU(t *testing.T, p string) {
	t.Helper()
	raw := filepath.Join(t.TempDir(), fmt.Sprintf("%s.raw", filepath.Base(p)))
	testkit.MustRun(t, "qemu-img", "convert", "-O", "raw", p, raw)
	want, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	im, err := Open(p, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	got := testkit.ReadAll(t, im)
	testkit.MustEqual(t, got, want, "qring vs qemu-img convert")
	r, err := im.Check(CheckOptions{})
	if err != nil || !r.Clean() {
		t.Fatalf("own check of QEMU image: %v %+v", err, r)
	}
	_ = block.ErrClosed
}
