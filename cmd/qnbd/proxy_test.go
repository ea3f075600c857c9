package main

import (
	"bytes"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/nbd"
)

// TestProxy_ServesAnExport: qnbd serves another server's export (named
// by its NBD URI, as qemu-nbd takes one): a client's writes through
// qnbd reach the image qemu-nbd serves, and the holes qemu-nbd reports
// come through qnbd's block status. Before, qnbd tried to open the URI
// as a file.
func TestProxy_ServesAnExport(t *testing.T) {
	need(t, "qemu-img", "qemu-io", "qemu-nbd", "nbdinfo")
	dir, img := create(t, "64M")
	spawn(t, exec.Command("qemu-nbd", "--persistent", "-f", "qcow2", "-k", filepath.Join(dir, "in.sock"), img))
	innerURI := "nbd+unix:///?socket=" + filepath.Join(dir, "in.sock")
	for i := 0; ; i++ {
		if _, _, err := runCmd("nbdinfo", "--size", innerURI); err == nil {
			break
		} else if i == 500 {
			t.Fatalf("qemu-nbd did not start: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	s := startUnix(t, dir, "disk", "-f", "raw", innerURI)
	sh(t, "qemu-io", "-f", "raw", "-c", "write -P 0x5a 1M 1M", "-c", "flush", s.uri)
	m := sh(t, "nbdinfo", "--map", s.uri)
	if f := strings.Fields(m); strings.Join(f, " ") != "0 1048576 3 hole,zero 1048576 1048576 0 data 2097152 65011712 3 hole,zero" {
		t.Fatalf("nbdinfo --map through qnbd:\n%s", m)
	}
	s.stop()
	sh(t, "qemu-io", "-f", "raw", "-c", "read -P 0x5a 1M 1M", innerURI)
}

// runCmd runs a command, its output and error.
func runCmd(name string, args ...string) (string, string, error) {
	var o, e strings.Builder
	c := exec.Command(name, args...)
	c.Stdout, c.Stderr = &o, &e
	err := c.Run()
	return o.String(), e.String(), err
}

// TestProxy_KeepsZeroFlag: an export's data that reads as zeros
// (qemu-nbd's NBD_STATE_ZERO without NBD_STATE_HOLE, here the clusters of
// a metadata-preallocated image whose host space is a hole) is served
// again with the same flags, as qemu-nbd over QEMU's nbd driver does
// (qnbd served it as data that is not zero).
func TestProxy_KeepsZeroFlag(t *testing.T) {
	need(t, "qemu-img", "qemu-io", "qemu-nbd", "nbdinfo")
	dir := shortDir(t)
	img := filepath.Join(dir, "pre.qcow2")
	sh(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", img, "8M")
	sh(t, "qemu-io", "-c", "write -P 5 64k 64k", img)
	innerURI := "nbd+unix:///?socket=" + testkit.ServeQemuNbd(t, "-r", "-f", "qcow2", img)
	want := sh(t, "nbdinfo", "--map", innerURI)
	if !strings.Contains(strings.Join(strings.Fields(want), " "), " 2 zero") {
		t.Fatalf("qemu-nbd's map has no data that reads as zeros:\n%s", want)
	}
	s := startUnix(t, dir, "disk", "-r", "-f", "raw", innerURI)
	if m := sh(t, "nbdinfo", "--map", s.uri); m != want {
		t.Fatalf("nbdinfo --map through qnbd:\n%s\nstraight from qemu-nbd:\n%s", m, want)
	}
}

// TestProxy_TemporaryOverlay: -s over another server's export serves a
// temporary overlay whose backing node is the export, as qemu-nbd -s:
// the clients' writes never reach the export (qnbd opened the URI as a
// host file and failed).
func TestProxy_TemporaryOverlay(t *testing.T) {
	need(t, "qemu-img", "qemu-io", "qemu-nbd")
	dir, img := create(t, "16M")
	sh(t, "qemu-io", "-c", "write -P 7 0 1M", img)
	innerURI := "nbd+unix:///?socket=" + testkit.ServeQemuNbd(t, "-f", "raw", img)
	s := startUnix(t, dir, "disk", "-s", "-f", "qcow2", innerURI)
	sh(t, "qemu-io", "-f", "raw", "-c", "read -P 7 0 1M", "-c", "write -P 9 0 64k", "-c", "read -P 9 0 64k", s.uri)
	s.stop()
	sh(t, "qemu-io", "-f", "qcow2", "-c", "read -P 7 0 1M", innerURI)
}

// holeNotZero is a block status whose first half is NBD_STATE_HOLE
// without NBD_STATE_ZERO (bytes the spec promises nothing of: 0xAA here).
type holeNotZero struct{ half int64 }

func (h holeNotZero) Extent(off, n int64) (nbd.Extent, error) {
	if off < h.half {
		return nbd.Extent{Len: min(n, h.half-off), Hole: true}, nil
	}
	return nbd.Extent{Len: n, Depth: 1}, nil
}

// TestProxy_HoleNotZeroLikeQemuNbd: an export's hole without the zero
// flag, served again raw and as the backing file of a qcow2 overlay, has
// qemu-nbd's block status and allocation depth (absent: neither data nor
// known zeros); qnbd called it the layer's data, and before that zeros.
func TestProxy_HoleNotZeroLikeQemuNbd(t *testing.T) {
	need(t, "qemu-img", "qemu-nbd", "nbdinfo")
	d := shortDir(t)
	l, err := net.Listen("unix", filepath.Join(d, "in.sock"))
	if err != nil {
		t.Fatal(err)
	}
	content := bytes.Repeat([]byte{0xaa}, 1<<20)
	srv := &nbd.Server{Exports: []*nbd.Export{{Dev: memdev.FromBytes(content, memdev.Options{}), ReadOnly: true, Status: holeNotZero{512 << 10}}}}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Shutdown(t.Context()) })
	inner := "nbd+unix:///?socket=" + filepath.Join(d, "in.sock")
	ov := filepath.Join(d, "ov.qcow2")
	sh(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", inner, "-F", "raw", ov)
	for _, args := range [][]string{{"-f", "raw", inner}, {"-f", "qcow2", ov}} {
		sub := shortDir(t)
		q := startQemuNbd(t, sub, append([]string{"-r", "-A"}, args...)...)
		s := startUnix(t, sub, "disk", append([]string{"-r", "-A"}, args...)...)
		for _, ctx := range []string{"--map", "--map=qemu:allocation-depth"} {
			if got, want := sh(t, "nbdinfo", ctx, s.uri), sh(t, "nbdinfo", ctx, q); got != want {
				t.Errorf("%q %s: qnbd\n%s\nqemu-nbd\n%s", args, ctx, got, want)
			}
		}
		s.stop()
	}
}
