package qcow2

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
	"github.com/qring/qring/uring"
)

// External data files (DF1-DF4): images qemu-img creates with
// data_file (and data_file_raw, extended L2), written by qemu-io, read
// back through the engine and compared with qemu-img's view.

// dataFileImage creates an image with an external data file (an
// absolute name: QEMU resolves a relative one against the working
// directory) of size bytes in a new directory and runs the qemu-io
// commands on it; it returns the image's and the data file's paths.
func dataFileImage(t *testing.T, opts, size string, io ...string) (img, data string) {
	t.Helper()
	dir := testkit.Dir(t)
	img, data = filepath.Join(dir, "m.qcow2"), filepath.Join(dir, "d.raw")
	o := "data_file=" + data
	if opts != "" {
		o += "," + opts
	}
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", o, img, size)
	if len(io) > 0 {
		args := []string{}
		for _, c := range io {
			args = append(args, "-c", c)
		}
		testkit.MustRun(t, "qemu-io", append(args, img)...)
	}
	return img, data
}

// dataFileSameMap compares our Map of path with qemu-img map's (offsets
// into the data file).
func dataFileSameMap(t *testing.T, path string) {
	t.Helper()
	im := openReadOnly(t, path)
	defer im.Close()
	ours, err := im.Map()
	if err != nil {
		t.Fatal(err)
	}
	if theirs := qemuMap(t, path); !reflect.DeepEqual(ours, theirs) {
		t.Fatalf("map differs from qemu-img map:\nours   %s\ntheirs %s", dfMapString(ours), dfMapString(theirs))
	}
}

func dfMapString(m []MapEntry) string {
	var b strings.Builder
	for _, e := range m {
		off := "-"
		if e.Offset != nil {
			off = fmt.Sprint(*e.Offset)
		}
		fmt.Fprintf(&b, "{%d+%d p=%t z=%t d=%t off=%s} ", e.Start, e.Length, e.Present, e.Zero, e.Data, off)
	}
	return b.String()
}

func TestDataFile_ReadsQemuImages(t *testing.T) {
	testkit.NeedQemu(t)
	cases := []struct {
		name, opts string
		io         []string
	}{
		// Cluster 0 is host offset 0 in the data file: its entry is
		// COPIED with offset 0 (DF2).
		{"plain", "", []string{"write -P 0x11 0 64k", "write -P 0x12 1M 1M", "write -P 0x13 100k 4k",
			"discard 1536k 64k", "write -z 2M 128k", "write -P 0x14 3M 3000"}},
		// data_file_raw: every cluster preallocated (metadata), zeroing
		// writes zeros to the data file and leaves zero-alloc entries.
		{"raw", "data_file_raw=on", []string{"write -P 0x21 1M 64k", "write -z 2M 64k", "discard 3M 64k",
			"write -P 0x22 0 512"}},
		{"c512", "cluster_size=512", []string{"write -P 0x31 0 100k", "write -P 0x32 1M 3333", "write -z 512 1024"}},
		{"xl2", "extended_l2=on", []string{"write -P 0x41 0 4k", "write -P 0x42 1M 100k", "write -z 1100k 8k",
			"discard 2M 64k", "write -P 0x43 2M 2k"}},
		{"xl2-raw", "extended_l2=on,data_file_raw=on", []string{"write -P 0x51 0 4k", "write -z 1M 64k"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			img, _ := dataFileImage(t, tc.opts, "4M", tc.io...)
			testkit.QemuCheck(t, img)
			compareWithQEMU(t, img) // every byte, and our Check clean
			dataFileSameMap(t, img)
			// Check counts no data cluster: the image file's clusters
			// all have their references (no leak, DF3), and the
			// allocation statistics are qemu-img check's.
			im := openReadOnly(t, img)
			defer im.Close()
			r, err := im.Check(CheckOptions{})
			if err != nil || !r.Clean() {
				t.Fatalf("check: %v %+v", err, r)
			}
			q, err := testkit.QemuImgCheck(img)
			if err != nil {
				t.Fatal(err)
			}
			var st struct {
				Allocated  int64 `json:"allocated-clusters"`
				Fragmented int64 `json:"fragmented-clusters"`
			}
			if err := json.Unmarshal([]byte(q.Stdout), &st); err != nil {
				t.Fatal(err)
			}
			if r.AllocatedClusters != st.Allocated || r.FragmentedClusters != st.Fragmented {
				t.Fatalf("check statistics: ours allocated %d fragmented %d, qemu-img's %d %d",
					r.AllocatedClusters, r.FragmentedClusters, st.Allocated, st.Fragmented)
			}
		})
	}
}

