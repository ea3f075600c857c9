package main

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestProtocolTargets_LikeQemu: an output name with a protocol prefix
// ("NAME:", no '/' before the colon) is read as qemu-img reads it, by
// create, convert (with and without -n) and dd: "file:" is stripped, a
// protocol qemu-img knows but qring has no driver for is refused at the
// same point (before or after the "Formatting" line, with the same words
// up to the reason a network driver gives), and an unknown one is
// "Unknown protocol". The exit codes, stdout and the files left in the
// directory are qemu-img's. Before, qimg created files literally named
// "json:{}" or "nbd:HOST" and failed where qemu-img created "file:X".
func TestProtocolTargets_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	ours, theirs := workDir(t), workDir(t)
	for _, d := range []string{ours, theirs} {
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(d, "src.qcow2"), "1M")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "raw", filepath.Join(d, "reg"), "1M")
	}
	// Names as templates: D is the directory.
	targets := []string{
		"json:{}", "nbd:D/n", "http:D/h", "null-co:D/z", "foo:D/f", "a:b/c",
		"file:D/out", "file:D/missing/x", "host_device:D/reg", "host_device:D/none", "ssh:D/s",
	}
	// Drivers whose own reason for failing (after qemu-img's common
	// words) qring cannot give: it has no such driver.
	network := func(name string) bool { return strings.HasPrefix(name, "nbd:") || strings.HasPrefix(name, "ssh:") }
	// Opened (convert -n), every driver but file has reasons of its own.
	driver := func(name string) bool {
		return network(name) || strings.HasPrefix(name, "http:") || strings.HasPrefix(name, "null-co:")
	}
	cmds := [][]string{
		{"create", "-f", "qcow2", "T", "1M"},
		{"create", "-f", "raw", "T", "1M"},
		{"convert", "-O", "qcow2", "D/src.qcow2", "T"},
		{"convert", "-n", "-O", "qcow2", "D/src.qcow2", "T"},
		{"dd", "if=D/src.qcow2", "of=T", "-O", "raw"},
	}
	fill := func(args []string, d, target string) []string {
		out := make([]string, len(args))
		for i, a := range args {
			a = strings.ReplaceAll(a, "T", strings.ReplaceAll(target, "D", d))
			out[i] = strings.ReplaceAll(a, "D", d)
		}
		return out
	}
	for _, target := range targets {
		for _, c := range cmds {
			if c[0] == "convert" && c[1] == "-n" && target == "json:{}" {
				continue // an image spec to open: imgopen's tests
			}
			for _, d := range []string{ours, theirs} {
				os.RemoveAll(filepath.Join(d, "out"))
			}
			o, e, code := runQ(t, fill(c, ours, target)...)
			qo, qe, qcode := testkit.Run(t, "qemu-img", fill(c, theirs, target)...)
			name := strings.Join(fill(c, "D", target), " ")
			if code != qcode || strings.ReplaceAll(o, ours, "D") != strings.ReplaceAll(qo, theirs, "D") {
				t.Errorf("%s: exit %d, stdout %q; qemu-img: exit %d, stdout %q", name, code, o, qcode, qo)
			}
			e = asQemu(strings.ReplaceAll(e, ours, "D"))
			qe = lastLine(strings.ReplaceAll(qe, theirs, "D"))
			if network(target) || c[1] == "-n" && driver(target) {
				// Up to the driver's own words.
				cut := func(s string) string {
					for _, w := range []string{"opening the image failed: ", "error while converting qcow2: ", "error while creating output image: ", "Could not open '" + target + "': "} {
						if i := strings.Index(s, w); i >= 0 {
							return s[:i+len(w)]
						}
					}
					return strings.SplitN(s, ": ", 3)[0]
				}
				e, qe = cut(e), cut(qe)
			}
			if e != qe {
				t.Errorf("%s:\n qimg:     %q\n qemu-img: %q", name, e, qe)
			}
			if got, want := listDir(t, ours), listDir(t, theirs); got != want {
				t.Errorf("%s: files %s; qemu-img's %s", name, got, want)
			}
		}
	}
}

func listDir(t *testing.T, d string) string {
	t.Helper()
	var names []string
	filepath.Walk(d, func(p string, _ os.FileInfo, err error) error {
		if err == nil && p != d {
			names = append(names, strings.TrimPrefix(p, d+"/"))
		}
		return nil
	})
	sort.Strings(names)
	return strings.Join(names, " ")
}

