package imgopen

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestOpen_NoRing: where no ring can be set up, an explicit io_uring
// fails with QEMU's "Unable to use io_uring", and the default falls back
// to threads and says why; threads is what was requested.
func TestOpen_NoRing(t *testing.T) {
	dir := t.TempDir()
	q, r := mkQcow2(t, dir, "a.qcow2", 1<<20), mkRaw(t, dir, "b.raw", 1<<20)
	restore := SimulateNoRing(errors.New("io_uring_setup: operation not permitted"))
	defer restore()
	for _, p := range []string{q, r} {
		for _, aio := range []string{"io_uring", "io_uring-nomerge"} {
			_, err := Open(Spec{Path: p, AIO: aio})
			var re *RingError
			if !errors.As(err, &re) || !strings.HasPrefix(err.Error(), "Unable to use io_uring: io_uring_setup") {
				t.Errorf("Open(%s, aio=%s): %v; want a RingError", p, aio, err)
			}
		}
		o, err := Open(Spec{Path: p})
		if err != nil {
			t.Fatalf("Open(%s) with the default AIO: %v", p, err)
		}
		name, why := o.Backend()
		if name != "threads" || why != "io_uring unavailable: io_uring_setup: operation not permitted" {
			t.Errorf("default AIO without a ring: backend %q (%q)", name, why)
		}
		o.Close()
		o, err = Open(Spec{Path: p, AIO: "threads"})
		if err != nil {
			t.Fatal(err)
		}
		if name, why := o.Backend(); name != "threads" || why != "requested" {
			t.Errorf("aio=threads: backend %q (%q)", name, why)
		}
		o.Close()
	}
	if _, err := OpenSpec(`json:{"driver":"qcow2","file":{"driver":"file","filename":"`+q+`","aio":"io_uring"}}`, Spec{}); err == nil ||
		!strings.Contains(err.Error(), "Unable to use io_uring") {
		t.Errorf("OpenSpec with aio=io_uring and no ring: %v", err)
	}
	restore()
	o, err := Open(Spec{Path: q})
	if err != nil {
		t.Fatal(err)
	}
	if name, why := o.Backend(); name == "" || why == "" {
		t.Errorf("default AIO: backend %q (%q)", name, why)
	}
	o.Close()
}

// TestOpen_NotAFile: a directory, a FIFO or a character device is refused
// in QEMU's words (without blocking on the FIFO), in Open and in a spec;
// an empty file is a 0-byte raw image.
func TestOpen_NotAFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{sub, fifo, "/dev/null"} {
		for _, f := range []string{"", "raw", "qcow2"} {
			_, err := Open(Spec{Path: p, Format: f, AIO: "threads"})
			var nf *NotFileError
			if !errors.As(err, &nf) || err.Error() != "'file' driver requires '"+p+"' to be a regular file" {
				t.Errorf("Open(%s, -f %q): %v", p, f, err)
			}
		}
		for _, spec := range []string{
			`json:{"driver":"file","filename":"` + p + `"}`,
			`json:{"driver":"qcow2","file":"` + p + `"}`,
			`driver=quorum,children=` + p + `:` + p + `:` + p,
		} {
			if _, err := OpenSpec(spec, Spec{AIO: "threads"}); err == nil || !strings.Contains(err.Error(), "to be a regular file") {
				t.Errorf("OpenSpec(%s): %v", spec, err)
			}
		}
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	o, err := Open(Spec{Path: empty, AIO: "threads"})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if n, err := o.Dev.Size(); o.Format() != "raw" || n != 0 || err != nil {
		t.Errorf("empty file: format %s, size %d, %v", o.Format(), n, err)
	}
}
