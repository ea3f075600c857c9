package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// TestCrash_SnapshotQemu takes TestCrash_Snapshot's workload (create,
// apply and delete, and writes into shared clusters) and hands a sample
// of its crash clones to QEMU, which TestCrash_Snapshot does not ask:
// qemu-img check of the clone as it crashed may report leaks and
// OFLAG_COPIED errors (QEMU's own ordering leaves the same window,
// docs/crash-consistency.md) and nothing else; qemu-img check -r all
// then repairs it, after which qemu-img check is clean and the engine's
// Check of the repaired image finds no corruption (leaks past the
// file's end qemu-img does not see may stay). A dirty lazy-refcounts clone skips
// the first check (QEMU reports a dirty image's stale refcounts by
// design) and goes to the repair.
func TestCrash_SnapshotQemu(t *testing.T) {
	if !testkit.HaveQemu() {
		t.Skip("qemu-img not installed")
	}
	t.Parallel()
	points := crashPoints(24, 8)
	for _, co := range []CreateOptions{{ClusterSize: 4096}, {ClusterSize: 4096, LazyRefcounts: true}} {
		t.Run("lazy="+map[bool]string{false: "off", true: "on"}[co.LazyRefcounts], func(t *testing.T) {
			seed := testkit.Rand(t).Uint64()
			step := max(1, snapCrashWorkload(t, co, seed, 0, nil)/max(1, points/2))
			var pts []snapCrashPoint
			snapCrashWorkload(t, co, seed, step, func(p snapCrashPoint) { pts = append(pts, p) })
			dir := t.TempDir()
			bad := 0
			for _, p := range pts {
				if err := qemuRepairCrash(dir, p); err != nil {
					t.Errorf("crash point %d: %v", p.op, err)
					if bad++; bad > 3 {
						t.FailNow()
					}
				}
			}
			t.Logf("%d crash points through qemu-img", len(pts))
		})
	}
}

// qemuRepairCrash checks crash clone p with qemu-img as
// TestCrash_SnapshotQemu says.
func qemuRepairCrash(dir string, p snapCrashPoint) error {
	var h [80]byte
	if err := p.dev.Readv(0, [][]byte{h[:]}); err != nil {
		return err
	}
	if binary.BigEndian.Uint32(h[:]) != format.Magic {
		return nil // the header never reached the media: nothing was flushed
	}
	path := filepath.Join(dir, fmt.Sprintf("crash-%d.qcow2", p.op))
	if err := p.dev.WriteFile(path); err != nil {
		return err
	}
	check := func(args ...string) (string, int, error) {
		out, err := exec.Command("qemu-img", append(append([]string{"check", "-f", "qcow2"}, args...), path)...).CombinedOutput()
		code := 0
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			code, err = ee.ExitCode(), nil
		}
		return string(out), code, err
	}
	dirty := binary.BigEndian.Uint32(h[4:]) >= 3 && binary.BigEndian.Uint64(h[72:])&format.IncompatDirty != 0
	if !dirty {
		// 0 clean, 2 corruptions, 3 leaks (qemu-img(1)).
		out, code, err := check()
		if err != nil || code != 0 && code != 2 && code != 3 {
			return fmt.Errorf("qemu-img check as it crashed: exit %d, %v\n%s", code, err, out)
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "ERROR") && !strings.Contains(l, "OFLAG_COPIED") {
				return fmt.Errorf("qemu-img check as it crashed: %q (only leaks and OFLAG_COPIED errors may follow a crash)\n%s", l, out)
			}
		}
	}
	if out, code, err := check("-r", "all"); err != nil || code != 0 {
		return fmt.Errorf("qemu-img check -r all: exit %d, %v\n%s", code, err, out)
	}
	if out, code, err := check(); err != nil || code != 0 {
		return fmt.Errorf("qemu-img check after its repair: exit %d, %v\n%s", code, err, out)
	}
	im, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("open after qemu-img's repair: %v", err)
	}
	defer im.Close()
	// Leaks may stay: refcounts of clusters past the file's end (a
	// crash after a shrink, or a growth of the file lost) are leaks to
	// our Check on purpose (check.go) and nothing to qemu-img's, which
	// neither reports nor repairs them.
	r, err := im.Check(CheckOptions{})
	if err != nil || r.Corruptions != 0 || r.CheckErrors != 0 {
		return fmt.Errorf("Check after qemu-img's repair: %v, %d corruptions, %d leaks, %d errors: %v", err, r.Corruptions, r.Leaks, r.CheckErrors, head(r.Messages, 5))
	}
	return nil
}
