package deflate4k

import (
	"bytes"
	"compress/flate"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	kflate "github.com/klauspost/compress/flate"
)

var testSizes = []int{0, 1, 2, 3, 4, 7, 257, 258, 259, 511, 512, 4095, 4096, 4097, 8193, 65535, 65536, 65537, 200000, 2 << 20}

type genFunc func(r *rand.Rand, n int) []byte

var generators = []struct {
	name string
	gen  genFunc
}{
	{"random", func(r *rand.Rand, n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}},
	{"zeros", func(r *rand.Rand, n int) []byte { return make([]byte, n) }},
	{"text", func(r *rand.Rand, n int) []byte {
		words := strings.Fields("the quick brown fox jumps over a lazy dog qcow2 cluster " +
			"refcount table header snapshot backing file compressed deflate window\n")
		var b []byte
		for len(b) < n {
			b = append(b, words[r.IntN(len(words))]...)
			b = append(b, ' ')
		}
		return b[:n]
	}},
	{"pattern", func(r *rand.Rand, n int) []byte {
		p := []byte("abcabdabcXYZ0123456789")
		b := make([]byte, n)
		for i := range b {
			b[i] = p[i%len(p)]
		}
		return b
	}},
	{"period4096", func(r *rand.Rand, n int) []byte {
		// repeats exactly at distance 4096 (legal) and 4097 (not).
		blk := make([]byte, 4096)
		for i := range blk {
			blk[i] = byte(r.Uint32())
		}
		b := make([]byte, n)
		for i := range b {
			b[i] = blk[i%4096]
		}
		return b
	}},
	{"period4097", func(r *rand.Rand, n int) []byte {
		blk := make([]byte, 4097)
		for i := range blk {
			blk[i] = byte(r.Uint32())
		}
		b := make([]byte, n)
		for i := range b {
			b[i] = blk[i%4097]
		}
		return b
	}},
	{"skewed", func(r *rand.Rand, n int) []byte {
		// geometric-ish byte distribution: deep Huffman trees.
		b := make([]byte, n)
		for i := range b {
			v := 0
			for v < 40 && r.IntN(3) != 0 {
				v++
			}
			b[i] = byte(v)
		}
		return b
	}},
	{"mixed", func(r *rand.Rand, n int) []byte {
		b := make([]byte, 0, n)
		for len(b) < n {
			k := 1 + r.IntN(3000)
			switch r.IntN(3) {
			case 0:
				for j := 0; j < k; j++ {
					b = append(b, byte(r.Uint32()))
				}
			case 1:
				b = append(b, make([]byte, k)...)
			default:
				if len(b) > 0 {
					d := 1 + r.IntN(min(len(b), 5000))
					for j := 0; j < k; j++ {
						b = append(b, b[len(b)-d])
					}
				}
			}
		}
		return b[:n]
	}},
}

// check verifies that comp is a valid stream for src under both the strict
// test inflater (distance <= 4096 etc.) and Go's compress/flate.
func check(t testing.TB, src, comp []byte) *inflater {
	t.Helper()
	f, err := testInflate(comp)
	if err != nil {
		t.Fatalf("strict inflate (len %d): %v", len(src), err)
	}
	if !bytes.Equal(f.out, src) {
		t.Fatalf("strict inflate: output mismatch (len %d vs %d)", len(f.out), len(src))
	}
	got, err := io.ReadAll(flate.NewReader(bytes.NewReader(comp)))
	if err != nil {
		t.Fatalf("compress/flate (len %d): %v", len(src), err)
	}
	if !bytes.Equal(got, src) {
		t.Fatalf("compress/flate: output mismatch (len %d vs %d)", len(got), len(src))
	}
	return f
}

func TestRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, g := range generators {
		for _, n := range testSizes {
			src := g.gen(r, n)
			comp := Compress(nil, src)
			f := check(t, src, comp)
			if n >= 8193 && strings.HasPrefix(g.name, "period4096") && f.maxDist != 4096 {
				t.Errorf("%s/%d: max distance %d, want 4096", g.name, n, f.maxDist)
			}
			if testing.Verbose() && n >= 65536 {
				t.Logf("%-10s %8d -> %8d  blocks stored/fixed/dyn %v maxdist %d",
					g.name, n, len(comp), f.blocks, f.maxDist)
			}
		}
	}
}

