package qcow2

import (
	"errors"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// The torture suite's compressed configurations (tcfg.comp, tokens
// "zlib" and "zstd"): a write's data compresses, and every whole cluster
// it covers goes through WriteCompressed (a normal write where the
// cluster is allocated already: compression never overwrites), so later
// ops overwrite, zero, discard and COW compressed clusters, and crash
// clones land between a stream and its link (Q13).

// fillWrite fills a write op's buffer: the pattern, made compressible
// (each byte 8 times) in compressed configurations.
func (r *trun) fillWrite(b []byte, pat uint64) {
	fillPattern(b, pat)
	if r.cfg.comp == "" {
		return
	}
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = b[i/8]
	}
}

// writeAt writes b at off: whole clusters compressed in compressed
// configurations, the rest (and clusters that may not be compressed)
// normally.
func (r *trun) writeAt(im *Image, b []byte, off int64) error {
	if r.cfg.comp == "" {
		_, err := im.WriteAt(b, off)
		return err
	}
	cs := int64(im.Geometry().ClusterSize)
	end := off + int64(len(b))
	for p := off; p < end; {
		n := min(end, (p/cs+1)*cs) - p
		if p%cs == 0 && n == cs {
			err := im.WriteCompressed(p, b[p-off:p-off+n])
			if err == nil {
				r.st.Compressed++
				p += n
				continue
			}
			if !errors.Is(err, ErrNotCompressible) {
				return err
			}
		}
		if _, err := im.WriteAt(b[p-off:p-off+n], p); err != nil {
			return err
		}
		p += n
	}
	return nil
}

// TestTorture_Compressed runs the compressed configurations of
// tortureMatrix on a short op sequence (seeded by -seed) and requires
// that clusters were written compressed (in one of the first 8 seeds).
// Under the race detector it runs the configuration with pausing devices
// only (the others, crash clones of zlib images, took 54 s of its 68 s);
// make test's pass without it runs them all.
func TestTorture_Compressed(t *testing.T) {
	t.Parallel()
	sp := tgenParams{size: 8 << 20, maxSize: 16 << 20, ops: 150, batchOps: 15}
	if raceEnabled || testing.Short() {
		sp.ops, sp.batchOps = 80, 8
	}
	seed := testkit.Seed(t)
	for _, name := range tortureMatrix {
		cfg, err := parseTcfg(name)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.comp == "" || raceEnabled && cfg.backend != "hold" {
			continue
		}
		if cfg.String() != name {
			t.Errorf("config %q parses back as %q", name, cfg)
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel() // its own image and devices, as TestTorture's cases
			// A short sequence may cover no whole unallocated cluster
			// (64 KiB clusters, writes of at most 3): the next seeds
			// run too, until one wrote compressed, up to 8 of them.
			for i := range uint64(8) {
				st := runTorture(t, seed+i, cfg, sp, 1)
				t.Logf("seed %d: %d clusters written compressed; %v", seed+i, st.Compressed, st)
				if st.Compressed > 0 || t.Failed() {
					return
				}
			}
			t.Errorf("no cluster written compressed in 8 sequences from seed %d", seed)
		})
	}
}
