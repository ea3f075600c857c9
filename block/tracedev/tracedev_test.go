package tracedev

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/errordev"
	"github.com/qring/qring/block/memdev"
)

func TestDev_String(t *testing.T) {
	data := make([]byte, 4096)
	data[100] = 1
	zeros := make([]byte, 4096)
	workload := func(d *Dev) {
		block.WriteAt(d, data, 0x50000)
		d.WriteZeroes(0x40000, 0x10000, block.Allocate)
		d.WriteZeroes(0x60000, 0x20000, 0)
		block.WriteAt(d, zeros, 0x1200)
		d.Flush()
		block.ReadAt(d, make([]byte, 0x10000), 0)
		d.Truncate(0x100000)
		d.ZeroThenWritev(0x70000, 0x10000, block.Allocate|block.Serialising, 0x71000, [][]byte{data, zeros})
	}
	cases := []struct {
		name string
		opts Options
		want string
	}{
		{"bytes", Options{}, `
write 0x50000+0x1000 data
zero 0x40000+0x10000 Allocate
zero 0x60000+0x20000
write 0x1200+0x1000 zeros
flush
read 0x0+0x10000
truncate 0x100000
zero 0x70000+0x10000 Allocate|Serialising
write 0x71000+0x2000 data
`},
		{"clusters no reads", Options{OmitReads: true, ClusterSize: 0x10000}, `
write c5+0x0:0x1000 data
zero c4 Allocate
zero c6-c7
write c0+0x1200:0x1000 zeros
flush
truncate 0x100000
zero c7 Allocate|Serialising
write c7+0x1000:0x2000 data
`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, child := range []struct {
				name string
				dev  block.Device
			}{
				{"plain child", memdev.New(memdev.Options{})},
				{"ZeroWriter child", errordev.New(memdev.New(memdev.Options{}), nil, errordev.Options{})},
			} {
				d := New(child.dev, tc.opts)
				workload(d)
				if got, want := d.String(), strings.TrimPrefix(tc.want, "\n"); got != want {
					t.Errorf("%s: trace\n%s\nwant\n%s", child.name, got, want)
				}
			}
		})
	}
}

func TestDev_Errors(t *testing.T) {
	mem := memdev.New(memdev.Options{})
	d := New(errordev.New(mem, errordev.OnOp(errordev.Flush, 0, errordev.ErrInjectedEIO), errordev.Options{}), Options{})
	if err := d.Flush(); !errors.Is(err, errordev.ErrInjected) {
		t.Fatal(err)
	}
	e := d.Entries()
	if len(e) != 1 || e[0].Kind != Flush || e[0].Err == nil {
		t.Fatalf("entries %+v", e)
	}
	if got := d.String(); got != "flush err=flush [0x0, +0x0): errordev: injected input/output error\n" {
		t.Fatalf("%q", got)
	}
	d.Reset()
	if d.Len() != 0 || d.String() != "" {
		t.Fatal("Reset")
	}
	if d.Caps() != mem.Caps() || d.Unwrap() == nil {
		t.Fatal("caps")
	}
}

func TestDev_Concurrent(t *testing.T) {
	d := New(memdev.New(memdev.Options{}), Options{})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			buf := make([]byte, 512)
			for i := range 100 {
				block.WriteAt(d, buf, int64(g*100+i)*512)
				_ = d.String()
			}
		})
	}
	wg.Wait()
	if d.Len() != 800 {
		t.Fatalf("%d entries", d.Len())
	}
}

func TestAllZero(t *testing.T) {
	big := make([]byte, 3<<20)
	cases := []struct {
		name string
		bufs [][]byte
		want bool
	}{
		{"empty", nil, true},
		{"big zero", [][]byte{big}, true},
		{"tail byte", [][]byte{big, {0, 0, 1}}, false},
		{"one", [][]byte{{1}}, false},
	}
	for _, tc := range cases {
		if got := allZero(tc.bufs); got != tc.want {
			t.Errorf("%s: %v", tc.name, got)
		}
	}
}

// TestDev_Caps: Caps (the medium included) are the child's (T4).
func TestDev_Caps(t *testing.T) {
	mem := memdev.New(memdev.Options{Align: 4096, Media: block.MediaRAM})
	if c := New(mem, Options{}).Caps(); c != mem.Caps() || c.Media != block.MediaRAM {
		t.Fatalf("Caps %+v, want the child's %+v", c, mem.Caps())
	}
}