func TestAppend(t *testing.T) {
	src := []byte(strings.Repeat("hello, qcow2 world. ", 500))
	prefix := []byte("PREFIX")
	out := Compress(append([]byte(nil), prefix...), src)
	if !bytes.HasPrefix(out, prefix) {
		t.Fatal("prefix clobbered")
	}
	check(t, src, out[len(prefix):])
	if !bytes.Equal(Compress(nil, nil), []byte{3, 0}) {
		t.Fatalf("empty input: got %x, want 0300", Compress(nil, nil))
	}
}

// TestStaleState compresses many inputs through one pooled state to make
// sure hash-chain entries from earlier calls never leak into later ones.
func TestStaleState(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	prev := generators[0].gen(r, 70000)
	for i := 0; i < 50; i++ {
		// Mostly the same bytes as the previous input: stale chain entries
		// would find (wrong) matches if they were trusted.
		src := append([]byte(nil), prev...)
		for j := 0; j < 100; j++ {
			src[r.IntN(len(src))] ^= byte(1 + r.IntN(255))
		}
		src = src[:1+r.IntN(len(src))]
		check(t, src, Compress(nil, src))
		prev = src
		if len(prev) < 5000 {
			prev = generators[0].gen(r, 70000)
		}
	}
}

func TestConcurrent(t *testing.T) {
	corpus := netCorpus(t)
	if len(corpus) > 4<<20 {
		corpus = corpus[:4<<20]
	}
	want := map[int][]byte{}
	for off := 0; off < len(corpus); off += 65536 {
		want[off] = Compress(nil, corpus[off:min(off+65536, len(corpus))])
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for off := 0; off < len(corpus); off += 65536 {
				got := Compress(nil, corpus[off:min(off+65536, len(corpus))])
				if !bytes.Equal(got, want[off]) {
					errs <- fmt.Errorf("chunk at %d differs under concurrency", off)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestAllocs(t *testing.T) {
	src := netCorpus(t)[:65536]
	dst := make([]byte, 0, 2*65536)
	Compress(dst, src) // warm the pool
	allocs := testing.AllocsPerRun(50, func() { Compress(dst[:0], src) })
	if allocs > 0.5 {
		t.Errorf("%.1f allocations per Compress with a large enough dst", allocs)
	}
}

func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte(""))
	f.Add([]byte("a"))
	f.Add([]byte("abcabcabcabcabcabcabc"))
	f.Add(bytes.Repeat([]byte{0}, 5000))
	f.Add(bytes.Repeat([]byte("0123456789abcdef"), 600))
	r := rand.New(rand.NewPCG(5, 6))
	f.Add(generators[7].gen(r, 20000))
	f.Add(generators[4].gen(r, 9000))
	f.Fuzz(func(t *testing.T, src []byte) {
		comp := Compress(nil, src)
		fi := check(t, src, comp)
		if fi.maxDist > windowSize {
			t.Fatalf("distance %d", fi.maxDist)
		}
		// Also as a suffix of a repetitive prefix, to exercise long chains.
		src2 := append(bytes.Repeat(src, 3), src...)
		check(t, src2, Compress(nil, src2))
	})
}

// ---- corpora and reference compressors ----

var (
	netOnce sync.Once
	netData []byte
)

// netCorpus returns the Go files under $GOROOT/src/net concatenated in
// sorted path order.
func netCorpus(t testing.TB) []byte {
	netOnce.Do(func() {
		root := filepath.Join(runtime.GOROOT(), "src", "net")
		var paths []string
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.HasSuffix(p, ".go") {
				paths = append(paths, p)
			}
			return nil
		})
		sort.Strings(paths)
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if err == nil {
				netData = append(netData, b...)
			}
		}
	})
	if len(netData) < 1<<20 {
		t.Skipf("GOROOT/src/net corpus too small (%d bytes)", len(netData))
	}
	return netData
}