// TestDataFile_WritableOpenXL2: an extended L2 image with a data file
// that QEMU wrote opens for writing (DF4; once refused), plainly and to
// repair, and a close without writes leaves it as QEMU reads it.
func TestDataFile_WritableOpenXL2(t *testing.T) {
	testkit.NeedQemu(t)
	img, _ := dataFileImage(t, "extended_l2=on", "1M", "write -P 0x11 0 64k", "write -P 0x12 70k 3k")
	want := qemuRaw(t, img)
	for _, o := range []Options{{}, {Repair: true}} {
		im, err := Open(img, o)
		if err != nil {
			t.Fatalf("writable open (%+v): %v", o, err)
		}
		if err := im.Close(); err != nil {
			t.Fatal(err)
		}
		testkit.QemuCheck(t, img)
		testkit.MustEqual(t, qemuRaw(t, img), want, "qemu-img convert after a writable open")
	}
}

// patchImage writes b at off in the file at path.
func patchImage(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// patchFeatures sets and clears bits of the header's feature field at
// off (72 incompatible, 88 autoclear).
func patchFeatures(t *testing.T, path string, off int64, set, clr uint64) {
	t.Helper()
	hb := make([]byte, 8)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.ReadAt(hb, off)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	v := binary.BigEndian.Uint64(hb)&^clr | set
	binary.BigEndian.PutUint64(hb, v)
	patchImage(t, path, off, hb)
}

// qemuOpenErr is what qemu-io says when it cannot open path read-only
// ("" when it can).
func qemuOpenErr(t *testing.T, path string) string {
	_, stderr, code := testkit.Run(t, "qemu-io", "-r", "-c", "read 0 512", path)
	if code == 0 {
		return ""
	}
	return stderr
}

func TestDataFile_HostileOpens(t *testing.T) {
	testkit.NeedQemu(t)
	t.Run("missing", func(t *testing.T) {
		img, data := dataFileImage(t, "", "1M", "write -P 0x11 0 64k")
		os.Remove(data)
		_, err := Open(img, Options{ReadOnly: true})
		var oe *DataFileOpenError
		if !errors.As(err, &oe) || !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("open without its data file: %v, want a DataFileOpenError", err)
		}
		want := "Could not open '" + data + "': No such file or directory"
		if err.Error() != want || !strings.Contains(qemuOpenErr(t, img), want) {
			t.Fatalf("error %q, want %q as qemu-io says", err, want)
		}
		// Metadata only (qemu-img info) needs no data file.
		im, err := Open(img, Options{ReadOnly: true, NoDataFile: true})
		if err != nil {
			t.Fatal(err)
		}
		defer im.Close()
		if _, err := im.ReadAt(make([]byte, 512), 0); !errors.Is(err, ErrNoDataFile) {
			t.Fatalf("read without the data file: %v, want ErrNoDataFile", err)
		}
		if r, err := im.Check(CheckOptions{}); err != nil || !r.Clean() {
			t.Fatalf("check of the metadata: %v %+v", err, r)
		}
	})
	t.Run("bit-without-name", func(t *testing.T) {
		img, _ := dataFileImage(t, "", "1M", "write -P 0x11 0 64k")
		testkit.MustRun(t, "qemu-img", "amend", "-o", "data_file=", img)
		if _, err := Open(img, Options{ReadOnly: true}); !errors.Is(err, ErrDataFileRequired) {
			t.Fatalf("open: %v, want ErrDataFileRequired", err)
		}
		if !strings.Contains(qemuOpenErr(t, img), ErrDataFileRequired.Error()) {
			t.Fatal("qemu-io says otherwise")
		}
	})
	t.Run("raw-bit-alone", func(t *testing.T) {
		dir := testkit.Dir(t)
		img := filepath.Join(dir, "p.qcow2")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "1M")
		patchFeatures(t, img, 88, format.AutoclearDataFileRaw, 0)
		if _, err := Open(img, Options{ReadOnly: true}); !errors.Is(err, ErrDataFileRawAlone) {
			t.Fatalf("open: %v, want ErrDataFileRawAlone", err)
		}
		if !strings.Contains(qemuOpenErr(t, img), ErrDataFileRawAlone.Error()) {
			t.Fatal("qemu-io says otherwise")
		}
		if _, err := Open(img, Options{}); err == nil {
			t.Fatal("a writable open of it succeeded")
		}
	})
	t.Run("name-without-bit", func(t *testing.T) {
		// The extension without the bit is ignored: the data file's
		// clusters are not the image's, and an entry of offset 0 with
		// COPIED is unallocated, as QEMU reads it.
		img, _ := dataFileImage(t, "", "1M", "write -P 0x11 0 64k")
		patchFeatures(t, img, 72, 0, format.IncompatDataFile)
		if qemuOpenErr(t, img) != "" {
			t.Fatal("qemu-io does not open it")
		}
		compareWithQEMU(t, img)
		dataFileSameMap(t, img)
	})
	t.Run("device-for-plain-image", func(t *testing.T) {
		dir := testkit.Dir(t)
		img := filepath.Join(dir, "p.qcow2")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "1M")
		d := memdev.New(memdev.Options{})
		if _, err := Open(img, Options{ReadOnly: true, DataDevice: d}); !errors.Is(err, ErrDataFileNotExpected) {
			t.Fatalf("open: %v, want ErrDataFileNotExpected", err)
		}
	})
	t.Run("name-as-it-is", func(t *testing.T) {
		// QEMU 7.2 opens a relative name against the working directory,
		// not the image's: the opener gets the name as it is.
		img, data := dataFileImage(t, "", "1M", "write -P 0x11 0 64k")
		testkit.MustRun(t, "qemu-img", "amend", "-o", "data_file=d.raw", img)
		var asked []string
		op := func(p string, ro bool) (block.Device, error) {
			asked = append(asked, p)
			if p == "d.raw" {
				p = data
			}
			return DefaultOpener(p, ro)
		}
		im, err := Open(img, Options{ReadOnly: true, Opener: op})
		if err != nil {
			t.Fatal(err)
		}
		defer im.Close()
		if len(asked) != 2 || asked[1] != "d.raw" || im.DataFileName() != "d.raw" {
			t.Fatalf("opened %q, want the image then %q", asked, "d.raw")
		}
		got := make([]byte, 64<<10)
		if _, err := im.ReadAt(got, 0); err != nil || !bytes.Equal(got, bytes.Repeat([]byte{0x11}, 64<<10)) {
			t.Fatalf("read through the data device: %v", err)
		}
	})
	t.Run("short-data-file", func(t *testing.T) {
		// Past the end of the data file reads as zeros, as QEMU's file
		// driver reads it.
		img, data := dataFileImage(t, "", "1M", "write -P 0x11 0 1M")
		if err := os.Truncate(data, 300<<10+77); err != nil {
			t.Fatal(err)
		}
		compareWithQEMU(t, img)
	})
}

