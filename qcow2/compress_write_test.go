package qcow2

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// compressible returns a cluster of text-like bytes that deflate shrinks.
func compressible(n int, seed byte) []byte {
	words := []string{"alpha ", "beta ", "gamma ", "qcow2 ", "cluster ", "refcount "}
	b := make([]byte, 0, n+16)
	for i := 0; len(b) < n; i++ {
		b = append(b, words[(i*int(seed+3)+i/7)%len(words)]...)
		b = append(b, seed+byte(i%5))
	}
	return b[:n]
}

// qemuMapCompressed counts the data extents qemu-img map reports without
// a host offset (QEMU 7.2 prints no "compressed" key; a compressed
// cluster is data without an offset) and with one.
func qemuMapCompressed(t *testing.T, p string) (compressed, normal int) {
	t.Helper()
	out := testkit.MustRun(t, "qemu-img", "map", "--output=json", p)
	var ext []struct {
		Data       bool            `json:"data"`
		Offset     *int64          `json:"offset"`
		Compressed json.RawMessage `json:"compressed"`
	}
	if err := json.Unmarshal([]byte(out), &ext); err != nil {
		t.Fatalf("qemu-img map: %v\n%s", err, out)
	}
	for _, e := range ext {
		switch {
		case !e.Data:
		case e.Offset == nil || string(e.Compressed) == "true":
			compressed++
		default:
			normal++
		}
	}
	return compressed, normal
}

