package vhd

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/vhd/format"
)

// maskFooter blanks what differs between two images created alike: the
// timestamp, the checksum and the UUID.
func maskFooter(b []byte) []byte {
	b = bytes.Clone(b)
	clear(b[24:28])
	clear(b[64:84])
	return b
}

// createFile runs Create into a new file at p.
func createFile(t *testing.T, p string, o CreateOptions) (int64, error) {
	t.Helper()
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := block.OpenOSFile(p, false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return Create(f, o)
}

// readAt reads n bytes of the file at p from off.
func readAt(t *testing.T, p string, off, n int64) []byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCreate_LikeQemu: Create lays an image out byte for byte as
// qemu-img create -f vpc does, but for the footer's timestamp, checksum
// and UUID (VD10): the geometry and size rounding (format.NewPlan), the
// subformats and force_size, and the sizes QEMU refuses.
func TestCreate_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		size         int64
		fixed, force bool
	}{
		{0, false, false}, {1, false, false}, {1 << 20, false, false}, {100 << 20, false, false},
		{1<<30 + 1, false, false}, {10 << 30, false, false}, {127 << 30, false, false},
		{(65535*16*255 + 7) * 512, false, false}, {2040 << 30, false, false},
		{100<<20 + 1, false, true}, {2040 << 30, false, true}, {100 << 20, true, false},
		{100<<20 + 1, true, true}, {64 << 30, true, false},
		{2041 << 30, false, false}, {3 << 40, false, true}, {2041 << 30, true, false},
	} {
		name := fmt.Sprintf("%d-fixed=%v-force=%v", tc.size, tc.fixed, tc.force)
		q, o := filepath.Join(dir, "q.vhd"), filepath.Join(dir, "o.vhd")
		os.Remove(q)
		args := []string{"create", "-q", "-f", "vpc"}
		var opts []string
		if tc.fixed {
			opts = append(opts, "subformat=fixed")
		}
		if tc.force {
			opts = append(opts, "force_size=on")
		}
		if opts != nil {
			args = append(args, "-o", strings.Join(opts, ","))
		}
		_, stderr, code := testkit.Run(t, "qemu-img", append(args, q, fmt.Sprint(tc.size))...)
		size, err := createFile(t, o, CreateOptions{Size: tc.size, Fixed: tc.fixed, ForceSize: tc.force})
		if code != 0 {
			if !errors.Is(err, format.ErrTooLarge) || !strings.Contains(stderr, "too large") {
				t.Errorf("%s: qemu-img refused (%s), Create: %v", name, strings.TrimSpace(stderr), err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		qi, _ := os.Stat(q)
		oi, _ := os.Stat(o)
		if qi.Size() != oi.Size() {
			t.Errorf("%s: file is %d bytes, qemu-img's %d", name, oi.Size(), qi.Size())
			continue
		}
		end := qi.Size() - format.FooterSize
		if got, want := maskFooter(readAt(t, o, end, 512)), maskFooter(readAt(t, q, end, 512)); !bytes.Equal(got, want) {
			t.Errorf("%s: footer differs at byte %d", name, testkit.FirstDiff(got, want))
		}
		if !tc.fixed {
			// The copy, the dynamic header and the table.
			got, want := readAt(t, o, 0, end), readAt(t, q, 0, end)
			copy(got, maskFooter(got[:512]))
			copy(want, maskFooter(want[:512]))
			if !bytes.Equal(got, want) {
				t.Errorf("%s: differs from qemu-img's at byte %d", name, testkit.FirstDiff(got, want))
			}
		}
		if _, err := format.ParseFooter(readAt(t, o, end, 512)); err != nil {
			t.Errorf("%s: our footer: %v", name, err)
		}
		info := testkit.MustRun(t, "qemu-img", "info", "-f", "vpc", "--output=json", o)
		if !strings.Contains(info, fmt.Sprintf(`"virtual-size": %d,`, size)) {
			t.Errorf("%s: Create says %d bytes, qemu-img info:\n%s", name, size, info)
		}
	}
}
