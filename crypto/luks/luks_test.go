package luks

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
)

// testRand is a deterministic source for Create in tests.
type testRand struct{ r *rand.ChaCha8 }

func newTestRand(seed byte) *testRand {
	var s [32]byte
	s[0] = seed
	return &testRand{rand.NewChaCha8(s)}
}

func (t *testRand) Read(p []byte) (int, error) { return t.r.Read(p) }

func mustCreate(t testing.TB, pass string, o CreateOptions) (*Header, []byte, *Cipher) {
	t.Helper()
	if o.Iterations == 0 {
		o.Iterations = 1000
	}
	if o.Rand == nil {
		o.Rand = newTestRand(1)
	}
	h, area, c, err := Create([]byte(pass), o)
	if err != nil {
		t.Fatal(err)
	}
	return h, area, c
}

func TestAFRoundTrip(t *testing.T) {
	for _, name := range []string{"sha1", "sha256", "sha512"} {
		hh, _ := lookupHash(name, "hash_spec")
		for _, n := range []int{16, 20, 32, 33, 64} {
			key := bytes.Repeat([]byte{0xa5}, n)
			for _, stripes := range []int{1, 2, 7, 4000} {
				split, err := afSplit(hh, key, stripes, newTestRand(2))
				if err != nil {
					t.Fatal(err)
				}
				if got := afMerge(hh, split, stripes); !bytes.Equal(got, key) {
					t.Fatalf("%s n=%d stripes=%d: merge gave %x", name, n, stripes, got)
				}
			}
		}
	}
}

func TestCreateUnlock(t *testing.T) {
	for _, o := range []CreateOptions{
		{}, {Cipher: "aes-128"}, {Cipher: "aes-192", Hash: "sha1"}, {Hash: "sha512", IVGen: "plain"},
		{Mode: "cbc", IVGen: "essiv"}, {Cipher: "aes-192", Mode: "xts"}, {Mode: "xts", IVGen: "essiv", Hash: "md5"}, {Mode: "ecb"},
		{Mode: "ctr", Hash: "ripemd160"}, {Cipher: "twofish-128"}, {Cipher: "twofish-256", Mode: "cbc", IVGen: "plain"},
		{Cipher: "cast5-128", Mode: "cbc", IVGen: "essiv", IVHash: "md5"}, {Cipher: "aes-128", Mode: "cbc", IVGen: "plain", IVHash: "sha1"},
	} {
		h, area, c := mustCreate(t, "abc", o)
		h2, err := ParseHeader(area)
		if err != nil {
			t.Fatalf("%+v: %v", o, err)
		}
		if *h2 != *h {
			t.Fatalf("%+v: parsed %+v, created %+v", o, h2, h)
		}
		if uint64(len(area)) != h.PayloadBytes() {
			t.Fatalf("area %d bytes, payload offset %d", len(area), h.PayloadBytes())
		}
		c2, err := h2.Unlock(bytes.NewReader(area), []byte("abc"))
		if err != nil {
			t.Fatalf("%+v: unlock: %v", o, err)
		}
		if _, err := h2.Unlock(bytes.NewReader(area), []byte("abd")); !errors.Is(err, ErrWrongKey) {
			t.Fatalf("%+v: wrong key gave %v", o, err)
		}
		// The unlocked cipher is the created one.
		buf := bytes.Repeat([]byte("0123456789abcdef"), 64)
		want := append([]byte(nil), buf...)
		if err := c.EncryptSectors(buf, 1<<33); err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(buf, want) {
			t.Fatal("encryption changed nothing")
		}
		if err := c2.DecryptSectors(buf, 1<<33); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, want) {
			t.Fatalf("%+v: decrypt(encrypt(x)) != x", o)
		}
	}
}

// QEMU's layout for aes-256-xts: slots at sectors 8, 512, 1016, ...,
// payload at 4040 (qemu-img info shows key offset 4096, 262144, ... and
// payload offset 2068480).
func TestCreateLayout(t *testing.T) {
	h, area, _ := mustCreate(t, "x", CreateOptions{})
	if h.PayloadOffset != 4040 || len(area) != 2068480 {
		t.Fatalf("payload offset %d sectors, area %d bytes", h.PayloadOffset, len(area))
	}
	for i, s := range h.Slots {
		if s.KeyMaterialOffset != uint32(8+504*i) || s.Stripes != Stripes {
			t.Fatalf("slot %d: %+v", i, s)
		}
		if (i == 0) != s.Enabled() {
			t.Fatalf("slot %d active %#x", i, s.Active)
		}
	}
	if h.CipherName != "aes" || h.CipherMode != "xts-plain64" || h.HashSpec != "sha256" || h.KeyBytes != 64 {
		t.Fatalf("algorithms %+v", h)
	}
}

