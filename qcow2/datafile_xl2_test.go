package qcow2

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// Writes to extended-L2 images with an external data file (DF4,
// datafile_xl2.go), with QEMU as the oracle: qemu-io applies the same
// operations to a twin image, and every L2 entry and subcluster bitmap
// must come out as QEMU's.

// dfxOps exercise subclusters (64 KiB clusters: 2 KiB subclusters).
var dfxOps = []dfOp{
	{'w', 0, 512},               // cluster 0: host offset 0 with COPIED (DF2), COW of a partial subcluster
	{'w', 70 << 10, 1000},       // a partial first write: one subcluster allocated
	{'w', 72<<10 + 100, 3000},   // unallocated subclusters of an allocated cluster, partial at both ends
	{'w', 70<<10 + 200, 300},    // in place, inside an allocated subcluster
	{'w', 128 << 10, 64 << 10},  // a whole cluster
	{'w', 60 << 10, 200 << 10},  // across clusters, allocated and not
	{'z', 300 << 10, 64 << 10},  // whole subclusters, across two clusters
	{'u', 384 << 10, 128 << 10}, // whole clusters, unmapped
	{'z', 4 << 10, 4 << 10},     // whole subclusters of an allocated cluster
	{'w', 5 << 10, 1024},        // into a zero subcluster of an allocated cluster
	{'z', 1 << 10, 2 << 10},     // partial subclusters: zero buffers, or a zero subcluster where the rest reads as zeros
	{'d', 128 << 10, 64 << 10},
	{'w', 130 << 10, 4 << 10}, // into the discarded cluster again
	{'d', 0, 64 << 10},
	{'w', 8 << 10, 512},
	{'w', 1<<20 - 700, 700}, // the last cluster, partial
}

// qemuIoCmds is ops as qemu-io commands, with applyDfOps' patterns.
func qemuIoCmds(ops []dfOp) []string {
	var c []string
	for i, op := range ops {
		switch op.kind {
		case 'w':
			c = append(c, fmt.Sprintf("write -P %#x %d %d", 0x40+i, op.off, op.n))
		case 'z':
			c = append(c, fmt.Sprintf("write -z %d %d", op.off, op.n))
		case 'u':
			c = append(c, fmt.Sprintf("write -z -u %d %d", op.off, op.n))
		case 'd':
			c = append(c, fmt.Sprintf("discard %d %d", op.off, op.n))
		}
	}
	return c
}

// sameL2 compares every L2 entry and bitmap of the images at a and b.
func sameL2(t *testing.T, a, b string, size int64) {
	t.Helper()
	ia, ib := openReadOnly(t, a), openReadOnly(t, b)
	defer ia.Close() // their read locks keep QEMU's writers out
	defer ib.Close()
	cs := int64(ia.g.ClusterSize)
	for off := int64(0); off < size; off += cs {
		ea, ba, erra := ia.xentry(format.GuestOff(off))
		eb, bb, errb := ib.xentry(format.GuestOff(off))
		if erra != nil || errb != nil || ea != eb || ba != bb {
			t.Errorf("cluster at %#x: ours %#x/%#x (%v), QEMU's %#x/%#x (%v)", off, uint64(ea), ba, erra, uint64(eb), bb, errb)
		}
	}
}

