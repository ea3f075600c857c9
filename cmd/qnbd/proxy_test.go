package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
