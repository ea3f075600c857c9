package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestCompare_ReadErrorLikeQemu: a cluster that cannot be read (a
// compressed stream overwritten with garbage) fails compare with
// qemu-img's exit code 4 and words, naming the image and the failing
// cluster's offset (qimg exited 2, naming the start of its 1 MiB chunk);
// a mismatch before the failing cluster is still a mismatch.
func TestCompare_ReadErrorLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := testkit.Dir(t) // the damaged image fails checks on purpose
	src := filepath.Join(d, "src.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", src, "1M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", "-c", "write -c -P 2 64k 64k", "-c", "write -P 3 128k 64k", src)
	// The compressed cluster's stream: L1[0] -> L2 entry 1 (64 KiB
	// clusters: the offset is the entry's low 54 bits).
	f, err := os.OpenFile(src, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var b [8]byte
	readAt := func(off int64) uint64 {
		if _, err := f.ReadAt(b[:], off); err != nil {
			t.Fatal(err)
		}
		return binary.BigEndian.Uint64(b[:])
	}
	l2 := readAt(int64(readAt(40))) & 0x00fffffffffffe00
	stream := int64(readAt(int64(l2)+8) & (1<<54 - 1))
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xff}, 64), stream); err != nil {
		t.Fatal(err)
	}
	f.Close()
	other := filepath.Join(d, "other.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", other, "1M")
	same := filepath.Join(d, "same.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", same, "1M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", same)
	for _, args := range [][]string{{src, src}, {other, src}, {same, src}, {src, same}} {
		o1, e1, c1 := runQ(t, append([]string{"compare"}, args...)...)
		o2, e2, c2 := testkit.Run(t, "qemu-img", append([]string{"compare"}, args...)...)
		if o1 != o2 || strings.Replace(e1, "qimg: compare: ", "qemu-img: ", 1) != e2 || c1 != c2 {
			t.Errorf("compare %q:\nqimg (exit %d): %s%s\nqemu-img (exit %d): %s%s", args, c1, o1, e1, c2, o2, e2)
		}
	}
}

// TestCompare_StatusErrorLikeQemu: an image whose map cannot be read (an
// L2 entry whose host offset is not cluster aligned) fails compare with
// qemu-img's exit code 3 and words, either side (qimg exited 2).
func TestCompare_StatusErrorLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir() // damaged on purpose
	good := filepath.Join(d, "good.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", good, "1M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", good)
	bad := filepath.Join(d, "bad.qcow2")
	testkit.MustRun(t, "cp", good, bad)
	damage(t, bad, func(f imageFile) {
		l2 := int64(f.u64(int64(f.u64(40))) & entryMask)
		f.putU64(l2, f.u64(l2)+512)
	})
	for _, args := range [][]string{{bad, good}, {good, bad}} {
		_, e1, c1 := runQ(t, append([]string{"compare"}, args...)...)
		_, e2, c2 := testkit.Run(t, "qemu-img", append([]string{"compare"}, args...)...)
		want := "Sector allocation test failed for " + bad
		if c1 != 3 || c2 != 3 || !strings.Contains(e1, want) || !strings.Contains(e2, want) {
			t.Errorf("compare %q:\nqimg (exit %d): %s\nqemu-img (exit %d): %s", args, c1, e1, c2, e2)
		}
	}
}