// binCorpus returns up to limit bytes of regular files under /usr/bin, in
// sorted order (a stand-in for a tar of /usr/bin).
func binCorpus(t testing.TB, limit int) []byte {
	ents, err := os.ReadDir("/usr/bin")
	if err != nil {
		t.Skip("no /usr/bin")
	}
	var out []byte
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/usr/bin", e.Name()))
		if err != nil {
			continue
		}
		out = append(out, b...)
		if len(out) >= limit {
			return out[:limit]
		}
	}
	if len(out) < 1<<20 {
		t.Skip("/usr/bin corpus too small")
	}
	return out
}

func chunked(data []byte, size int, fn func([]byte) int) int {
	total := 0
	for off := 0; off < len(data); off += size {
		total += fn(data[off:min(off+size, len(data))])
	}
	return total
}

func klauspostSize(chunk []byte) int {
	var buf bytes.Buffer
	w, err := kflate.NewWriterWindow(&buf, 4096)
	if err != nil {
		panic(err)
	}
	w.Write(chunk)
	w.Close()
	return buf.Len()
}

const pyHelper = `
import sys, zlib
mode = sys.argv[1]
if mode == "compress":
    data = open(sys.argv[2], "rb").read()
    size = int(sys.argv[3])
    total = 0
    for off in range(0, len(data), size):
        c = zlib.compressobj(6, zlib.DEFLATED, -12, 9)
        total += len(c.compress(data[off:off+size]) + c.flush())
    print(total)
elif mode == "decompress":
    # argv: pairs of (compressed, original) files
    args = sys.argv[2:]
    for i in range(0, len(args), 2):
        comp = open(args[i], "rb").read()
        orig = open(args[i+1], "rb").read()
        d = zlib.decompressobj(-12)
        out = d.decompress(comp) + d.flush()
        if out != orig:
            print("MISMATCH", args[i], len(out), len(orig)); sys.exit(1)
        if not d.eof:
            print("NOT-EOF", args[i]); sys.exit(1)
        if d.unused_data:
            print("TRAILING", args[i], len(d.unused_data)); sys.exit(1)
    print("ok", len(args)//2)
`

