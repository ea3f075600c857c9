package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/uring/looptest"
)

// TestCreate_RoomForQemusImage: a file system with room for the image
// qemu-img create makes (its header, refcount table and refcount block
// clusters and the L1 table's entries, where the file ends) has room
// for qimg's: qimg wrote the L1 table's clusters in full, zeros and
// all, before it cut the file where QEMU's ends, and failed with ENOSPC
// with up to a cluster less one entry (2 MiB with cluster_size=2M) too
// little room.
func TestCreate_RoomForQemusImage(t *testing.T) {
	testkit.NeedQemu(t)
	for _, cs := range []int64{64 << 10, 2 << 20} {
		t.Run(fmt.Sprintf("cluster_size=%d", cs), func(t *testing.T) {
			d := looptest.SmallTmpfs(t, 3*cs+32<<10)
			opt := fmt.Sprintf("cluster_size=%d", cs)
			e := filepath.Join(d, "e.qcow2")
			if _, errOut, code := testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", opt, e, "8M"); code != 0 {
				t.Skipf("qemu-img create: exit %d: %s", code, errOut)
			}
			os.Remove(e)
			q := filepath.Join(d, "q.qcow2")
			if _, errOut, code := runQ(t, "create", "-q", "-f", "qcow2", "-o", opt, q, "8M"); code != 0 {
				t.Fatalf("qimg create: exit %d: %s (qemu-img create succeeded)", code, errOut)
			}
			testkit.QemuCheck(t, q)
		})
	}
}
