package qcow2

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// Seeds for FuzzOpen and FuzzOpenPatch that reach the parsers and walks
// an open runs only for some images: the snapshot table and the
// snapshots' L1 tables, the bitmaps extension, directory and tables,
// the LUKS crypto header extension and phdr, zstd compressed clusters,
// and the dirty bit of lazy refcounts (the refcount rebuild of a
// writable open). (fuzz_test.go has the extended L2 seed, qemu-img's
// zlib compressed ones, and fuzzDataFileSeed the external data file.)

// fuzzSeedEdit makes an image on a memdev, opens it with oo and runs
// edit on it, then closes it (or, with keepOpen, returns the bytes
// while it is still open: an image a crash left).
func fuzzSeedEdit(tb testing.TB, co CreateOptions, oo Options, keepOpen bool, edit func(im *Image) error) []byte {
	tb.Helper()
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, co); err != nil {
		tb.Fatal(err)
	}
	oo.NoBacking = true
	im, err := OpenDevice(mem, oo)
	if err != nil {
		tb.Fatal(err)
	}
	if err := edit(im); err != nil {
		tb.Fatal(err)
	}
	if keepOpen {
		// The file grows ahead of its clusters (host space is taken
		// in chunks): the zeros past the last cluster written go, to
		// keep the seed small.
		b := append([]byte(nil), mem.Bytes()...)
		im.Close()
		cs := co.ClusterSize
		end := len(b)
		for end > 0 && b[end-1] == 0 {
			end--
		}
		return b[:(end+cs-1)/cs*cs]
	}
	if err := im.Close(); err != nil {
		tb.Fatal(err)
	}
	return mem.Bytes()
}

