package main

import (
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// A file node at the root of --image-opts (driver=file, no format over
// it), which qemu-img takes as an image of format "file": every qimg
// command but io refused it ("Driver 'file' is not supported"). And
// read-only=on in the options of a writable command, which QEMU refuses.
func TestImageOpts_FileRootLikeQemu(t *testing.T) {
	base := qemuDir(t)
	f := "driver=file,filename={d}/r.raw"
	for _, c := range []struct {
		cmd  string
		args []string
	}{
		{"info", []string{"--image-opts", f}},
		{"info", []string{"--output=json", "--image-opts", f}},
		{"info", []string{"--backing-chain", "--image-opts", f}},
		{"map", []string{"--image-opts", f}},
		{"check", []string{"--image-opts", f}},
		{"check", []string{"-r", "all", "--image-opts", f}},
		{"compare", []string{"--image-opts", f, f}},
		{"measure", []string{"-O", "qcow2", "--image-opts", f}},
		{"resize", []string{"--image-opts", f, "2M"}},
		{"resize", []string{"--shrink", "--image-opts", f, "64k"}},
		{"amend", []string{"-o", "size=3M", "--image-opts", f}},
		{"snapshot", []string{"-l", "--image-opts", f}},
		{"commit", []string{"--image-opts", f}},
		{"rebase", []string{"-u", "-b", "", "--image-opts", f}},
		{"bench", []string{"-w", "-c", "10", "--image-opts", f}},
		{"convert", []string{"-O", "qcow2", "--image-opts", f, "{d}/out.qcow2"}},
		{"info", []string{"--image-opts", "driver=file,filename={d}/missing"}},
		{"info", []string{"--image-opts", f + ",bogus=1"}},
		{"info", []string{"--image-opts", "driver=raw,offset=0,file.driver=file,file.filename={d}/r.raw,file.bogus=1"}},
		{"info", []string{"--image-opts", "driver=raw,offset=0,file.filename={d}/missing"}},
		// read-only=on in a writable command's options: refused (resize
		// truncated the file, bench -w failed at its first write).
		{"resize", []string{"--image-opts", f + ",read-only=on", "2M"}},
		{"bench", []string{"-w", "-c", "1", "--image-opts", f + ",read-only=on"}},
		{"resize", []string{"--image-opts", "driver=raw,read-only=on,file.filename={d}/r.raw", "2M"}},
		{"resize", []string{"--image-opts", "driver=raw,read-only=off,file.filename={d}/r.raw", "2M"}},
		{"info", []string{"--image-opts", "driver=raw,read-only=on,file.filename={d}/r.raw"}},
		{"info", []string{"--image-opts", "driver=raw,read-only=bogus,file.filename={d}/r.raw"}},
		{"resize", []string{`json:{"driver":"raw","read-only":true,"file":{"filename":"{d}/r.raw"}}`, "2M"}},
		{"info", []string{`json:{"driver":"file","filename":"{d}/r.raw"}`}},
		{"info", []string{`json:{"driver":"file","filename":"{d}/r.raw","cache":{"direct":true}}`}},
	} {
		q, o := runBoth(t, base, "qemu-img", c.cmd, c.args, func(d string) {
			p := filepath.Join(d, "r.raw")
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "raw", p, "1M")
			testkit.MustRun(t, "qemu-io", "-f", "raw", "-c", "write -P 7 0 64k", p)
		})
		if !q.same(o) {
			t.Errorf("%s %v: qimg %v\nqemu-img %v", c.cmd, c.args, q, o)
			continue
		}
		if ok, err := sameFiles(q.dir, o.dir, "r.raw"); err != nil || !ok {
			t.Errorf("%s %v: the files differ (%v)", c.cmd, c.args, err)
		}
	}
}
