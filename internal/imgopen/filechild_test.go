package imgopen

import (
	"github.com/qring/qring/internal/testkit"
	"os/exec"
	"strings"
	"testing"

	"github.com/qring/qring/block"
)

// TestOpenSpec_FileChildWithoutDriver: a file child given only by its
// filename (file.filename=x, {"filename":x}, also with leaf options) is a
// host file, as QEMU fills in file.driver=file; qemu-io opens the same
// specs.
func TestOpenSpec_FileChildWithoutDriver(t *testing.T) {
	dir := t.TempDir()
	a, r := mkQcow2(t, dir, "a.qcow2", 1<<20), mkRaw(t, dir, "r.raw", 1<<20)
	for _, spec := range []string{
		"driver=qcow2,file.filename=" + a,
		`json:{"driver":"qcow2","file":{"filename":"` + a + `"}}`,
		`json:{"driver":"qcow2","file":{"filename":"` + a + `","aio":"threads"}}`,
		"driver=raw,file.filename=" + r,
		`json:{"driver":"raw","file":{"filename":"` + r + `"}}`,
		`json:{"driver":"throttle","iops-total":1000,"file":{"driver":"qcow2","file":{"filename":"` + a + `"}}}`,
	} {
		d, _, done := open(t, spec)
		if err := block.WriteAt(d, []byte{1, 2, 3, 4}, 4096); err != nil {
			t.Errorf("%s: %v", spec, err)
		}
		done()
		// QEMU's throttle wants a throttle group: the last spec is ours only.
		if testkit.HaveQemu() && !strings.Contains(spec, "throttle") {
			args := []string{"-c", "read -P 1 4096 1"}
			if spec[:5] != "json:" {
				args = append(args, "--image-opts")
			}
			if out, err := exec.Command("qemu-io", append(args, spec)...).CombinedOutput(); err != nil {
				t.Errorf("qemu-io %s: %v\n%s", spec, err, out)
			}
		}
	}
	qemuCheck(t, a)
}
