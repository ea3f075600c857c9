package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// vmdkImages creates VMDK images with qemu-img (each subformat qimg
// reads, sizes with and without whole grains, a zeroed-grain image, a
// two-extent image) and fills them with qemu-io; streamOptimized ones
// also by qemu-img convert from a raw file with data. It returns name ->
// path, and which are big (left out of the raw comparisons).
func vmdkImages(t *testing.T, dir string) (paths map[string]string, big map[string]bool) {
	t.Helper()
	paths, big = map[string]string{}, map[string]bool{}
	fill := map[string][]string{
		"1M":       {"write -P 0x5a 0 64k", "write -P 7 512k 512"},
		"100M":     {"write -P 0x5a 0 64k", "write -P 7 3M 512", "write -P 9 50M 1M", "write -P 3 99M 512"},
		"1000001k": {"write -P 0x5a 0 64k", "write -P 7 3M 512", "write -P 2 976M 512", "write -P 4 1000000k 1k"},
	}
	for size, cmds := range fill {
		for _, sub := range []string{"monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat"} {
			name := sub + "-" + size
			p := filepath.Join(dir, name+".vmdk")
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat="+sub, p, size)
			qemuIO(t, p, "vmdk", cmds...)
			paths[name] = p
		}
	}
	// More than one extent: a 2 GiB extent and the rest.
	for _, sub := range []string{"twoGbMaxExtentSparse", "twoGbMaxExtentFlat"} {
		p := filepath.Join(dir, sub+"-2049M.vmdk")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat="+sub, p, "2049M")
		qemuIO(t, p, "vmdk", "write -P 0x5a 0 64k", "write -P 7 2047M 2M", "write -P 9 1000001k 512")
		paths[sub+"-2049M"], big[sub+"-2049M"] = p, true
	}
	// Zeroed grains (zeroed_grain=on, write -z).
	p := filepath.Join(dir, "zeroed.vmdk")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "zeroed_grain=on", p, "10M")
	qemuIO(t, p, "vmdk", "write -P 1 0 1M", "write -z 64k 128k", "write -z 5M 64k")
	paths["zeroed"] = p
	// streamOptimized: written by qemu-io (whole grains, in order), and
	// converted from a raw file with data and holes.
	p = filepath.Join(dir, "stream.vmdk")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=streamOptimized", p, "5M")
	qemuIO(t, p, "vmdk", "write -P 0x5a 0 64k", "write -P 7 1M 64k", "write -P 8 2M 128k")
	paths["stream"] = p
	raw := filepath.Join(dir, "src.raw")
	data := make([]byte, 7<<20+512)
	for i := range data[:3<<20] {
		data[i] = byte(i*7 + i>>9)
	}
	copy(data[6<<20:], "hello")
	copy(data[7<<20:], "tail")
	if err := os.WriteFile(raw, data, 0o644); err != nil {
		t.Fatal(err)
	}
	p = filepath.Join(dir, "stream-converted.vmdk")
	testkit.MustRun(t, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, p)
	paths["stream-converted"] = p
	os.Remove(raw)
	// The layout VMware writes: the header's gd_offset is GD_AT_END, and
	// a footer (marker, header, end-of-stream marker) ends the file.
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	hdr := append([]byte(nil), b[:512]...)
	binary.LittleEndian.PutUint64(b[56:], ^uint64(0))
	foot := make([]byte, 1536)
	binary.LittleEndian.PutUint64(foot, 1)
	binary.LittleEndian.PutUint32(foot[12:], 3) // MARKER_FOOTER
	copy(foot[512:], hdr)
	p = filepath.Join(dir, "stream-footer.vmdk")
	if err := os.WriteFile(p, append(b, foot...), 0o644); err != nil {
		t.Fatal(err)
	}
	paths["stream-footer"] = p
	return paths, big
}

// sameRun: qimg and qemu-img, given args, exit with the same status and
// print the same standard output and standard error (qimg's messages
// name the command after "qimg:").
func sameRun(t *testing.T, args ...string) {
	t.Helper()
	o, e, code := runQ(t, args...)
	qo, qe, qcode := testkit.Run(t, "qemu-img", args...)
	em := strings.ReplaceAll(e, "qimg: "+args[0]+": ", "qemu-img: ")
	if o != qo || code != qcode || em != qe {
		t.Errorf("%q: exit %d, %q\n%s\nqemu-img: exit %d, %q\n%s", args, code, e, o, qcode, qe, qo)
	}
}