func TestCreateMeasuredIterations(t *testing.T) {
	if testing.Short() {
		t.Skip("measures PBKDF2 for about a second")
	}
	h, area, _, err := Create([]byte("abc"), CreateOptions{IterTime: 10e6 /* 10 ms */})
	if err != nil {
		t.Fatal(err)
	}
	if h.MKDigestIterations < MinIterations || h.Slots[0].Iterations < MinIterations {
		t.Fatalf("iterations %d, %d", h.MKDigestIterations, h.Slots[0].Iterations)
	}
	if _, err := h.Unlock(bytes.NewReader(area), []byte("abc")); err != nil {
		t.Fatal(err)
	}
}

func TestParseErrors(t *testing.T) {
	_, area, _ := mustCreate(t, "abc", CreateOptions{})
	phdr := area[:HeaderSize]
	mut := func(f func(b []byte)) []byte {
		b := append([]byte(nil), phdr...)
		f(b)
		return b
	}
	put32 := func(b []byte, off int, v uint32) { be.PutUint32(b[off:], v) }
	for _, c := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrNotLUKS},
		{"magic", mut(func(b []byte) { b[4] = 0 }), ErrNotLUKS},
		{"qcow2", []byte("QFI\xfb\x00\x00\x00\x03"), ErrNotLUKS},
		{"version2", mut(func(b []byte) { b[7] = 2 }), ErrVersion},
		{"short", phdr[:300], ErrCorrupt},
		{"cipher", mut(func(b []byte) { copy(b[offCipherName:], "blowfish\x00") }), ErrUnsupported},
		{"mode", mut(func(b []byte) { copy(b[offCipherMode:], "lrw-plain64\x00") }), ErrUnsupported},
		{"ivgen", mut(func(b []byte) { copy(b[offCipherMode:], "xts-benbi\x00") }), ErrUnsupported},
		{"essiv", mut(func(b []byte) { copy(b[offCipherMode:], "xts-essiv:sha512\x00") }), ErrUnsupported}, // no AES-512
		{"essivnohash", mut(func(b []byte) { copy(b[offCipherMode:], "xts-essiv\x00") }), ErrCorrupt},
		{"ivhash", mut(func(b []byte) { copy(b[offCipherMode:], "xts-plain64:whirlpool\x00") }), ErrUnsupported},
		{"cast5xts", mut(func(b []byte) { copy(b[offCipherName:], "cast5\x00") }), ErrUnsupported},
		{"cast5keybytes", mut(func(b []byte) { copy(b[offCipherName:], "cast5\x00"); copy(b[offCipherMode:], "cbc-plain64\x00") }), ErrUnsupported},
		{"modeformat", mut(func(b []byte) { copy(b[offCipherMode:], "xts\x00") }), ErrCorrupt},
		{"hash", mut(func(b []byte) { copy(b[offHashSpec:], "whirlpool\x00") }), ErrUnsupported},
		{"keybytes", mut(func(b []byte) { put32(b, offKeyBytes, 17) }), ErrUnsupported},
		{"mkiter", mut(func(b []byte) { put32(b, offMKIter, 0) }), ErrCorrupt},
		{"stripes0", mut(func(b []byte) { put32(b, offSlots+3*slotSize+44, 0) }), ErrCorrupt},
		// QEMU refuses stripes other than 4000, disabled slots too
		// ("Keyslot 7 is corrupted (stripes 3999 != 4000)"), and key
		// material inside the 4 KiB header ("Keyslot 0 is
		// overlapping with the LUKS header"): review 53.
		{"stripes3999", mut(func(b []byte) { put32(b, offSlots+7*slotSize+44, 3999) }), ErrCorrupt},
		{"stripes1", mut(func(b []byte) { put32(b, offSlots+44, 1) }), ErrCorrupt},
		{"inheader", mut(func(b []byte) { put32(b, offSlots+40, 4) }), ErrCorrupt},
		{"state", mut(func(b []byte) { put32(b, offSlots+2*slotSize, 1) }), ErrCorrupt},
		{"overlap", mut(func(b []byte) { put32(b, offSlots+1*slotSize+40, 100) }), ErrCorrupt},
		{"payload", mut(func(b []byte) { put32(b, offPayload, 4000) }), ErrCorrupt},
		{"hugeactive", mut(func(b []byte) {
			put32(b, offPayload, 0xffffffff)
			for i := 1; i < NumKeySlots; i++ {
				put32(b, offSlots+i*slotSize+40, 0xfffffff0) // out of the way... overlapping each other
			}
		}), ErrCorrupt},
		{"hugestripes", mut(func(b []byte) {
			put32(b, offPayload, 0xffffffff)
			put32(b, offSlots+44, 1<<20)
			for i := 1; i < NumKeySlots; i++ {
				put32(b, offSlots+i*slotSize+40, 0x10000000+uint32(i)*0x1000000)
			}
		}), ErrCorrupt},
	} {
		_, err := ParseHeader(c.b)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
		var fe *FieldError
		if err != nil && !errors.As(err, &fe) {
			t.Errorf("%s: %T is not a *FieldError", c.name, err)
		}
	}
}