// TestProtocolOpen_LikeQemu: an image to open named with a protocol
// prefix: info, check and map open "file:X" as X (info names it X), and
// refuse an unknown protocol, or one qring has no driver for, with
// qemu-img's exit code and words up to the driver's own reason.
func TestProtocolOpen_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := workDir(t)
	img := qemuImage(t, filepath.Join(d, "a.qcow2"), "qcow2", "1M")
	for _, name := range []string{"file:" + img, "foo:" + img, "nbd:" + d + "/n", "http:" + d + "/h"} {
		for _, c := range [][]string{{"info"}, {"info", "--output=json"}, {"check"}, {"map"}} {
			args := append(append([]string{}, c...), name)
			o, e, code := runQ(t, args...)
			qo, qe, qcode := testkit.Run(t, "qemu-img", args...)
			if code != qcode || o != qo {
				t.Errorf("%q: exit %d, stdout %q; qemu-img: exit %d, stdout %q", args, code, o, qcode, qo)
			}
			e, qe = asQemu(e), lastLine(qe) // qemu-img's curl driver adds GLib warnings
			if w := "qemu-img: Could not open '" + name + "': "; strings.HasPrefix(qe, w) && !strings.HasPrefix(name, "foo:") {
				e, qe = e[:min(len(e), len(w))], qe[:len(w)]
			}
			if e != qe {
				t.Errorf("%q:\n qimg:     %q\n qemu-img: %q", args, e, qe)
			}
		}
	}
}

// asQemu is qimg's "qimg: COMMAND: message" as qemu-img's "qemu-img: message".
func asQemu(e string) string {
	if rest, ok := strings.CutPrefix(e, "qimg: "); ok {
		if _, msg, ok := strings.Cut(rest, ": "); ok {
			return "qemu-img: " + msg
		}
	}
	return e
}

// lastLine is the last line of s with its newline.
func lastLine(s string) string {
	if s == "" {
		return s
	}
	lines := strings.SplitAfter(strings.TrimSuffix(s, "\n"), "\n")
	return lines[len(lines)-1] + "\n"
}

// TestImageOptsOpenErrors_LikeQemu: an --image-opts string that parses
// but names an option its node's driver does not take, or a driver
// nobody has, fails as qemu-img's open fails ("Could not open 'SPEC':
// Block format 'qcow2' does not support the option 'a'", "Block protocol
// 'file' doesn't support...", "Unknown driver 'x'"), with its exit code
// and no usage line. qimg said "image spec: unknown option(s)..." with
// the usage line.
func TestImageOptsOpenErrors_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := workDir(t)
	img := qemuImage(t, filepath.Join(d, "a.qcow2"), "qcow2", "1M")
	for _, spec := range []string{
		"driver=qcow2,file.filename=" + img + ",a=1,b=2",
		"driver=raw,file.filename=" + img + ",bogus=1",
		"driver=qcow2,file.filename=" + img + ",file.bogus=1",
		"driver=qcow2,file.driver=nope,file.filename=" + img,
		"driver=nope,file.filename=" + img,
	} {
		for _, cmd := range []string{"info", "check", "map"} {
			_, e, code := runQ(t, cmd, "--image-opts", spec)
			_, qe, qcode := testkit.Run(t, "qemu-img", cmd, "--image-opts", spec)
			if e = asQemu(e); code != qcode || e != qe {
				t.Errorf("%s %q: exit %d %q; qemu-img: exit %d %q", cmd, spec, code, e, qcode, qe)
			}
		}
	}
}

// TestImageOptsLenient_LikeQemu: qemu-img's --image-opts probes the
// format when driver= is left out, and takes a repeated key at its last
// value; qimg refused both ("no driver= key", "duplicate key").
func TestImageOptsLenient_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := workDir(t)
	img := qemuImage(t, filepath.Join(d, "a.qcow2"), "qcow2", "1M")
	for _, spec := range []string{
		"file.filename=" + img,
		"file.filename=" + img + ",l2-cache-size=1M",
		"driver=qcow2,file.filename=" + img + ",driver=raw",
		"driver=raw,file.filename=/nonexistent,file.filename=" + img,
	} {
		o, e, code := runQ(t, "info", "--output=json", "--image-opts", spec)
		qo, qe, qcode := testkit.Run(t, "qemu-img", "info", "--output=json", "--image-opts", spec)
		if code != qcode || o != qo || asQemu(e) != qe {
			t.Errorf("%q: exit %d\n%s%s\nqemu-img: exit %d\n%s%s", spec, code, o, e, qcode, qo, qe)
		}
	}
}

// TestProtocolSameFile: "file:X" as the input of a convert to X is X:
// the output is refused as the input, and X keeps its data.
func TestProtocolSameFile(t *testing.T) {
	testkit.NeedQemu(t)
	d := workDir(t)
	img := qemuImage(t, filepath.Join(d, "a.qcow2"), "qcow2", "1M")
	testkit.MustRun(t, "qemu-io", "-f", "qcow2", "-c", "write -P 7 0 4k", img)
	if _, e, code := runQ(t, "convert", "-O", "qcow2", "file:"+img, img); code == 0 {
		t.Errorf("convert file:X X: exit 0 %q", e)
	}
	testkit.MustRun(t, "qemu-io", "-f", "qcow2", "-c", "read -P 7 0 4k", img)
}
