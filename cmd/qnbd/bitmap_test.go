package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// qnbd -B NAME offers the image's dirty bitmap as the metadata context
// qemu:dirty-bitmap:NAME, as qemu-nbd -B does: nbdinfo's map of it is
// qemu-nbd's, read-only and writable, and after writes through qnbd
// (a writable export's bitmap is maintained: the writes show); an
// unknown or inconsistent bitmap is refused with qemu-nbd's message.
func TestBitmapExport_LikeQemuNbd(t *testing.T) {
	need(t, "qemu-img", "qemu-io", "qemu-nbd", "nbdinfo")
	dir := shortDir(t)
	img := filepath.Join(dir, "img")
	sh(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "16M")
	sh(t, "qemu-img", "bitmap", "--add", "-g", "4k", img, "b0")
	sh(t, "qemu-io", "-c", "write 1M 4k", "-c", "write 5M 1M", "-c", "write 15M 8k", "-f", "qcow2", img)
	want := testkit.DirtyMap(t, img, "b0")
	for _, ro := range []bool{true, false} {
		args := []string{"-f", "qcow2", "-B", "b0", img}
		if ro {
			args = append([]string{"-r"}, args...)
		}
		s := startUnix(t, dir, "", args...)
		if got := sh(t, "nbdinfo", "--map=qemu:dirty-bitmap:b0", s.uri); got != want {
			t.Errorf("read-only %v: nbdinfo --map=qemu:dirty-bitmap:b0:\n%s\nqemu-nbd's:\n%s", ro, got, want)
		}
		if ctx := sh(t, "nbdinfo", "--list", s.uri); !strings.Contains(ctx, "qemu:dirty-bitmap:b0") {
			t.Errorf("read-only %v: the context is not listed:\n%s", ro, ctx)
		}
		if !ro {
			// A write through qnbd dirties the maintained bitmap.
			sh(t, "qemu-io", "-f", "raw", "-c", "write 9M 4k", s.uri)
			got := sh(t, "nbdinfo", "--map=qemu:dirty-bitmap:b0", s.uri)
			s.stop()
			if after := testkit.DirtyMap(t, img, "b0"); got != after || !strings.Contains(after, "9437184") {
				t.Errorf("after a write: qnbd's map:\n%s\nqemu-nbd's:\n%s", got, after)
			}
			continue
		}
		s.stop()
	}
	// A bitmap of the backing file (qemu-nbd 7.2 looks down the chain;
	// qnbd said it was not found), and with -s, under the temporary
	// overlay (review 53).
	top := filepath.Join(dir, "top")
	sh(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", img, "-F", "qcow2", top)
	want = testkit.DirtyMap(t, img, "b0") // with the write above
	for _, args := range [][]string{{"-r", "-f", "qcow2", "-B", "b0", top}, {"-s", "-r", "-f", "qcow2", "-B", "b0", img}} {
		s := startUnix(t, dir, "", args...)
		if got := sh(t, "nbdinfo", "--map=qemu:dirty-bitmap:b0", s.uri); got != want {
			t.Errorf("qnbd %v: nbdinfo --map=qemu:dirty-bitmap:b0:\n%s\nqemu-nbd's:\n%s", args, got, want)
		}
		s.stop()
	}
	for _, name := range []string{"nope"} {
		qcode, qerr := runServer(t, "qemu-nbd", "-f", "qcow2", "-B", name, img)
		code, stderr := runServer(t, filepath.Join(bin, "qnbd"), "-f", "qcow2", "-B", name, img)
		if code != qcode || strings.TrimPrefix(stderr, "qnbd: ") != strings.TrimPrefix(qerr, "qemu-nbd: ") {
			t.Errorf("-B %s: qemu-nbd exit %d %q, qnbd exit %d %q", name, qcode, qerr, code, stderr)
		}
	}
	check(t, img)
}

// bitmapsStatus is a client that lists every metadata context of the
// export, selects them all, and asks for the status of the whole disk:
// the contexts in the server's order, then each bitmap's reply chunk's
// context and extents, in the order they came, for the whole disk and
// for one extent (REQ_ONE: each context's own, as long as its flags go
// on; qnbd cut them all to the shortest) (base:allocation's differ:
// qemu-nbd looks at the holes of the image's file too, and what it
// finds there changes with the file's write-back).
const bitmapsStatus = `
h.set_opt_mode(True)
h.connect_uri(uri)
names = []
h.opt_list_meta_context(lambda n: names.append(n))
for n in names:
    h.add_meta_context(n)
h.opt_go()
print(names)
h.block_status(h.get_size(), 0, lambda meta, off, ents, err: meta == "base:allocation" or print(meta, list(ents)))
h.block_status(h.get_size() - 65536, 65536, lambda meta, off, ents, err: meta == "base:allocation" or print("one", meta, list(ents)), flags=nbd.CMD_FLAG_REQ_ONE)
`

// TestBitmapExport_SeveralLikeQemuNbd: -B is repeatable, as qemu-nbd's:
// every bitmap is offered, in qemu-nbd 7.2's order (the last -B first),
// a BLOCK_STATUS that selects them all gets each one's extents, and one
// bitmap that is not found (or an empty name) refuses the export. qnbd
// offered the last -B only, and served without the others.
func TestBitmapExport_SeveralLikeQemuNbd(t *testing.T) {
	env := needNbdsh(t, "qemu-img", "qemu-io", "qemu-nbd")
	dir := shortDir(t)
	img := filepath.Join(dir, "img")
	sh(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "16M")
	for i, b := range []string{"b0", "b1", "b2"} {
		sh(t, "qemu-img", "bitmap", "--add", "-g", "4k", img, b)
		// Each bitmap sees the writes from its creation on.
		sh(t, "qemu-io", "-c", fmt.Sprintf("write %dM 4k", 3*i+1), "-f", "qcow2", img)
	}
	sock := filepath.Join(dir, "b.sock")
	status := func(srv string, args ...string) string {
		var s *server
		if srv == "qemu-nbd" {
			s = startQemuNbdOnce(t, sock, args...)
		} else {
			s = start(t, "", sock, append([]string{"-k", sock, "--once"}, args...)...)
		}
		cmd := exec.Command("nbdsh", "-c", "uri = 'nbd+unix:///?socket="+sock+"'\n"+bitmapsStatus)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", srv, args, err, out)
		}
		if err := <-s.done; err != nil {
			t.Fatalf("%s: %v\n%s", srv, err, s.stderr.String())
		}
		return string(out)
	}
	for _, bs := range [][]string{{"b0", "b2", "b1"}, {"b1"}, {"b2", "b2"}} {
		args := []string{"-r", "-f", "qcow2"}
		for _, b := range bs {
			args = append(args, "-B", b)
		}
		args = append(args, img)
		want := status("qemu-nbd", args...)
		if got := status("qnbd", args...); got != want {
			t.Errorf("-B %v: qnbd:\n%s\nqemu-nbd:\n%s", bs, got, want)
		}
	}
	for _, bs := range [][]string{{"b0", "nope"}, {"nope", "b0"}, {""}} {
		var args []string
		for _, b := range bs {
			args = append(args, "-B", b)
		}
		args = append(args, "-f", "qcow2", img)
		qcode, qerr := runServer(t, "qemu-nbd", args...)
		code, stderr := runServer(t, filepath.Join(bin, "qnbd"), args...)
		if code != qcode || code == 0 || strings.TrimPrefix(stderr, "qnbd: ") != strings.TrimPrefix(qerr, "qemu-nbd: ") {
			t.Errorf("-B %q: qemu-nbd exit %d %q, qnbd exit %d %q", bs, qcode, qerr, code, stderr)
		}
	}
}

