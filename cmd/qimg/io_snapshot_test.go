package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// ioImages are the images of the -s and -C tests, made in d by QEMU: a
// qcow2 over a qcow2 base (data, a zero cluster), a qcow2 alone, a raw
// file, a dynamic VHD, a VMDK over a VMDK parent. Each maps a name to
// its path and format.
func ioImages(t *testing.T, d string) map[string][2]string {
	t.Helper()
	p := func(n string) string { return filepath.Join(d, n) }
	mk := func(args ...string) { testkit.MustRun(t, "qemu-img", append([]string{"create", "-q"}, args...)...) }
	mk("-f", "qcow2", p("base.qcow2"), "1M")
	qio(t, p("base.qcow2"), "write -P 7 0 128k", "write -z 128k 64k", "write -P 9 512k 64k")
	mk("-f", "qcow2", "-b", p("base.qcow2"), "-F", "qcow2", p("top.qcow2"))
	qio(t, p("top.qcow2"), "write -P 5 512k 4k")
	mk("-f", "qcow2", p("plain.qcow2"), "1M")
	mk("-f", "raw", p("r.raw"), "1M")
	qio(t, p("r.raw"), "write -P 3 0 64k")
	mk("-f", "vpc", p("v.vhd"), "4M")
	qio(t, p("v.vhd"), "write -P 3 0 64k")
	mk("-f", "vmdk", p("parent.vmdk"), "1M")
	qio(t, p("parent.vmdk"), "write -P 7 0 128k")
	mk("-f", "vmdk", "-b", p("parent.vmdk"), "-F", "vmdk", p("child.vmdk"))
	return map[string][2]string{
		"top": {p("top.qcow2"), "qcow2"}, "plain": {p("plain.qcow2"), "qcow2"}, "raw": {p("r.raw"), "raw"},
		"vpc": {p("v.vhd"), "vpc"}, "vmdk": {p("parent.vmdk"), "vmdk"}, "vmdkchild": {p("child.vmdk"), "vmdk"},
	}
}

// tempName is the name of a temporary overlay in an error message.
var tempName = regexp.MustCompile(`/vl\.[A-Za-z0-9]+'`)