// l2EntryOffset is the file offset of the L2 entry of guest offset o
// (its table must exist).
func l2EntryOffset(t *testing.T, path string, o uint64) int64 {
	t.Helper()
	im := openReadOnly(t, path)
	defer im.Close()
	g := im.Geometry()
	le := im.l1.Load().load(g.L1Index(format.GuestOff(o)))
	if le.Offset() == 0 {
		t.Fatal("no L2 table")
	}
	return int64(le.Offset()) + int64(g.L2Index(format.GuestOff(o))*g.L2EntrySize)
}

// TestDataFile_BadEntries: entries a data file image cannot have fail
// the read as QEMU's lookups fail it (DF2), and Check reports them.
func TestDataFile_BadEntries(t *testing.T) {
	testkit.NeedQemu(t)
	t.Run("host-offset-not-guest", func(t *testing.T) {
		img, _ := dataFileImage(t, "", "1M", "write -P 0x11 0 256k")
		at := l2EntryOffset(t, img, 64<<10)
		patchImage(t, img, at, binary.BigEndian.AppendUint64(nil, uint64(format.MakeL2(128<<10, true, false))))
		if qemuOpenErr(t, img) != "" {
			t.Fatal("qemu-io cannot open it")
		}
		if _, stderr, code := testkit.Run(t, "qemu-io", "-r", "-c", "read 64k 4k", img); code == 0 &&
			!strings.Contains(stderr, "error") {
			t.Fatal("qemu-io reads it")
		}
		im := openReadOnly(t, img)
		defer im.Close()
		if _, err := im.ReadAt(make([]byte, 4096), 64<<10); !errors.Is(err, ErrCorrupt) ||
			!strings.Contains(err.Error(), "does not match guest cluster offset") {
			t.Fatalf("read: %v, want ErrCorrupt", err)
		}
	})
	t.Run("compressed", func(t *testing.T) {
		img, _ := dataFileImage(t, "", "1M", "write -P 0x11 0 256k")
		at := l2EntryOffset(t, img, 64<<10)
		patchImage(t, img, at, binary.BigEndian.AppendUint64(nil, format.OflagCompressed|5<<9))
		q, err := testkit.QemuImgCheck(img)
		if err != nil || q.Corruptions != 1 {
			t.Fatalf("qemu-img check: %v %v, want one corruption", err, q)
		}
		im := openReadOnly(t, img)
		defer im.Close()
		r, err := im.Check(CheckOptions{})
		if err != nil || r.Corruptions != 1 || !strings.Contains(strings.Join(r.Messages, "\n"), "with data file") {
			t.Fatalf("check: %v %+v", err, r)
		}
		if _, err := im.ReadAt(make([]byte, 4096), 64<<10); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("read: %v, want ErrCorrupt", err)
		}
	})
}

