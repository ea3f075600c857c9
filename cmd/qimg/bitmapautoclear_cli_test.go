package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// staleBitmapsFile writes at path an image with bitmap b0 whose autoclear
// bit is then cleared, as by a program lacking bitmap support, made by
// qemu-img.
func staleBitmapsFile(t *testing.T, path string) {
	t.Helper()
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", path, "1M")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", path, "b0")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	binary.BigEndian.PutUint64(b[88:], binary.BigEndian.Uint64(b[88:])&^1)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

var (
	qemuWarnPrefix = regexp.MustCompile(`(?m)^qemu-(img|io): warning: `)
	qemuErrPrefix  = regexp.MustCompile(`(?m)^qemu-(img|io): `)
	qimgErrPrefix  = regexp.MustCompile(`(?m)^qimg: [a-z]+: `)
)

// normStderr puts qemu-img's and qimg's stderr in the same words: the
// warning's prefix ("qimg: warning: " for "qemu-img: warning: "), the
// end of line QEMU's hint lacks (error_printf), the commands' error
// prefixes.
func normStderr(s string, qemu bool) string {
	if qemu {
		s = strings.ReplaceAll(s, "on the image file to fix.", "on the image file to fix.\n")
		s = qemuWarnPrefix.ReplaceAllString(s, "qimg: warning: ")
		return qemuErrPrefix.ReplaceAllString(s, "")
	}
	return qimgErrPrefix.ReplaceAllStringFunc(s, func(m string) string {
		if m == "qimg: warning: " {
			return m
		}
		return ""
	})
}

// imageState is what qemu-img says of the image at path: info and check
// in JSON (without the file's name and allocated size).
func imageState(t *testing.T, path string) string {
	t.Helper()
	var keep []string
	for _, args := range [][]string{{"info", "--output=json", path}, {"check", "--output=json", path}} {
		out, _, _ := testkit.Run(t, "qemu-img", args...)
		for _, l := range strings.Split(out, "\n") {
			if !strings.Contains(l, `"filename"`) && !strings.Contains(l, `"actual-size"`) {
				keep = append(keep, l)
			}
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	keep = append(keep, "autoclear "+string('0'+rune(binary.BigEndian.Uint64(b[88:])&1)))
	return strings.Join(keep, "\n")
}

// TestBitmapAutoclear_CLILikeQemu: on an image with stale bitmaps (the
// bitmaps extension there, its autoclear bit clear), each command warns
// on stderr as qemu-img (qemu-io) does, once per open, and leaves the
// image as qemu-img does: a writable open drops the extension, the
// bitmaps' clusters stay leaked.
func TestBitmapAutoclear_CLILikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	cases := [][]string{
		{"info", "IMG"},
		{"info", "--output=json", "IMG"},
		{"info", "-U", "IMG"},
		{"check", "IMG"},
		{"check", "--output=json", "IMG"},
		{"check", "-r", "leaks", "IMG"},
		{"check", "-r", "all", "IMG"},
		{"map", "IMG"},
		{"measure", "-O", "qcow2", "IMG"},
		{"compare", "IMG", "IMG"},
		{"snapshot", "-l", "IMG"},
		{"bitmap", "--add", "IMG", "b1"},
		{"bitmap", "--remove", "IMG", "b0"},
		{"resize", "IMG", "2M"},
		{"amend", "-o", "lazy_refcounts=on", "IMG"},
		{"convert", "--bitmaps", "-O", "qcow2", "IMG", "OUT"},
		{"io", "-c", "read 0 512", "IMG"},
		{"io", "-r", "-c", "read 0 512", "IMG"},
		{"io", "-c", "write 0 512", "IMG"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c, " "), func(t *testing.T) {
			dir := t.TempDir()
			var errs, states [2]string
			var codes [2]int
			for i, tool := range []string{"qemu", "qimg"} {
				img := filepath.Join(dir, tool+".qcow2")
				staleBitmapsFile(t, img)
				args := make([]string, len(c))
				for j, a := range c {
					args[j] = strings.NewReplacer("IMG", img, "OUT", filepath.Join(dir, tool+"-out.qcow2")).Replace(a)
				}
				var stderr string
				switch {
				case tool == "qimg":
					_, stderr, codes[i] = runQ(t, args...)
				case args[0] == "io":
					_, stderr, codes[i] = testkit.Run(t, "qemu-io", args[1:]...)
				default:
					_, stderr, codes[i] = testkit.Run(t, "qemu-img", args...)
				}
				errs[i] = normStderr(strings.ReplaceAll(stderr, img, "IMG"), tool == "qemu")
				states[i] = imageState(t, img)
			}
			if codes[0] != codes[1] {
				t.Errorf("exit %d, qemu %d", codes[1], codes[0])
			}
			if errs[0] != errs[1] {
				t.Errorf("stderr:\n%s\nqemu's (normalized):\n%s", errs[1], errs[0])
			}
			if !strings.Contains(errs[0], "qimg: warning: a program lacking bitmap support") {
				t.Errorf("qemu did not warn: %q", errs[0])
			}
			if states[0] != states[1] {
				t.Errorf("image after:\n%s\nqemu's:\n%s", states[1], states[0])
			}
		})
	}
}
