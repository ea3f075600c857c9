package imgopen

import (
	"os"
	"path/filepath"
	"testing"
)

// TestOpenSpec_ChildLocks: a qcow2 node's file node takes the node's
// read-only (QEMU passes it down), so a read-only stack opens beside
// another reader, as it did before file nodes took locks; and
// file.locking=off under a qcow2 node opens beside a writer (the qcow2
// node took its own locks over it).
func TestOpenSpec_ChildLocks(t *testing.T) {
	dir := t.TempDir()
	p := mkQcow2(t, dir, "a.qcow2", 1<<20)
	reader, err := Open(Spec{Path: p, Format: "qcow2", AIO: "threads", ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	ro := `json:{"driver":"qcow2","read-only":true,"file":{"driver":"file","filename":"` + p + `","aio":"threads"}}`
	o, err := OpenSpec(ro, Spec{AIO: "threads"})
	if err != nil {
		t.Fatalf("a read-only qcow2 node over a file node, beside a reader: %v", err)
	}
	o.Close()
	reader.Close()

	writer, err := Open(Spec{Path: p, Format: "qcow2", AIO: "threads"})
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	unlocked := `json:{"driver":"qcow2","file":{"driver":"file","filename":"` + p + `","locking":"off"}}`
	o, err = OpenSpec(unlocked, Spec{AIO: "threads", ReadOnly: true})
	if err != nil {
		t.Fatalf("file.locking=off under a qcow2 node, beside a writer: %v", err)
	}
	o.Close()
	s, err := ImageOpts("driver=qcow2,file.filename="+p+",file.locking=off", Spec{})
	if err != nil || s.Path != p || !s.Opts.NoLock {
		t.Errorf("--image-opts with file.locking=off: %+v %v", s, err)
	}
	if _, err := ImageOpts("driver=raw,file.filename="+p+",file.locking=maybe", Spec{}); err == nil {
		t.Error("--image-opts with file.locking=maybe accepted")
	}
}

// TestOpenSpec_MirrorTargetNotLeft: a mirror whose options are refused
// leaves no target file behind.
func TestOpenSpec_MirrorTargetNotLeft(t *testing.T) {
	dir := t.TempDir()
	src := mkQcow2(t, dir, "src.qcow2", 1<<20)
	tgt := filepath.Join(dir, "t.raw")
	// The source names its AIO; the target takes the defaults'.
	spec := `json:{"driver":"mirror","file":{"driver":"qcow2","aio":"threads","file":"` + src + `"},"target":"` + tgt + `"}`
	if o, err := OpenSpec(spec, Spec{AIO: "bogus"}); err == nil {
		o.Close()
		t.Fatal("aio=bogus accepted")
	}
	if _, err := os.Stat(tgt); !os.IsNotExist(err) {
		t.Errorf("a refused mirror left its target: %v", err)
	}
}
