package imgopen

import (
	"bytes"
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

// TestOpenSpec_MirrorRefusedLaterTouchesNothing: a spec refused by a node
// that opens after a mirror (a blkverify's missing raw child, a quorum
// under its threshold, a raw window past the end) leaves no target file
// it created, and copies nothing onto, nor grows, an existing one (the
// copy started when the mirror opened, and only NewMirror's own failure
// removed a created target).
func TestOpenSpec_MirrorRefusedLaterTouchesNothing(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	if err := os.WriteFile(src, bytes.Repeat([]byte{0xab}, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	nope := filepath.Join(dir, "nope")
	newTgt := filepath.Join(dir, "new.raw")
	mirror := func(tgt string) string {
		return `{"driver":"mirror","file":"` + src + `","target":"` + tgt + `"}`
	}
	for _, tgt := range []string{newTgt, filepath.Join(dir, "old.raw")} {
		for _, spec := range []string{
			`json:{"driver":"blkverify","test":` + mirror(tgt) + `,"raw":"` + nope + `"}`,
			`json:{"driver":"quorum","vote-threshold":"2","children":[` + mirror(tgt) + `,"` + nope + `"]}`,
			`json:{"driver":"blkverify","test":` + mirror(tgt) + `,"raw":{"driver":"raw","file":"` + src + `","offset":"99999999"}}`,
		} {
			os.Remove(newTgt)
			old := bytes.Repeat([]byte{0xaa}, 1<<20) // smaller than the source
			if err := os.WriteFile(filepath.Join(dir, "old.raw"), old, 0o644); err != nil {
				t.Fatal(err)
			}
			if o, err := OpenSpec(spec, Spec{AIO: "threads"}); err == nil {
				o.Close()
				t.Fatalf("%s: opened", spec)
			}
			b, err := os.ReadFile(tgt)
			switch {
			case tgt == newTgt && err == nil:
				t.Errorf("%s: refused, but left the target it created", spec)
			case tgt != newTgt && !bytes.Equal(b, old):
				t.Errorf("%s: refused, but the existing target changed (%d bytes, %d of the source's)", spec, len(b), bytes.Count(b, []byte{0xab}))
			}
		}
	}
}
