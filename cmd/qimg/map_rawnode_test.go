package main

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestMap_RawNodeMatchesQemu: a raw node over a format node (--image-opts
// driver=raw,file.driver=qcow2,..., with or without an offset/size
// window, raw over raw over qcow2, raw over vpc and vmdk) maps as QEMU's
// raw driver passes its child's status through: the child node's own
// allocation, offsets into its file, and where a qcow2 node leaves the
// data to its backing file, neither present, nor zero, nor data (zero
// past the backing file's end, asked from the extent's start). qimg
// mapped such a stack as data everywhere at the window's offset in the
// qcow2 file (and without a window refused driver=raw over qcow2 as an
// unsupported driver). info reports the child's cluster size, as
// raw_get_info does, and errors name the argument as given.
func TestMap_RawNodeMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	base, top, shortTop, _, _ := rawmapImages(t, d)
	vpc, vmdk := filepath.Join(d, "b.vpc"), filepath.Join(d, "b.vmdk")
	testkit.MustRun(t, "qemu-img", "convert", "-O", "vpc", base, vpc)
	testkit.MustRun(t, "qemu-img", "convert", "-O", "vmdk", base, vmdk)
	specs := []string{
		"driver=raw,file.driver=qcow2,file.file.filename=" + base,
		"driver=raw,file.driver=qcow2,file.file.filename=" + top,
		"driver=raw,offset=65024,size=1048576,file.driver=qcow2,file.file.filename=" + top,
		"driver=raw,offset=3145216,file.driver=qcow2,file.file.filename=" + base,
		"driver=raw,file.driver=raw,file.offset=512,file.file.driver=qcow2,file.file.file.filename=" + top,
		"driver=raw,file.driver=qcow2,file.file.filename=" + shortTop,
		"driver=raw,offset=1048064,file.driver=qcow2,file.file.filename=" + shortTop,
		"driver=raw,offset=1048576,size=2097152,file.driver=qcow2,file.file.filename=" + shortTop,
		"driver=raw,file.driver=vpc,file.file.filename=" + vpc,
		"driver=raw,offset=4096,file.driver=vmdk,file.file.filename=" + vmdk,
		"driver=raw,file.driver=qcow2,file.file.filename=" + filepath.Join(d, "none.qcow2"),
		"driver=raw,offset=70000,size=1000000,file.driver=qcow2,file.file.filename=" + base,
	}
	for _, spec := range specs {
		for _, args := range [][]string{
			{"map", "--output=human"}, {"map", "--output=json"}, {"map", "--output=json", "--start-offset=65536", "--max-length=1M"},
		} {
			args = append(args, "--image-opts", spec)
			out, errOut, code := runQ(t, args...)
			qout, qerr, qcode := testkit.Run(t, "qemu-img", args...)
			out = strings.ReplaceAll(out, `, "compressed": false`, "") // the 8.2 layout (documented)
			errOut = strings.ReplaceAll(strings.ReplaceAll(errOut, "qimg: map: ", ""), "image spec: ", "")
			qerr = strings.ReplaceAll(qerr, "qemu-img: ", "")
			if out != qout || errOut != qerr || code != qcode {
				t.Errorf("%q:\nqimg exit %d\n%s%s\nqemu-img exit %d\n%s%s", args, code, out, errOut, qcode, qout, qerr)
			}
		}
		line := func(s string) string {
			for _, l := range strings.Split(s, "\n") {
				if strings.HasPrefix(l, "cluster_size:") {
					return l
				}
			}
			return ""
		}
		out, _, _ := runQ(t, "info", "--image-opts", spec)
		qout, _, _ := testkit.Run(t, "qemu-img", "info", "--image-opts", spec)
		if line(out) != line(qout) {
			t.Errorf("info %s: %q, qemu-img %q", spec, line(out), line(qout))
		}
	}
}

// TestMap_EmptyImageMatchesQemu: the map of an empty image (qcow2, raw,
// vpc) is qemu-img's: one empty run in JSON (qimg printed []), nothing
// but the header in the table.
func TestMap_EmptyImageMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := testkit.Dir(t)
	for _, f := range []string{"qcow2", "raw", "vpc"} {
		p := filepath.Join(dir, "z."+f)
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", f, p, "0")
		oj, qj := qimgAndQemu(t, "map", "-f", f, "--output=json", p)
		if om, qm := decodeMap(t, oj), decodeMap(t, qj); !reflect.DeepEqual(om, qm) || len(qm) != 1 {
			t.Errorf("%s: map differs\nours: %s\nqemu: %s", f, oj, qj)
		}
		sameRun(t, "map", "-f", f, p)
	}
}