// badStatus asks an export with a bad L2 entry for the status of its
// first MiB: base:allocation and the bitmap with REQ_ONE, then the bitmap
// alone; each reply's contexts and extents, or its error.
const badStatus = `
def ask(ctxs, flags):
    h = nbd.NBD()
    for c in ctxs:
        h.add_meta_context(c)
    h.connect_uri(uri)
    out = []
    try:
        h.block_status(1 << 20, 0, lambda meta, off, ents, err: out.append((meta, list(ents))), flags=flags)
    except nbd.Error as e:
        out.append(("error", e.errno))
    print(ctxs, flags, sorted(out))
    h.shutdown()
ask(["base:allocation", "qemu:dirty-bitmap:b1"], nbd.CMD_FLAG_REQ_ONE)
ask(["qemu:dirty-bitmap:b1"], 0)
ask(["qemu:dirty-bitmap:b1"], nbd.CMD_FLAG_REQ_ONE)
`

// TestBitmapExport_BadEntryLikeQemuNbd: each metadata context is
// answered on its own, as qemu-nbd answers them: a bitmap's extents
// where the allocation behind them cannot be read (an invalid L2 entry),
// and with REQ_ONE the allocation's descriptor where it ends before the
// entry. qnbd failed both requests with EIO.
func TestBitmapExport_BadEntryLikeQemuNbd(t *testing.T) {
	env := needNbdsh(t, "qemu-img", "qemu-io", "qemu-nbd")
	dir := shortDir(t)
	img := filepath.Join(dir, "img")
	sh(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=16k", img, "4M")
	sh(t, "qemu-img", "bitmap", "--add", "--disable", img, "b1")
	sh(t, "qemu-io", "-c", "write 0 16k", "-c", "write 160k 16k", "-f", "qcow2", img)
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	be := binary.BigEndian
	l2 := be.Uint64(b[be.Uint64(b[40:]):]) & 0xfffffffffffe00
	be.PutUint64(b[l2+12*16:], 0)   // guest cluster 12: no cluster,
	be.PutUint64(b[l2+12*16+8:], 1) // yet subcluster 0 allocated: invalid
	if err := os.WriteFile(img, b, 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "e.sock")
	var outs [2]string
	for i, srv := range []string{"qemu-nbd", "qnbd"} {
		// Three clients: both servers serve them one after the other
		// and stay (-t), stopped below.
		var s *server
		if srv == "qemu-nbd" {
			s = startQemuNbdOnce(t, sock, "-t", "-r", "-f", "qcow2", "-B", "b1", img)
		} else {
			s = start(t, "", sock, "-k", sock, "-r", "-f", "qcow2", "-B", "b1", img)
		}
		cmd := exec.Command("nbdsh", "-c", "uri = 'nbd+unix:///?socket="+sock+"'\n"+badStatus)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		s.stop()
		if err != nil {
			t.Fatalf("%s: %v\n%s", srv, err, out)
		}
		outs[i] = string(out)
	}
	if outs[0] != outs[1] {
		t.Errorf("qnbd:\n%s\nqemu-nbd:\n%s", outs[1], outs[0])
	}
}