// TestDataFileXL2_WritesLikeQemu: extended-L2 images with a data file
// (raw or not, over a backing file, written by qemu-io first) written by
// us end with QEMU's L2 entries and bitmaps (qemu-io applying the same
// operations to a twin), pass qemu-img check, read back through
// qemu-img convert as our model says and map as QEMU maps them; a raw
// data file is the disk's raw image (before any discard); and qemu-io
// writes on after us.
func TestDataFileXL2_WritesLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	cases := []struct {
		name, opts string
		backing    bool
		io         []string
	}{
		{"plain", "", false, nil},
		{"raw", "data_file_raw=on", false, nil},
		{"qemu-written", "", false, []string{"write -P 0x11 0 100k", "write -z 256k 64k", "write -P 0x12 900k 5000", "write -P 0x13 520k 1k"}},
		{"raw-qemu-written", "data_file_raw=on", false, []string{"write -P 0x11 0 100k", "discard 192k 64k"}},
		{"backing", "", true, nil},
		{"c16k", "cluster_size=16384", false, []string{"write -P 0x13 4k 9k"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := "extended_l2=on"
			if tc.opts != "" {
				opts += "," + tc.opts
			}
			mk := func() (img, data string) {
				if !tc.backing {
					return dataFileImage(t, opts, "1M", tc.io...)
				}
				dir := testkit.Dir(t)
				base := filepath.Join(dir, "base.qcow2")
				testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "1M")
				testkit.MustRun(t, "qemu-io", "-c", "write -P 0x21 0 1M", base)
				img, data = filepath.Join(dir, "m.qcow2"), filepath.Join(dir, "d.raw")
				testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", opts+",data_file="+data, "-b", base, "-F", "qcow2", img, "1M")
				return img, data
			}
			img, data := mk()
			twin, _ := mk()
			model := qemuRaw(t, img)
			im, err := Open(img, Options{})
			if err != nil {
				t.Fatal(err)
			}
			n := 11 // the first discard
			applyDfOps(t, im, model, dfxOps[:n])
			testkit.MustEqual(t, testkit.ReadAll(t, im), model, "our read-back before discards")
			if tc.opts == "data_file_raw=on" && tc.io == nil {
				testkit.MustEqual(t, mustReadFile(t, data), model, "the raw data file before discards")
			}
			applyDfOps(t, im, model, dfxOps[n:])
			testkit.MustEqual(t, testkit.ReadAll(t, im), model, "our read-back")
			if r, err := im.Check(CheckOptions{}); err != nil || !r.Clean() {
				t.Fatalf("check: %v %+v", err, r)
			}
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			testkit.QemuCheck(t, img)
			testkit.MustEqual(t, qemuRaw(t, img), model, "qemu-img convert")
			dataFileSameMap(t, img)
			testkit.MustRun(t, "qemu-io", append(prefixC(append(qemuIoCmds(dfxOps[:n]), qemuIoCmds(dfxOps[n:])...)), twin)...)
			testkit.MustEqual(t, qemuRaw(t, twin), model, "QEMU's twin")
			sameL2(t, img, twin, 1<<20)
			// QEMU writes after us, and we read what it wrote.
			testkit.MustRun(t, "qemu-io", "-c", "write -P 0x55 33k 64k", "-c", "write -z 900k 4k", img)
			copy(model[33<<10:], bytes.Repeat([]byte{0x55}, 64<<10))
			clear(model[900<<10 : 904<<10])
			ro := openReadOnly(t, img)
			testkit.MustEqual(t, testkit.ReadAll(t, ro), model, "our read of QEMU's writes")
		})
	}
}

func prefixC(cmds []string) []string {
	var a []string
	for _, c := range cmds {
		a = append(a, "-c", c)
	}
	return a
}

// TestDataFileXL2_LinkAfterData is TestDataFile_LinkAfterData for
// subclusters (DF5): a first write into a cluster, and then a write into
// unallocated subclusters of the allocated cluster (only its bitmap
// changes), each followed by an L2 write-back and the image file's
// flush (an eviction, another table's Q4 flush). A crash that keeps the
// image file's writes and loses every unflushed write of the data file
// must find the data linked, as the data file was flushed first. The
// subclusters' bytes around the guest data come from the backing file,
// so a lost write reads as zeros where it has data.
func TestDataFileXL2_LinkAfterData(t *testing.T) {
	t.Parallel()
	const size = 256 << 10
	bdata := bytes.Repeat([]byte{0x5a}, size)
	img, data := dfMemImage(t, CreateOptions{Size: size, ClusterSize: 16 << 10, ExtendedL2: true}, false)
	im, err := OpenDevice(img, Options{DataDevice: data, Backing: memdev.FromBytes(bdata, memdev.Options{})})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	want := append([]byte(nil), bdata...)
	for i, w := range []struct{ off, n int64 }{
		{32<<10 + 1100, 300}, // a first write: a partial subcluster
		{32<<10 + 5000, 700}, // unallocated subclusters of the allocated cluster
	} {
		if err := im.Flush(); err != nil {
			t.Fatal(err)
		}
		b := bytes.Repeat([]byte{byte(0x11 + i)}, int(w.n))
		if _, err := im.WriteAt(b, w.off); err != nil {
			t.Fatal(err)
		}
		copy(want[w.off:], b)
		im.mu.Lock()
		err = im.l2c.Write()
		if err == nil {
			err = im.dev.Flush()
		}
		im.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(1, 2))
		cimg, cdata := img.CrashClone(rng, 1), data.CrashClone(rng, 0)
		re, err := OpenDevice(cimg, Options{DataDevice: cdata, Backing: memdev.FromBytes(bdata, memdev.Options{})})
		if err != nil {
			t.Fatal(err)
		}
		e, bm, err := re.xentry(format.GuestOff(w.off))
		if err != nil || e.Offset() != 32<<10 || bm&format.SubAlloc(uint(w.off%(16<<10)/512)) == 0 {
			t.Fatalf("write %d: the entry %#x/%#x (%v) does not link it", i, uint64(e), bm, err)
		}
		testkit.MustEqual(t, testkit.ReadAll(t, re), want, fmt.Sprintf("after write %d and a crash", i))
		re.Close()
	}
}

