package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestImageOpts_UnknownNestedOptionLikeQemu: an option a node does not
// take is named as QEMU names it, by its flat name ("snapshot.name", as
// measure and info refuse it; qimg said 'snapshot').
func TestImageOpts_UnknownNestedOptionLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	p := filepath.Join(t.TempDir(), "a.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "1M")
	spec := "driver=qcow2,file.filename=" + p + ",snapshot.name=s1"
	for _, args := range [][]string{{"info", "--image-opts", spec}, {"measure", "-O", "qcow2", "--image-opts", spec}} {
		_, qe, qcode := testkit.Run(t, "qemu-img", args...)
		_, oe, ocode := runQ(t, args...)
		if qcode != ocode || ourMessage(oe) != qemuMessage(qe) {
			t.Errorf("%s: qimg exit %d %q, qemu-img exit %d %q", strings.Join(args, " "), ocode, oe, qcode, qe)
		}
	}
}
