package luks

import (
	"bytes"
	"compress/flate"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

func qemuIOQcow2(t *testing.T, path, cmd string) string {
	t.Helper()
	return qemuIOSecret(t, "driver=qcow2,encrypt.key-secret=sec0", path, cmd)
}

// qemuQcow2LUKS has qemu-img create a 1 MiB LUKS-encrypted qcow2 image
// named name in the test's directory, with the secret sec0, and returns
// its path (the test is skipped without QEMU).
func qemuQcow2LUKS(t *testing.T, name string) string {
	t.Helper()
	testkit.NeedQemu(t)
	path := filepath.Join(testkit.Dir(t), name)
	testkit.MustRun(t, "qemu-img", "create", "-f", "qcow2", "--object", secretObj,
		"-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10", path, "1M")
	return path
}

// readQcow2 reads the image file at path and parses its qcow2 header.
func readQcow2(t *testing.T, path string) ([]byte, *format.Header) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	qh, err := format.ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	return b, qh
}

// hostOffset follows the L1 and L2 tables to the host offset of guest
// offset off (qemu-img map gives no offsets for encrypted images). The
// image has standard 64-bit L2 entries.
func hostOffset(t *testing.T, path string, off int64) int64 {
	t.Helper()
	b, qh := readQcow2(t, path)
	const mask = 0x00fffffffffffe00 // bits 9..55
	cb := qh.ClusterBits
	l2bits := cb - 3
	l1 := be.Uint64(b[uint64(qh.L1TableOffset)+8*(uint64(off)>>(cb+l2bits)):]) & mask
	l2 := be.Uint64(b[l1+8*((uint64(off)>>cb)&(1<<l2bits-1)):]) & mask
	if l1 == 0 || l2 == 0 {
		t.Fatalf("guest offset %d not allocated", off)
	}
	return int64(l2) + off&(1<<cb-1)
}