// python returns a function running the zlib helper, or skips the test.
func python(t testing.TB) func(args ...string) string {
	py, err := exec.LookPath("python3")
	if err != nil || exec.Command(py, "-c", "import zlib").Run() != nil {
		t.Skip("python3 with zlib not available")
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "zhelper.py")
	if err := os.WriteFile(script, []byte(pyHelper), 0o644); err != nil {
		t.Fatal(err)
	}
	return func(args ...string) string {
		out, err := exec.Command(py, append([]string{script}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("python helper: %v: %s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
}

func zlibSize(t testing.TB, run func(...string) string, data []byte, chunk int) int {
	f := filepath.Join(t.TempDir(), "corpus")
	if err := os.WriteFile(f, data, 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(run("compress", f, strconv.Itoa(chunk)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestZlibDecodable inflates our output with zlib's own inflate and a 4 KiB
// window (windowBits -12), exactly as QEMU does.
func TestZlibDecodable(t *testing.T) {
	run := python(t)
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(7, 8))
	var args []string
	add := func(name string, src []byte) {
		c := filepath.Join(dir, name+".z")
		o := filepath.Join(dir, name+".raw")
		os.WriteFile(c, Compress(nil, src), 0o644)
		os.WriteFile(o, src, 0o644)
		args = append(args, c, o)
	}
	for _, g := range generators {
		for _, n := range testSizes {
			add(fmt.Sprintf("%s-%d", g.name, n), g.gen(r, n))
		}
	}
	corpus := netCorpus(t)
	for i := 0; i < 8; i++ {
		off := i * 65536 * 3
		add(fmt.Sprintf("net-%d", i), corpus[off:off+65536])
	}
	if out := run(append([]string{"decompress"}, args...)...); !strings.HasPrefix(out, "ok") {
		t.Fatal(out)
	}
}

// TestRatio compares total compressed size over 64 KiB chunks with
// klauspost's NewWriterWindow(4096) (the encoder this package replaces)
// and, when python3 is available, with zlib level 6 windowBits -12
// memLevel 9 (what qemu-img uses).
func TestRatio(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	corpora := []struct {
		name string
		data []byte
	}{
		{"go-src-net", netCorpus(t)},
		{"usr-bin-8M", binCorpus(t, 8<<20)},
	}
	// DEFLATE4K_CORPUS=file adds an extra corpus (e.g. a tar of /usr/bin).
	if p := os.Getenv("DEFLATE4K_CORPUS"); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		corpora = append(corpora, struct {
			name string
			data []byte
		}{filepath.Base(p), b})
	}
	var run func(...string) string
	if _, err := exec.LookPath("python3"); err == nil && exec.Command("python3", "-c", "import zlib").Run() == nil {
		run = python(t)
	}
	for _, c := range corpora {
		for _, chunk := range []int{65536, 4096} {
			ours := chunked(c.data, chunk, func(b []byte) int { return len(Compress(nil, b)) })
			kp := chunked(c.data, chunk, klauspostSize)
			msg := fmt.Sprintf("%-12s chunk %5d: in %d  deflate4k %d  klauspost %d (ours/kp %.4f)",
				c.name, chunk, len(c.data), ours, kp, float64(ours)/float64(kp))
			if float64(ours) > 1.01*float64(kp) {
				t.Errorf("%s: worse than 1.01x klauspost", msg)
			}
			if run != nil {
				z := zlibSize(t, run, c.data, chunk)
				msg += fmt.Sprintf("  zlib-6 %d (ours/zlib %.4f)", z, float64(ours)/float64(z))
				if float64(ours) > 1.02*float64(z) {
					t.Errorf("%s: worse than 1.02x zlib level 6", msg)
				}
			}
			t.Log(msg)
		}
	}
}

func benchCompress(b *testing.B, data []byte) {
	dst := make([]byte, 0, 2*65536)
	nchunks := len(data) / 65536
	b.SetBytes(65536)
	b.ReportAllocs()
	b.ResetTimer()
	c0 := cpuSeconds()
	for i := 0; i < b.N; i++ {
		off := (i % nchunks) * 65536
		dst = Compress(dst[:0], data[off:off+65536])
	}
	reportCPU(b, c0)
}

// reportCPU adds a "cpu-MB/s" metric: bytes per second of process CPU
// time (meaningful when the machine is oversubscribed and wall-clock MB/s
// is not).
func reportCPU(b *testing.B, c0 float64) {
	if c := cpuSeconds() - c0; c > 0 {
		b.ReportMetric(float64(b.N)*65536/c/1e6, "cpu-MB/s")
	}
}

func BenchmarkCompress64K(b *testing.B) {
	b.Run("go-src-net", func(b *testing.B) { benchCompress(b, netCorpus(b)) })
	b.Run("usr-bin", func(b *testing.B) { benchCompress(b, binCorpus(b, 16<<20)) })
	b.Run("random", func(b *testing.B) {
		benchCompress(b, generators[0].gen(rand.New(rand.NewPCG(1, 1)), 1<<20))
	})
	b.Run("zeros", func(b *testing.B) { benchCompress(b, make([]byte, 1<<20)) })
}

func BenchmarkKlauspost64K(b *testing.B) {
	data := netCorpus(b)
	nchunks := len(data) / 65536
	var buf bytes.Buffer
	w, _ := kflate.NewWriterWindow(&buf, 4096)
	b.SetBytes(65536)
	b.ReportAllocs()
	b.ResetTimer()
	c0 := cpuSeconds()
	for i := 0; i < b.N; i++ {
		off := (i % nchunks) * 65536
		buf.Reset()
		w.Reset(&buf)
		w.Write(data[off : off+65536])
		w.Close()
	}
	reportCPU(b, c0)
}
