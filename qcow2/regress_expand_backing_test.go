package qcow2

import (
	"bytes"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
)

// ExpandZeroClusters and ExpandSnapshotZeroClusters decided whether a
// zero cluster hides a backing file by the name in the header only. An
// image given its backing device through Options.Backing (its header
// names none) reads that device under unallocated clusters all the
// same, so the expansion unallocated its zero clusters and the guest
// read the backing file's bytes where it had written zeros. They now
// ask what reads go by: a backing device opened, or one named.
func TestRegress_ExpandZeroClustersHonoursTheBackingDevice(t *testing.T) {
	const cs = 4096
	backing := bytes.Repeat([]byte{0x81}, 64*cs)
	for _, snap := range []bool{false, true} {
		name := map[bool]string{false: "active", true: "snapshot"}[snap]
		t.Run(name, func(t *testing.T) {
			im, _ := memImage(t, CreateOptions{ClusterSize: cs, Size: 64 * cs},
				Options{Backing: memdev.FromBytes(backing, memdev.Options{})}, memdev.Options{})
			if err := im.WriteZeroes(0, 2*cs, block.MayUnmap); err != nil {
				t.Fatal(err)
			}
			if snap {
				if _, err := im.CreateSnapshot("s"); err != nil {
					t.Fatal(err)
				}
				// The active disk leaves the snapshot's table alone.
				mustWrite(t, im, pattern(cs, 1), 10*cs)
				if err := im.ExpandSnapshotZeroClusters(); err != nil {
					t.Fatal(err)
				}
				if err := im.ApplySnapshot("s"); err != nil {
					t.Fatal(err)
				}
			} else if err := im.ExpandZeroClusters(); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 2*cs)
			if _, err := im.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, make([]byte, 2*cs)) {
				t.Fatalf("zeroed range reads %#x after the expansion, want zeros", got[0])
			}
		})
	}
}
