package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestImageOptsErrors_LikeQemu: an image given as an option string
// (--image-opts) or a json: spec that does not open is refused in
// qemu-img's words, naming the option string as qemu-img does ("Could
// not open 'driver=qcow2,file.filename=x': Could not open 'x': No such
// file or directory"), with its messages for a missing child ("A block
// device must be specified for "file""), a file node without a name, a
// size, number or bool option that does not parse (l2-cache-size,
// offset, cache-clean-interval, pass-discard-request), neither driver
// nor file; and a root without driver= over a file node has its format
// probed, as qemu-img's. qimg named the file instead of the option
// string ("Could not open 'x': Could not open 'x'"), said "image spec:
// file: missing" and the like, and refused a root without driver=.
func TestImageOptsErrors_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	d := workDir(t)
	img := filepath.Join(d, "a.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "1M")
	nosuch := filepath.Join(d, "nosuch.qcow2")
	var cases [][]string
	for _, spec := range []string{
		"driver=qcow2,file.filename=" + nosuch, "driver=qcow2,file.filename=" + img + ",bogus=1",
		"driver=raw,file.filename=" + img + ",offset=x", "file.filename=" + img, "driver=qcow2", "driver=qcow2,file.driver=file",
		"driver=qcow2,file.filename=" + img + ",l2-cache-size=x", "driver=qcow2,file.filename=" + img + ",cache-clean-interval=1.5",
		"driver=qcow2,file.filename=" + img + ",cache-clean-interval=-1", "driver=qcow2,file.filename=" + img + ",cache-clean-interval=0x10",
		"driver=qcow2,file.filename=" + img + ",pass-discard-request=1", "driver=qcow2,file.filename=" + img + ",pass-discard-request=y",
		"cache.direct=off",
	} {
		for _, cmd := range []string{"info", "check", "map"} {
			cases = append(cases, []string{cmd, "--image-opts", spec})
		}
	}
	for _, j := range []string{`{"driver":"qcow2"}`, `{"driver":"qcow2","file":{"driver":"file"}}`, `{}`, `{"file":{"driver":"file"}}`,
		`{"file":{"driver":"file","filename":"` + img + `"}}`, `{"driver":"qcow2","file":{"driver":"file","filename":"` + img + `"},"l2-cache-size":"x"}`} {
		cases = append(cases, []string{"info", "json:" + j}, []string{"map", "json:" + j})
	}
	for _, args := range cases {
		o, e, code := runQ(t, args...)
		qo, qe, qcode := testkit.Run(t, "qemu-img", args...)
		ours := strings.ReplaceAll(usageSuffix.ReplaceAllString(strings.TrimSuffix(e, "\n"), ""), "; ", "\n")
		if e != "" {
			ours = strings.Replace(ours, "qimg: "+args[0]+": ", "qemu-img: ", 1) + "\n"
		}
		if code != qcode || ours != qe || (code == 0 && args[0] == "map" && o != qo) {
			t.Errorf("%q: qimg exit %d\n%s%s\nqemu-img exit %d\n%s%s", args, code, o, e, qcode, qo, qe)
		}
	}
}