func TestUnlockShortArea(t *testing.T) {
	h, area, _ := mustCreate(t, "abc", CreateOptions{})
	_, err := h.Unlock(bytes.NewReader(area[:100000]), []byte("abc"))
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v", err)
	}
}

func TestSectorAlignment(t *testing.T) {
	_, _, c := mustCreate(t, "abc", CreateOptions{})
	if err := c.EncryptSectors(make([]byte, 100), 0); !errors.Is(err, ErrAlignment) {
		t.Fatal(err)
	}
	if err := c.DecryptSectors(make([]byte, 513), 0); !errors.Is(err, ErrAlignment) {
		t.Fatal(err)
	}
}

func FuzzParseHeader(f *testing.F) {
	_, area, _ := mustCreate(f, "abc", CreateOptions{})
	f.Add(area[:HeaderSize])
	f.Add(area[:HeaderSize-1])
	f.Add([]byte("LUKS\xba\xbe\x00\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("%T %v", err, err)
			}
			return
		}
		enc, err := h.Encode()
		if err != nil {
			// Only a name without its NUL (a full field) fails here.
			return
		}
		h2, err := ParseHeader(enc)
		if err != nil || *h2 != *h {
			t.Fatalf("re-parse: %v\n%+v\n%+v", err, h, h2)
		}
	})
}

// Create refuses what QEMU refuses, in its words, and 192-bit keys
// outside XTS, whose slots QEMU 7.2 aborts on.
func TestCreateRefusals(t *testing.T) {
	for _, c := range []struct {
		o    CreateOptions
		want string
	}{
		{CreateOptions{Cipher: "des"}, "Algorithm 'des' not supported"},
		{CreateOptions{Cipher: "blowfish-128"}, "Algorithm 'blowfish-128' not supported"},
		{CreateOptions{Cipher: "aes-100"}, "Algorithm 'aes-100' not supported"},
		{CreateOptions{Cipher: "aes-0128"}, "Algorithm 'aes-0128' not supported"},
		// QEMU's order: essiv's cipher before the mode, before ours.
		{CreateOptions{Cipher: "cast5-128", IVGen: "essiv"}, "Cipher cast5-128 not supported with essiv"},
		{CreateOptions{Cipher: "aes-192", Mode: "cbc", IVGen: "essiv", IVHash: "sha1"}, "No AES cipher with key size 20 available"},
		{CreateOptions{Cipher: "cast5-128"}, "Unsupported cipher mode xts"},
		{CreateOptions{Mode: "lrw"}, "Unsupported cipher mode lrw"},
		{CreateOptions{Mode: "cbc", IVGen: "essiv", IVHash: "sha1"}, "No AES cipher with key size 20 available"},
		{CreateOptions{Cipher: "cast5-128", Mode: "cbc", IVGen: "essiv"}, "Cipher cast5-128 not supported with essiv"},
		{CreateOptions{Cipher: "aes-192", Mode: "cbc"}, "aes-192 in cbc mode is not supported: its key material (96000 bytes)"},
		{CreateOptions{IVHash: "whirlpool"}, "Hash algorithm 'whirlpool' not supported"},
	} {
		_, _, _, err := Create([]byte("x"), c.o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want %q", c.o, err, c.want)
		}
	}
}

// SlotKey on a header built by hand checks it first: stripes 0 divided
// by zero in the merge (review of session 65).
func TestSlotKey_ValidatesHandBuiltHeader(t *testing.T) {
	h, area, _ := mustCreate(t, "abc", CreateOptions{})
	h.Slots[0].Stripes = 0
	if _, err := h.SlotKey(bytes.NewReader(area), 0, []byte("abc")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("stripes 0: %v, want ErrCorrupt", err)
	}
}