// TestIOSnapshot_LikeQemu: qimg io -s (--snapshot) runs the commands on a
// temporary qcow2 overlay as qemu-io -s does: the image is read through
// it and never written (its bytes stay the same), the overlay lives in
// $TMPDIR and is gone afterwards; map, info (the overlay's: qcow2 over
// any format), truncate and discard are the overlay's. -r makes the
// overlay read-only ("Block node is read-only"); a $TMPDIR that does not
// exist fails the open ("Could not open temporary file"). Over a driver
// stack (--image-opts) too. qimg refused -s.
func TestIOSnapshot_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := workDir(t)
	tmp := filepath.Join(d, "tmp")
	if err := os.Mkdir(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", tmp) // where both tools put their overlays
	imgs := ioImages(t, d)
	cmds := []string{"-c", "write -P 1 4k 4k", "-c", "read -P 1 4k 4k", "-c", "read -P 7 0 4k", "-c", "read -P 5 512k 4k",
		"-c", "map", "-c", "info", "-c", "truncate 2M", "-c", "length", "-c", "discard 0 64k", "-c", "map", "-c", "read -P 0 1M 4k"}
	type tc struct {
		name string
		args []string
	}
	var cases []tc
	for _, n := range []string{"top", "plain", "raw", "vpc", "vmdk", "vmdkchild"} {
		cases = append(cases, tc{n, append([]string{"-s", "-f", imgs[n][1]}, cmds...)})
	}
	cases = append(cases,
		tc{"top", append([]string{"--snapshot"}, cmds...)},
		tc{"top", []string{"-s", "-r", "-c", "write 0 4k", "-c", "read 0 4k"}},
		tc{"raw", []string{"-r", "-s", "-c", "read 0 4k", "-c", "write 0 4k"}},
		tc{"raw", []string{"-s", "-f", "raw", "-c", "write -P 2 0 4k", "-c", "read -P 2 0 4k"}},
		tc{"spec", []string{"-s", "-c", "write -P 1 0 4k", "-c", "read -P 1 0 4k", "-c", "read -P 7 64k 4k", "-c", "info"}},
	)
	for _, c := range cases {
		for _, img := range []struct{ ours, theirs string }{{"ours", "theirs"}} {
			src := imgs[c.name][0]
			if c.name == "spec" {
				src = imgs["top"][0]
			}
			ours, theirs := filepath.Join(d, img.ours+filepath.Ext(src)), filepath.Join(d, img.theirs+filepath.Ext(src))
			cp(t, src, ours)
			cp(t, src, theirs)
			orig, _ := os.ReadFile(ours)
			oa, qa := append([]string(nil), c.args...), append([]string(nil), c.args...)
			if c.name == "spec" {
				oa = append(oa, "--image-opts", "driver=qcow2,file.driver=file,file.filename="+ours)
				qa = append(qa, "--image-opts", "driver=qcow2,file.driver=file,file.filename="+theirs)
			} else {
				oa, qa = append(oa, ours), append(qa, theirs)
			}
			o, e, code := runQ(t, append([]string{"io"}, oa...)...)
			qo, qe, qcode := testkit.Run(t, "qemu-io", qa...)
			if code != qcode || normTiming(o) != normTiming(qo) || asQemuIO(e) != qe {
				t.Errorf("%s %q: qimg exit %d\n%s%s\nqemu-io exit %d\n%s%s", c.name, c.args, code, o, e, qcode, qo, qe)
			}
			for _, p := range []string{ours, theirs} {
				if b, _ := os.ReadFile(p); !bytes.Equal(b, orig) {
					t.Errorf("%s %q: -s changed %s", c.name, c.args, p)
				}
			}
			if left, _ := os.ReadDir(tmp); len(left) != 0 {
				t.Errorf("%s %q: overlays left in $TMPDIR: %v", c.name, c.args, left)
			}
		}
	}
	// No $TMPDIR: the open fails, naming the file it tried.
	t.Setenv("TMPDIR", filepath.Join(d, "nosuch"))
	o, e, code := runQ(t, "io", "-s", "-c", "read 0 4k", imgs["top"][0])
	qo, qe, qcode := testkit.Run(t, "qemu-io", "-s", "-c", "read 0 4k", imgs["top"][0])
	want := "Could not open temporary file '" + filepath.Join(d, "nosuch") + "/vl.X': No such file or directory\n"
	if code != qcode || o != qo || !strings.HasSuffix(tempName.ReplaceAllString(e, "/vl.X'"), want) ||
		!strings.HasSuffix(tempName.ReplaceAllString(qe, "/vl.X'"), want) {
		t.Errorf("no TMPDIR: qimg exit %d\n%s%s\nqemu-io exit %d\n%s%s", code, o, e, qcode, qo, qe)
	}
}

