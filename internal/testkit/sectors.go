package testkit

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// CheckCrashSectors checks an image's bytes (got) after a crash, sector
// by sector, against what a test wrote: written maps each sector written
// (once, with the pattern pat gives it) to whether a completed Flush
// covered it. A flushed sector reads its pattern; another written one
// its pattern or zeros (the write lost); one never written, zeros.
func CheckCrashSectors(t testing.TB, got []byte, written map[int64]bool, pat func(int64) []byte) {
	t.Helper()
	zero := make([]byte, 512)
	for s := int64(0); s < int64(len(got))/512; s++ {
		b := got[s*512 : s*512+512]
		flushed, ok := written[s]
		switch {
		case !ok && !bytes.Equal(b, zero):
			t.Fatalf("sector %d never written reads %x...", s, b[:8])
		case ok && flushed && !bytes.Equal(b, pat(s)):
			t.Fatalf("sector %d flushed reads %x...", s, b[:8])
		case ok && !bytes.Equal(b, pat(s)) && !bytes.Equal(b, zero):
			t.Fatalf("sector %d reads neither its write nor zeros: %x...", s, b[:8])
		}
	}
}

// QemuReadRaw is the guest's view of the image at p, of format f, as
// qemu-img convert -O raw writes it.
func QemuReadRaw(t testing.TB, f, p string) []byte {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "qemu.raw")
	MustRun(t, "qemu-img", "convert", "-f", f, "-O", "raw", p, raw)
	b, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
