package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// waitLocked waits until some process holds byte 101 (write permission)
// of path, as /proc/locks shows it, so a test never races the holder.
func waitLocked(t *testing.T, path string) {
	t.Helper()
	waitLockByte(t, path, 101)
}

// waitLockByte waits until some process holds lock byte b of path (100:
// read permission, 101: write).
func waitLockByte(t *testing.T, path string, b int64) {
	t.Helper()
	testkit.WaitLockByte(t, path, b)
}

// The acceptance: qemu-io and qimg refuse to write an image the
// other is writing, with QEMU's message, and the image is unchanged.
func TestLock_QEMUHoldsImage(t *testing.T) {
	d := qemuDir(t)
	img := filepath.Join(d, "a.qcow2")
	mustQ(t, "create", "-q", "-f", "qcow2", img, "1M")
	mustQ(t, "io", "-c", "write -P 0x11 0 64k", img)
	q := exec.Command("qemu-io", "-c", "sleep 100000", img)
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { q.Process.Kill(); q.Wait() }()
	waitLocked(t, img)

	_, e, code := runQ(t, "io", "-c", "write -P 0x22 0 4k", img)
	if code == 0 || !strings.Contains(e, `Failed to get "write" lock`) || !strings.Contains(e, "Is another process using the image ["+img+"]?") {
		t.Fatalf("qimg io write beside qemu-io: exit %d\n%s", code, e)
	}
	// A reader does not share write either (qemu-img info fails the same
	// way), unless it forces sharing.
	if _, e, code = runQ(t, "info", img); code == 0 || !strings.Contains(e, `Failed to get shared "write" lock`) {
		t.Fatalf("qimg info beside qemu-io: exit %d\n%s", code, e)
	}
	if _, e, code = runQ(t, "info", "-U", img); code != 0 {
		t.Fatalf("qimg info -U beside qemu-io: exit %d\n%s", code, e)
	}
	if _, e, code = runQ(t, "io", "-U", "-c", "read 0 4k", img); code == 0 || !strings.Contains(e, "force-share=on can only be used with read-only images") {
		t.Fatalf("qimg io -U without -r: exit %d\n%s", code, e)
	}
	if _, e, code = runQ(t, "io", "-r", "-U", "-c", "read -P 0x11 0 4k", img); code != 0 {
		t.Fatalf("qimg io -r -U: exit %d\n%s", code, e)
	}
	// Create over the image in use is refused and leaves it alone.
	if _, e, code = runQ(t, "create", "-q", "-f", "qcow2", img, "2M"); code == 0 || !strings.Contains(e, `"write" lock`) {
		t.Fatalf("qimg create over an image in use: exit %d\n%s", code, e)
	}
	// An overlay of it takes its size from it, read shared, as
	// qemu-img's (a live snapshot; qimg refused it on the lock), with
	// a size given or not.
	for _, size := range [][]string{nil, {"1M"}} {
		for _, tool := range []string{"qimg", "qemu-img"} {
			ov := filepath.Join(d, fmt.Sprintf("ov-%s-%d.qcow2", tool, len(size)))
			args := append([]string{"create", "-q", "-f", "qcow2", "-b", img, "-F", "qcow2", ov}, size...)
			if tool == "qemu-img" {
				testkit.MustRun(t, tool, args...) // the oracle agrees
			} else if _, e, code = runQ(t, args...); code != 0 {
				t.Fatalf("qimg create of an overlay of an image in use: exit %d\n%s", code, e)
			}
		}
	}
	q.Process.Kill()
	q.Wait()
	testkit.MustRun(t, "qemu-io", "-c", "read -P 0x11 0 64k", img)
	testkit.QemuCheck(t, img)
}

func TestLock_QimgHoldsImage(t *testing.T) {
	d := qemuDir(t)
	base := filepath.Join(d, "base.qcow2")
	img := filepath.Join(d, "top.qcow2")
	mustQ(t, "create", "-q", "-f", "qcow2", base, "1M")
	mustQ(t, "io", "-c", "write -P 0x33 0 64k", base)
	mustQ(t, "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", img)
	// qimg holds the image until the test lets its first line out: its
	// stdout blocks (a timed "sleep" could end while qemu-io starts).
	hold := &heldWriter{release: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var e bytes.Buffer
		run([]string{"io", "-c", "read 0 4k", img}, hold, &e)
	}()
	defer func() { hold.let(); <-done }()
	waitLocked(t, img)
	o, e, code := testkit.RunOnce(t, "qemu-io", "-c", "write 0 4k", img)
	if code == 0 || !strings.Contains(e, `Failed to get "write" lock`) {
		t.Fatalf("qemu-io write beside qimg: exit %d\n%s%s", code, o, e)
	}
	// The backing file is locked for reading: QEMU may not write it.
	o, e, code = testkit.RunOnce(t, "qemu-io", "-c", "write 0 4k", base)
	if code == 0 || !strings.Contains(e, `Failed to get "write" lock`) {
		t.Fatalf("qemu-io write into the backing file beside qimg: exit %d\n%s%s", code, o, e)
	}
	// But it may read it, and with -U the image itself.
	testkit.MustRun(t, "qemu-io", "-r", "-c", "read -P 0x33 0 4k", base)
	testkit.MustRun(t, "qemu-img", "info", "-U", img)
	hold.let()
	<-done
	testkit.MustRun(t, "qemu-io", "-c", "write -P 0x44 0 4k", img)
	testkit.MustRun(t, "qemu-io", "-c", "read -P 0x44 0 4k", "-c", "read -P 0x33 4k 60k", img)
}

