package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestAmendDataFile_LikeQemu: amend -o data_file= renames the external
// data file of an image that has one, data_file_raw=off clears the flag,
// and data_file on an image without a data file or data_file_raw=on on
// one that is not raw are refused, each as qemu-img 7.2 does (exit code,
// message, and the header qemu-img info shows afterwards). qimg refused
// both options by name.
func TestAmendDataFile_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := workDir(t)
	for _, c := range []struct {
		create, amend string // -o options; DIR stands for the tool's directory
	}{
		{"data_file=DIR/a.data", "data_file=DIR/b.data"},
		{"data_file=DIR/a.data", "data_file_raw=on"},
		{"data_file=DIR/a.data", "data_file_raw=off"},
		{"data_file=DIR/a.data,data_file_raw=on", "data_file_raw=off"},
		{"data_file=DIR/a.data,data_file_raw=on", "data_file_raw=on"},
		{"compat=1.1", "data_file=DIR/b.data"},
		{"data_file=DIR/a.data", "data_file_raw=maybe"},
		{"data_file=DIR/a.data", "data_file_raw=yes"},
		{"data_file=DIR/a.data", "compat=0.10"}, // QEMU's own message
	} {
		var infos, errs []string
		var codes []int
		for _, tool := range []string{"qimg", "qemu-img"} {
			dir := filepath.Join(d, tool+strings.NewReplacer("=", "", ",", "", "/", "").Replace(c.create+c.amend))
			img := filepath.Join(dir, "i.qcow2")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", strings.ReplaceAll(c.create, "DIR", dir), img, "1M")
			if strings.Contains(c.create, "data_file=") {
				testkit.MustRun(t, "cp", filepath.Join(dir, "a.data"), filepath.Join(dir, "b.data"))
			}
			args := []string{"amend", "-o", strings.ReplaceAll(c.amend, "DIR", dir), img}
			var e string
			var code int
			if tool == "qimg" {
				_, e, code = runQ(t, args...)
				e = asQemu(e)
			} else {
				_, e, code = testkit.Run(t, "qemu-img", args...)
			}
			info := testkit.MustRun(t, "qemu-img", "info", "--output=json", img)
			infos = append(infos, strings.ReplaceAll(info, dir, "DIR"))
			errs, codes = append(errs, e), append(codes, code)
		}
		if codes[0] != codes[1] || errs[0] != errs[1] || infos[0] != infos[1] {
			t.Errorf("create %s, amend %s:\nqimg: exit %d %q\n%s\nqemu-img: exit %d %q\n%s", c.create, c.amend, codes[0], errs[0], infos[0], codes[1], errs[1], infos[1])
		}
	}
}
