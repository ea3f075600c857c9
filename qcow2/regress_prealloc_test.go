package qcow2

import (
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// Metadata preallocation that grows the refcount table reuses the old
// table's cluster as a data cluster: it must read as zeros, not as the
// old table (found by the torture suite, config c512-r32-v3-meta).
func TestRegress_PreallocReusedClusterReadsZero(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{PreallocMetadata, PreallocFalloc} {
		t.Run(mode, func(t *testing.T) {
			p := filepath.Join(testkit.Dir(t), "x.qcow2")
			if err := Create(p, CreateOptions{Size: 32 << 20, ClusterSize: 512, RefcountBits: 32, Preallocation: mode}); err != nil {
				t.Fatal(err)
			}
			got := testkit.ReadAll(t, openReadOnly(t, p))
			testkit.MustEqual(t, got, make([]byte, len(got)), "a preallocated image")
			ownCheck(t, p)
			testkit.QemuCheck(t, p)
		})
	}
}