// heldWriter blocks every write until let is called.
type heldWriter struct {
	release chan struct{}
	once    sync.Once
}

func (w *heldWriter) Write(b []byte) (int, error) {
	<-w.release
	return len(b), nil
}

func (w *heldWriter) let() { w.once.Do(func() { close(w.release) }) }

// preallocation=metadata reserves no data space (qemu-img: 324 KiB for
// 1 GiB), and sizes round up to whole sectors as qemu-img's do.
func TestCreate_MetadataPreallocSmall(t *testing.T) {
	d := workDir(t)
	img := filepath.Join(d, "m.qcow2")
	mustQ(t, "create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", img, "1G")
	var st os.FileInfo
	st, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if used := blocks(st) * 512; used >= 10<<20 {
		t.Fatalf("preallocation=metadata uses %d bytes on disk, want < 10 MiB", used)
	}
	if st.Size() < 1<<30 {
		t.Fatalf("file size %d: metadata preallocation should map the whole image", st.Size())
	}
	odd := filepath.Join(d, "odd.qcow2")
	mustQ(t, "create", "-q", "-f", "qcow2", odd, "1000")
	if out := mustQ(t, "info", odd); !strings.Contains(out, "virtual size: 1 KiB (1024 bytes)") {
		t.Fatalf("size 1000 is not rounded to 1024:\n%s", out)
	}
	raw := filepath.Join(d, "odd.raw")
	mustQ(t, "create", "-q", "-f", "raw", raw, "1000")
	if fi, err := os.Stat(raw); err != nil || fi.Size() != 1024 {
		t.Fatalf("raw size 1000: %v, %v; want 1024 bytes", fi, err)
	}
	if testkit.HaveQemu() {
		if out := testkit.MustRun(t, "qemu-img", "info", odd); !strings.Contains(out, "(1024 bytes)") {
			t.Fatalf("qemu-img reads another size:\n%s", out)
		}
	}
}

// TestLock_VMDKAndVHDLikeQemu: qimg locks the files of a VMDK image (its
// descriptor, its extent files, its parent chain) and of a VHD image as
// qemu-img locks them when it reads one: it reads none that a QEMU
// writer holds (unless -U), and while it reads, QEMU writes none of them
// but may read them all. While it writes a VHD image, QEMU reads it only
// with -U.
func TestLock_VMDKAndVHDLikeQemu(t *testing.T) {
	d := qemuDir(t)
	base, top, vhd := filepath.Join(d, "base.vmdk"), filepath.Join(d, "top.vmdk"), filepath.Join(d, "d.vhd")
	extent := filepath.Join(d, "top-s001.vmdk")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", base, "1M")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", "-b", "base.vmdk", "-F", "vmdk", top)
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vpc", vhd, "1M")
	out := filepath.Join(d, "out.raw")

	// A QEMU writer on each file: qimg, as qemu-img, reads nothing.
	for _, c := range []struct {
		held, fmt string
		args      []string
	}{
		{base, "vmdk", []string{"convert", "-O", "raw", top, out}},  // the parent
		{extent, "raw", []string{"convert", "-O", "raw", top, out}}, // QEMU opens an extent file alone only as raw
		{top, "vmdk", []string{"map", top}},
		{vhd, "vpc", []string{"map", "-f", "vpc", vhd}},
	} {
		q := exec.Command("qemu-io", "-f", c.fmt, "-c", "sleep 100000", c.held)
		if err := q.Start(); err != nil {
			t.Fatal(err)
		}
		waitLockByte(t, c.held, 100)
		_, e, code := runQ(t, c.args...)
		_, qe, qcode := testkit.RunOnce(t, "qemu-img", c.args...)
		const msg = `Failed to get shared "write" lock`
		if code != 1 || qcode != 1 || !strings.Contains(e, msg) || !strings.Contains(qe, msg) || !strings.Contains(e, "["+c.held+"]") {
			t.Errorf("%q beside a writer of %s: exit %d %q; qemu-img: exit %d %q", c.args, c.held, code, e, qcode, qe)
		}
		// -U shares the writer's write.
		if _, e, code := runQ(t, append([]string{c.args[0], "-U"}, c.args[1:]...)...); code != 0 {
			t.Errorf("%q -U beside a writer of %s: exit %d %q", c.args, c.held, code, e)
		}
		q.Process.Kill()
		q.Wait()
	}

	// qimg reading the snapshot: QEMU writes none of its files, reads all.
	hold := &heldWriter{release: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var e bytes.Buffer
		run([]string{"io", "-r", "-c", "read 0 4k", top}, hold, &e)
	}()
	defer func() { hold.let(); <-done }()
	waitLockByte(t, base, 100) // the last file the open locks
	for p, f := range map[string]string{top: "vmdk", extent: "raw", base: "vmdk"} {
		if o, e, code := testkit.RunOnce(t, "qemu-io", "-f", f, "-c", "write 0 512", p); code == 0 || !strings.Contains(e, `Failed to get "write" lock`) {
			t.Errorf("qemu-io wrote %s beside qimg reading %s: exit %d\n%s%s", p, top, code, o, e)
		}
		testkit.MustRun(t, "qemu-io", "-f", f, "-r", "-c", "read 0 512", p)
	}
	hold.let()
	<-done

	// qimg writing the VHD image: as beside a QEMU writer, QEMU neither
	// writes nor reads it but with -U.
	whold := &heldWriter{release: make(chan struct{})}
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		var e bytes.Buffer
		run([]string{"io", "-f", "vpc", "-c", "write 0 4k", vhd}, whold, &e)
	}()
	defer func() { whold.let(); <-wdone }()
	waitLockByte(t, vhd, 101) // write held
	if o, e, code := testkit.RunOnce(t, "qemu-io", "-f", "vpc", "-r", "-c", "read 0 512", vhd); code == 0 || !strings.Contains(e, `Failed to get shared "write" lock`) {
		t.Errorf("qemu-io read %s beside qimg writing it: exit %d\n%s%s", vhd, code, o, e)
	}
	testkit.MustRun(t, "qemu-io", "-f", "vpc", "-U", "-r", "-c", "read 0 512", vhd)
}