// TestVMDK_InfoMapCompareLikeQemu: qimg info, map and compare of VMDK
// images agree with qemu-img's, with -f vmdk and probed: info line for
// line, its vmdk block included.
func TestVMDK_InfoMapCompareLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	paths, _ := vmdkImages(t, workDir(t))
	for name, p := range paths {
		t.Run(name, func(t *testing.T) {
			for _, a := range [][]string{{"-f", "vmdk", p}, {p}} {
				if h, q := qimgAndQemu(t, append([]string{"info"}, a...)...); h != q {
					t.Errorf("info %q differs:\nours:\n%s\nqemu-img:\n%s", a, h, q)
				}
				oj, qj := qimgAndQemu(t, append([]string{"info", "--output=json"}, a...)...)
				if ours, qemu := decodeJSON(t, oj), decodeJSON(t, qj); !reflect.DeepEqual(ours, qemu) {
					t.Errorf("info --output=json %q differs:\nours:\n%s\nqemu-img:\n%s", a, oj, qj)
				}
				oj, qj = qimgAndQemu(t, append([]string{"map", "--output=json"}, a...)...)
				if om, qm := decodeMap(t, oj), decodeMap(t, qj); !reflect.DeepEqual(om, qm) {
					t.Errorf("map %q differs\nours: %s\nqemu: %s", a, oj, qj)
				}
				sameRun(t, append([]string{"map"}, a...)...)
			}
			sameRun(t, "map", "--start-offset=1M", "--max-length=3M", p)
			sameRun(t, "check", p)
			sameRun(t, "check", "-q", p)
			sameRun(t, "check", "--output=json", "-f", "vmdk", p)
			sameRun(t, "check", "-r", "all", p)
			if h, q := qimgAndQemu(t, "compare", "-f", "vmdk", "-F", "vmdk", p, p); h != q {
				t.Errorf("compare differs:\nours:\n%s\nqemu-img:\n%s", h, q)
			}
		})
	}
}

// TestVMDK_ConvertLikeQemu: qimg convert -f vmdk -O raw writes the bytes
// qemu-img convert writes, and -O qcow2 (probed) an image qemu-img check
// passes and qemu-img compare finds identical to the VMDK.
func TestVMDK_ConvertLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	dir := workDir(t)
	paths, big := vmdkImages(t, dir)
	for name, p := range paths {
		t.Run(name, func(t *testing.T) {
			convertLikeQemu(t, dir, name, p, "vmdk", !big[name], true)
		})
	}
}

