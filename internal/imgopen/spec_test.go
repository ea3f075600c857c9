package imgopen

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/filter"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/internal/testkit/imgcheck"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
)

func TestParseSpec_Table(t *testing.T) {
	cases := []struct {
		spec string
		want map[string]any
		err  bool
	}{
		{"driver=quorum,children=a.qcow2:b.qcow2:c.qcow2,vote-threshold=2",
			map[string]any{"driver": "quorum", "children": "a.qcow2:b.qcow2:c.qcow2", "vote-threshold": "2"}, false},
		{"driver=throttle,iops-total=100,file.driver=qcow2,file.file=t.qcow2",
			map[string]any{"driver": "throttle", "iops-total": "100", "file": map[string]any{"driver": "qcow2", "file": "t.qcow2"}}, false},
		{`json:{"driver":"blkverify","test":"t.qcow2","raw":{"driver":"raw","file":"s.raw"}}`,
			map[string]any{"driver": "blkverify", "test": "t.qcow2", "raw": map[string]any{"driver": "raw", "file": "s.raw"}}, false},
		{"file=a.qcow2", nil, true},               // no driver
		{"driver=raw,file=a,file.x=b", nil, true}, // value and node
		{`json:{"driver":`, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.spec, func(t *testing.T) {
			got, err := ParseSpec(tc.spec)
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			if !tc.err && !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %#v\nwant %#v", got, tc.want)
			}
		})
	}
}

func mkQcow2(t *testing.T, dir, name string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := qcow2.Create(p, qcow2.CreateOptions{Size: size}); err != nil {
		t.Fatal(err)
	}
	return p
}

func mkRaw(t *testing.T, dir, name string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

func qemuCheck(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		b := make([]byte, 4)
		if f, err := os.Open(p); err == nil {
			f.Read(b)
			f.Close()
		}
		if string(b) == "QFI\xfb" {
			imgcheck.File(t, p, qcow2.Options{}) // our Check and qemu-img check
			continue
		}
		testkit.QemuCheck(t, p)
	}
}

func open(t *testing.T, spec string) (block.Device, *qcow2.Image, func()) {
	t.Helper()
	o, err := OpenSpec(spec, Spec{AIO: "threads"})
	if err != nil {
		t.Fatalf("OpenSpec(%s): %v", spec, err)
	}
	return o.Dev, o.Image, func() {
		if err := o.Close(); err != nil {
			t.Errorf("close %s: %v", spec, err)
		}
	}
}

