package vmdk

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/vmdk/format"
)

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

// TestCreate_LikeQemu: Create lays an image out byte for byte as
// qemu-img create -f vmdk does (KD7), given QEMU's random CID: sizes
// that round, that need several tables and directory sectors, the
// adapter types, hardware and tools versions, compat6 and zeroed_grain;
// and it refuses what QEMU refuses or would get wrong.
func TestCreate_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := t.TempDir()
	type tc struct {
		size int64
		opts string
		o    format.NewOptions
	}
	cases := []tc{
		{0, "", format.NewOptions{}},
		{1, "", format.NewOptions{}},
		{511, "", format.NewOptions{}},
		{100 << 20, "", format.NewOptions{}},
		{1<<30 + 512, "", format.NewOptions{}},
		{33 << 30, "", format.NewOptions{}}, // two directory sectors
		{1 << 30, "adapter_type=lsilogic", format.NewOptions{Adapter: "lsilogic"}},
		{1 << 30, "adapter_type=buslogic,hwversion=7", format.NewOptions{Adapter: "buslogic", HWVersion: "7"}},
		{1 << 30, "adapter_type=legacyESX,toolsversion=10", format.NewOptions{Adapter: "legacyESX", ToolsVersion: "10"}},
		{1 << 30, "compat6=on,zeroed_grain=on", format.NewOptions{Compat6: true, ZeroedGrain: true}},
		{100 << 20, "subformat=streamOptimized", format.NewOptions{Stream: true}},
		{1 << 30, "subformat=streamOptimized,zeroed_grain=on,adapter_type=lsilogic", format.NewOptions{Stream: true, ZeroedGrain: true, Adapter: "lsilogic"}},
	}
	for i, c := range cases {
		q := filepath.Join(dir, "q.vmdk")
		os.Remove(q)
		args := []string{"create", "-q", "-f", "vmdk"}
		if c.opts != "" {
			args = append(args, "-o", c.opts)
		}
		testkit.MustRun(t, "qemu-img", append(args, q, fmt.Sprint(c.size))...)
		want, err := os.ReadFile(q)
		if err != nil {
			t.Fatal(err)
		}
		d := format.ParseDescriptor(string(want[512 : 512+format.DescSize-1]))
		o := filepath.Join(dir, "o.vmdk")
		c.o.Size = c.size
		size, err := createFile(t, o, CreateOptions{NewOptions: c.o, Name: "q.vmdk", CID: d.CID})
		if err != nil {
			t.Errorf("case %d (%d %s): %v", i, c.size, c.opts, err)
			continue
		}
		got, err := os.ReadFile(o)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Errorf("case %d (%d %s): %d bytes, qemu-img's %d", i, c.size, c.opts, len(got), len(want))
		} else if i := testkit.FirstDiff(got, want); i >= 0 {
			t.Errorf("case %d (%d %s): differs from qemu-img's at byte %d", i, c.size, c.opts, i)
		}
		if want := (c.size + 511) &^ 511; size != want {
			t.Errorf("case %d: size %d, want %d", i, size, want)
		}
	}
	// Refused as QEMU refuses, and where QEMU's 32-bit arithmetic would
	// write a broken image (1 PiB: a grain count of 2^34).
	if _, err := createFile(t, filepath.Join(dir, "r"), CreateOptions{NewOptions: format.NewOptions{Size: 1 << 30, Compat6: true, HWVersion: "7"}}); err == nil || err.Error() != "compat6 cannot be enabled with hwversion set" {
		t.Errorf("compat6 with hwversion: %v", err)
	}
	if _, err := createFile(t, filepath.Join(dir, "r"), CreateOptions{NewOptions: format.NewOptions{Size: 1 << 50}}); !errors.Is(err, format.ErrTooLarge) {
		t.Errorf("1 PiB: %v", err)
	}
}
