package qcow2

import (
	"bytes"
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
