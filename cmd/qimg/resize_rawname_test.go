package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestResize_RawNamesLikeQemu: a raw image named as file:NAME, by a
// json: spec or --image-opts is resized as qemu-img resizes it: qimg
// truncated the name as typed ("Could not resize file: No such file or
// directory") after the open had found the file. Output, exit code and
// the file are qemu-img's. (A window of a file, offset= or size=, is
// still not resized: that error.)
func TestResize_RawNamesLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	base := testkit.Dir(t)
	for i, args := range [][]string{
		{"file:{d}/b.raw", "+1M"},
		{`json:{"file":{"driver":"file","filename":"{d}/b.raw"}}`, "+1M"},
		{`json:{"driver":"raw","file":{"driver":"file","filename":"{d}/b.raw"}}`, "+1M"},
		{"--image-opts", "driver=raw,file.filename={d}/b.raw", "--shrink", "512K"},
		{"--image-opts", "file.filename={d}/b.raw", "+1M"},
	} {
		q, o := runBoth(t, base, "qemu-img", "resize", args, func(d string) {
			if err := os.WriteFile(filepath.Join(d, "b.raw"), make([]byte, 1<<20), 0o644); err != nil {
				t.Fatal(err)
			}
		})
		same, err := sameFiles(q.dir, o.dir, "b.raw")
		if err != nil {
			t.Fatal(err)
		}
		if !q.same(o) || !same {
			t.Errorf("case %d %q:\nqimg %v\nqemu-img %v\nfiles equal: %v", i, args, q, o, same)
		}
	}
}