// TestVMDK_HostileLikeQemu: damaged VMDK images are refused by qimg with
// qemu-img's words where qemu-img refuses them too, and with a clear
// error of qring's where QEMU would read on (a grain directory past the
// end of the file); never a panic, a hang or an allocation sized by the
// image (vmdk's KD3).
func TestVMDK_HostileLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	dir := testkit.Dir(t)
	good := filepath.Join(dir, "good.vmdk")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", good, "100M")
	qemuIO(t, good, "vmdk", "write -P 1 0 512")
	src, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	// Refused by both, in QEMU's words.
	for name, edit := range map[string]func([]byte) []byte{
		"tiny":        func(b []byte) []byte { return b[:3] },
		"truncated":   func(b []byte) []byte { return b[:1000] },
		"bad version": func(b []byte) []byte { le.PutUint32(b[4:], 4); return b },
		"big gt":      func(b []byte) []byte { le.PutUint32(b[44:], 513); return b },
		"zero grain":  func(b []byte) []byte { le.PutUint64(b[20:], 0); return b },
		"huge grain":  func(b []byte) []byte { le.PutUint64(b[20:], 0x200001); le.PutUint32(b[44:], 1); return b },
		"huge capacity": func(b []byte) []byte {
			le.PutUint64(b[12:], 40<<20)
			le.PutUint64(b[20:], 1)
			le.PutUint32(b[44:], 1)
			return b
		},
		"grain offset":   func(b []byte) []byte { le.PutUint64(b[64:], 1<<40); return b },
		"no create type": func(b []byte) []byte { return []byte("version=1\nCID=1\nparentCID=ffffffff\n") },
		"bad type":       func(b []byte) []byte { return []byte("version=1\ncreateType=\"custom\"\n") },
		"bad extent":     func(b []byte) []byte { return []byte("version=1\ncreateType=\"monolithicFlat\"\nRW 20 FLAT \"x\"\n") },
		"bad footer":     func(b []byte) []byte { le.PutUint64(b[56:], ^uint64(0)); return b },
		"missing extent": func(b []byte) []byte {
			return []byte("version=1\ncreateType=\"monolithicFlat\"\nRW 20 FLAT \"nonexistent\" 0\n")
		},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".vmdk")
		if err := os.WriteFile(p, edit(append([]byte(nil), src...)), 0o644); err != nil {
			t.Fatal(err)
		}
		_, qe, qcode := testkit.Run(t, "qemu-img", "info", "-f", "vmdk", p)
		_, e, code := runQ(t, "info", "-f", "vmdk", p)
		_, want, _ := strings.Cut(qe, "Could not open")
		_, got, _ := strings.Cut(e, "Could not open")
		if code != 1 || qcode != 1 || got != want || want == "" {
			t.Errorf("%s: exit %d, %q; qemu-img exit %d, %q", name, code, e, qcode, qe)
		}
	}
	// Refused by qimg with its own words: what it does not read, and
	// tables and grains that lie past the end of the file.
	for name, c := range map[string]struct {
		edit func([]byte) []byte
		want string
	}{
		"gd past EOF": {func(b []byte) []byte { le.PutUint64(b[56:], 1<<30); return b }, "grain directory past the end of the file"},
		"COWD":        {func(b []byte) []byte { copy(b, "COWD"); return b }, "not supported by qring"},
		"vmfs":        {func(b []byte) []byte { return []byte("version=1\ncreateType=\"vmfs\"\nRW 20 VMFS \"x\"\n") }, "not supported by qring"},
		"gt past EOF": {func(b []byte) []byte { le.PutUint32(b[le.Uint64(b[56:])*512:], 1<<30); return b }, "past the end of the file"},
		"grain past EOF": {func(b []byte) []byte {
			gt := int64(le.Uint32(b[le.Uint64(b[56:])*512:])) * 512
			le.PutUint32(b[gt:], 1<<30)
			return b
		}, "past the end of the file"},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".vmdk")
		if err := os.WriteFile(p, c.edit(append([]byte(nil), src...)), 0o644); err != nil {
			t.Fatal(err)
		}
		_, e, code := runQ(t, "convert", "-f", "vmdk", "-O", "raw", p, filepath.Join(dir, "out.raw"))
		if code != 1 || !strings.Contains(e, c.want) {
			t.Errorf("%s: exit %d, %q", name, code, e)
		}
	}
	// qemu-img check's verdict on a grain past the end of the file.
	p := filepath.Join(dir, "grain-past-EOF.vmdk")
	sameRun(t, "check", p)
	sameRun(t, "check", "--output=json", p)
	// A corrupt compressed grain fails the read, as in QEMU.
	p = filepath.Join(dir, "stream.vmdk")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=streamOptimized", p, "1M")
	qemuIO(t, p, "vmdk", "write -P 3 0 64k")
	b, _ := os.ReadFile(p)
	// The first grain's marker is at the header's grain offset.
	off := int(le.Uint64(b[64:])) * 512
	b[off+12+10] ^= 0xff
	os.WriteFile(p, b, 0o644)
	_, _, qcode := testkit.Run(t, "qemu-img", "convert", "-O", "raw", p, filepath.Join(dir, "q.raw"))
	_, e, code := runQ(t, "convert", "-O", "raw", p, filepath.Join(dir, "o.raw"))
	if code != 1 || qcode != 1 || !strings.Contains(e, "compressed grain") {
		t.Errorf("corrupt grain: exit %d, %q; qemu-img exit %d", code, e, qcode)
	}
}

// TestVMDK_WritesRefused: a VMDK image qimg does not write (here one
// whose grains overlap: QEMU writes it) is read-only in qimg: io's
// write is refused, the image left as it was.
func TestVMDK_WritesRefused(t *testing.T) {
	testkit.NeedQemu(t)
	p := filepath.Join(t.TempDir(), "a.vmdk") // damaged: not checked at cleanup
	testkit.OverlappingVMDK(t, p)
	before, _ := os.ReadFile(p)
	if _, e, code := runQ(t, "io", "-f", "vmdk", "-c", "write 0 512", p); code == 0 || !strings.Contains(e, "grains or metadata overlap") {
		t.Errorf("io write: exit %d, %s", code, e)
	}
	if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
		t.Error("the image changed")
	}
}

