package imgopen

import (
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2"
)

// TestOpenSpec_RawLocks: a spec's host file takes the image locks Open
// takes for a raw file (it took none): writable, it holds write, so a
// qcow2 writer of the same file (which shares no write) is refused;
// read-only it holds only read, and with UnshareResize it keeps the
// qcow2 writer (which needs resize) out too. locking=off and Opts.NoLock
// take none; Opts.ForceShare is for read-only users only.
func TestOpenSpec_RawLocks(t *testing.T) {
	dir := t.TempDir()
	p := mkQcow2(t, dir, "a.qcow2", 1<<20)
	writer := func() error {
		o, err := Open(Spec{Path: p, Format: "qcow2", AIO: "threads"})
		if err == nil {
			o.Close()
		}
		return err
	}
	for _, c := range []struct {
		spec   string
		def    Spec
		locked bool
	}{
		{"driver=raw,file.filename=" + p, Spec{}, true},
		{"driver=file,filename=" + p, Spec{}, true},
		{`json:{"driver":"raw","offset":512,"file":{"driver":"file","filename":"` + p + `"}}`, Spec{}, true},
		{"driver=raw,file=" + p, Spec{}, true},
		{"driver=raw,file.filename=" + p, Spec{ReadOnly: true}, false},
		{"driver=raw,file.filename=" + p, Spec{ReadOnly: true, UnshareResize: true}, true},
		{"driver=raw,file.filename=" + p + ",file.locking=off", Spec{}, false},
		{"driver=file,filename=" + p + ",locking=on", Spec{}, true},
		{"driver=raw,file.filename=" + p, Spec{Opts: qcow2.Options{NoLock: true}}, false},
		{"driver=raw,file.filename=" + p, Spec{ReadOnly: true, UnshareResize: true, Opts: qcow2.Options{ForceShare: true}}, false},
	} {
		c.def.AIO = "threads"
		what := fmt.Sprintf("%s (read-only %v, unshare resize %v, no lock %v, force-share %v)",
			c.spec, c.def.ReadOnly, c.def.UnshareResize, c.def.Opts.NoLock, c.def.Opts.ForceShare)
		o, err := OpenSpec(c.spec, c.def)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		err = writer()
		if locked := errors.Is(err, block.ErrLocked); locked != c.locked || (err != nil && !locked) {
			t.Errorf("%s: a qcow2 writer beside it: %v", what, err)
		}
		if err := o.Close(); err != nil {
			t.Fatal(err)
		}
		if err := writer(); err != nil {
			t.Errorf("%s: closed, still locked: %v", c.spec, err)
		}
	}
	if _, err := OpenSpec("driver=raw,file.filename="+p, Spec{AIO: "threads", Opts: qcow2.Options{ForceShare: true}}); err == nil {
		t.Error("force-share on a writable spec")
	}
	if _, err := OpenSpec("driver=file,filename="+p+",locking=maybe", Spec{AIO: "threads"}); err == nil {
		t.Error("locking=maybe accepted")
	}
}

// TestOpenSpec_MirrorTargetLocked: a mirror's target named by a file
// name takes the locks of a writable raw image, as QEMU's mirror target
// does: a qcow2 writer of the target file is refused while the mirror is
// open, and the mirror is refused while the writer has it.
func TestOpenSpec_MirrorTargetLocked(t *testing.T) {
	dir := t.TempDir()
	src := mkQcow2(t, dir, "src.qcow2", 1<<20)
	tgt := mkQcow2(t, dir, "tgt.qcow2", 1<<20)
	spec := "driver=mirror,file=" + src + ",target=" + tgt + ",wait=off"
	o, err := OpenSpec(spec, Spec{AIO: "threads"})
	if err != nil {
		t.Fatal(err)
	}
	w, err := Open(Spec{Path: tgt, Format: "qcow2", AIO: "threads"})
	if err == nil {
		w.Close()
	}
	if !errors.Is(err, block.ErrLocked) {
		t.Errorf("a qcow2 writer of the mirror's target: %v, want a lock error", err)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	// The mirror copied the source's guest bytes over the target's
	// header: a qcow2 image there again, for the writer.
	if err := os.Remove(tgt); err != nil {
		t.Fatal(err)
	}
	mkQcow2(t, dir, "tgt.qcow2", 1<<20)
	w, err = Open(Spec{Path: tgt, Format: "qcow2", AIO: "threads"})
	if err != nil {
		t.Fatalf("the target once the mirror closed: %v", err)
	}
	defer w.Close()
	if o, err := OpenSpec(spec, Spec{AIO: "threads"}); err == nil {
		o.Close()
		t.Error("a mirror onto a file a qcow2 writer has open")
	} else if !errors.Is(err, block.ErrLocked) {
		t.Errorf("a mirror onto a file a qcow2 writer has open: %v, want a lock error", err)
	}
}
