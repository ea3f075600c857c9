package imgopen

import (
	"os"
	"path/filepath"
	"testing"
)

// TestOpenSpec_MirrorRefusedTouchesNothing: a mirror spec refused for an
// unknown key or a bad granularity creates no target and leaves an
// existing one as it was (it created, or grew, the target and started
// copying before the keys were checked).
func TestOpenSpec_MirrorRefusedTouchesNothing(t *testing.T) {
	dir := t.TempDir()
	src := mkRaw(t, dir, "src.raw", 64<<10)
	small := mkRaw(t, dir, "small.raw", 4096)
	for _, c := range []struct{ spec, target string }{
		{"driver=mirror,file=" + src + ",target=" + filepath.Join(dir, "new.raw") + ",typo=1", filepath.Join(dir, "new.raw")},
		{"driver=mirror,file=" + src + ",target=" + filepath.Join(dir, "new.raw") + ",granularity=3", filepath.Join(dir, "new.raw")},
		{"driver=mirror,file=" + src + ",target=" + small + ",typo=1", small},
		{"driver=mirror,file=" + src + ",target=" + small + ",granularity=1000", small},
	} {
		os.Remove(filepath.Join(dir, "new.raw"))
		before, _ := os.Stat(c.target)
		o, err := OpenSpec(c.spec, Spec{AIO: "threads"})
		if err == nil {
			o.Close()
			t.Fatalf("%s: opened", c.spec)
		}
		after, serr := os.Stat(c.target)
		switch {
		case before == nil && serr == nil:
			t.Errorf("%s (%v): the target was created", c.spec, err)
		case before != nil && (serr != nil || after.Size() != before.Size()):
			t.Errorf("%s (%v): the target went from %d bytes to %v", c.spec, err, before.Size(), after)
		}
	}
}