// TestOpenSpec_Drivers opens one stack per driver and checks its type and
// a write/read round trip.
func TestOpenSpec_Drivers(t *testing.T) {
	dir := testkit.Dir(t)
	const size = 8 << 20
	a, b, c := mkQcow2(t, dir, "a.qcow2", size), mkQcow2(t, dir, "b.qcow2", size), mkQcow2(t, dir, "c.qcow2", size)
	r := mkRaw(t, dir, "s.raw", size)
	top := filepath.Join(dir, "top.qcow2")
	if err := qcow2.Create(top, qcow2.CreateOptions{BackingFile: a, BackingFormat: "qcow2"}); err != nil {
		t.Fatal(err)
	}
	// discard: the stack forwards a discard to a qcow2 image, as QEMU's
	// drivers do; else it is ErrNotSupported (a raw file, blkverify,
	// quorum).
	cases := []struct {
		name, spec string
		want       any
		discard    bool
	}{
		{"qcow2", "driver=qcow2,file=" + a + ",l2-cache-size=1M", &qcow2.Image{}, true},
		{"raw-window", "driver=raw,file=" + r + ",offset=1M,size=3M", &filter.Raw{}, false},
		{"file", "driver=file,filename=" + r, nil, false},
		{"blkverify", `json:{"driver":"blkverify","test":{"driver":"qcow2","file":"` + b + `"},"raw":{"driver":"raw","file":"` + r + `"}}`, &filter.Blkverify{}, false},
		{"quorum", "driver=quorum,children=" + a + ":" + b + ":" + c + ",vote-threshold=2,rewrite-corrupted=on", &filter.Quorum{}, false},
		{"quorum-dotted", "driver=quorum,children.0=" + a + ",children.1.driver=qcow2,children.1.file=" + b, &filter.Quorum{}, false},
		{"copy-on-read", "driver=copy-on-read,file.driver=qcow2,file.file=" + top, &filter.CopyOnRead{}, true},
		{"throttle", "driver=throttle,iops-total=100000,bps-total=1G,file=" + c, &filter.Throttle{}, true},
		{"throttle-limits", `json:{"driver":"throttle","limits":{"iops-total":100000},"file":{"driver":"qcow2","file":{"driver":"file","filename":"` + c + `"}}}`, &filter.Throttle{}, true},
		{"mirror", "driver=mirror,file=" + a + ",target=" + filepath.Join(dir, "m.raw") + ",granularity=64k", &filter.Mirror{}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, im, done := open(t, tc.spec)
			defer done()
			if tc.want != nil && reflect.TypeOf(d) != reflect.TypeOf(tc.want) {
				t.Fatalf("device %T, want %T", d, tc.want)
			}
			if (im != nil) != (tc.name == "qcow2") {
				t.Fatalf("image %v for root driver %s", im != nil, tc.name)
			}
			p := bytes.Repeat([]byte{0x5a}, 8192)
			if err := block.WriteAt(d, p, 64<<10); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(p))
			if err := block.ReadAt(d, got, 64<<10); err != nil || !bytes.Equal(got, p) {
				t.Fatalf("read back: %v", err)
			}
			// A whole cluster, written and then discarded.
			const doff, dlen = 2 << 20, 64 << 10
			if err := block.WriteAt(d, bytes.Repeat([]byte{0x77}, dlen), doff); err != nil {
				t.Fatal(err)
			}
			dd, ok := d.(block.Discarder)
			var err error
			if ok {
				err = dd.Discard(doff, dlen)
			} else {
				err = block.Do(d, &block.Req{Op: block.OpDiscard, Off: doff, Len: dlen})
			}
			if !tc.discard {
				if !errors.Is(err, block.ErrNotSupported) {
					t.Fatalf("discard: %v, want ErrNotSupported", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("discard: %v", err)
			}
			got = make([]byte, dlen)
			if err := block.ReadAt(d, got, doff); err != nil || !bytes.Equal(got, make([]byte, dlen)) {
				t.Fatalf("read after discard: %v (first byte %#x)", err, got[0])
			}
		})
	}
	// The mirror's closer waited for convergence: the target holds the
	// source's data.
	m, _, done := open(t, "driver=raw,file="+filepath.Join(dir, "m.raw"))
	got := make([]byte, 8192)
	block.ReadAt(m, got, 64<<10)
	done()
	if !bytes.Equal(got, bytes.Repeat([]byte{0x5a}, 8192)) {
		t.Fatal("mirror target does not hold the guest write")
	}
	qemuCheck(t, a, b, c, top)
}

func TestOpenSpec_Errors(t *testing.T) {
	dir := testkit.Dir(t)
	a := mkQcow2(t, dir, "a.qcow2", 1<<20)
	for _, spec := range []string{
		"driver=qcow2,file=" + a + ",bogus=1",                            // unknown key
		"driver=nosuch,file=" + a,                                        // unknown driver
		"driver=quorum,children=" + a + ":/nonexistent,vote-threshold=2", // too few opened
		"driver=copy-on-read,file.driver=raw,file.file=" + a,             // top must be qcow2
		"driver=quorum,children=" + a + ",vote-threshold=3",
	} {
		if _, err := OpenSpec(spec, Spec{}); err == nil {
			t.Errorf("OpenSpec(%s) succeeded", spec)
		}
	}
	qemuCheck(t, a)
}

