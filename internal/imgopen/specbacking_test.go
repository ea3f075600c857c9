package imgopen

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/qring/qring/internal/testkit"
)

// TestSpecBacking_MirrorWritesNothing: a json: backing file name is read
// from the image, so it may come from anyone; opening the chain read-only
// (map, io -r, info --backing-chain) must write no file. A mirror node in
// it created its target, or copied the backing over an existing file.
func TestSpecBacking_MirrorWritesNothing(t *testing.T) {
	testkit.NeedQemu(t)
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.WriteFile("base.raw", bytes.Repeat([]byte{0xab}, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, root := range []string{"raw", "qcow2"} {
		victim := filepath.Join(dir, "victim-"+root)
		if err := os.WriteFile(victim, []byte("precious"), 0o644); err != nil {
			t.Fatal(err)
		}
		spec := `json:{"driver":"` + root + `","file":{"driver":"mirror","file":"base.raw","target":"` + victim + `"}}`
		top := filepath.Join(dir, "top-"+root+".qcow2")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", root, "-b", spec, top, "1M")
		if o, err := Open(Spec{Path: top, ReadOnly: true, AIO: "threads"}); err == nil {
			o.Close()
		}
		if b, _ := os.ReadFile(victim); string(b) != "precious" {
			t.Errorf("%s root: a read-only open of %s wrote %d bytes over %s", root, top, len(b), victim)
		}
	}
}

// TestSpecBacking_LoopThroughUnnamedNode: a json: backing whose qcow2 node
// stands on a node with no single file (quorum, blkverify) and names the
// image itself must be refused, not opened again and again (Q23: "a spec
// cannot loop"); it opened without end, hundreds of files a second.
func TestSpecBacking_LoopThroughUnnamedNode(t *testing.T) {
	testkit.NeedQemu(t)
	dir := t.TempDir()
	t.Chdir(dir)
	for _, spec := range []string{
		`json:{"driver":"qcow2","file":{"driver":"quorum","vote-threshold":1,"children":[{"driver":"file","filename":"a.qcow2"}]}}`,
		`json:{"driver":"qcow2","file":{"driver":"blkverify","test":{"driver":"file","filename":"a.qcow2"},"raw":{"driver":"file","filename":"a.qcow2"}}}`,
	} {
		os.Remove("a.qcow2")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "a.qcow2", "1M")
		testkit.MustRun(t, "qemu-img", "rebase", "-q", "-u", "-F", "qcow2", "-b", spec, "a.qcow2")
		done := make(chan error, 1)
		go func() {
			o, err := Open(Spec{Path: "a.qcow2", ReadOnly: true, AIO: "threads"})
			if err == nil {
				o.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("%s: a chain that loops opened", spec)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: still opening the chain after 20 s", spec)
		}
	}
}
