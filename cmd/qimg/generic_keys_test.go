package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestSpec_GenericKeysLikeQemu: the keys QEMU's block layer takes on
// every node (node-name, discard, detect-zeroes, auto-read-only) and its
// file driver's tuning keys (aio-max-batch, drop-cache,
// x-check-cache-dropped) open an image, in --image-opts and json: specs,
// and bad values are refused in qemu-img's words; qimg refused them all
// as options its drivers do not support.
func TestSpec_GenericKeysLikeQemu(t *testing.T) {
	d := qemuDir(t)
	t.Chdir(d)
	qemuImage(t, filepath.Join(d, "base.qcow2"), "qcow2", "1M", "write -P 0x5a 0 64k")
	var specs []string
	for _, kv := range []string{
		"node-name=1x", "node-name=a", "discard=foo", "detect-zeroes=foo", "detect-zeroes=unmap",
		"detect-zeroes=unmap,discard=unmap", "file.aio-max-batch=x", "file.drop-cache=x", "auto-read-only=x",
		"node-name=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "node-name=a,file.node-name=a", "file.x-check-cache-dropped=on",
		"file.aio-max-batch=4,file.drop-cache=off,file.discard=unmap", "discard=ignore,node-name=top,file.node-name=f",
		"file.detect-zeroes=on,auto-read-only=on",
	} {
		specs = append(specs, "--image-opts", "driver=qcow2,file.filename=base.qcow2,"+kv)
	}
	specs = append(specs, "", `json:{"driver":"qcow2","node-name":"t","discard":"unmap","detect-zeroes":"unmap","file":{"driver":"file","filename":"base.qcow2","node-name":"f","aio-max-batch":4,"drop-cache":false}}`,
		"", `json:{"driver":"qcow2","node-name":"t","file":{"driver":"file","filename":"base.qcow2","node-name":"t"}}`)
	for i := 0; i < len(specs); i += 2 {
		args := []string{"info", "-U"}
		if specs[i] != "" {
			args = append(args, specs[i])
		}
		args = append(args, specs[i+1])
		ours, oerr, code := runQ(t, args...)
		theirs, terr, qcode := testkit.Run(t, "qemu-img", args...)
		first := func(s string) string { l, _, _ := strings.Cut(s, "\n"); return l }
		if first(ours) != first(theirs) || code != qcode || ourMessage(oerr) != qemuMessage(terr) {
			t.Errorf("%q: exit %d, qemu-img %d\nours:\n%s%s\nqemu-img:\n%s%s", args, code, qcode, first(ours), oerr, first(theirs), terr)
		}
	}
	qimgIO(t, "base.qcow2", "read -P 0x5a 0 64k")
}