// qemuRaw converts p to raw with qemu-img and returns the bytes.
func qemuRaw(t *testing.T, p string) []byte {
	t.Helper()
	raw := p + ".raw"
	testkit.MustRun(t, "qemu-img", "convert", "-O", "raw", p, raw)
	b, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Compressed writes for both compression types over cluster sizes and
// refcount widths (1-bit refcounts cannot share a host cluster): QEMU
// checks the image clean, maps compressed clusters, and reads what we
// wrote; clusters that do not shrink are written as normal clusters.
func TestCompress_WriteRoundTrip(t *testing.T) {
	t.Parallel()
	testkit.NeedQemu(t)
	cases := []struct {
		name string
		co   CreateOptions
	}{
		{"64k", CreateOptions{}},
		{"c4k", CreateOptions{ClusterSize: 4096}},
		{"c512", CreateOptions{ClusterSize: 512}},
		{"c4k-rb1", CreateOptions{ClusterSize: 4096, RefcountBits: 1}},
		{"c2m", CreateOptions{ClusterSize: 2 << 20}},
		{"lazy", CreateOptions{LazyRefcounts: true}},
		{"xl2", CreateOptions{ExtendedL2: true}},
		{"c16k-xl2", CreateOptions{ClusterSize: 16 << 10, ExtendedL2: true}},
	}
	for _, ct := range []string{"zlib", "zstd"} {
		for _, tc := range cases {
			t.Run(ct+"-"+tc.name, func(t *testing.T) {
				co := tc.co
				co.CompressionType = ct
				cs := int64(max(co.ClusterSize, 512))
				if co.ClusterSize == 0 {
					cs = 64 << 10
				}
				// 40 clusters and a partial last one; 12 of 2 MiB still
				// hold each kind of cluster below twice, in 24 MiB
				// instead of 80 that the race detector takes 20 s to
				// compress.
				n := int64(40)
				if cs >= 1<<20 {
					n = 12
				}
				co.Size = cs*n + 1536
				im, p := testImage(t, co, Options{})
				if want := map[string]uint8{"zlib": 0, "zstd": 1}[ct]; im.Header().CompressionType != want {
					t.Fatalf("compression type %d, want %d", im.Header().CompressionType, want)
				}
				rng := testkit.Rand(t)
				shadow := make([]byte, co.Size)
				wantComp := 0
				for c := int64(0); c*cs < co.Size; c++ {
					off := c * cs
					n := min(cs, co.Size-off)
					var b []byte
					switch c % 5 {
					case 0, 1:
						b = compressible(int(n), byte(c))
						wantComp++
					case 2:
						// Repeats 4500 bytes apart, past the 4 KiB window
						// QEMU inflates with: only the zeros compress.
						b = compressible(int(n), byte(c))
						if n >= 16384 {
							r := make([]byte, 1500)
							for i := range r {
								r[i] = byte(rng.Uint32())
							}
							b = b[:0]
							for int64(len(b)) < n {
								b = append(append(b, r...), make([]byte, 3000)...)
							}
							b = b[:n]
						}
						wantComp++
					case 3:
						b = make([]byte, n)
						for i := range b {
							b[i] = byte(rng.Uint32())
						}
					case 4:
						continue // unallocated
					}
					if err := im.WriteCompressed(off, b); err != nil {
						t.Fatalf("cluster %d: %v", c, err)
					}
					copy(shadow[off:], b)
				}
				// A normal write among them.
				nb := pattern(int(cs)/2, 9)
				if _, err := im.WriteAt(nb, 4*cs+7); err != nil {
					t.Fatal(err)
				}
				copy(shadow[4*cs+7:], nb)
				testkit.MustEqual(t, testkit.ReadAll(t, im), shadow, "read back")
				r, err := im.Check(CheckOptions{})
				if err != nil || !r.Clean() {
					t.Fatalf("check: %v %+v", err, r)
				}
				if r.CompressedClusters != int64(wantComp) {
					t.Errorf("check counts %d compressed clusters, want %d", r.CompressedClusters, wantComp)
				}
				closeCheck(t, im, p)
				if comp, _ := qemuMapCompressed(t, p); comp == 0 {
					t.Errorf("qemu-img map shows no compressed cluster")
				}
				testkit.MustEqual(t, qemuRaw(t, p), shadow, "qemu-img convert -O raw")
			})
		}
	}
}

// Compressed writes from many goroutines, with normal writes into other
// clusters in between: streams packed into shared host clusters stay
// apart and every host cluster is counted once per stream.
func TestCompress_Concurrent(t *testing.T) {
	t.Parallel()
	testkit.NeedQemu(t)
	for _, ct := range []string{"zlib", "zstd"} {
		t.Run(ct, func(t *testing.T) {
			const cs = 64 << 10
			const n = 96
			im, p := testImage(t, CreateOptions{Size: n * cs, CompressionType: ct}, Options{})
			shadow := make([]byte, n*cs)
			for c := 0; c < n; c++ {
				copy(shadow[c*cs:], compressible(cs, byte(c)))
			}
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for g := 0; g < 4; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for c := g; c < n; c += 4 {
						var err error
						if c%6 == 5 {
							_, err = im.WriteAt(shadow[c*cs:(c+1)*cs], int64(c)*cs)
						} else {
							err = im.WriteCompressed(int64(c)*cs, shadow[c*cs:(c+1)*cs])
						}
						if err != nil {
							errs <- err
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			testkit.MustEqual(t, testkit.ReadAll(t, im), shadow, "read back")
			closeCheck(t, im, p)
			testkit.MustEqual(t, qemuRaw(t, p), shadow, "qemu-img convert -O raw")
		})
	}
}

// A partial write into a compressed cluster allocates a normal cluster
// filled from the decompressed data (COW); when every stream of a shared
// host cluster is overwritten, the host cluster is freed, and compressed
// writes after that go elsewhere.
func TestCompress_OverwriteCOW(t *testing.T) {
	t.Parallel()
	testkit.NeedQemu(t)
	for _, name := range []string{"zlib", "zstd", "zlib-xl2", "zstd-xl2"} {
		ct, xl2, _ := strings.Cut(name, "-")
		t.Run(name, func(t *testing.T) {
			const cs = 64 << 10
			const n = 32
			im, p := testImage(t, CreateOptions{Size: n * cs, CompressionType: ct, ExtendedL2: xl2 != ""}, Options{})
			shadow := make([]byte, n*cs)
			for c := 0; c < n/2; c++ {
				b := compressible(cs, byte(c))
				if err := im.WriteCompressed(int64(c)*cs, b); err != nil {
					t.Fatal(err)
				}
				copy(shadow[c*cs:], b)
			}
			for c := 0; c < n/2; c++ {
				off := int64(c)*cs + 1000 + int64(c)*37
				b := pattern(3000, byte(c))
				if _, err := im.WriteAt(b, off); err != nil {
					t.Fatal(err)
				}
				copy(shadow[off:], b)
				e, err := im.entry(guestOff(int64(c) * cs))
				if err != nil || e.Type() != format.ClusterNormal || !e.Copied() {
					t.Fatalf("cluster %d after overwrite: %v (%v)", c, e.Type(), err)
				}
			}
			for c := n / 2; c < n; c++ {
				b := compressible(cs, byte(c))
				if err := im.WriteCompressed(int64(c)*cs, b); err != nil {
					t.Fatal(err)
				}
				copy(shadow[c*cs:], b)
			}
			if err := im.WriteCompressed(0, shadow[:cs]); !errors.Is(err, ErrNotCompressible) {
				t.Errorf("compressed write over an allocated cluster: %v, want ErrNotCompressible", err)
			}
			if err := im.WriteCompressed(cs/2, shadow[:cs]); !errors.Is(err, ErrNotCompressible) {
				t.Errorf("misaligned compressed write: %v, want ErrNotCompressible", err)
			}
			testkit.MustEqual(t, testkit.ReadAll(t, im), shadow, "read back")
			closeCheck(t, im, p)
			testkit.MustEqual(t, qemuRaw(t, p), shadow, "qemu-img convert -O raw")
		})
	}
}

// qring reads what qemu-img convert -c wrote (zlib and zstd), and writes
// into it: partial writes COW from the decompressed clusters, and QEMU
// reads the result.
func TestCompress_QEMUWritten(t *testing.T) {
	testkit.NeedQemu(t)
	for _, ct := range []string{"zlib", "zstd"} {
		t.Run(ct, func(t *testing.T) {
			d := testkit.Dir(t)
			src := make([]byte, 2<<20)
			for off := 0; off < len(src); off += 64 << 10 {
				if off%(256<<10) != 0 {
					copy(src[off:], compressible(64<<10, byte(off>>16)))
				}
			}
			raw := filepath.Join(d, "src.raw")
			if err := os.WriteFile(raw, src, 0o644); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(d, "c.qcow2")
			testkit.MustRun(t, "qemu-img", "convert", "-c", "-O", "qcow2", "-o", "compression_type="+ct, raw, p)
			im, err := Open(p, Options{})
			if err != nil {
				t.Fatal(err)
			}
			testkit.MustEqual(t, testkit.ReadAll(t, im), src, "qring reads qemu's compressed image")
			for i, off := range []int64{100, 70000, 1<<20 + 5, 2<<20 - 4096} {
				b := bytes.Repeat([]byte{byte(0xa0 + i)}, 5000)
				b = b[:min(int64(len(b)), int64(len(src))-off)]
				if _, err := im.WriteAt(b, off); err != nil {
					t.Fatal(err)
				}
				copy(src[off:], b)
			}
			testkit.MustEqual(t, testkit.ReadAll(t, im), src, "after overwrites")
			closeCheck(t, im, p)
			testkit.MustEqual(t, qemuRaw(t, p), src, "qemu-img convert -O raw")
		})
	}
}

// Crash clones at every device op of a workload of compressed writes,
// partial overwrites of compressed clusters (COW), discards and flushes:
// every clone checks without corruption, every linked compressed cluster
// decompresses (its stream and refcounts were durable before the link)
// and flushed data reads back.
func TestCompress_CrashClones(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		co   CreateOptions
	}{
		{"zlib", CreateOptions{ClusterSize: 4096}},
		{"zstd", CreateOptions{ClusterSize: 4096, CompressionType: "zstd"}},
		{"zlib-lazy", CreateOptions{ClusterSize: 4096, LazyRefcounts: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			co := tc.co
			seed := testkit.Rand(t).Uint64()
			nops := len(compressCrashWorkload(t, seed, co, func(int) bool { return false }))
			step := max(1, nops/40)
			pts := compressCrashWorkload(t, seed, co, func(i int) bool { return i%step == 0 })
			verifyCrashPoints(t, pts, Options{}, compressCrashSize)
			t.Logf("%d device ops", nops)
		})
	}
}

const compressCrashSize = 1 << 20

func compressCrashWorkload(t *testing.T, seed uint64, co CreateOptions, want func(int) bool) []crashPoint {
	rng := rand.New(rand.NewPCG(seed, 7))
	const size = compressCrashSize
	model := make([]byte, size)
	rec, im := openCrashRecorder(t, seed, co, Options{}, model, want)
	cs := int64(im.Geometry().ClusterSize)
	for i := 0; i < 100; i++ {
		switch op := rng.IntN(100); {
		case op < 55:
			off := rng.Int64N(size/cs) * cs
			b := compressible(int(cs), byte(rng.Uint32()))
			rec.touch(off, cs)
			err := im.WriteCompressed(off, b)
			if errors.Is(err, ErrNotCompressible) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			copy(model[off:], b)
		case op < 75:
			n := int64(1 + rng.IntN(6000))
			off := rng.Int64N(size - n)
			rec.write(t, im, off, pattern(int(n), byte(rng.Uint32())))
		case op < 85:
			c := rng.Int64N(size/cs - 2)
			rec.discard(t, im, c*cs, 2*cs)
		default:
			rec.flushImage(t, im)
		}
	}
	testkit.MustEqual(t, testkit.ReadAll(t, im), model, "read back")
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	return rec.pts
}

// Zeros around compressed writes: an all-zero cluster written compressed
// reads back as zeros; a compressed write into a zero cluster (v3) is
// allowed and replaces it; a discarded or zeroed compressed cluster reads
// as zeros and its host cluster is freed once no stream uses it. QEMU
// checks the image clean and reads the same.
func TestCompress_ZeroClusters(t *testing.T) {
	testkit.NeedQemu(t)
	for _, ct := range []string{"zlib", "zstd"} {
		t.Run(ct, func(t *testing.T) {
			const cs = 64 << 10
			const n = 8
			im, p := testImage(t, CreateOptions{Size: n * cs, CompressionType: ct}, Options{})
			shadow := make([]byte, n*cs)
			// 0: zeros written compressed.
			if err := im.WriteCompressed(0, make([]byte, cs)); err != nil {
				t.Fatal(err)
			}
			// 1: a zero cluster, then compressed data into it.
			if err := im.WriteZeroes(cs, cs, 0); err != nil {
				t.Fatal(err)
			}
			if e, _ := im.entry(guestOff(cs)); e.Type() != format.ClusterZeroPlain {
				t.Fatalf("cluster 1 after WriteZeroes: %v", e.Type())
			}
			b := compressible(cs, 1)
			if err := im.WriteCompressed(cs, b); err != nil {
				t.Fatal(err)
			}
			copy(shadow[cs:], b)
			// 2, 3: compressed, then discarded / zeroed with unmap.
			for c := int64(2); c < 4; c++ {
				if err := im.WriteCompressed(c*cs, compressible(cs, byte(c))); err != nil {
					t.Fatal(err)
				}
			}
			if err := im.Discard(2*cs, cs); err != nil {
				t.Fatal(err)
			}
			if err := im.WriteZeroes(3*cs, cs, block.MayUnmap); err != nil {
				t.Fatal(err)
			}
			for c := int64(0); c < 4; c++ {
				e, err := im.entry(guestOff(c * cs))
				if err != nil {
					t.Fatal(err)
				}
				want := map[int64]format.ClusterType{0: format.ClusterCompressed, 1: format.ClusterCompressed, 2: format.ClusterZeroPlain, 3: format.ClusterZeroPlain}[c]
				if e.Type() != want {
					t.Errorf("cluster %d: %v, want %v", c, e.Type(), want)
				}
			}
			testkit.MustEqual(t, testkit.ReadAll(t, im), shadow, "read back")
			closeCheck(t, im, p)
			testkit.MustEqual(t, qemuRaw(t, p), shadow, "qemu-img convert -O raw")
		})
	}
}
