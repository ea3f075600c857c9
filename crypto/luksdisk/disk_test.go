package luksdisk

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/crypto/luks"
)

// newDisk makes a LUKS volume of size bytes on a memdev, opened writable.
func newDisk(t *testing.T, size int64) (*Disk, *memdev.Dev) {
	t.Helper()
	h, area, _, err := luks.Create([]byte("pw"), luks.CreateOptions{Iterations: 1000})
	if err != nil {
		t.Fatal(err)
	}
	m := memdev.New(memdev.Options{})
	if err := m.Writev(0, [][]byte{area}); err != nil {
		t.Fatal(err)
	}
	if err := m.Truncate(int64(h.PayloadBytes()) + size); err != nil {
		t.Fatal(err)
	}
	d, err := Open(m, Options{Passphrase: []byte("pw"), Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	return d, m
}

// TestDisk_RandomAgainstModel writes and zeroes random unaligned ranges
// (as vectors) and reads them back against a plaintext model, which
// starts as the decryption of the file's zeros.
func TestDisk_RandomAgainstModel(t *testing.T) {
	const size = maxChunk + 64<<10 // requests cross the chunk boundary
	d, m := newDisk(t, size)
	model := make([]byte, size)
	if err := d.Readv(0, [][]byte{model}); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(model[:512], make([]byte, 512)) {
		t.Fatal("the file's zeros decrypted to zeros: not decrypting")
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		off := r.Int64N(size)
		n := min(r.Int64N(3*sector+maxChunk/8)+1, size-off)
		switch r.IntN(3) {
		case 0:
			if err := d.WriteZeroes(off, n, 0); err != nil {
				t.Fatal(err)
			}
			clear(model[off : off+n])
		default:
			b := make([]byte, n)
			for j := range b {
				b[j] = byte(i + j)
			}
			cut := r.Int64N(n + 1)
			if err := d.Writev(off, [][]byte{b[:cut], {}, b[cut:]}); err != nil {
				t.Fatal(err)
			}
			copy(model[off:], b)
		}
		roff := r.Int64N(size)
		got := make([]byte, min(r.Int64N(maxChunk/4)+1, size-roff)+100) // past the end too
		if err := d.Readv(roff, [][]byte{got}); err != nil {
			t.Fatal(err)
		}
		want := append(append([]byte(nil), model[roff:]...), make([]byte, 100)...)[:len(got)]
		if !bytes.Equal(got, want) {
			t.Fatalf("step %d: read %d+%d differs from the model", i, roff, len(got))
		}
	}
	// One request longer than a chunk, unaligned at both ends, and the
	// whole disk read back in one request.
	big := make([]byte, size-300)
	for j := range big {
		big[j] = byte(j * 7)
	}
	if err := d.Writev(100, [][]byte{big}); err != nil {
		t.Fatal(err)
	}
	copy(model[100:], big)
	all := make([]byte, size)
	if err := d.Readv(0, [][]byte{all}); err != nil || !bytes.Equal(all, model) {
		t.Fatalf("long request: %v, or the bytes differ", err)
	}
	// The file holds ciphertext (LV2): no sector of the model in clear.
	raw := make([]byte, size)
	if err := m.Readv(d.PayloadOffset(), [][]byte{raw}); err != nil {
		t.Fatal(err)
	}
	for s := 0; s < size; s += sector {
		if bytes.Equal(raw[s:s+sector], model[s:s+sector]) {
			t.Fatalf("sector %d is stored in clear", s/sector)
		}
	}
}

// TestDisk_ConcurrentPartialWrites: many writers each set their own bytes
// of the same few sectors; none is lost (LV2's range lock).
func TestDisk_ConcurrentPartialWrites(t *testing.T) {
	d, _ := newDisk(t, 8*sector)
	const writers = 64
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range 8 { // byte w*8+k of each of the 8 sectors... spread over them
				off := int64(k*sector + w*7)
				if err := d.Writev(off, [][]byte{{byte(w + 1), byte(w + 1), byte(w + 1), byte(w + 1), byte(w + 1), byte(w + 1), byte(w + 1)}}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	got := make([]byte, 8*sector)
	if err := d.Readv(0, [][]byte{got}); err != nil {
		t.Fatal(err)
	}
	for k := range 8 {
		for w := range writers {
			for j := range 7 {
				if b := got[k*sector+w*7+j]; b != byte(w+1) {
					t.Fatalf("sector %d byte %d: %d, want %d (a partial write was lost)", k, w*7+j, b, w+1)
				}
			}
		}
	}
}

func TestDisk_NoKeyAndReadOnly(t *testing.T) {
	d, m := newDisk(t, 4096)
	if err := d.Writev(0, [][]byte{bytes.Repeat([]byte{9}, 4096)}); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(m, Options{}); !errors.Is(err, ErrNoKey) {
		t.Fatalf("no passphrase: %v, want ErrNoKey", err)
	}
	if _, err := Open(m, Options{Passphrase: []byte("nope")}); !errors.Is(err, luks.ErrWrongKey) {
		t.Fatalf("wrong passphrase: %v, want ErrWrongKey", err)
	}
	nk, err := Open(m, Options{NoKey: true})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := nk.Size(); err != nil || n != 4096 {
		t.Fatalf("size %d, %v", n, err)
	}
	if err := nk.Readv(0, [][]byte{make([]byte, 512)}); !errors.Is(err, ErrNoKey) {
		t.Fatalf("read without the key: %v", err)
	}
	ro, err := Open(m, Options{Passphrase: []byte("pw")})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4096)
	if err := ro.Readv(0, [][]byte{got}); err != nil || !bytes.Equal(got, bytes.Repeat([]byte{9}, 4096)) {
		t.Fatalf("read-only read: %v", err)
	}
	for _, err := range []error{ro.Writev(0, [][]byte{{1}}), ro.WriteZeroes(0, 512, 0), ro.Truncate(0), ro.Discard(0, 512)} {
		if !errors.Is(err, ErrReadOnly) {
			t.Fatalf("read-only write: %v", err)
		}
	}
	if err := d.WriteZeroes(0, 512, block.Allocate); !errors.Is(err, block.ErrNotSupported) {
		t.Fatalf("efficient zero: %v, want ErrNotSupported", err)
	}
}

// TestDisk_GrowKeepsZeros: a write past the end and a Truncate to a size
// inside a sector leave every byte between as zeros, the kept bytes as
// they were (the block.Device contract; LV6).
func TestDisk_GrowKeepsZeros(t *testing.T) {
	d, _ := newDisk(t, 0)
	data := bytes.Repeat([]byte{0x5c}, 1000)
	if err := d.Writev(0, [][]byte{data}); err != nil {
		t.Fatal(err)
	}
	if err := d.Writev(10000, [][]byte{{1, 2, 3}}); err != nil { // past the end: a gap
		t.Fatal(err)
	}
	want := make([]byte, 10003)
	copy(want, data)
	copy(want[10000:], []byte{1, 2, 3})
	check := func(what string, n int) {
		t.Helper()
		got := make([]byte, n)
		if err := d.Readv(0, [][]byte{got}); err != nil || !bytes.Equal(got, want[:n]) {
			t.Fatalf("%s: %v, or the bytes differ from the model", what, err)
		}
	}
	check("gap", len(want))
	if err := d.Truncate(700); err != nil { // inside a sector
		t.Fatal(err)
	}
	clear(want[700:])
	check("shrunk into a sector", 700)
	if err := d.Truncate(5000); err != nil {
		t.Fatal(err)
	}
	check("grown again", 5000)
}