// TestLock_ThroughRawNodesLikeQemu: a qcow2 (or vmdk) node over a raw
// node over the file, or over a file node with options of its own,
// locks the file as the format does, as QEMU's raw driver passes its
// parent's permissions down: beside a writer (qemu-io) a reader is
// refused. The file was locked as a raw image, which shares writes:
// qimg read, and convert copied, an image another process was writing.
// With -U the read goes ahead, as qemu-img's.
func TestLock_ThroughRawNodesLikeQemu(t *testing.T) {
	d := qemuDir(t)
	img := filepath.Join(d, "a.qcow2")
	mustQ(t, "create", "-q", "-f", "qcow2", img, "1M")
	q := exec.Command("qemu-io", "-c", "sleep 100000", img)
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { q.Process.Kill(); q.Wait() }()
	waitLocked(t, img)
	for _, spec := range []string{
		"driver=qcow2,file.driver=raw,file.file.filename=" + img,
		"driver=qcow2,file.driver=raw,file.offset=0,file.file.filename=" + img,
		"driver=qcow2,file.driver=file,file.aio=threads,file.filename=" + img,
	} {
		for _, args := range [][]string{
			{"io", "-r", "-c", "read 0 4k", "--image-opts", spec},
			{"convert", "--image-opts", spec, "-O", "raw", filepath.Join(d, "out.raw")},
			{"info", "--image-opts", spec},
		} {
			_, e, code := runQ(t, args...)
			qargs := args
			if args[0] == "io" {
				qargs = args[1:]
			}
			_, qe, qcode := testkit.RunOnce(t, map[bool]string{true: "qemu-io", false: "qemu-img"}[args[0] == "io"], qargs...)
			if code == 0 || qcode == 0 || !strings.Contains(e, `Failed to get shared "write" lock`) {
				t.Errorf("%q beside a writer: exit %d (qemu: %d)\n%s\nqemu: %s", args, code, qcode, e, qe)
			}
		}
		if _, e, code := runQ(t, "io", "-r", "-U", "-c", "read 0 4k", "--image-opts", spec); code != 0 {
			t.Errorf("%s with -U: exit %d\n%s", spec, code, e)
		}
	}
	// Through throttle nodes too (qimg io and qnbd take them without a
	// group; QEMU's need one, an object qimg does not take).
	for _, spec := range []string{
		"driver=qcow2,file.driver=throttle,file.file.filename=" + img,
		"driver=qcow2,file.driver=throttle,file.file.driver=raw,file.file.file.filename=" + img,
	} {
		if _, e, code := runQ(t, "io", "-r", "-c", "read 0 4k", "--image-opts", spec); code == 0 || !strings.Contains(e, `Failed to get shared "write" lock`) {
			t.Errorf("%s beside a writer: exit %d\n%s", spec, code, e)
		}
	}
}
