package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestProbedRawGuard: a raw image served without -f (its format probed)
// refuses, as qemu-nbd does, writes that would make its first sector
// probe as another format: a client could otherwise put a qcow2 header
// there, with a host file as backing file, for the next start to serve.
// The image is left raw; a partial write is checked with the bytes
// around it; writes elsewhere, and any write with -f raw, go through.
func TestProbedRawGuard(t *testing.T) {
	need(t, "qemu-img", "qemu-io", "nbdcopy")
	dir := shortDir(t)
	img := filepath.Join(dir, "r.raw")
	hdr := filepath.Join(dir, "h.qcow2")
	sh(t, "qemu-img", "create", "-f", "raw", img, "1M")
	sh(t, "qemu-img", "create", "-f", "qcow2", hdr, "1M")
	b, err := os.ReadFile(hdr)
	if err != nil {
		t.Fatal(err)
	}
	sector := filepath.Join(dir, "h.bin")
	if err := os.WriteFile(sector, b[:512], 0o644); err != nil {
		t.Fatal(err)
	}

	s := startUnix(t, dir, "r", img)
	if o, e, code := testkit.Run(t, "nbdcopy", sector, s.uri); code == 0 {
		t.Errorf("a qcow2 header written over a probed raw image's first sector:\n%s%s", o, e)
	}
	// The qcow2 magic goes through: version 0 after it probes as raw (as
	// qemu-nbd lets it); version 3 would make it qcow2.
	sh(t, "qemu-io", "-f", "raw", "-c", "write -P 0x51 0 1", "-c", "write -P 0x46 1 1", "-c", "write -P 0x49 2 1", "-c", "write -P 0xfb 3 1", s.uri)
	if o, e, _ := testkit.Run(t, "qemu-io", "-f", "raw", "-c", "write -P 0x03 7 1", s.uri); !strings.Contains(o+e, "Operation not permitted") {
		t.Errorf("the byte completing a qcow2 header was written:\n%s%s", o, e)
	}
	sh(t, "qemu-io", "-f", "raw", "-c", "write -P 0xfb 512 1", "-c", "write -P 0x00 0 1", s.uri)
	s.stop()
	if !strings.Contains(s.stderr.String(), "probing guessed raw") {
		t.Errorf("no warning:\n%s", s.stderr.String())
	}
	if out := sh(t, "qemu-img", "info", img); !strings.Contains(out, "file format: raw") {
		t.Fatalf("image no longer raw:\n%s", out)
	}

	// The format given: no restriction (and no warning), as qemu-nbd.
	s = startUnix(t, dir, "r", "-f", "raw", img)
	sh(t, "nbdcopy", sector, s.uri)
	s.stop()
	if strings.Contains(s.stderr.String(), "WARNING") {
		t.Errorf("warning with -f raw:\n%s", s.stderr.String())
	}
	if out := sh(t, "qemu-img", "info", img); !strings.Contains(out, "file format: qcow2") {
		t.Fatalf("the header written with -f raw is not there:\n%s", out)
	}
}