// fuzzMoreSeeds are the images of every feature an open parses.
func fuzzMoreSeeds(tb testing.TB) [][]byte {
	tb.Helper()
	var seeds [][]byte
	write := func(im *Image, off int64, n int, seed byte) error {
		_, err := im.WriteAt(pattern(n, seed), off)
		return err
	}
	// Two internal snapshots, the second over a changed cluster, and a
	// change after it: a snapshot table of two entries, their L1 tables,
	// shared L2 tables and data clusters with refcounts 2 and 3.
	seeds = append(seeds, fuzzSeedEdit(tb, CreateOptions{Size: 1 << 20, ClusterSize: 512}, Options{}, false, func(im *Image) error {
		if err := write(im, 0, 1000, 1); err != nil {
			return err
		}
		if _, err := im.CreateSnapshot("s1"); err != nil {
			return err
		}
		if err := write(im, 70000, 600, 2); err != nil {
			return err
		}
		if _, err := im.CreateSnapshot("s2"); err != nil {
			return err
		}
		return write(im, 0, 512, 3)
	}))
	// Persistent dirty bitmaps: one enabled with dirty bits (a bitmap
	// table and a data cluster), one disabled and empty (an all-zero
	// table), in 4 KiB clusters.
	seeds = append(seeds, fuzzSeedEdit(tb, CreateOptions{Size: 4 << 20, ClusterSize: 4096}, Options{}, false, func(im *Image) error {
		if err := im.AddBitmap("b0", 65536, true); err != nil {
			return err
		}
		if err := im.AddBitmap("b1", 512, false); err != nil {
			return err
		}
		if err := write(im, 0, 5000, 4); err != nil {
			return err
		}
		return write(im, 3<<20, 4096, 5)
	}))
	// A bitmap left IN_USE: the image is taken while open, after a
	// flush, as after a crash (QEMU keeps such a bitmap as it is and
	// counts its clusters).
	seeds = append(seeds, fuzzSeedEdit(tb, CreateOptions{Size: 1 << 20, ClusterSize: 512}, Options{}, true, func(im *Image) error {
		if err := im.AddBitmap("inuse", 4096, true); err != nil {
			return err
		}
		if err := write(im, 8192, 3000, 6); err != nil {
			return err
		}
		return im.Flush()
	}))
	// Lazy refcounts left dirty: writes flushed, the refcounts not
	// (a writable open rebuilds them; QEMU's "dirty" image).
	seeds = append(seeds, fuzzSeedEdit(tb, CreateOptions{Size: 1 << 20, ClusterSize: 512, LazyRefcounts: true}, Options{}, true, func(im *Image) error {
		if err := write(im, 0, 1000, 7); err != nil {
			return err
		}
		if err := write(im, 300000, 3000, 8); err != nil {
			return err
		}
		return im.Flush()
	}))
	// zstd compressed clusters (the qemu-img seeds are zlib), 4 KiB
	// clusters, one cluster that does not shrink (written plain).
	seeds = append(seeds, fuzzSeedEdit(tb, CreateOptions{Size: 1 << 20, ClusterSize: 4096, CompressionType: "zstd"}, Options{}, false, func(im *Image) error {
		for i, off := range []int64{0, 8192, 65536} {
			p := make([]byte, 4096)
			copy(p, []byte("qring compressed cluster qring compressed cluster"))
			if i == 2 {
				p = pattern(4096, 9)
				for j := range p {
					p[j] ^= byte(j * j >> 3)
				}
			}
			if err := im.WriteCompressed(off, p); err != nil {
				return err
			}
		}
		return nil
	}))
	// LUKS encryption (aes-128-xts, a fixed iteration count, so that it
	// takes no time): the crypto header extension and the LUKS header
	// area of about 1 MiB (past fuzzMaxInput: FuzzOpen bounds encrypted
	// inputs by fuzzMaxLUKSInput).
	seeds = append(seeds, fuzzSeedEdit(tb, CreateOptions{Size: 1 << 20, ClusterSize: 512,
		Encrypt: EncryptOptions{Format: "luks", Passphrase: []byte("fuzz"), CipherAlg: "aes-128", Iterations: 1000}},
		Options{Passphrase: []byte("fuzz")}, false, func(im *Image) error {
			return write(im, 1024, 2000, 10)
		}))
	if b := fuzzQemuSeed(tb, "1M", "cluster_size=512,lazy_refcounts=on", "write -P 0x21 0 4k", "write -P 0x22 600k 1k", "abort"); b != nil {
		// QEMU's own dirty image: qemu-io's abort leaves it open.
		seeds = append(seeds, b)
	}
	if b := fuzzQemuSeed(tb, "1M", "cluster_size=512", "write -P 0x23 0 2k"); b != nil {
		// QEMU's snapshot and bitmap: qemu-img snapshot -c and bitmap --add.
		img := filepath.Join(tb.TempDir(), "s.qcow2")
		if err := os.WriteFile(img, b, 0o644); err != nil {
			tb.Fatal(err)
		}
		ok := true
		for _, c := range [][]string{
			{"qemu-img", "snapshot", "-c", "snap", img},
			{"qemu-img", "bitmap", "--add", "-g", "4096", img, "bm"},
			{"qemu-io", "-c", "write -P 0x24 4096 1k", img},
		} {
			if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
				tb.Logf("%s: %v\n%s", c[0], err, out)
				ok = false
				break
			}
		}
		if b, err := os.ReadFile(img); ok && err == nil {
			seeds = append(seeds, b)
		}
	}
	return seeds
}

// fuzzQemuSeed makes an image with qemu-img create -o opts and the
// qemu-io commands cmds (nil without QEMU).
func fuzzQemuSeed(tb testing.TB, size, opts string, cmds ...string) []byte {
	if !testkit.HaveQemu() {
		return nil
	}
	dir := tb.TempDir()
	img := filepath.Join(dir, "q.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, img, size).CombinedOutput(); err != nil {
		tb.Logf("qemu-img create: %v\n%s", err, out)
		return nil
	}
	if len(cmds) > 0 {
		args := []string{}
		for _, c := range cmds {
			args = append(args, "-c", c)
		}
		// abort exits qemu-io with SIGABRT: its error is expected
		// (run in dir, where a core file would go).
		c := exec.Command("qemu-io", append(args, img)...)
		c.Dir = dir
		c.Run()
	}
	b, err := os.ReadFile(img)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
