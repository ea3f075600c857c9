package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestFormatOps_LikeQemu: snapshot -c/-a/-d and amend on images of the
// formats without internal snapshots or amendment (raw, vpc, vmdk:
// the last two now open writable) fail with qemu-img's exit code and
// words, probed (amend with -f too), and leave the image as it was. qimg
// said "This operation is not supported by the image format" for every
// snapshot operation and, probed, "Format driver 'raw'" or an option
// error for amend.
func TestFormatOps_LikeQemu(t *testing.T) {
	dir := qemuDir(t)
	for _, f := range []string{"raw", "vpc", "vmdk"} {
		p := qemuImage(t, filepath.Join(dir, "a."+f), f, "1M")
		before, _ := os.ReadFile(p)
		for _, c := range []string{"snapshot -c s1", "snapshot -a s1", "snapshot -d s1", "amend -o size=2M", "amend -o adapter_type=lsilogic"} {
			for _, withF := range []bool{true, false} {
				args := strings.Fields(c)
				if withF && args[0] == "snapshot" {
					continue // qemu-img snapshot takes no -f
				}
				if withF {
					args = append(args, "-f", f)
				}
				args = append(args, p)
				_, e, code := runQ(t, args...)
				_, qe, qcode := testkit.Run(t, "qemu-img", args...)
				// Both warn of a probed raw image first (the warnings
				// are compared in TestProbedRaw_WarningsLikeQemu).
				qe = qe[max(0, strings.LastIndex(qe, "qemu-img: ")):]
				e = e[max(0, strings.LastIndex(e, "qimg: ")):]
				if ours, theirs := ourMessage(e), qemuMessage(qe); ours != theirs || code != qcode {
					t.Errorf("%q:\nqimg exit %d: %s\nqemu-img exit %d: %s", args, code, ours, qcode, theirs)
				}
				if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
					t.Fatalf("%q changed the image", args)
				}
			}
		}
	}
}
