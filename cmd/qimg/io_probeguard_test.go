package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestIOProbedRaw_LikeQemu: a writable raw image whose format qimg io
// probed is opened as QEMU's raw driver opens it: the warning, and a
// write (or zeroing, or discard) that would make its first 512 bytes
// probe as another format refused with EPERM. qimg io wrote a qcow2
// header there: the next probe opened the file as a qcow2 image, whose
// backing file a guest or script could point at any host file. With -f
// raw, read-only or under -s nothing is restricted. Output, exit codes
// and the resulting files are qemu-io's.
func TestIOProbedRaw_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	base := testkit.Dir(t)
	hdrBytes := qcow2Header(t, base)
	for i, args := range [][]string{
		{"{d}/r.raw", "-c", "write -s {d}/hdr 0 512", "-c", "write 4k 512", "-c", "info", "-c", "map"},
		{"{d}/r.raw", "-c", "write -s {d}/hdr 0 100", "-c", "aio_write -P 0x51 0 1", "-c", "write -z 0 512", "-c", "discard 0 64k"},
		{"-f", "raw", "{d}/r.raw", "-c", "write -s {d}/hdr 0 512"},
		{"-c", "open {d}/r.raw", "-c", "write -s {d}/hdr 0 512"},
		{"-s", "{d}/r.raw", "-c", "write -s {d}/hdr 0 512"},
		// A spec without driver= probes too (qimg left it unguarded);
		// file: names the file.
		{"--image-opts", "file.filename={d}/r.raw", "-c", "write -s {d}/hdr 0 512"},
		{`json:{"file":{"driver":"file","filename":"{d}/r.raw"}}`, "-c", "write -s {d}/hdr 0 512"},
		{"-c", "open -o file.filename={d}/r.raw", "-c", "write -s {d}/hdr 0 512"},
		{"file:{d}/r.raw", "-c", "write -s {d}/hdr 0 512"},
		{"--image-opts", "driver=raw,file.filename={d}/r.raw", "-c", "write -s {d}/hdr 0 512"},
	} {
		q, o := runBoth(t, base, "qemu-io", "io", args, func(d string) {
			if err := os.WriteFile(filepath.Join(d, "hdr"), hdrBytes[:512], 0o644); err != nil {
				t.Fatal(err)
			}
			r := filepath.Join(d, "r.raw")
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "raw", r, "1M")
			testkit.MustRun(t, "qemu-io", "-f", "raw", "-c", "write -P 7 0 64k", r)
		})
		same, err := sameFiles(q.dir, o.dir, "r.raw")
		if err != nil {
			t.Fatal(err)
		}
		if !q.same(o) || !same {
			t.Errorf("case %d %q:\nqimg %v\nqemu-io %v\nfiles equal: %v", i, args, q, o, same)
		}
	}
}