// TestVMDK_NoExtentDescriptorMatchesQemu: a descriptor file of a size
// of 0 (no extent line), made by qemu-img create or qimg create, opens
// as in QEMU: check, map, compare and measure say what qemu-img says, and
// qemu-io writes and reads nothing in it as qimg io does. qemu-img info
// and convert fail an assertion there (vmdk_get_info: s->num_extents);
// qimg's show an image of 0 bytes and no extent, and convert it.
func TestVMDK_NoExtentDescriptorMatchesQemu(t *testing.T) {
	dir := qemuDir(t)
	for _, sub := range []string{"monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat"} {
		for _, maker := range []string{"qemu", "qimg"} {
			p := filepath.Join(dir, sub+"-"+maker+".vmdk")
			if maker == "qemu" {
				testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat="+sub, p, "0")
			} else {
				mustQ(t, "create", "-q", "-f", "vmdk", "-o", "subformat="+sub, p, "0")
			}
			sameRun(t, "check", p)
			sameRun(t, "check", "--output=json", "-f", "vmdk", p)
			sameRun(t, "map", p)
			// (map --output=json of any image of 0 bytes prints
			// "compressed", which qemu-img 7.2 leaves out there.)
			sameRun(t, "compare", p, p)
			sameRun(t, "measure", "-O", "qcow2", p)
			qo := testkit.MustRun(t, "qemu-io", "-f", "vmdk", "-c", "write 0 0", "-c", "read 0 0", p)
			if o := mustQ(t, "io", "-f", "vmdk", "-c", "write 0 0", "-c", "read 0 0", p); ioHeads(o) != ioHeads(qo) {
				t.Errorf("%s: io %q, qemu-io %q", p, o, qo)
			}
			info := mustQ(t, "info", "--output=json", p)
			var got struct {
				Size     int64 `json:"virtual-size"`
				Specific struct {
					Data struct {
						CreateType string            `json:"create-type"`
						Extents    []json.RawMessage `json:"extents"`
					} `json:"data"`
				} `json:"format-specific"`
			}
			if err := json.Unmarshal([]byte(info), &got); err != nil || got.Size != 0 ||
				got.Specific.Data.CreateType != sub || got.Specific.Data.Extents == nil || len(got.Specific.Data.Extents) != 0 {
				t.Errorf("%s: info %s (%v)", p, info, err)
			}
			out := filepath.Join(dir, sub+"-"+maker+".qcow2")
			mustQ(t, "convert", "-O", "qcow2", p, out)
			sameRun(t, "compare", "-f", "vmdk", "-F", "qcow2", p, out)
		}
	}
}

// ioHeads is each line's first two words: qemu-io's timings differ.
func ioHeads(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		f := strings.Fields(l)
		b.WriteString(strings.Join(f[:min(2, len(f))], " ") + "\n")
	}
	return b.String()
}

// TestVMDK_BadRGDMatchesQemu: a redundant grain directory QEMU cannot
// read (its offset negative or past the block layer's largest) makes
// qimg info, check, convert and io -r fail as qemu-img's and qemu-io's
// do; one past the end of the file or over the header opens in both
// and is checked alike (qemu-img check never looks at it).
func TestVMDK_BadRGDMatchesQemu(t *testing.T) {
	dir := qemuDir(t)
	src := qemuImage(t, filepath.Join(dir, "src.vmdk"), "vmdk", "100M", "write -P 5 0 64k")
	clean, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	for name, rgd := range map[string]uint64{"past-EOF": 1 << 20, "over-header": 1, "negative": 1 << 54, "past-largest": (1<<63 - 1<<30) / 512} {
		p := filepath.Join(dir, name+".vmdk")
		img := bytes.Clone(clean)
		binary.LittleEndian.PutUint64(img[48:], rgd)
		if err := os.WriteFile(p, img, 0o644); err != nil {
			t.Fatal(err)
		}
		sameRun(t, "check", p)
		sameRun(t, "check", "--output=json", p)
		_, qe, qcode := testkit.Run(t, "qemu-img", "info", p)
		_, e, code := runQ(t, "info", p)
		if code != qcode || strings.ReplaceAll(e, "qimg: info: ", "qemu-img: ") != qe {
			t.Errorf("%s: info exit %d %q; qemu-img exit %d %q", name, code, e, qcode, qe)
		}
		out := filepath.Join(dir, name+".raw")
		_, qe, qcode = testkit.Run(t, "qemu-img", "convert", "-O", "raw", p, out)
		_, e, code = runQ(t, "convert", "-O", "raw", p, out)
		if code != qcode || strings.ReplaceAll(e, "qimg: convert: ", "qemu-img: ") != qe {
			t.Errorf("%s: convert exit %d %q; qemu-img exit %d %q", name, code, e, qcode, qe)
		}
		qo, qe, qcode := testkit.Run(t, "qemu-io", "-r", "-f", "vmdk", "-c", "read -P 5 0 64k", p)
		o, e, code := runQ(t, "io", "-r", "-f", "vmdk", "-c", "read -P 5 0 64k", p)
		if code != qcode || ioHeads(o) != ioHeads(qo) || strings.ReplaceAll(e, "qimg: io: ", "qemu-io: ") != qe {
			t.Errorf("%s: io exit %d %q %q; qemu-io exit %d %q %q", name, code, o, e, qcode, qo, qe)
		}
	}
}
