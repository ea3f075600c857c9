package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestVMDK_CreateFailureLeavesNoExtents: when a descriptor file's extent
// cannot be made (a flat extent too large for the file system: here a
// file size limit, EFBIG), qimg create fails in qemu-img's words for
// EFBIG and removes the extent files it made, which no descriptor names
// (it left an empty 16 TiB flat extent behind); a file that was there
// before stays.
func TestVMDK_CreateFailureLeavesNoExtents(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	for _, c := range []struct {
		sub, size string
		before    []string // files there before
	}{
		{"monolithicFlat", "64M", nil},
		{"twoGbMaxExtentFlat", "5G", nil},
		{"twoGbMaxExtentSparse", "5G", nil},
		{"twoGbMaxExtentFlat", "5G", []string{"d-f002.vmdk"}},
	} {
		d := t.TempDir()
		for _, f := range c.before {
			if err := os.WriteFile(filepath.Join(d, f), []byte("old"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		// A file size limit of 30 MiB (SIGXFSZ ignored: the write or
		// truncate fails with EFBIG): the first flat extent, or the
		// third sparse one's tables, cannot be made.
		limit := "61440"
		if c.sub == "twoGbMaxExtentSparse" {
			limit = "200"
		}
		cmd := exec.Command("sh", "-c", `trap '' XFSZ; ulimit -f `+limit+`; exec "$0" "$@"`,
			os.Args[0], "create", "-q", "-f", "vmdk", "-o", "subformat="+c.sub, filepath.Join(d, "d.vmdk"), c.size)
		cmd.Env = append(os.Environ(), runMainEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "The image size is too large for file format 'vmdk'") {
			t.Errorf("%s %s: %v\n%s", c.sub, c.size, err, out)
		}
		ents, _ := os.ReadDir(d)
		var left []string
		for _, e := range ents {
			left = append(left, e.Name())
		}
		if !slices.Equal(left, c.before) {
			t.Errorf("%s %s: files left %q, want %q", c.sub, c.size, left, c.before)
		}
	}
}