// openQcow2 reads the qcow2 header, and parses and unlocks the LUKS
// header the crypto header extension points to.
func openQcow2(t *testing.T, f *os.File, pass string) (*format.Header, *Header, *Cipher, error) {
	t.Helper()
	b := make([]byte, 64<<10)
	if _, err := f.ReadAt(b, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	qh, err := format.ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	if qh.CryptMethod != format.CryptLUKS {
		t.Fatalf("crypt_method %d", qh.CryptMethod)
	}
	area := io.NewSectionReader(f, int64(qh.Crypto.Offset), int64(qh.Crypto.Length))
	phdr := make([]byte, HeaderSize)
	if _, err := area.ReadAt(phdr, 0); err != nil {
		t.Fatal(err)
	}
	h, err := ParseHeader(phdr)
	if err != nil {
		t.Fatal(err)
	}
	if h.PayloadBytes() != qh.Crypto.Length {
		t.Fatalf("LUKS payload offset %d, extension length %d", h.PayloadBytes(), qh.Crypto.Length)
	}
	c, err := h.Unlock(area, []byte(pass))
	return qh, h, c, err
}

// In a qcow2 image QEMU encrypts a data sector with IV = host offset /
// 512 (crypt_physical_offset); QEMU reads sectors we encrypt that way,
// and opens a LUKS header area we made.
func TestInterop_QEMUQcow2(t *testing.T) {
	p := qemuQcow2LUKS(t, "e.qcow2")
	qemuIOQcow2(t, p, "write -P 0x5a 0 64k")
	// A cluster-misaligned write: QEMU writes the COW areas encrypted.
	qemuIOQcow2(t, p, "write -P 0x33 66536 3000")

	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, _, _, err := openQcow2(t, f, "abd"); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	_, h, c, err := openQcow2(t, f, "abc")
	if err != nil {
		t.Fatal(err)
	}

	read := func(off, n int64) []byte {
		b := make([]byte, n)
		if _, err := f.ReadAt(b, off); err != nil {
			t.Fatal(err)
		}
		return b
	}
	h0 := hostOffset(t, p, 0)
	got := read(h0, 64<<10)
	if err := c.DecryptSectors(got, uint64(h0)/SectorSize); err != nil {
		t.Fatal(err)
	}
	testkit.MustEqual(t, got, bytes.Repeat([]byte{0x5a}, 64<<10), "cluster 0 (IV = host sector)")
	// The guest sector is not the IV (h0 != 0: the cluster is past the
	// header and the LUKS area).
	wrong := read(h0, 512)
	if err := c.DecryptSectors(wrong, 0); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(wrong, bytes.Repeat([]byte{0x5a}, 512)) {
		t.Fatal("guest sector 0 decrypted cluster 0 too: the IV rule is not tested")
	}
	// Cluster 1: zeros around the write, encrypted like the data.
	h1 := hostOffset(t, p, 65536)
	got = read(h1, 64<<10)
	if err := c.DecryptSectors(got, uint64(h1)/SectorSize); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 64<<10)
	copy(want[1000:], bytes.Repeat([]byte{0x33}, 3000))
	testkit.MustEqual(t, got, want, "cluster 1 with its COW areas")

	// We write, QEMU reads: a new pattern in cluster 1, sectors 4..11.
	data := bytes.Repeat([]byte{0xe7}, 4096)
	if err := c.EncryptSectors(data, uint64(h1+2048)/SectorSize); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, h1+2048); err != nil {
		t.Fatal(err)
	}
	qemuIOQcow2(t, p, "read -P 0xe7 67584 4k")
	qemuIOQcow2(t, p, "read -P 0 65536 1000")

	// Our LUKS header area in place of QEMU's: QEMU opens it with the
	// same secret and its writes decrypt under our master key.
	_, area, ours := mustCreate(t, "abc", CreateOptions{})
	if uint64(len(area)) != h.PayloadBytes() {
		t.Fatalf("our area %d bytes, QEMU's %d", len(area), h.PayloadBytes())
	}
	qh, _, _, _ := openQcow2(t, f, "abc")
	if _, err := f.WriteAt(area, int64(qh.Crypto.Offset)); err != nil {
		t.Fatal(err)
	}
	qemuIOQcow2(t, p, "write -P 0x42 0 4k")
	got = read(h0, 4096)
	if err := ours.DecryptSectors(got, uint64(h0)/SectorSize); err != nil {
		t.Fatal(err)
	}
	testkit.MustEqual(t, got, bytes.Repeat([]byte{0x42}, 4096), "QEMU's write under our header")
	if _, _, _, err := openQcow2(t, f, "abc"); err != nil {
		t.Fatalf("our header after QEMU's write: %v", err)
	}
	testkit.MustRun(t, "qemu-img", "check", "--object", secretObj, "--image-opts",
		"driver=qcow2,encrypt.key-secret=sec0,file.filename="+p)
}

// QEMU (7.2) writes a compressed cluster of an encrypted qcow2 image
// unencrypted: the deflate stream is in the clear, and QEMU reads it
// back without decrypting. The engine must read such clusters the same
// way, and should not write them (docs/luks.md).
func TestInterop_QEMUCompressedIsPlain(t *testing.T) {
	p := qemuQcow2LUKS(t, "c.qcow2")
	qemuIOQcow2(t, p, "write -c -P 0x21 128k 64k")
	qemuIOQcow2(t, p, "read -P 0x21 128k 64k")
	b, qh := readQcow2(t, p)
	cb := uint64(qh.ClusterBits)
	l1 := be.Uint64(b[qh.L1TableOffset:]) & 0x00fffffffffffe00
	e := be.Uint64(b[l1+8*2:])
	if e&(1<<62) == 0 {
		t.Fatalf("cluster 2 is not compressed: %#x", e)
	}
	host := e & (1<<(62-(cb-8)) - 1)
	got, err := io.ReadAll(flate.NewReader(bytes.NewReader(b[host:])))
	if err != nil {
		t.Fatal(err)
	}
	testkit.MustEqual(t, got, bytes.Repeat([]byte{0x21}, 64<<10), "the compressed cluster, inflated without decrypting")
}
