package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// TestSpec_ForceShareMatchesQemu: force-share in a spec (on the format
// node with read-only, on the file node, in json:) opens an image another
// process writes, as qemu-img does (qimg refused the key); a bad value,
// and no force-share, are refused as qemu-img refuses them, and a
// writable open with it too.
func TestSpec_ForceShareMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	testkit.NeedTools(t, "qemu-nbd")
	d := t.TempDir()
	t.Chdir(d)
	qemuImage(t, filepath.Join(d, "held.qcow2"), "qcow2", "1M", "write -P 0x5a 0 64k")
	holder := exec.Command("qemu-nbd", "-k", filepath.Join(d, "s.sock"), "-f", "qcow2", "held.qcow2")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(d, "s.sock")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("qemu-nbd does not listen")
		}
	}
	for _, args := range [][]string{
		{"info", "--image-opts", "driver=qcow2,force-share=on,read-only=on,file.filename=held.qcow2"},
		{"info", "--image-opts", "driver=qcow2,file.force-share=on,file.filename=held.qcow2"},
		{"info", "--image-opts", "driver=qcow2,force-share=maybe,file.filename=held.qcow2"},
		{"info", "--image-opts", "driver=qcow2,file.filename=held.qcow2"},
		{"info", `json:{"driver":"qcow2","force-share":true,"read-only":true,"file":{"driver":"file","filename":"held.qcow2"}}`},
		{"map", "--image-opts", "driver=qcow2,force-share=on,read-only=on,file.filename=held.qcow2"},
	} {
		out, _, code := runQ(t, args...)
		qout, _, qcode := testkit.Run(t, "qemu-img", args...)
		if code != qcode || out != qout {
			t.Errorf("%q: qimg exit %d\n%s\nqemu-img exit %d\n%s", args, code, out, qcode, qout)
		}
	}
	// Writable: refused as qemu-io refuses it.
	if _, e, code := runQ(t, "io", "-c", "read 0 512", "--image-opts", "driver=qcow2,force-share=on,file.filename=held.qcow2"); code == 0 || !strings.Contains(e, "force-share=on can only be used with read-only images") {
		t.Errorf("writable open with force-share: exit %d, %q", code, e)
	}
}
