package qcow2

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/crypto/luks"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

const cryptPass = "abc"

// cryptCreate makes a LUKS-encrypted image at p (fixed PBKDF2
// iterations: fast to unlock).
func cryptCreate(t testing.TB, p string, co CreateOptions) {
	t.Helper()
	co.Encrypt.Format = "luks"
	co.Encrypt.Passphrase = []byte(cryptPass)
	co.Encrypt.Iterations = 1000
	if err := Create(p, co); err != nil {
		t.Fatalf("create: %v", err)
	}
}

func cryptOpen(t testing.TB, p string, o Options) *Image {
	t.Helper()
	o.Passphrase = []byte(cryptPass)
	im, err := Open(p, o)
	if err != nil {
		t.Fatalf("open %s: %v", p, err)
	}
	return im
}

// qemuCrypt runs a qemu-io or qemu-img command on the encrypted image p;
// args go before the image options.
func qemuCrypt(t testing.TB, tool, p string, args ...string) string {
	t.Helper()
	return testkit.MustRun(t, tool, append(args, testkit.QemuSecretArgs(p, cryptPass)...)...)
}

// qemuCryptRaw is QEMU's plaintext of the encrypted image p.
func qemuCryptRaw(t testing.TB, p string) []byte {
	t.Helper()
	raw := filepath.Join(t.TempDir(), filepath.Base(p)+".raw")
	testkit.MustRun(t, "qemu-img", append(append([]string{"convert"}, testkit.QemuSecretArgs(p, cryptPass)...), "-O", "raw", raw)...)
	b, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// cryptCheck runs our Check (with the key) and qemu-img check (with the
// secret) on the closed encrypted image p.
func cryptCheck(t testing.TB, p string) {
	t.Helper()
	im := cryptOpen(t, p, Options{ReadOnly: true})
	r, err := im.Check(CheckOptions{})
	im.Close()
	if err != nil || !r.Clean() {
		t.Fatalf("check %s: %v %d corruptions, %d leaks: %v", p, err, r.Corruptions, r.Leaks, head(r.Messages, 10))
	}
	testkit.QemuCheckSecret(t, p, cryptPass)
}

// The acceptance case, our side: an image we create and write with
// cluster-misaligned writes (QEMU's iotest 134) reads back through
// qemu-io and qemu-img with the same secret, and both checks are clean.
func TestCrypt_QEMUReadsWhatWeWrite(t *testing.T) {
	t.Parallel()
	testkit.NeedQemu(t)
	for _, cs := range []int{64 << 10, 4096, 512} {
		for _, prealloc := range []string{"on", "off"} {
			t.Run(fmt.Sprintf("c%d-prealloc-%s", cs, prealloc), func(t *testing.T) {
				const size = 4 << 20
				p := filepath.Join(testkit.Dir(t), "e.qcow2")
				cryptCreate(t, p, CreateOptions{Size: size, ClusterSize: cs})
				im := cryptOpen(t, p, Options{Prealloc: prealloc})
				shadow := make([]byte, size)
				write := func(off int64, b []byte) {
					t.Helper()
					if _, err := im.WriteAt(b, off); err != nil {
						t.Fatalf("write %d+%d: %v", off, len(b), err)
					}
					copy(shadow[off:], b)
				}
				write(1536, bytes.Repeat([]byte{0x5a}, 5000))
				write(66536, bytes.Repeat([]byte{0x33}, 3000))
				write(200000, pattern(150000, 1)) // spans clusters
				write(1537, []byte{1, 2, 3})      // inside a sector, in place
				write(70000, pattern(1, 9))       // one byte
				rng := testkit.Rand(t)
				for i := range 100 {
					n := int64(1 + rng.IntN(70000))
					off := 1<<20 + rng.Int64N(size-1<<20-n)
					write(off, pattern(int(n), byte(i)))
				}
				// Zero writes: a partial misaligned one, whole clusters.
				if err := im.WriteZeroes(3000, 777, 0); err != nil {
					t.Fatal(err)
				}
				clear(shadow[3000 : 3000+777])
				zc := int64(2 * cs)
				if err := im.WriteZeroes(zc, int64(cs), 0); err != nil {
					t.Fatal(err)
				}
				clear(shadow[zc : zc+int64(cs)])
				if err := im.Discard(size-int64(4*cs), int64(2*cs)); err != nil {
					t.Fatal(err)
				}
				clear(shadow[size-int64(4*cs) : size-int64(2*cs)])
				testkit.MustEqual(t, testkit.ReadAll(t, im), shadow, "our read back")
				if err := im.Close(); err != nil {
					t.Fatal(err)
				}
				cryptCheck(t, p)
				qemuCrypt(t, "qemu-io", p, "-c", "read -P 0x5a 1540 1460", "-c", "read -P 0x5a 3777 2759", "-c", "read -P 0x33 66536 3000")
				testkit.MustEqual(t, qemuCryptRaw(t, p), shadow, "QEMU's read")
			})
		}
	}
}

// The acceptance case, QEMU's side: an image qemu-img creates and
// qemu-io writes (misaligned, zeros, compressed) reads the same through
// us; we write into it (in place, COW from QEMU's clusters, misaligned)
// and qemu-io reads that back.
func TestCrypt_WeReadWhatQEMUWrites(t *testing.T) {
	t.Parallel()
	testkit.NeedQemu(t)
	p := filepath.Join(testkit.Dir(t), "q.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-f", "qcow2", "--object", "secret,id=sec0,data="+cryptPass,
		"-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10", p, "4M")
	for _, c := range []string{
		"write -P 0x5a 1536 5000",
		"write -P 0x33 66536 3000",
		"write -P 0x44 130000 200000",
		"write -z 400k 64k",
		"write -c -P 0x21 1M 64k", // compressed: in the clear (docs/luks.md)
		"write -P 0x66 3M 64k",
	} {
		qemuCrypt(t, "qemu-io", p, "-c", c)
	}
	want := qemuCryptRaw(t, p)
	im := cryptOpen(t, p, Options{})
	testkit.MustEqual(t, testkit.ReadAll(t, im), want, "our read of QEMU's image")
	write := func(off int64, b []byte) {
		t.Helper()
		if _, err := im.WriteAt(b, off); err != nil {
			t.Fatalf("write %d+%d: %v", off, len(b), err)
		}
		copy(want[off:], b)
	}
	write(1000, bytes.Repeat([]byte{0x77}, 300))      // in place, inside sectors
	write(1<<20+100, bytes.Repeat([]byte{0x78}, 999)) // COW from the compressed cluster
	write(3<<20+65000, bytes.Repeat([]byte{0x79}, 2000))
	write(2<<20+12345, bytes.Repeat([]byte{0x7a}, 7000)) // new cluster, zero COW
	testkit.MustEqual(t, testkit.ReadAll(t, im), want, "our read after our writes")
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	cryptCheck(t, p)
	qemuCrypt(t, "qemu-io", p, "-c", "read -P 0x78 1048676 999", "-c", "read -P 0x21 1049675 64437")
	testkit.MustEqual(t, qemuCryptRaw(t, p), want, "QEMU's read after our writes")
}

// A wrong passphrase is ErrWrongKey and a missing one ErrNoKey; neither
// changes a byte of the image. NoKey opens the metadata only.
func TestCrypt_WrongKey(t *testing.T) {
	p := filepath.Join(testkit.Dir(t), "k.qcow2")
	cryptCreate(t, p, CreateOptions{Size: 1 << 20, LazyRefcounts: true})
	im := cryptOpen(t, p, Options{})
	if _, err := im.WriteAt([]byte("hello"), 12345); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(p, Options{Passphrase: []byte("abd")}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("wrong key: %v, want ErrWrongKey", err)
	}
	if _, err := Open(p, Options{}); !errors.Is(err, ErrNoKey) {
		t.Fatalf("no key: %v, want ErrNoKey", err)
	}
	if _, err := Open(p, Options{Repair: true}); !errors.Is(err, ErrNoKey) {
		t.Fatalf("no key, repair: %v, want ErrNoKey", err)
	}
	after, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatalf("a failed open changed the image (first difference at %d)", testkit.FirstDiff(before, after))
	}
	ro, err := Open(p, Options{ReadOnly: true, NoKey: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if !ro.Encrypted() {
		t.Fatal("Encrypted() is false")
	}
	if _, err := ro.ReadAt(make([]byte, 10), 12345); !errors.Is(err, ErrNoKey) {
		t.Fatalf("read without key: %v, want ErrNoKey", err)
	}
	if r, err := ro.Check(CheckOptions{}); err != nil || !r.Clean() {
		t.Fatalf("check without key: %v %+v", err, r)
	}
	testkit.QemuCheckSecret(t, p, cryptPass)
}

// What the engine refuses on encrypted images, with clear errors.
func TestCrypt_CreateRefusals(t *testing.T) {
	dir := testkit.Dir(t)
	for _, tc := range []struct {
		name string
		co   CreateOptions
	}{
		{"prealloc-metadata", CreateOptions{Preallocation: PreallocMetadata}},
		{"prealloc-full", CreateOptions{Preallocation: PreallocFull}},
	} {
		co := tc.co
		co.Size = 1 << 20
		co.Encrypt = EncryptOptions{Format: "luks", Passphrase: []byte(cryptPass), Iterations: 1000}
		p := filepath.Join(dir, tc.name+".qcow2")
		if err := Create(p, co); !errors.Is(err, ErrUnsupported) {
			t.Errorf("%s: %v, want ErrUnsupported", tc.name, err)
		}
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s: the file was created", tc.name)
		}
	}
	// The legacy method: encryption=on is encrypt.format=aes (QEMU's
	// alias), which takes no LUKS option.
	var co CreateOptions
	if err := co.Set("encryption", "on"); err != nil || co.Encrypt.Format != "aes" {
		t.Errorf("encryption=on: %v, format %q", err, co.Encrypt.Format)
	}
	co = CreateOptions{Size: 1 << 20, Encrypt: EncryptOptions{Format: "aes", Passphrase: []byte(cryptPass), HashAlg: "sha1"}}
	if err := Create(filepath.Join(dir, "aes.qcow2"), co); err == nil || err.Error() != "Parameter 'encrypt.hash-alg' is unexpected" {
		t.Errorf("aes with a LUKS option: %v", err)
	}
	co = CreateOptions{Size: 1 << 20}
	for _, kv := range [][2]string{{"encrypt.format", "luks"}, {"encrypt.key-secret", "sec0"}} {
		if err := co.Set(kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := Create(filepath.Join(dir, "nokey.qcow2"), co); err == nil {
		t.Error("create without a passphrase succeeded")
	}
}

// Writers of disjoint bytes inside the same sectors, at once: the
// read-modify-write of partial sectors loses none of them.
func TestCrypt_ConcurrentPartialSectors(t *testing.T) {
	p := filepath.Join(testkit.Dir(t), "c.qcow2")
	cryptCreate(t, p, CreateOptions{Size: 1 << 20, ClusterSize: 4096})
	im := cryptOpen(t, p, Options{})
	const writers, span = 8, 3 * 4096
	want := make([]byte, 1<<20)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for off := int64(w * 37); off < span; off += writers * 37 {
				b := bytes.Repeat([]byte{byte(w + 1)}, 37)
				if _, err := im.WriteAt(b, 1000+off); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		for off := int64(w * 37); off < span; off += writers * 37 {
			copy(want[1000+off:1000+off+37], bytes.Repeat([]byte{byte(w + 1)}, 37))
		}
	}
	wg.Wait()
	testkit.MustEqual(t, testkit.ReadAll(t, im), want, "concurrent partial-sector writes")
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	cryptCheck(t, p)
}

// An encrypted overlay over a plain backing file: COW areas come from
// the backing file's plaintext and are written encrypted.
func TestCrypt_BackingCOW(t *testing.T) {
	testkit.NeedQemu(t)
	dir := testkit.Dir(t)
	base := filepath.Join(dir, "base.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-f", "qcow2", base, "1M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 0x11 0 1M", base)
	p := filepath.Join(dir, "top.qcow2")
	cryptCreate(t, p, CreateOptions{BackingFile: "base.qcow2", BackingFormat: "qcow2"})
	im := cryptOpen(t, p, Options{})
	want := bytes.Repeat([]byte{0x11}, 1<<20)
	b := bytes.Repeat([]byte{0x22}, 3000)
	if _, err := im.WriteAt(b, 70001); err != nil {
		t.Fatal(err)
	}
	copy(want[70001:], b)
	testkit.MustEqual(t, testkit.ReadAll(t, im), want, "our read")
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	cryptCheck(t, p)
	qemuCrypt(t, "qemu-io", p, "-c", "read -P 0x11 65536 4465", "-c", "read -P 0x22 70001 3000", "-c", "read -P 0x11 73001 58071")
	_ = block.ErrClosed
}

// Crash clones of encrypted images (crash_test.go's workload, with its
// misaligned writes, zero writes and discards): every clone opens with
// the key, checks without corruption, and the data flushed before the
// crash decrypts as it was. A torn COW leaves either the old entry or a
// fully written encrypted cluster, never a linked cluster whose COW
// areas are zeros on disk (which would decrypt as garbage).
func TestCrash_ClonesEncrypted(t *testing.T) {
	t.Parallel()
	points := crashPoints(60, 25)
	enc := EncryptOptions{Format: "luks", Passphrase: []byte(cryptPass), Iterations: 1000}
	o := Options{Passphrase: []byte(cryptPass)}
	cases := []struct {
		name    string
		co      CreateOptions
		o       Options
		backing bool
	}{
		{"luks", CreateOptions{ClusterSize: 4096, Encrypt: enc}, o, false},
		{"luks-64k", CreateOptions{Encrypt: enc}, o, false},
		{"luks-backing", CreateOptions{ClusterSize: 4096, Encrypt: enc}, o, true},
		{"luks-lazy", CreateOptions{ClusterSize: 4096, LazyRefcounts: true, Encrypt: enc}, o, false},
		{"luks-xl2", CreateOptions{ClusterSize: 16 << 10, ExtendedL2: true, Encrypt: enc}, o, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, bad := runCrash(t, tc.co, tc.o, tc.backing, points/len(cases)+1); bad > 0 {
				t.Errorf("%d crash points failed", bad)
			}
		})
	}
}

// Hostile encryption headers: an area over the L1 table, an area
// without a LUKS header, a LUKS header with a bad magic. Each is a
// typed error, and the image is left as it was.
func TestCrypt_HostileHeader(t *testing.T) {
	dir := testkit.Dir(t)
	p := filepath.Join(dir, "h.qcow2")
	cryptCreate(t, p, CreateOptions{Size: 1 << 20})
	orig, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	h, err := format.ParseHeader(orig)
	if err != nil {
		t.Fatal(err)
	}
	area := h.Crypto
	for _, tc := range []struct {
		name  string
		patch func(b []byte)
		want  error
	}{
		{"over-l1", func(b []byte) {
			h2 := h
			h2.SetCrypto(format.CryptoHeader{Offset: h.L1TableOffset, Length: area.Length})
			hb, err := h2.Encode()
			if err != nil {
				t.Fatal(err)
			}
			copy(b, hb)
		}, ErrCorrupt},
		{"not-luks", func(b []byte) { b[area.Offset] ^= 0xff }, luks.ErrNotLUKS},
		{"not-luks-typed", func(b []byte) { b[area.Offset] ^= 0xff }, ErrCorrupt},
		{"past-eof", func(b []byte) {
			h2 := h
			h2.SetCrypto(format.CryptoHeader{Offset: 1 << 40, Length: area.Length})
			hb, _ := h2.Encode()
			copy(b, hb)
		}, ErrCorrupt},
		{"slot-garbage", func(b []byte) {
			for i := uint64(4096); i < 8192; i++ {
				b[uint64(area.Offset)+i] ^= 0x5a
			}
		}, ErrWrongKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := append([]byte(nil), orig...)
			tc.patch(b)
			q := filepath.Join(dir, tc.name+".qcow2")
			if err := os.WriteFile(q, b, 0o644); err != nil {
				t.Fatal(err)
			}
			for _, o := range []Options{{Passphrase: []byte(cryptPass)}, {Passphrase: []byte(cryptPass), Repair: true}} {
				if _, err := Open(q, o); !errors.Is(err, tc.want) {
					t.Errorf("open %+v: %v, want %v", o, err, tc.want)
				}
			}
			after, _ := os.ReadFile(q)
			if !bytes.Equal(after, b) {
				t.Error("a failed open changed the image")
			}
		})
	}
}

// A LUKS image downgrades to compat=0.10 (a version 2 image with
// crypt_method 2, as QEMU 7.2 makes it; qimg refused it, and could not
// open one), its zero clusters becoming encrypted zeros; it upgrades
// back, and a version 2 LUKS image is created as qemu-img creates it.
// QEMU reads each.
func TestCrypt_Version2(t *testing.T) {
	testkit.NeedQemu(t)
	dir := testkit.Dir(t)
	p := filepath.Join(dir, "d.qcow2")
	cryptCreate(t, p, CreateOptions{Size: 1 << 20})
	im := cryptOpen(t, p, Options{})
	want := make([]byte, 1<<20)
	copy(want[4096:], bytes.Repeat([]byte{0x42}, 3000))
	if _, err := im.WriteAt(want[4096:7096], 4096); err != nil {
		t.Fatal(err)
	}
	if _, err := im.WriteAt(bytes.Repeat([]byte{7}, 64<<10), 128<<10); err != nil {
		t.Fatal(err)
	}
	if err := im.WriteZeroes(128<<10, 64<<10, 0); err != nil { // a zero cluster
		t.Fatal(err)
	}
	if err := im.ExpandZeroClusters(); err != nil { // as qimg amend
		t.Fatal(err)
	}
	if err := im.SetVersion(2); err != nil {
		t.Fatalf("downgrade: %v", err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	cryptCheck(t, p)
	if !strings.Contains(testkit.MustRun(t, "qemu-img", "info", p), "compat: 0.10") {
		t.Fatal("not downgraded")
	}
	if got := qemuCryptRaw(t, p); !bytes.Equal(got, want) {
		t.Fatal("QEMU reads other bytes after the downgrade")
	}
	im = cryptOpen(t, p, Options{})
	if err := im.SetVersion(3); err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	cryptCheck(t, p)
	if got := qemuCryptRaw(t, p); !bytes.Equal(got, want) {
		t.Fatal("QEMU reads other bytes after the upgrade")
	}
	v2 := filepath.Join(dir, "v2.qcow2")
	cryptCreate(t, v2, CreateOptions{Size: 1 << 20, Compat: "0.10"})
	im = cryptOpen(t, v2, Options{})
	if _, err := im.WriteAt(want[4096:7096], 4096); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	cryptCheck(t, v2)
	if got := qemuCryptRaw(t, v2); !bytes.Equal(got, want) {
		t.Fatal("QEMU reads other bytes of the version 2 image")
	}
}

// Compressed writes are refused on encrypted images: QEMU writes them
// unencrypted (crypto/luks pins that), which would leak the guest data.
func TestCrypt_RefusesCompressedWrites(t *testing.T) {
	p := filepath.Join(testkit.Dir(t), "z.qcow2")
	cryptCreate(t, p, CreateOptions{Size: 1 << 20})
	im := cryptOpen(t, p, Options{})
	if err := im.WriteCompressed(0, make([]byte, 64<<10)); !errors.Is(err, ErrUnsupported) {
		t.Errorf("compressed write: %v, want ErrUnsupported", err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	cryptCheck(t, p)
}

// Extended L2 entries with encryption (QEMU supports both together):
// subcluster COW ranges are written as ciphertext; QEMU reads ours and
// we read QEMU's, with misaligned writes over subclusters, a backing-free
// image and zero writes.
func TestCrypt_ExtendedL2(t *testing.T) {
	t.Parallel()
	testkit.NeedQemu(t)
	dir := testkit.Dir(t)
	const size = 4 << 20
	writes := [][2]int64{{1536, 5000}, {66536, 3000}, {130000, 200000}, {1 << 20, 512}, {1<<20 + 4096 + 100, 7}, {3<<20 + 5, 70000}}
	// Ours, then QEMU reads.
	p := filepath.Join(dir, "ours.qcow2")
	cryptCreate(t, p, CreateOptions{Size: size, ClusterSize: 128 << 10, ExtendedL2: true})
	im := cryptOpen(t, p, Options{})
	want := make([]byte, size)
	for i, w := range writes {
		b := pattern(int(w[1]), byte(i+1))
		if _, err := im.WriteAt(b, w[0]); err != nil {
			t.Fatal(err)
		}
		copy(want[w[0]:], b)
	}
	if err := im.WriteZeroes(2000, 300, 0); err != nil {
		t.Fatal(err)
	}
	clear(want[2000:2300])
	testkit.MustEqual(t, testkit.ReadAll(t, im), want, "our read")
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	cryptCheck(t, p)
	testkit.MustEqual(t, qemuCryptRaw(t, p), want, "QEMU's read of ours")

	// QEMU's, then ours over it.
	q := filepath.Join(dir, "qemu.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-f", "qcow2", "--object", "secret,id=sec0,data="+cryptPass,
		"-o", "extended_l2=on,cluster_size=128k,encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10", q, "4M")
	qemuCrypt(t, "qemu-io", q, "-c", "write -P 0x11 4k 8k", "-c", "write -P 0x22 200000 3000", "-c", "write -z 1M 64k")
	want = qemuCryptRaw(t, q)
	im = cryptOpen(t, q, Options{})
	testkit.MustEqual(t, testkit.ReadAll(t, im), want, "our read of QEMU's")
	for i, w := range writes {
		b := pattern(int(w[1]), byte(i+0x40))
		if _, err := im.WriteAt(b, w[0]); err != nil {
			t.Fatal(err)
		}
		copy(want[w[0]:], b)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	cryptCheck(t, q)
	testkit.MustEqual(t, qemuCryptRaw(t, q), want, "QEMU's read of ours over QEMU's")
}

// A partial-sector write racing a zero write or a discard of its cluster
// never puts back old bytes outside its own range: the zeroing holds the
// sectors (holdSectors), so the write's read-merge-write is wholly before
// or wholly after it. Either order leaves no old byte in the sector.
func TestCrypt_PartialSectorVsZero(t *testing.T) {
	p := filepath.Join(testkit.Dir(t), "z.qcow2")
	cryptCreate(t, p, CreateOptions{Size: 1 << 20, ClusterSize: 4096})
	im := cryptOpen(t, p, Options{})
	old := bytes.Repeat([]byte{0xaa}, 4096)
	rounds := 200
	if testing.Short() {
		rounds = 40
	}
	for i := range rounds {
		c := int64(i%64) * 4096
		if _, err := im.WriteAt(old, c); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			if _, err := im.WriteAt(bytes.Repeat([]byte{0x55}, 10), c+100); err != nil {
				t.Error(err)
			}
		})
		wg.Go(func() {
			var err error
			if i%2 == 0 {
				err = im.WriteZeroes(c, 4096, block.MayUnmap)
			} else {
				err = im.Discard(c, 4096)
			}
			if err != nil {
				t.Error(err)
			}
		})
		wg.Wait()
		got := make([]byte, 512)
		if _, err := im.ReadAt(got, c); err != nil {
			t.Fatal(err)
		}
		if bytes.IndexByte(got, 0xaa) >= 0 {
			t.Fatalf("round %d: old bytes came back after the zeroing: % x", i, got[:128])
		}
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	cryptCheck(t, p)
}

// data_file_raw with encryption is refused before any file is made: the
// raw data file's clusters are linked over its zeros, which read back
// through the cipher as garbage (QEMU 7.2 makes that image). It used to
// fail late, naming a missing key-secret that was given, and leave the
// image and the data file behind; a failure after the data file was
// made (a refusal by luks.Create) left it behind too (review 53).
func TestCrypt_DataFileCreateRefusals(t *testing.T) {
	dir := testkit.Dir(t)
	for _, c := range []struct {
		name string
		co   CreateOptions
	}{
		{"raw", CreateOptions{DataFileRaw: true}},
		{"cast5xts", CreateOptions{Encrypt: EncryptOptions{CipherAlg: "cast5-128"}}}, // refused before any file
		{"late", CreateOptions{Encrypt: EncryptOptions{IterTime: -1}}},               // refused by luks.Create
	} {
		p := filepath.Join(dir, c.name+".qcow2")
		df := filepath.Join(dir, c.name+".raw")
		co := c.co
		co.Size, co.DataFile = 1<<20, df
		co.Encrypt.Format, co.Encrypt.Passphrase, co.Encrypt.Iterations = "luks", []byte(cryptPass), 1000
		err := Create(p, co)
		if err == nil || errors.Is(err, ErrNoKey) {
			t.Errorf("%s: Create: %v, want a refusal", c.name, err)
		}
		for _, f := range []string{p, df} {
			if _, serr := os.Stat(f); serr == nil {
				t.Errorf("%s: the failed Create left %s behind", c.name, filepath.Base(f))
			}
		}
	}
	// A data file that was there before stays.
	df := filepath.Join(dir, "old.raw")
	if err := os.WriteFile(df, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	co := CreateOptions{Size: 1 << 20, DataFile: df, Encrypt: EncryptOptions{Format: "luks", Passphrase: []byte(cryptPass), IterTime: -1}}
	if err := Create(filepath.Join(dir, "old.qcow2"), co); err == nil {
		t.Fatal("Create with a negative iter-time succeeded")
	}
	if _, err := os.Stat(df); err != nil {
		t.Errorf("a failed Create removed a data file it did not make: %v", err)
	}
}

// QEMU makes an encrypted image with a raw data file; growing it would
// link the new clusters over the data file's zeros (DF6), garbage
// through the cipher: refused, the image unchanged (review 53).
func TestCrypt_RawDataFileGrowRefused(t *testing.T) {
	testkit.NeedQemu(t)
	dir := testkit.Dir(t)
	p, df := filepath.Join(dir, "q.qcow2"), filepath.Join(dir, "q.raw")
	testkit.MustRun(t, "qemu-img", "create", "-f", "qcow2", "--object", "secret,id=sec0,data="+cryptPass,
		"-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10,data_file="+df+",data_file_raw=on", p, "1M")
	im := cryptOpen(t, p, Options{})
	defer im.Close()
	if err := im.Truncate(2 << 20); !errors.Is(err, ErrUnsupported) {
		t.Errorf("growing an encrypted image with a raw data file: %v, want ErrUnsupported", err)
	}
	if n, _ := im.Size(); n != 1<<20 {
		t.Errorf("size %d after the refusal, want 1 MiB", n)
	}
}