// TestDataFile_Encrypted: a LUKS image with a data file (QEMU allows
// it) decrypts its data from the data file, its sectors numbered by
// their offset there. The image is ours (qemu-img create would take
// seconds to derive its keys) with the bit and the name set before
// qemu-io writes it.
func TestDataFile_Encrypted(t *testing.T) {
	testkit.NeedQemu(t)
	dir := testkit.Dir(t)
	img, data := filepath.Join(dir, "e.qcow2"), filepath.Join(dir, "e.raw")
	if err := Create(img, CreateOptions{Size: 4 << 20,
		Encrypt: EncryptOptions{Format: "luks", Passphrase: []byte("pw"), Iterations: 1000}}); err != nil {
		t.Fatal(err)
	}
	hb, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	h, err := format.ParseHeader(hb)
	if err != nil {
		t.Fatal(err)
	}
	h.IncompatibleFeatures |= format.IncompatDataFile
	h.DataFile = data
	enc, err := h.Encode()
	if err != nil {
		t.Fatal(err)
	}
	patchImage(t, img, 0, enc)
	if err := os.WriteFile(data, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(data, 4<<20); err != nil {
		t.Fatal(err)
	}
	testkit.MustRun(t, "qemu-io", append(testkit.QemuSecretArgs(img, "pw"),
		"-c", "write -P 0x11 0 64k", "-c", "write -P 0x22 1M 100k", "-c", "write -z 2M 64k", "-c", "write -P 0x33 3M 700")...)
	testkit.QemuCheckSecret(t, img, "pw")
	raw := filepath.Join(dir, "want.raw")
	testkit.MustRun(t, "qemu-img", append(append([]string{"convert"}, testkit.QemuSecretArgs(img, "pw")...), "-O", "raw", raw)...)
	want, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	im, err := Open(img, Options{ReadOnly: true, Passphrase: []byte("pw")})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	testkit.MustEqual(t, testkit.ReadAll(t, im), want, "qring vs qemu-img convert")
	if r, err := im.Check(CheckOptions{}); err != nil || !r.Clean() {
		t.Fatalf("check: %v %+v", err, r)
	}
}

// TestDataFile_Locks: the data file is locked as QEMU 7.2 locks it
// (measured beside qemu-nbd): read (100) held, resize (203) not shared,
// writes shared (no 201) even by a reader; and a writer of the data file
// does not keep a reader of the image out.
func TestDataFile_Locks(t *testing.T) {
	testkit.NeedQemu(t)
	img, data := dataFileImage(t, "", "1M", "write -P 0x11 0 64k")
	im, err := Open(img, Options{ReadOnly: true, Opener: uring.Opener(uring.Options{Backend: uring.Threads})})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	for _, b := range []struct {
		byte int64
		held bool
	}{{100, true}, {101, false}, {201, false}, {203, true}} {
		if got := testkit.HoldsLockByte(data, b.byte); got != b.held {
			t.Errorf("lock byte %d of the data file held: %t, want %t", b.byte, got, b.held)
		}
	}
	testkit.MustRun(t, "qemu-io", "-f", "raw", "-c", "write -P 0x22 512k 4k", data)
}

// fuzzDataFileSeed is the image file of an image with an external data
// file (nil without qemu-img), for FuzzOpen: its data file is whatever
// fuzzDataOpener gives.
func fuzzDataFileSeed(tb testing.TB) []byte {
	if !testkit.HaveQemu() {
		return nil
	}
	dir := tb.TempDir()
	img := filepath.Join(dir, "m.qcow2")
	for _, c := range [][]string{
		{"qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096,data_file=" + filepath.Join(dir, "d"), img, "1M"},
		{"qemu-io", "-c", "write -P 0x11 0 8k", "-c", "write -z 64k 8k", "-c", "write -P 0x12 300k 5000", img},
	} {
		if b, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			tb.Logf("%s: %v\n%s", c[0], err, b)
			return nil
		}
	}
	b, err := os.ReadFile(img)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestDataFile_AsBacking: an image with a data file under a writable
// overlay: the overlay's COW copies the base's data from its data file,
// and both images stay as QEMU reads them.
func TestDataFile_AsBacking(t *testing.T) {
	testkit.NeedQemu(t)
	base, _ := dataFileImage(t, "", "2M", "write -P 0x11 0 128k", "write -P 0x12 1M 64k")
	top := filepath.Join(filepath.Dir(base), "top.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
	im, err := Open(top, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := im.WriteAt(pattern(1000, 3), 70000); err != nil {
		t.Fatal(err)
	}
	if _, err := im.WriteAt(pattern(4096, 4), 1<<20+512); err != nil {
		t.Fatal(err)
	}
	closeCheck(t, im, top)
	testkit.QemuCheck(t, top)
	testkit.QemuCheck(t, base)
	compareWithQEMU(t, top)
}

// TestDataFile_NotAFile: an opener's refusal of the named data file (a
// directory, for qimg's) is said as the opener says it, as QEMU's file
// driver says "'file' driver requires 'X' to be a regular file" alone.
func TestDataFile_NotAFile(t *testing.T) {
	testkit.NeedQemu(t)
	img, _ := dataFileImage(t, "", "1M", "write -P 0x11 0 64k")
	refusal := errors.New("'file' driver requires 'd.raw' to be a regular file")
	op := func(p string, ro bool) (block.Device, error) {
		if p != img {
			return nil, refusal
		}
		return DefaultOpener(p, ro)
	}
	_, err := Open(img, Options{ReadOnly: true, Opener: op})
	if !errors.Is(err, refusal) || !errors.Is(err, ErrDataFile) || err.Error() != refusal.Error() {
		t.Fatalf("open: %v, want %v", err, refusal)
	}
}
