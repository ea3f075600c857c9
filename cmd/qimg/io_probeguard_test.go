package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
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
	q := filepath.Join(base, "q.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", q, "1M")
	hdrBytes, err := os.ReadFile(q)
	if err != nil {
		t.Fatal(err)
	}
	for i, args := range [][]string{
		{"{d}/r.raw", "-c", "write -s {d}/hdr 0 512", "-c", "write 4k 512", "-c", "info", "-c", "map"},
		{"{d}/r.raw", "-c", "write -s {d}/hdr 0 100", "-c", "aio_write -P 0x51 0 1", "-c", "write -z 0 512", "-c", "discard 0 64k"},
		{"-f", "raw", "{d}/r.raw", "-c", "write -s {d}/hdr 0 512"},
		{"-c", "open {d}/r.raw", "-c", "write -s {d}/hdr 0 512"},
		{"-s", "{d}/r.raw", "-c", "write -s {d}/hdr 0 512"},
	} {
		var outs [2][3]string
		var files [2][]byte
		for k, tool := range []string{"qimg", "qemu-io"} {
			d := filepath.Join(base, strings.Repeat("x", k+1))
			testkit.MustRun(t, "mkdir", "-p", d)
			if err := os.WriteFile(filepath.Join(d, "hdr"), hdrBytes[:512], 0o644); err != nil {
				t.Fatal(err)
			}
			r := filepath.Join(d, "r.raw")
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "raw", r, "1M")
			testkit.MustRun(t, "qemu-io", "-f", "raw", "-c", "write -P 7 0 64k", r)
			a := make([]string, len(args))
			for j, s := range args {
				a[j] = strings.ReplaceAll(s, "{d}", d)
			}
			var o, e string
			var code int
			if tool == "qimg" {
				o, e, code = runQ(t, append([]string{"io"}, a...)...)
				e = strings.ReplaceAll(e, "qimg: io: ", "qemu-io: ")
			} else {
				o, e, code = testkit.Run(t, tool, a...)
			}
			rp := strings.NewReplacer(d, "{d}")
			outs[k] = [3]string{normTiming(rp.Replace(o)), rp.Replace(e), string(rune('0' + code))}
			if files[k], err = os.ReadFile(r); err != nil {
				t.Fatal(err)
			}
		}
		if outs[0] != outs[1] || !bytes.Equal(files[0], files[1]) {
			t.Errorf("case %d %q:\nqimg (exit %s):\n%s%s\nqemu-io (exit %s):\n%s%s\nfiles equal: %v", i, args, outs[0][2], outs[0][0], outs[0][1], outs[1][2], outs[1][0], outs[1][1], bytes.Equal(files[0], files[1]))
		}
	}
}