// TestDataFileXL2_CreateLikeQemu: an extended-L2 image with a raw data
// file, or a preallocated one, is created as qemu-img create 7.2 creates
// it: every cluster linked in place with its bitmap clear, and the data
// file reaching the last subcluster's end (not the cluster's).
func TestDataFileXL2_CreateLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	for _, c := range []struct {
		opts string
		co   CreateOptions
		size int64
	}{
		{"extended_l2=on,data_file_raw=on", CreateOptions{ExtendedL2: true, DataFileRaw: true}, 1000448},
		{"extended_l2=on,preallocation=metadata", CreateOptions{ExtendedL2: true, Preallocation: PreallocMetadata}, 1000448},
		{"extended_l2=on,data_file_raw=on", CreateOptions{ExtendedL2: true, DataFileRaw: true}, 1 << 20},
	} {
		twin, twinData := dataFileImage(t, c.opts, fmt.Sprint(c.size))
		dir := testkit.Dir(t)
		img, data := filepath.Join(dir, "m.qcow2"), filepath.Join(dir, "d.raw")
		co := c.co
		co.Size, co.DataFile = c.size, data
		if err := Create(img, co); err != nil {
			t.Fatalf("%s: %v", c.opts, err)
		}
		testkit.QemuCheck(t, img)
		if a, b := len(mustReadFile(t, data)), len(mustReadFile(t, twinData)); a != b {
			t.Errorf("%s %d: data file of %d bytes, QEMU's %d", c.opts, c.size, a, b)
		}
		sameL2(t, img, twin, c.size)
		dataFileSameMap(t, img)
	}
}

// TestDataFileXL2_EncryptedWritesLikeQemu is
// TestDataFile_EncryptedWritesLikeQemu on extended L2: the COW of
// partial subclusters is encrypted with the data file's sector numbers,
// over a backing-less image and its zero subclusters; QEMU checks the
// image, reads it as our model says, and writes on after us.
func TestDataFileXL2_EncryptedWritesLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := testkit.Dir(t)
	img, data := filepath.Join(dir, "e.qcow2"), filepath.Join(dir, "e.raw")
	if err := Create(img, CreateOptions{Size: 1 << 20, DataFile: data, ExtendedL2: true,
		Encrypt: EncryptOptions{Format: "luks", Passphrase: []byte("pw"), Iterations: 1000}}); err != nil {
		t.Fatal(err)
	}
	im, err := Open(img, Options{Passphrase: []byte("pw")})
	if err != nil {
		t.Fatal(err)
	}
	model := make([]byte, 1<<20)
	ops := append([]dfOp{{'w', 100, 300}, {'w', 70<<10 + 7, 5000}}, dfxOps...)
	applyDfOps(t, im, model, ops)
	testkit.MustEqual(t, testkit.ReadAll(t, im), model, "our read-back")
	if r, err := im.Check(CheckOptions{}); err != nil || !r.Clean() {
		t.Fatalf("check: %v %+v", err, r)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	if raw := mustReadFile(t, data); bytes.Contains(raw, bytes.Repeat([]byte{0x43}, 512)) {
		t.Fatal("the data file holds plaintext")
	}
	testkit.QemuCheckSecret(t, img, "pw")
	conv := filepath.Join(dir, "conv.raw")
	testkit.MustRun(t, "qemu-img", append(append([]string{"convert"}, testkit.QemuSecretArgs(img, "pw")...), "-O", "raw", conv)...)
	testkit.MustEqual(t, mustReadFile(t, conv), model, "qemu-img convert")
	testkit.MustRun(t, "qemu-io", append(testkit.QemuSecretArgs(img, "pw"), "-c", "write -P 0x66 3000 70k")...)
	copy(model[3000:], bytes.Repeat([]byte{0x66}, 70<<10))
	ro, err := Open(img, Options{ReadOnly: true, Passphrase: []byte("pw")})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	testkit.MustEqual(t, testkit.ReadAll(t, ro), model, "our read of QEMU's write")
}
