package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestIO_QuorumSpec: qimg io on a quorum of three qcow2 images, with one
// child's file deleted after the first write, still reads and writes.
func TestIO_QuorumSpec(t *testing.T) {
	dir := workDir(t)
	var kids []string
	for _, n := range []string{"a", "b", "c"} {
		p := filepath.Join(dir, n+".qcow2")
		mustQ(t, "create", "-f", "qcow2", p, "4M")
		kids = append(kids, p)
	}
	spec := "driver=quorum,vote-threshold=2,children=" + strings.Join(kids, ":")
	mustQ(t, "io", "--image-opts", spec, "-c", "write -P 0x5c 64k 128k")
	if err := os.Remove(kids[1]); err != nil {
		t.Fatal(err)
	}
	out := mustQ(t, "io", spec, "-c", "read -P 0x5c 64k 128k", "-c", "write -P 0x11 0 4k", "-c", "read -P 0x11 0 4k")
	if strings.Contains(out, "verification failed") {
		t.Fatalf("pattern mismatch:\n%s", out)
	}
	js := `json:{"driver":"quorum","vote-threshold":2,"children":["` + kids[0] + `","` + kids[1] + `","` + kids[2] + `"]}`
	mustQ(t, "io", js, "-c", "read -P 0x11 0 4k")
	// Two children gone: no quorum.
	os.Remove(kids[2])
	if _, _, code := runQ(t, "io", spec, "-c", "read 0 4k"); code == 0 {
		t.Fatal("quorum with one child left opened")
	}
}
