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
	need(t, "qemu-img", "qemu-io", "nbdcopy", "nbdinfo")
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
	// Sectors, as qemu-nbd advertises for it (QEMU aligns a probed raw
	// image's requests to protect its first sector).
	if o, _, _ := testkit.Run(t, "nbdinfo", "--json", s.uri); !strings.Contains(o, `"block_size_minimum": 512,`) {
		t.Errorf("minimum block size of a probed raw export, want 512:\n%s", o)
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

	// A spec without driver= probes the format too: the same warning
	// (naming the file) and restriction, as qemu-nbd (qnbd left a spec
	// unguarded: the header was written).
	for _, spec := range [][]string{{"--image-opts", "file.filename=" + img}, {`json:{"file":{"filename":"` + img + `"}}`}, {"file:" + img}} {
		s = startUnix(t, dir, "r", spec...)
		if o, e, code := testkit.Run(t, "nbdcopy", sector, s.uri); code == 0 {
			t.Errorf("%q: a qcow2 header written over the probed raw image's first sector:\n%s%s", spec, o, e)
		}
		s.stop()
		if !strings.Contains(s.stderr.String(), "Image format was not specified for '"+img+"' and probing guessed raw") {
			t.Errorf("%q: no warning naming the file:\n%s", spec, s.stderr.String())
		}
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

// TestProbedRawGuardZeroes: zeros can make the first sector probe as
// another format as well: here a VMDK text descriptor whose comment
// line's newline becomes a zero, so that its "version=1" line counts.
// WRITE_ZEROES there is refused as the write of the same zeros is, and
// TRIM leaves the sector alone; both went through the guard, and the
// next start without -f refused the image as vmdk.
func TestProbedRawGuardZeroes(t *testing.T) {
	need(t, "qemu-img", "qemu-io", "nbdcopy")
	dir := shortDir(t)
	img := filepath.Join(dir, "r.raw")
	sh(t, "qemu-img", "create", "-f", "raw", img, "1M")
	head := make([]byte, 512)
	copy(head, "#c\nx\nversion=1\n") // raw: the line "x" ends the probe
	sector := filepath.Join(dir, "h.bin")
	if err := os.WriteFile(sector, head, 0o644); err != nil {
		t.Fatal(err)
	}
	s := startUnix(t, dir, "r", "--discard=unmap", img)
	sh(t, "nbdcopy", sector, s.uri)
	if o, e, _ := testkit.Run(t, "qemu-io", "-f", "raw", "-c", "write -z 2 1", s.uri); !strings.Contains(o+e, "Operation not permitted") {
		t.Errorf("the zero making the first sector a VMDK descriptor was written:\n%s%s", o, e)
	}
	sh(t, "qemu-io", "-f", "raw", "-c", "discard 2 1", "-c", "write -z 512 512", "-c", "write -z 0 512", "-c", "write -P 1 0 1", s.uri)
	s.stop()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != 1 || b[1] != 0 || b[2] != 0 {
		t.Errorf("whole-sector zeroing and writes after it: % x", b[:4])
	}
	// Before the whole-sector zeroing the descriptor was intact: check
	// it through a second server over a fresh copy.
	copy(b, head)
	if err := os.WriteFile(img, b, 0o644); err != nil {
		t.Fatal(err)
	}
	s = startUnix(t, dir, "r", "--discard=unmap", img)
	sh(t, "qemu-io", "-f", "raw", "-c", "discard 2 1", s.uri)
	s.stop()
	if b, err = os.ReadFile(img); err != nil || string(b[:16]) != string(head[:16]) {
		t.Errorf("TRIM changed the first sector: %q %v", b[:16], err)
	}
	s = startUnix(t, dir, "r", img) // still probes as raw
	s.stop()
}
