package luks

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

const secretObj = "secret,id=sec0,data=abc"

// qemuIOSecret runs one qemu-io command on the file at path, opened with
// the --image-opts opts (which may name the secret sec0).
func qemuIOSecret(t *testing.T, opts, path, cmd string) string {
	t.Helper()
	return testkit.MustRun(t, "qemu-io", "--object", secretObj, "--image-opts",
		opts+",file.filename="+path, "-c", cmd)
}

func qemuIOLuks(t *testing.T, path, cmd string) string {
	t.Helper()
	return qemuIOSecret(t, "driver=luks,key-secret=sec0", path, cmd)
}

// openRaw parses and unlocks a raw LUKS volume file.
func openRaw(t *testing.T, path, pass string) (*Header, *Cipher, []byte, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h, err := ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	c, err := h.Unlock(f, []byte(pass))
	return h, c, b, err
}

// A raw volume qemu-img made unlocks with its secret, refuses another,
// and the payload QEMU wrote decrypts with IV = payload sector.
func TestInterop_QEMURawVolume(t *testing.T) {
	testkit.NeedQemu(t)
	p := filepath.Join(testkit.Dir(t), "x.luks")
	testkit.MustRun(t, "qemu-img", "create", "-f", "luks", "--object", secretObj,
		"-o", "key-secret=sec0,iter-time=10", p, "1M")
	qemuIOLuks(t, p, "write -P 0x5a 0 64k")
	qemuIOLuks(t, p, "write -P 0x33 197120 1536") // sectors 385..387

	if _, _, _, err := openRaw(t, p, "abd"); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	h, c, b, err := openRaw(t, p, "abc")
	if err != nil {
		t.Fatal(err)
	}
	if h.CipherName != "aes" || h.CipherMode != "xts-plain64" || h.HashSpec != "sha256" || h.KeyBytes != 64 {
		t.Fatalf("QEMU's defaults changed? %+v", h)
	}
	pay := b[h.PayloadBytes():]
	got := append([]byte(nil), pay[:64<<10]...)
	if err := c.DecryptSectors(got, 0); err != nil {
		t.Fatal(err)
	}
	testkit.MustEqual(t, got, bytes.Repeat([]byte{0x5a}, 64<<10), "payload 0..64k")
	got = append([]byte(nil), pay[197120:197120+1536]...)
	if err := c.DecryptSectors(got, 197120/SectorSize); err != nil {
		t.Fatal(err)
	}
	testkit.MustEqual(t, got, bytes.Repeat([]byte{0x33}, 1536), "payload sectors 385..387")
}

// ciphersToTry are the cipher settings the interop tests try: QEMU's
// default, each mode and IV generator, each cipher.
var ciphersToTry = []CreateOptions{
	{}, {Cipher: "aes-128", Hash: "sha1"}, {Mode: "cbc", IVGen: "essiv"}, {Cipher: "aes-192", Mode: "xts", IVGen: "essiv", IVHash: "sha256"},
	{Mode: "ecb", Hash: "ripemd160"}, {Mode: "ctr", IVGen: "plain"}, {Cipher: "twofish-256"}, {Cipher: "twofish-128", Mode: "cbc", IVGen: "essiv", Hash: "md5"},
	{Cipher: "cast5-128", Mode: "cbc", IVGen: "essiv", IVHash: "md5"}, {Cipher: "cast5-128", Mode: "ctr", IVHash: "sha512"},
	{Cipher: "serpent-256"}, {Cipher: "serpent-128", Mode: "cbc", IVGen: "essiv", IVHash: "md5"}, {Cipher: "serpent-192", Mode: "xts", Hash: "sha384"},
}

// A volume with our header: QEMU opens it, and each side reads what the
// other wrote (with each cipher setting).
func TestInterop_OurRawVolume(t *testing.T) {
	testkit.NeedQemu(t)
	for _, o := range ciphersToTry {
		h, area, c := mustCreate(t, "abc", o)
		p := filepath.Join(testkit.Dir(t), "ours.luks")
		const size = 1 << 20
		img := make([]byte, len(area)+size)
		copy(img, area)
		// Our data at payload 8k..12k.
		data := bytes.Repeat([]byte{0xc3}, 4096)
		if err := c.EncryptSectors(data, 8192/SectorSize); err != nil {
			t.Fatal(err)
		}
		copy(img[len(area)+8192:], data)
		if err := os.WriteFile(p, img, 0o644); err != nil {
			t.Fatal(err)
		}
		qemuIOLuks(t, p, "read -P 0xc3 8k 4k")
		qemuIOLuks(t, p, "write -P 0x77 512k 3584")

		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		got := append([]byte(nil), b[len(area)+512<<10:len(area)+512<<10+3584]...)
		if err := c.DecryptSectors(got, 512<<10/SectorSize); err != nil {
			t.Fatal(err)
		}
		testkit.MustEqual(t, got, bytes.Repeat([]byte{0x77}, 3584), "QEMU's write")
		if !bytes.Equal(b[:len(area)], area) {
			t.Fatalf("%+v: QEMU changed the header area", h)

		}
	}
}
