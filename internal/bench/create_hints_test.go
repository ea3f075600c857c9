package bench

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring/looptest"
)

// TestCreateImage_ExtentSizeHint: qbench's fresh images (qcow2 and raw)
// get qemu-img create's extent size hint, 1 MiB unless the create
// options say otherwise, as qimg create's do; through the portable
// default opener they got none.
func TestCreateImage_ExtentSizeHint(t *testing.T) {
	testkit.NeedTools(t, "xfs_io")
	d := looptest.XFSDir(t, 300<<20)
	for _, c := range []struct {
		format string
		hint   int64
		want   string
	}{
		{"qcow2", 0, "[1048576]"}, {"raw", 0, "[1048576]"},
		{"qcow2", 64 << 10, "[65536]"}, {"raw", -1, "[0]"},
	} {
		p := filepath.Join(d, c.format+strings.ReplaceAll(t.Name(), "/", "_"))
		o := qcow2.CreateOptions{Size: 64 << 20, ClusterSize: 65536, Hints: qcow2.FileHints{ExtentSizeHint: c.hint}}
		if err := createImage(p, c.format, o); err != nil {
			t.Fatalf("%s hint %d: %v", c.format, c.hint, err)
		}
		out := testkit.MustRun(t, "xfs_io", "-c", "extsize", p)
		if got, _, _ := strings.Cut(out, " "); got != c.want {
			t.Errorf("%s hint %d: extent size hint %s, want %s (qemu-img create's)", c.format, c.hint, got, c.want)
		}
		testkit.MustRun(t, "rm", "-f", p)
	}
}
