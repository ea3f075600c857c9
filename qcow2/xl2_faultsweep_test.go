package qcow2

import (
	"testing"

	"github.com/qring/qring/block"
)

// TestFaultSweep_XL2: the fault sweep over extended-L2 images (16 KiB
// clusters, 512-byte subclusters): whole-subcluster writes with no COW,
// partial subclusters COW'd from backing data, subclusters allocated in
// place in an allocated cluster, zero writes at subcluster granularity
// and discards.
func TestFaultSweep_XL2(t *testing.T) {
	t.Parallel()
	const cs, sc = 16 << 10, 512
	co := CreateOptions{ClusterSize: cs, ExtendedL2: true}
	p := func(n int, s byte) []byte { return pattern(n, s) }
	runSweep(t, []sweepWorkload{
		{name: "xl2-backing", co: co, backing: true, run: func(r *sweepRun) error {
			if err := r.write(4*sc, p(2*sc, 1)); err != nil { // whole subclusters, new cluster
				return err
			}
			if err := r.write(cs+3*sc+100, p(300, 2)); err != nil { // inside one subcluster
				return err
			}
			if err := r.flush(); err != nil {
				return err
			}
			if err := r.write(20*sc+7, p(3*sc, 3)); err != nil { // in place, partial ends
				return err
			}
			if err := r.zero(cs+8*sc, 4*sc, 0); err != nil { // zero bits
				return err
			}
			if err := r.zero(2*cs, cs, block.MayUnmap); err != nil { // whole cluster
				return err
			}
			if err := r.flush(); err != nil {
				return err
			}
			if err := r.write(cs+9*sc+10, p(100, 4)); err != nil { // into a zero subcluster
				return err
			}
			if err := r.discard(0, cs); err != nil {
				return err
			}
			return r.flush()
		}},
		{name: "xl2-nobacking", co: co, run: func(r *sweepRun) error {
			if err := r.write(1000, p(5000, 1)); err != nil {
				return err
			}
			if err := r.flush(); err != nil {
				return err
			}
			if err := r.write(cs-200, p(400, 2)); err != nil { // spans two clusters
				return err
			}
			if err := r.zero(3*sc+1, 2*sc, 0); err != nil { // partial and whole subclusters
				return err
			}
			return r.flush()
		}},
	})
}
