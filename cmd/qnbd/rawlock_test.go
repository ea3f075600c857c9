package main

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestRawExportNoResize: while a raw image is served, writable or not,
// no one may resize it (qemu-nbd's export shares every permission but
// resize: its clients were told the size); others may still open it, as
// with qemu-nbd. Stopped, the server lets go.
func TestRawExportNoResize(t *testing.T) {
	need(t, "qemu-img", "qemu-io")
	dir := shortDir(t)
	img := filepath.Join(dir, "r.raw")
	sh(t, "qemu-img", "create", "-f", "raw", img, "1M")
	for _, ro := range []bool{false, true} {
		args := []string{"-f", "raw", img}
		if ro {
			args = append([]string{"-r"}, args...)
		}
		s := startUnix(t, dir, "r", args...)
		if o, e, code := testkit.Run(t, "qemu-img", "resize", "-f", "raw", img, "2M"); code == 0 || !strings.Contains(e, `"resize" lock`) {
			t.Errorf("read-only %v: qemu-img resize of a served raw image: exit %d\n%s%s", ro, code, o, e)
		}
		sh(t, "qemu-io", "-f", "raw", "-c", "write -P 0x11 0 4k", img)
		s.stop()
	}
	sh(t, "qemu-img", "resize", "-f", "raw", img, "2M")
}

// TestRawSpecLocks_LikeQemuNbd: a raw image given as a spec (--image-opts
// driver=raw or driver=file, json:) takes the image locks qemu-nbd takes
// for it, as -f raw does: while it is served, read-only or not, qemu-img
// resize fails on the "resize" lock and a raw writer still gets in (the
// raw image shares write), with qnbd as with qemu-nbd; file.locking=off
// takes none. The other way round: a spec-served raw view of a qcow2
// image that qemu-nbd serves writable (sharing neither write nor resize)
// is refused. Without locks, qnbd let resize through and served beside
// a qcow2 writer.
func TestRawSpecLocks_LikeQemuNbd(t *testing.T) {
	need(t, "qemu-img", "qemu-io", "qemu-nbd")
	dir := shortDir(t)
	img := filepath.Join(dir, "r.raw")
	type outcome struct {
		resize, write int
		lock          bool
	}
	probe := func() outcome {
		var o outcome
		_, e, code := testkit.Run(t, "qemu-img", "resize", "-f", "raw", img, "2M")
		o.resize, o.lock = code, strings.Contains(e, `"resize" lock`)
		_, _, o.write = testkit.Run(t, "qemu-io", "-f", "raw", "-c", "write -P 0x22 4k 512", img)
		return o
	}
	specs := [][]string{
		{"--image-opts", "driver=raw,file.filename=" + img},
		{"--image-opts", "driver=file,filename=" + img},
		{"--image-opts", "driver=raw,offset=512,size=64k,file.driver=file,file.filename=" + img},
		{`json:{"driver":"raw","file":{"driver":"file","filename":"` + img + `"}}`},
		{"--image-opts", "driver=raw,file.filename=" + img + ",file.locking=off"},
	}
	for i, spec := range specs {
		for _, ro := range []bool{false, true} {
			args := spec
			if ro {
				args = append([]string{"-r"}, spec...)
			}
			sh(t, "qemu-img", "create", "-q", "-f", "raw", img, "1M")
			stop := serveQemuNbd(t, filepath.Join(dir, fmt.Sprintf("q%d%v.sock", i, ro)), args...)
			want := probe()
			stop()
			sh(t, "qemu-img", "create", "-q", "-f", "raw", img, "1M")
			s := startUnix(t, dir, "r", args...)
			got := probe()
			s.stop()
			if got != want {
				t.Errorf("%q: qnbd %+v, qemu-nbd %+v", args, got, want)
			}
			if locking := !strings.Contains(spec[len(spec)-1], "locking=off"); want.lock != locking {
				t.Errorf("%q: qemu-nbd: resize refused %v", args, want.lock)
			}
		}
	}

	q := filepath.Join(dir, "q.qcow2")
	sh(t, "qemu-img", "create", "-q", "-f", "qcow2", q, "1M")
	serveQemuNbd(t, filepath.Join(dir, "qcow2.sock"), "-f", "qcow2", q)
	for _, args := range [][]string{
		{"--image-opts", "driver=raw,file.filename=" + q},
		{"-r", "--image-opts", "driver=file,filename=" + q},
	} {
		sock := filepath.Join(dir, "no.sock")
		args = append([]string{"-k", sock}, args...)
		for _, server := range []string{"qemu-nbd", filepath.Join(bin, "qnbd")} {
			cmd := exec.Command(server, args...)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if code, err := launch(t, sock, cmd); code <= 0 || !strings.Contains(out.String(), "lock") {
				t.Errorf("%s %q beside a qcow2 writer: exit %d (-1: serves), %v\n%s", filepath.Base(server), args, code, err, out.String())
			}
		}
	}
}