// TestOpenSpec_QuorumDamagedChild: a quorum of three qcow2 images with one
// child's file deleted, truncated, or with a corrupt header still serves
// reads and writes; the healthy children pass qemu-img check.
func TestOpenSpec_QuorumDamagedChild(t *testing.T) {
	damage := map[string]func(p string) error{
		"deleted":   os.Remove,
		"truncated": func(p string) error { return os.Truncate(p, 0) },
		"bad-header": func(p string) error {
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt([]byte("XXXX"), 0)
			return err
		},
	}
	for _, form := range []string{"probed", "explicit"} {
		for name, hurt := range damage {
			t.Run(form+"/"+name, func(t *testing.T) {
				testQuorumDamaged(t, form, hurt)
			})
		}
	}
}

// testQuorumDamaged: with probed children ("children=a:b:c") a file whose
// header is gone probes as raw, opens, and loses every vote; with explicit
// driver=qcow2 children it fails to open and becomes a filter.Failed child.
func testQuorumDamaged(t *testing.T, form string, hurt func(string) error) {
	dir := testkit.Dir(t)
	const size = 4 << 20
	kids := []string{mkQcow2(t, dir, "a.qcow2", size), mkQcow2(t, dir, "b.qcow2", size), mkQcow2(t, dir, "c.qcow2", size)}
	spec := "driver=quorum,vote-threshold=2,children=" + kids[0] + ":" + kids[1] + ":" + kids[2]
	if form == "explicit" {
		spec = "driver=quorum,vote-threshold=2"
		for i, k := range kids {
			spec += fmt.Sprintf(",children.%d.driver=qcow2,children.%d.file=%s", i, i, k)
		}
	}
	d, _, done := open(t, spec)
	p := bytes.Repeat([]byte("quorum!!"), 8192)
	if err := block.WriteAt(d, p, 1<<20); err != nil {
		t.Fatal(err)
	}
	done()
	if err := hurt(kids[1]); err != nil {
		t.Fatal(err)
	}
	d, _, done = open(t, spec)
	q := d.(*filter.Quorum)
	got := make([]byte, len(p))
	if err := block.ReadAt(d, got, 1<<20); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("read with a damaged child: %v", err)
	}
	if err := block.WriteAt(d, p[:4096], 0); err != nil {
		t.Fatalf("write with a damaged child: %v", err)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if q.M.ChildErrors.Load()+q.M.Mismatches.Load() == 0 {
		t.Fatal("the damaged child was not reported")
	}
	_, failed := q.Children()[1].(filter.Failed)
	_, missing := os.Stat(kids[1])
	if failed != (form == "explicit" || missing != nil) {
		t.Fatalf("child 1 is %T", q.Children()[1])
	}
	done()
	qemuCheck(t, kids[0], kids[2])
}

func TestFileOptions_AIO(t *testing.T) {
	tests := []struct {
		cache, aio      string
		direct, noMerge bool
		backend         uring.Backend
		wantErr         bool
	}{
		{"none", "", true, false, uring.Auto, false},
		{"writeback", "io_uring", false, false, uring.Ring, false},
		{"none", "io_uring-nomerge", true, true, uring.Ring, false},
		{"", "native", false, false, uring.Auto, true},
		{"", "threads", false, false, uring.Threads, false},
		{"", "bogus", false, false, uring.Auto, true},
		{"bogus", "", false, false, uring.Auto, true},
	}
	for _, tc := range tests {
		o, err := FileOptions(tc.cache, tc.aio, false)
		if (err != nil) != tc.wantErr {
			t.Fatalf("%q/%q: err %v", tc.cache, tc.aio, err)
		}
		if err == nil && (o.Direct != tc.direct || o.NoMerge != tc.noMerge || o.Backend != tc.backend || o.NoFlush) {
			t.Fatalf("%q/%q: %+v", tc.cache, tc.aio, o)
		}
	}
	// cache=unsafe ignores flushes, as QEMU's (review 53: qbench -t
	// unsafe synced the file).
	if o, err := FileOptions("unsafe", "", false); err != nil || !o.NoFlush || o.Direct {
		t.Errorf("unsafe: %+v, %v", o, err)
	}
}
