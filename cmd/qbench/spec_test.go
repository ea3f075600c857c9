package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit/imgcheck"
	"github.com/qring/qring/qcow2"
)

// TestRun_BlkverifyRandomWrites is the acceptance run: a random-write
// benchmark on a qcow2 image verified against a raw shadow, then a read
// pass over the same offsets, without a mismatch; a byte changed in the
// shadow is then caught; the image passes qemu-img check.
func TestRun_BlkverifyRandomWrites(t *testing.T) {
	dir := t.TempDir()
	img, shadow := filepath.Join(dir, "t.qcow2"), filepath.Join(dir, "s.raw")
	const size = 32 << 20
	if err := qcow2.Create(img, qcow2.CreateOptions{Size: size}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(shadow, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Truncate(shadow, size)
	spec := `json:{"driver":"blkverify","test":{"driver":"qcow2","file":"` + img + `"},"raw":{"driver":"raw","file":"` + shadow + `"}}`
	if code, out, errs := runCLI(t, "-w", "--rand", "42", "-c", "3000", "-d", "8", "-s", "4k", "--pattern", "0xab", "-i", "threads", spec); code != 0 {
		t.Fatalf("write run: exit %d\n%s%s", code, out, errs)
	} else if !strings.Contains(out, "Random offsets (seed 42)") {
		t.Fatalf("no random-offset line:\n%s", out)
	}
	if code, out, errs := runCLI(t, "--rand", "42", "-c", "3000", "-d", "8", "-i", "threads", "--image-opts",
		"driver=blkverify,test.driver=qcow2,test.file="+img+",raw.driver=raw,raw.file="+shadow); code != 0 {
		t.Fatalf("verify run: exit %d\n%s%s", code, out, errs)
	}
	// Corrupt one written block of the shadow: the read pass must fail.
	b, _ := os.ReadFile(shadow)
	bad := strings.IndexByte(string(b), 0xab)
	if bad < 0 {
		t.Fatal("nothing was written to the shadow")
	}
	f, _ := os.OpenFile(shadow, os.O_RDWR, 0)
	f.WriteAt([]byte{0}, int64(bad))
	f.Close()
	code, _, errs := runCLI(t, "--rand", "42", "-c", "3000", "-d", "1", "-i", "threads", "-o", "driver=blkverify,test="+img+",raw="+shadow)
	if code == 0 || !strings.Contains(errs, "mismatch") {
		t.Fatalf("corrupted shadow: exit %d, stderr %q", code, errs)
	}
	imgcheck.File(t, img, qcow2.Options{})
}
