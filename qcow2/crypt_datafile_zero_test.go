package qcow2

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// An encrypted image with a raw data file (QEMU makes one): a zero
// write that is not sector aligned must leave the bytes around it in
// its edge sectors alone. dfZeroRaw wrote plaintext zeros over the
// exact range into the data file first, so the edge sectors' read,
// decrypt and merge (writevCrypt) decrypted half-plaintext sectors and
// wrote garbage back around the zeroed bytes (QEMU zeroes the raw data
// file for whole (sub)clusters only).
func TestCrypt_RawDataFileUnalignedZero(t *testing.T) {
	testkit.NeedQemu(t)
	for _, xl2 := range []string{"off", "on"} {
		t.Run("extended_l2="+xl2, func(t *testing.T) {
			dir := testkit.Dir(t)
			p, df := filepath.Join(dir, "q.qcow2"), filepath.Join(dir, "q.raw")
			testkit.MustRun(t, "qemu-img", "create", "-f", "qcow2", "--object", "secret,id=sec0,data="+cryptPass,
				"-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10,data_file="+df+",data_file_raw=on,extended_l2="+xl2, p, "1M")
			im := cryptOpen(t, p, Options{})
			want := bytes.Repeat([]byte{0x30}, 128<<10)
			if _, err := im.WriteAt(want, 0); err != nil {
				t.Fatal(err)
			}
			const off, n = 222, 6385
			if err := im.WriteZeroes(off, n, 0); err != nil {
				t.Fatal(err)
			}
			clear(want[off : off+n])
			got := make([]byte, len(want))
			if _, err := im.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if i := firstDifference(got, want); i >= 0 {
				t.Errorf("byte %d reads %#x, want %#x", i, got[i], want[i])
			}
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			if i := firstDifference(qemuCryptRaw(t, p)[:len(want)], want); i >= 0 {
				t.Errorf("QEMU: byte %d differs", i)
			}
		})
	}
}

// TestCrypt_RawDataFileZeroCrash: zeroing whole clusters of an encrypted
// image with a raw data file leaves the data file's ciphertext alone
// (the L2 entries' zero flags say zeros). Plaintext zeros were written
// there before the entries changed, so a crash between the two (here:
// the files as they are before the flush that writes the tables) left
// entries mapping zeros that decrypt into garbage: an unflushed zero
// write must read back as the old data or as zeros. Found by the
// torture suite's luks-dfr configurations.
func TestCrypt_RawDataFileZeroCrash(t *testing.T) {
	testkit.NeedQemu(t)
	for _, xl2 := range []string{"off", "on"} {
		t.Run("extended_l2="+xl2, func(t *testing.T) {
			dir := testkit.Dir(t)
			p, df := filepath.Join(dir, "q.qcow2"), filepath.Join(dir, "q.raw")
			testkit.MustRun(t, "qemu-img", "create", "-f", "qcow2", "--object", "secret,id=sec0,data="+cryptPass,
				"-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10,data_file="+df+",data_file_raw=on,extended_l2="+xl2, p, "1M")
			im := cryptOpen(t, p, Options{})
			old := bytes.Repeat([]byte{0x30}, 256<<10)
			if _, err := im.WriteAt(old, 0); err != nil {
				t.Fatal(err)
			}
			if err := im.Flush(); err != nil {
				t.Fatal(err)
			}
			if err := im.WriteZeroes(64<<10, 128<<10, 0); err != nil {
				t.Fatal(err)
			}
			// The crash: both files as they are now, tables unflushed.
			saved := map[string][]byte{}
			for _, f := range []string{p, df} {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				saved[f] = b
			}
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			for f, b := range saved {
				if err := os.WriteFile(f, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			im = cryptOpen(t, p, Options{ReadOnly: true})
			defer im.Close()
			got := make([]byte, len(old))
			if _, err := im.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			for c := 0; c < len(got); c += 512 {
				s := got[c : c+512]
				if !bytes.Equal(s, old[c:c+512]) && !bytes.Equal(s, make([]byte, 512)) {
					t.Fatalf("sector at %#x reads neither the old data nor zeros: % x...", c, s[:8])
				}
			}
		})
	}
}
