package qcow2

import (
	"math/rand/v2"
	"testing"

	"github.com/qring/qring/block/memdev"
)

// The bug TestCompress_CrashClones found (zstd, seed
// 1795981807085289157): a write over the whole of a compressed cluster
// freed its host cluster, the next allocating write took that host
// cluster and zeroed and wrote it, and only then did the L2 table without
// the old compressed entry reach the media. A crash in between left the
// old entry pointing at bytes that do not decompress: a read error, not
// old or new data. Q13: a host cluster freed from a compressed entry is
// not handed out again before a flush made the removal durable. The test
// crash-clones at every device op after the compressed data was flushed
// (keeping every unflushed op, so the clone holds the reuse) and requires
// each clone to check clean and read without error.
func TestCompress_FreedHostNotReusedBeforeFlush(t *testing.T) {
	t.Parallel()
	for _, ct := range []string{"zlib", "zstd"} {
		for _, how := range []string{"overwrite", "discard"} {
			t.Run(ct+"-"+how, func(t *testing.T) {
				const cs = 4096
				mem := memdev.New(memdev.Options{})
				if err := CreateDevice(mem, CreateOptions{Size: 1 << 20, ClusterSize: cs, CompressionType: ct}); err != nil {
					t.Fatal(err)
				}
				dev := &hookDev{Dev: mem, before: func() {}}
				im, err := OpenDevice(dev, Options{})
				if err != nil {
					t.Fatal(err)
				}
				const a, b = 16 * cs, 32 * cs
				if err := im.WriteCompressed(a, compressible(cs, 1)); err != nil {
					t.Fatal(err)
				}
				e, _ := im.entry(guestOff(a))
				host := e.DecodeCompressed(&im.g).Off
				if err := im.Flush(); err != nil {
					t.Fatal(err)
				}
				var clones []*memdev.Dev
				rng := rand.New(rand.NewPCG(1, 2))
				dev.before = func() { clones = append(clones, mem.CrashClone(rng, 1)) }
				if how == "overwrite" {
					if _, err := im.WriteAt(pattern(cs, 2), a); err != nil {
						t.Fatal(err)
					}
				} else if err := im.Discard(a, cs); err != nil {
					t.Fatal(err)
				}
				// Partial allocating writes: each one zeroes the rest of
				// its new cluster, unless it lies in fresh space.
				var hosts []uint64
				for k := int64(0); k < 4; k++ {
					if _, err := im.WriteAt(pattern(100, 3), b+k*cs+200); err != nil {
						t.Fatal(err)
					}
					e, _ := im.entry(guestOff(b + k*cs))
					hosts = append(hosts, uint64(e.Offset()))
				}
				if err := im.Flush(); err != nil {
					t.Fatal(err)
				}
				dev.before = func() {}
				if _, err := im.WriteAt(pattern(100, 4), b+8*cs+200); err != nil {
					t.Fatal(err)
				}
				e, _ = im.entry(guestOff(b + 8*cs))
				if e.Offset() != host {
					t.Errorf("freed host cluster %#x not reused after the flush (went to %#x)", host, e.Offset())
				}
				checkClean(t, im, mem)
				for _, h := range hosts {
					if h == uint64(host) {
						t.Errorf("freed host cluster %#x reused before a flush", host)
					}
				}
				for k, c := range clones {
					im, err := OpenDevice(c, Options{})
					if err != nil {
						t.Fatalf("clone %d: %v", k, err)
					}
					r, err := im.Check(CheckOptions{})
					if err != nil || r.Corruptions != 0 || r.CheckErrors != 0 {
						t.Errorf("clone %d: check: %v %+v", k, err, r)
					}
					buf := make([]byte, cs)
					if _, err := im.ReadAt(buf, a); err != nil {
						t.Errorf("clone %d: reading the overwritten compressed cluster: %v", k, err)
					}
					im.Close()
				}
			})
		}
	}
}
