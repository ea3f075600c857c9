package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/imgopen"
)

// TestSpec_ReadOnlyNodeLikeQemuNbd: a spec whose root says read-only=on
// is refused without -r, in qemu-nbd's words ("Block node is
// read-only"), and served with it; qnbd advertised a writable export
// whose every write failed.
func TestSpec_ReadOnlyNodeLikeQemuNbd(t *testing.T) {
	dir := shortDir(t)
	raw := filepath.Join(dir, "r.raw")
	if err := os.WriteFile(raw, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	// The root read-only, or (a format node over it) its file node.
	for _, spec := range []string{"driver=raw,read-only=on,file.filename=" + raw, "driver=raw,file.driver=file,file.read-only=on,file.filename=" + raw} {
		readOnlySpec(t, dir, spec)
	}
}

func readOnlySpec(t *testing.T, dir, spec string) {
	for _, ro := range []bool{false, true} {
		args := []string{"--image-opts", spec}
		if ro {
			args = append([]string{"-r"}, args...)
		}
		img, err := openViewArgs(t, args...)
		if ro {
			if err != nil {
				t.Fatalf("-r: %v", err)
			}
			img.Close()
			continue
		}
		if err == nil {
			img.Close()
			t.Fatal("served writable")
		}
		if !strings.Contains(err.Error(), "Block node is read-only") {
			t.Errorf("error %q", err)
		}
	}
	if _, err := exec.LookPath("qemu-nbd"); err != nil {
		return
	}
	qsock := filepath.Join(dir, "q.sock")
	cmd := exec.Command("qemu-nbd", "-k", qsock, "--image-opts", spec)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if code, err := launch(t, qsock, cmd); code <= 0 || !strings.Contains(out.String(), "Block node is read-only") {
		t.Errorf("qemu-nbd: exit %d (-1: serves), %v, %s", code, err, out.String())
	}
}

// TestSpec_ReadOnlyNodeOverlayLikeQemuNbd: with -s (and no -r) a spec
// whose root says read-only=on is refused as qemu-nbd refuses it, though
// the node is only the overlay's backing file; a read-only file node
// under a writable root is served, as qemu-nbd serves it.
func TestSpec_ReadOnlyNodeOverlayLikeQemuNbd(t *testing.T) {
	dir := shortDir(t)
	raw := filepath.Join(dir, "r.raw")
	if err := os.WriteFile(raw, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	_, haveQemu := exec.LookPath("qemu-nbd")
	for _, c := range []struct {
		spec    string
		refused bool
	}{
		{"driver=raw,read-only=on,file.filename=" + raw, true},
		{"driver=raw,file.driver=file,file.read-only=on,file.filename=" + raw, false},
	} {
		img, err := openViewArgs(t, "-s", "--image-opts", c.spec)
		if err == nil {
			img.Close()
		}
		if c.refused != (err != nil) || c.refused && !strings.Contains(err.Error(), "Block node is read-only") {
			t.Errorf("-s %s: %v, want refused %v", c.spec, err, c.refused)
		}
		if haveQemu != nil {
			continue
		}
		// qemu-nbd either fails at start or serves (launch sees which).
		qsock := filepath.Join(dir, "q.sock")
		cmd := exec.Command("qemu-nbd", "-s", "-k", qsock, "--image-opts", c.spec)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		code, err := launch(t, qsock, cmd)
		served := code == -1
		if served == c.refused || c.refused && !strings.Contains(out.String(), "Block node is read-only") {
			t.Errorf("qemu-nbd -s %s: exit %d (-1: serves), %v, %s (want refused %v)", c.spec, code, err, out.String(), c.refused)
		}
	}
}

// openViewArgs opens what qnbd with the command line args would serve.
func openViewArgs(t *testing.T, args ...string) (*imgopen.Opened, error) {
	t.Helper()
	f, err := parseFlags(args)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := configure(f)
	if err != nil {
		t.Fatal(err)
	}
	return openView(cfg)
}
