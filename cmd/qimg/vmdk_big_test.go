package main

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestVMDK_ConvertBeyondTwoTiBMatchesQemu: convert -O vmdk of a 3 TiB
// image (more grain table entries than the writer once held: it failed
// after making a 400 MB target) writes the image qemu-img writes:
// qemu-img check finds nothing, its map is qemu-img's, and qemu-io
// reads every pattern back, those past 2 TiB too; so do qimg io's
// writes into it.
func TestVMDK_ConvertBeyondTwoTiBMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := testkit.Dir(t)
	src := filepath.Join(dir, "s.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", src, "3T")
	pats := [][2]string{{"1", "0"}, {"2", "2500G"}, {"3", "3071G"}}
	var cmds []string
	for _, p := range pats {
		cmds = append(cmds, "-c", fmt.Sprintf("write -P %s %s 1M", p[0], p[1]))
	}
	testkit.MustRun(t, "qemu-io", append(cmds, src)...)
	ours, theirs := filepath.Join(dir, "o.vmdk"), filepath.Join(dir, "q.vmdk")
	mustQ(t, "convert", "-O", "vmdk", src, ours)
	testkit.MustRun(t, "qemu-img", "convert", "-O", "vmdk", src, theirs)
	if o, e, code := testkit.Run(t, "qemu-img", "check", "-f", "vmdk", ours); code != 0 || strings.TrimSpace(o) != "No errors were found on the image." {
		t.Errorf("qemu-img check: exit %d\n%s%s", code, o, e)
	}
	// Each pattern's 4 GiB around it (a whole map of 3 TiB takes
	// qemu-img half a minute), host offsets left out.
	host := regexp.MustCompile(`, "offset": [0-9]+`)
	for _, p := range pats {
		window := func(img string) string {
			out := testkit.MustRun(t, "qemu-img", "map", "-f", "vmdk", "--output=json", "--start-offset="+p[1], "--max-length=4G", img)
			return host.ReplaceAllString(out, "")
		}
		if a, b := window(ours), window(theirs); a != b {
			t.Errorf("qemu-img map at %s:\nours:\n%s\nqemu-img's:\n%s", p[1], a, b)
		}
	}
	mustQ(t, "io", "-f", "vmdk", "-c", "write -P 4 2049G 64k", ours)
	pats = append(pats, [2]string{"4", "2049G"})
	for _, p := range pats {
		cmd := fmt.Sprintf("read -P %s %s 64k", p[0], p[1])
		if out, e, code := testkit.Run(t, "qemu-io", "-f", "vmdk", "-r", "-c", cmd, ours); code != 0 || strings.Contains(out, "verification failed") {
			t.Errorf("qemu-io %s: exit %d\n%s%s", cmd, code, out, e)
		}
	}
}