// TestIOCopyOnRead_LikeQemu: qimg io -C (--copy-on-read) copies what a
// read takes from the backing chain into the image, as qemu-io -C: over
// a qcow2 base the clusters read (data, or zeros as zero clusters), in a
// qcow2 alone zero clusters, in a VMDK over a parent the grains; a raw
// file and a VHD allocate everything as QEMU sees them, so nothing
// changes there. Afterwards the images read the same, their maps are
// the same, and they are sound. -C with -r is refused ("Can't use
// copy-on-read on read-only device"). qimg refused -C. QEMU's
// copy-on-read driver over the qcow2 (a spec) does the same (qimg copied
// only the bytes read, leaving clusters part-copied, as file holes), and
// qemu-io's info, discard and map see through it to the image (qimg
// called it raw, all allocated); read-only, qemu-img refuses it ("Block
// node is read-only"), where qimg opened it.
func TestIOCopyOnRead_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	d := workDir(t)
	imgs := ioImages(t, d)
	reads := []string{"-c", "read -P 7 4k 4k", "-c", "read 60k 100k", "-c", "read 200k 4k", "-c", "read -P 5 512k 4k",
		"-c", "write -P 6 600k 4k", "-c", "read 590k 20k", "-c", "map"}
	for _, n := range []string{"top", "plain", "raw", "vpc", "vmdk", "vmdkzg"} {
		src, f := imgs[n][0], imgs[n][1]
		if n == "vmdk" || n == "vmdkzg" {
			src, f = filepath.Join(d, n+".vmdk"), "vmdk" // written in part
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "zeroed_grain="+map[bool]string{true: "on", false: "off"}[n == "vmdkzg"], src, "1M")
			qio(t, src, "write -P 7 0 64k", "write -P 5 512k 64k")
		}
		for _, args := range [][]string{append([]string{"-C", "-f", f}, reads...), {"--copy-on-read", "-r", "-c", "read 0 4k"}} {
			ours, theirs := filepath.Join(d, "ours"+filepath.Ext(src)), filepath.Join(d, "theirs"+filepath.Ext(src))
			cp(t, src, ours)
			cp(t, src, theirs)
			o, e, code := runQ(t, append(append([]string{"io"}, args...), ours)...)
			qo, qe, qcode := testkit.Run(t, "qemu-io", append(args, theirs)...)
			if code != qcode || normTiming(o) != normTiming(qo) || strings.ReplaceAll(asQemuIO(e), ours, theirs) != qe {
				t.Errorf("%s %q: qimg exit %d\n%s%s\nqemu-io exit %d\n%s%s", n, args, code, o, e, qcode, qo, qe)
				continue
			}
			if code != 0 {
				continue
			}
			testkit.MustRun(t, "qemu-img", "compare", "-q", "-f", f, "-F", f, ours, theirs)
			if om, qm := qio(t, ours, "map"), qio(t, theirs, "map"); om != qm {
				t.Errorf("%s %q: qemu-io map after qimg io:\n%safter qemu-io:\n%s", n, args, om, qm)
			}
			if f == "qcow2" {
				testkit.MustRun(t, "qemu-img", "check", "-q", ours)
			}
			if om, qm := testkit.MustRun(t, "qemu-img", "map", "--output=json", ours), testkit.MustRun(t, "qemu-img", "map", "--output=json", theirs); om != qm {
				t.Errorf("%s %q: qemu-img map after qimg io:\n%s\nafter qemu-io:\n%s", n, args, om, qm)
			}
		}
	}
	// QEMU's copy-on-read driver over the qcow2 (a spec) copies the
	// same whole clusters.
	ours, theirs := filepath.Join(d, "ours.qcow2"), filepath.Join(d, "theirs.qcow2")
	cp(t, imgs["top"][0], ours)
	cp(t, imgs["top"][0], theirs)
	spec := `json:{"driver":"copy-on-read","file":{"driver":"qcow2","file":{"driver":"file","filename":"%s"}}}`
	sargs := append(append([]string(nil), reads...), "-c", "info", "-c", "discard 0 64k", "-c", "map")
	o, e, code := runQ(t, append(append([]string{"io"}, sargs...), fmt.Sprintf(spec, ours))...)
	qo, qe, qcode := testkit.Run(t, "qemu-io", append(sargs, fmt.Sprintf(spec, theirs))...)
	if code != qcode || normTiming(o) != normTiming(qo) || asQemuIO(e) != qe {
		t.Errorf("copy-on-read driver: qimg exit %d\n%s%s\nqemu-io exit %d\n%s%s", code, o, e, qcode, qo, qe)
	}
	if om, qm := testkit.MustRun(t, "qemu-img", "map", "--output=json", ours), testkit.MustRun(t, "qemu-img", "map", "--output=json", theirs); om != qm {
		t.Errorf("copy-on-read driver: qemu-img map after qimg io:\n%s\nafter qemu-io:\n%s", om, qm)
	}
	// Read-only, the driver is refused: it writes what it reads.
	for _, cmd := range []string{"map", "info", "check", "compare"} {
		args := []string{cmd, fmt.Sprintf(spec, ours)}
		if cmd == "compare" {
			args = append(args, ours)
		}
		_, e, code := runQ(t, args...)
		_, qe, qcode := testkit.Run(t, "qemu-img", args...)
		if code != qcode || !strings.HasSuffix(e, ": Block node is read-only\n") || !strings.HasSuffix(qe, ": Block node is read-only\n") {
			t.Errorf("%s of a copy-on-read spec: qimg exit %d %s\nqemu-img exit %d %s", cmd, code, e, qcode, qe)
		}
	}
}
