package main

import (
	"bytes"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// startQemuNbd serves an image read-only through qemu-nbd on a socket in
// dir and returns its URI; image is "-f FORMAT FILE", or a spec (with
// --image-opts, or json:). The server stops with the test.
func startQemuNbd(t *testing.T, dir string, image ...string) string {
	t.Helper()
	sock := filepath.Join(dir, "q.sock")
	serveQemuNbd(t, sock, append([]string{"-r", "-A", "-x", "q"}, image...)...)
	return "nbd+unix:///q?socket=" + sock
}

// serveQemuNbd runs qemu-nbd -t -k sock args until it listens and returns
// a function that stops it (the test's end stops it too).
func serveQemuNbd(t *testing.T, sock string, args ...string) (stop func()) {
	t.Helper()
	cmd := exec.Command("qemu-nbd", append([]string{"-t", "-k", sock}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	stop = sync.OnceFunc(func() { cmd.Process.Kill(); <-done })
	t.Cleanup(stop)
	// qemu-nbd listens before it opens the image: a connection is
	// accepted (queued) while it has no export yet and holds no lock.
	// Its greeting comes only once the export exists; -t keeps it
	// serving after this probe leaves.
	deadline := time.Now().Add(10 * time.Second)
	for ; ; time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.SetReadDeadline(deadline)
			magic := make([]byte, 8)
			_, err := io.ReadFull(c, magic)
			c.Close()
			if err == nil && string(magic) == "NBDMAGIC" {
				return stop
			}
		}
		select {
		case <-done:
			t.Fatalf("qemu-nbd %q exited:\n%s", args, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("qemu-nbd does not listen")
		}
	}
}

// TestStatus_LikeQemuNbd: what nbdinfo sees of the allocation
// ("base:allocation" and "qemu:allocation-depth") and of the size is
// the same through qnbd as through qemu-nbd: a chain over a raw base
// shorter than the disk (the zeros past its end are the short layer's),
// a raw file's and a raw backing file's holes (zeros, still the raw
// layer's), and a raw file whose length is no multiple of 512 (served
// rounded up), also when given as an image spec, with or without a window
// (a raw layer's offset and size), and a raw node (with or without a
// window, or two) over a qcow2 node.
func TestStatus_LikeQemuNbd(t *testing.T) {
	need(t, "qemu-img", "qemu-io", "qemu-nbd", "nbdinfo")
	dir := shortDir(t)
	p := func(name string) string { return filepath.Join(dir, name) }
	sparse := func(name string, size int64, writes ...string) string {
		if err := os.WriteFile(p(name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p(name), size); err != nil {
			t.Fatal(err)
		}
		for _, w := range writes {
			sh(t, "qemu-io", "-f", "raw", "-c", w, p(name))
		}
		return p(name)
	}
	sparse("short.raw", 1<<20, "write -P 1 64k 64k", "write -P 2 512k 4k")
	sh(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "short.raw", "-F", "raw", p("mid.qcow2"), "4M")
	sh(t, "qemu-io", "-c", "write -P 3 2M 64k", p("mid.qcow2"))
	sh(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", p("top.qcow2"))
	sh(t, "qemu-io", "-c", "write -P 4 3M 64k", "-c", "write -z 128k 64k", p("top.qcow2"))
	sparse("holes.raw", 4<<20, "write -P 5 1M 8k", "write -P 6 3M 1M")
	if err := os.WriteFile(p("odd.raw"), make([]byte, 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	sh(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "odd.raw", "-F", "raw", p("odd.qcow2"), "64k")
	for _, c := range []struct{ name, fmt, img string }{
		{"top.qcow2", "qcow2", p("top.qcow2")},
		{"holes.raw", "raw", p("holes.raw")},
		{"odd.raw", "raw", p("odd.raw")},
		{"odd.qcow2", "qcow2", p("odd.qcow2")},
		{"spec", "", "driver=raw,file.driver=file,file.filename=" + p("holes.raw")},
		{"spec-window", "", "driver=raw,offset=1048064,size=2097152,file.filename=" + p("holes.raw")},
		{"spec-file", "", "driver=file,filename=" + p("holes.raw")},
		{"json", "", `json:{"driver":"raw","file":{"driver":"file","filename":"` + p("holes.raw") + `"}}`},
		// A raw node over a qcow2 node reports the node's own status,
		// not its backing chain's, shifted by the window's offset: an
		// unallocated run is a hole that reads as zeros only without a
		// backing file or when it starts past the backing file's end
		// (mid.qcow2's at 1M, odd.qcow2's at 1024, 1000 bytes in
		// sectors), and has depth 0. (Offsets stay multiples of 512:
		// qemu-nbd 7.2 spins on offset=1000 over odd.qcow2.)
		{"spec-qcow2", "", "driver=raw,file.driver=qcow2,file.file.filename=" + p("top.qcow2")},
		{"spec-qcow2-window", "", "driver=raw,offset=131072,size=3145728,file.driver=qcow2,file.file.filename=" + p("top.qcow2")},
		{"spec-qcow2-short", "", "driver=raw,file.driver=qcow2,file.file.filename=" + p("mid.qcow2")},
		{"spec-qcow2-past", "", "driver=raw,offset=1048576,file.driver=qcow2,file.file.filename=" + p("mid.qcow2")},
		{"spec-qcow2-across", "", "driver=raw,offset=524288,size=1048576,file.driver=qcow2,file.file.filename=" + p("mid.qcow2")},
		{"spec-qcow2-odd", "", "driver=raw,offset=1024,file.driver=qcow2,file.file.filename=" + p("odd.qcow2")},
		{"json-qcow2-nobacking", "", `json:{"driver":"raw","offset":65536,"file":{"driver":"qcow2","backing":null,"file":{"driver":"file","filename":"` + p("top.qcow2") + `"}}}`},
		{"spec-raw-raw-qcow2", "", "driver=raw,offset=65536,file.driver=raw,file.offset=65536,file.file.driver=qcow2,file.file.file.filename=" + p("top.qcow2")},
		{"json-qcow2", "", `json:{"driver":"raw","offset":65536,"file":{"driver":"qcow2","file":{"driver":"file","filename":"` + p("top.qcow2") + `"}}}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			sub := shortDir(t)
			image := []string{"-f", c.fmt, c.img}
			if c.fmt == "" {
				image = []string{"--image-opts", c.img}
				if c.img[0] == 'j' {
					image = image[1:]
				}
			}
			q := startQemuNbd(t, sub, image...)
			s := startUnix(t, sub, "disk", append([]string{"-r", "-A"}, image...)...)
			defer s.stop()
			for _, args := range [][]string{{"--size"}, {"--map"}, {"--map=qemu:allocation-depth"}} {
				want := sh(t, "nbdinfo", append(args, q)...)
				if got := sh(t, "nbdinfo", append(args, s.uri)...); got != want {
					t.Errorf("nbdinfo %v:\nqnbd:\n%s\nqemu-nbd:\n%s", args, got, want)
				}
			}
		})
	}
}
