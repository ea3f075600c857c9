package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestSnapshotOptions_LikeQemuNbd: -s serves a temporary overlay (writes
// land there, the image is never written, and nothing is left in
// $TMPDIR, even while serving: the overlay is unlinked once open; over
// a file or an image spec), and
// -l serves an internal snapshot read-only (by name, by ID, as
// snapshot.name=), through qnbd as through qemu-nbd: what a client reads
// and whether its writes are refused, what qemu-img can do with the
// image meanwhile, and the image afterwards.
func TestSnapshotOptions_LikeQemuNbd(t *testing.T) {
	need(t, "qemu-img", "qemu-io", "qemu-nbd")
	dir := shortDir(t)
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", tmp) // both servers' overlays go there
	img := filepath.Join(dir, "a.qcow2")
	sock := filepath.Join(dir, "s.sock")
	uri := "nbd+unix:///?socket=" + sock
	fresh := func() {
		sh(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "1M")
		sh(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 64k", img)
		sh(t, "qemu-img", "snapshot", "-c", "sn1", img)
		sh(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x33 0 64k", img)
	}
	// What a client and qemu-img see while one server serves args.
	probe := func(args []string) []int {
		var codes []int
		run := func(name string, a ...string) {
			o, e, code := testkit.Run(t, name, a...)
			if strings.Contains(o+e, "Pattern verification failed") {
				code = 99
			}
			codes = append(codes, code)
		}
		if args[0] == "-s" {
			run("qemu-io", "-f", "raw", "-c", "write -P 0x44 0 4k", uri)
			run("qemu-io", "-f", "raw", "-c", "read -P 0x44 0 4k", "-c", "read -P 0x33 4k 60k", uri)
		} else {
			run("qemu-io", "-r", "-f", "raw", "-c", "read -P 0x11 0 64k", uri)
			run("qemu-io", "-f", "raw", "-c", "write -P 0x44 0 4k", uri)
		}
		run("qemu-img", "info", img)
		run("qemu-io", "-f", "qcow2", "-c", "write -P 0x55 64k 4k", img)
		if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
			codes = append(codes, 100+len(ents)) // an overlay left visible
		}
		return codes
	}
	for _, args := range [][]string{
		{"-s", "-f", "qcow2", img},
		// Over an image spec: the overlay's backing node is the
		// spec's, set in memory.
		{"-s", "--image-opts", "driver=qcow2,file.driver=file,file.filename=" + img},
		{"-s", `json:{"driver":"qcow2","file":{"driver":"file","filename":"` + img + `"}}`},
		{"-l", "sn1", "-f", "qcow2", img},
		{"-l", "1", "-f", "qcow2", img},
		{"-l", "snapshot.name=sn1", "-f", "qcow2", img},
	} {
		fresh()
		stop := serveQemuNbd(t, sock, args...)
		want := probe(args)
		stop()
		wantImg := sh(t, "qemu-img", "map", "--output=json", img)

		fresh()
		s := start(t, uri, sock, append([]string{"-k", sock}, args...)...)
		got := probe(args)
		s.stop()
		gotImg := sh(t, "qemu-img", "map", "--output=json", img)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%q: qnbd exits %v, qemu-nbd %v", args, got, want)
		}
		if gotImg != wantImg {
			t.Errorf("%q: image afterwards\n%s\nqemu-nbd's\n%s", args, gotImg, wantImg)
		}
		sh(t, "qemu-io", "-f", "qcow2", "-c", "read -P 0x33 0 64k", img) // never written through the export
		if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
			t.Errorf("%q: left in TMPDIR: %v", args, ents)
		}
	}
}

// TestOpenErrors_LikeQemuNbd: an image that cannot be opened fails with
// qemu-nbd's words and exit code: a missing file or directory (the file
// driver's "Could not open 'x': No such file or directory"), and under
// -f qcow2 a file that is no qcow2 image ("Image is not in qcow2
// format"), also with -s. qnbd printed Go's "open x: no such file or
// directory" and the engine's "image is corrupt: magic = ...".
func TestOpenErrors_LikeQemuNbd(t *testing.T) {
	need(t, "qemu-nbd")
	dir := shortDir(t)
	notQcow2 := filepath.Join(dir, "plain")
	if err := os.WriteFile(notQcow2, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "x.sock")
	for _, args := range [][]string{
		{filepath.Join(dir, "missing")},
		{"-f", "raw", filepath.Join(dir, "no", "x")},
		{"-f", "qcow2", notQcow2},
		{"-s", "-f", "qcow2", filepath.Join(dir, "missing")},
	} {
		args = append([]string{"-k", sock}, args...)
		_, qe, qcode := testkit.Run(t, "qemu-nbd", args...)
		_, e, code := testkit.Run(t, filepath.Join(bin, "qnbd"), args...)
		if e = "qemu-nbd: " + strings.TrimPrefix(e, "qnbd: "); code != qcode || e != qe {
			t.Errorf("%q: exit %d %q; qemu-nbd: exit %d %q", args, code, e, qcode, qe)
		}
	}
}

// TestProtocolNames_LikeQemuNbd: "file:X" serves X, as qemu-nbd does; an
// unknown protocol is refused in its words; one qring has no driver for
// (nbd:) is refused with qemu-nbd's exit code and preamble.
func TestProtocolNames_LikeQemuNbd(t *testing.T) {
	need(t, "qemu-img", "qemu-io", "qemu-nbd")
	dir := shortDir(t)
	img := filepath.Join(dir, "a.qcow2")
	sh(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "1M")
	sh(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 4k", img)
	sock := filepath.Join(dir, "s.sock")
	s := start(t, "nbd+unix:///?socket="+sock, sock, "-k", sock, "-f", "qcow2", "file:"+img)
	sh(t, "qemu-io", "-r", "-f", "raw", "-c", "read -P 0x5a 0 4k", "nbd+unix:///?socket="+sock)
	s.stop()
	for _, name := range []string{"foo:" + img, "nbd:" + dir + "/x", "file:" + dir + "/missing"} {
		args := []string{"-k", sock, name}
		_, qe, qcode := testkit.Run(t, "qemu-nbd", args...)
		_, e, code := testkit.Run(t, filepath.Join(bin, "qnbd"), args...)
		e = "qemu-nbd: " + strings.TrimPrefix(e, "qnbd: ")
		if strings.HasPrefix(name, "nbd:") { // the driver's own reason
			w := "qemu-nbd: Failed to blk_new_open '" + name + "': "
			e, qe = e[:min(len(e), len(w))], qe[:min(len(qe), len(w))]
		}
		if code != qcode || e != qe {
			t.Errorf("%q: exit %d %q; qemu-nbd: exit %d %q", args, code, e, qcode, qe)
		}
	}
}
