package main

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestCheck_AllMessagesLikeQemu: check prints every detail line, as
// qemu-img does (it printed the library's default 1000 and dropped the
// rest silently): a 512-byte-cluster image whose refcount table lost
// eight refcount blocks reports thousands of clusters, line for line as
// qemu-img check. The image is QEMU's, and a copy of it goes to each.
func TestCheck_AllMessagesLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	img := filepath.Join(d, "m.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", img, "64M")
	testkit.MustRun(t, "qemu-io", "-c", "write 0 8M", img)
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	rt := binary.BigEndian.Uint64(b[48:])
	clear(b[rt+8 : rt+72]) // refcount table entries 1..8
	ours, theirs := twoCopies(t, d, b)
	stdout, stderr, code := runQ(t, "check", ours)
	q := exec.Command("qemu-img", "check", theirs)
	var qout, qerr strings.Builder
	q.Stdout, q.Stderr = &qout, &qerr
	qerrRun := q.Run()
	qcode := 0
	if ee, ok := qerrRun.(*exec.ExitError); ok {
		qcode = ee.ExitCode()
	}
	if n := strings.Count(stderr, "\n"); n <= 1000 {
		t.Errorf("%d detail lines: want more than 1000", n)
	}
	if stderr != qerr.String() || stdout != strings.ReplaceAll(qout.String(), theirs, ours) || code != qcode {
		t.Errorf("qimg check: exit %d, %d stderr lines; qemu-img: exit %d, %d lines\nqimg stdout:\n%s\nqemu-img stdout:\n%s",
			code, strings.Count(stderr, "\n"), qcode, strings.Count(qerr.String(), "\n"), stdout, qout.String())
	}
}
