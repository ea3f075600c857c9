package main

import (
	"errors"
	"github.com/qring/qring/internal/testkit"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/imgopen"
)

// TestOpen_DirectoryAndEmptyFile: a directory given as an image fails as
// in qemu-img (exit 1, "'file' driver requires '...' to be a regular
// file"); an empty file is a 0-byte raw image with qemu-img's info.
func TestOpen_DirectoryAndEmptyFile(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	sub := filepath.Join(d, "dir")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	want := "'file' driver requires '" + sub + "' to be a regular file"
	for _, args := range [][]string{{"info", sub}, {"info", "-f", "qcow2", sub}, {"map", sub}, {"check", sub}} {
		_, qe, qcode := testkit.Run(t, "qemu-img", args...)
		_, e, code := runQ(t, args...)
		if code != 1 || qcode == 0 || !strings.Contains(qe, want) || !strings.Contains(e, want) {
			t.Errorf("%q: exit %d, stderr %q; qemu-img: exit %d, %q", args, code, e, qcode, qe)
		}
	}
	empty := filepath.Join(d, "empty")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, want := mustQ(t, "info", empty), testkit.MustRun(t, "qemu-img", "info", empty); got != want {
		t.Errorf("info of an empty file:\n%s\nqemu-img:\n%s", got, want)
	}
}

// TestIO_ExplicitRingUnavailable: qimg io and info with an explicit -i
// io_uring fail where no ring can be set up (QEMU: "Unable to use
// io_uring"), and the image is not touched; the default falls back.
func TestIO_ExplicitRingUnavailable(t *testing.T) {
	d := workDir(t)
	p := filepath.Join(d, "a.qcow2")
	mustQ(t, "create", "-q", "-f", "qcow2", p, "1M")
	restore := imgopen.SimulateNoRing(errors.New("io_uring_setup: operation not permitted"))
	defer restore()
	for _, args := range [][]string{
		{"io", "-i", "io_uring", "-c", "write -P 1 0 4k", p},
		{"io", "-i", "io_uring", "-c", "write -P 1 0 4k", "json:{\"driver\":\"qcow2\",\"file\":\"" + p + "\"}"},
		{"info", "-i", "io_uring", p},
	} {
		_, e, code := runQ(t, args...)
		if code != 1 || !strings.Contains(e, "Unable to use io_uring: io_uring_setup: operation not permitted") {
			t.Errorf("%q: exit %d, stderr %q", args, code, e)
		}
	}
	mustQ(t, "io", "-c", "read -P 0 0 4k", p)
	mustQ(t, "io", "-c", "write -P 2 0 4k", "-c", "read -P 2 0 4k", p)
}
