package luksdisk

import (
	"errors"
	"testing"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/crypto/luks"
)

// FuzzOpen opens hostile files as LUKS volumes for their metadata (what
// qimg info does with a probed volume): never a panic, a clear error or
// a disk whose size is the file's less the payload, which refuses I/O
// without the key (LV4). Unlocking is not fuzzed: a hostile header's
// PBKDF2 iteration count makes any open as slow as it says, in QEMU too.
func FuzzOpen(f *testing.F) {
	_, area, _, err := luks.Create([]byte("pw"), luks.CreateOptions{Iterations: 1000})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(area[:luks.HeaderSize], int64(len(area)+4096))
	f.Add([]byte("LUKS\xba\xbe\x00\x02"), int64(4096))
	f.Add([]byte{}, int64(0))
	f.Fuzz(func(t *testing.T, head []byte, size int64) {
		size = min(max(size, 0), 64<<20)
		m := memdev.New(memdev.Options{})
		if err := m.Writev(0, [][]byte{head}); err != nil {
			t.Fatal(err)
		}
		if err := m.Truncate(max(size, int64(len(head)))); err != nil {
			t.Fatal(err)
		}
		d, err := Open(m, Options{NoKey: true})
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an empty error")
			}
			return
		}
		n, err := d.Size()
		file, _ := m.Size()
		switch {
		case file < d.PayloadOffset():
			if !errors.Is(err, ErrShortFile) {
				t.Fatalf("file %d bytes, payload at %d: size %d, %v", file, d.PayloadOffset(), n, err)
			}
		case err != nil || n != roundUp(file-d.PayloadOffset(), sector):
			t.Fatalf("file %d bytes, payload at %d: size %d, %v", file, d.PayloadOffset(), n, err)
		}
		if err := d.Readv(0, [][]byte{make([]byte, 512)}); !errors.Is(err, ErrNoKey) {
			t.Fatalf("read without the key: %v", err)
		}
	})
}
