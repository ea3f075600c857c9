package imgopen

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2"
)

// TestOpenSpec_BackingBesideTheFile: a qcow2 node over a file node (aio,
// locking, a raw or throttle node between) resolves a relative backing
// file name against the image's directory, as QEMU's bdrv_dirname does
// through the file child. It was resolved against the working
// directory: reads showed another file's bytes, and a write's copy on
// write put them into the overlay for good.
func TestOpenSpec_BackingBesideTheFile(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	fill := func(p string, v byte) {
		im, err := qcow2.Open(p, qcow2.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := block.WriteAt(im, bytes.Repeat([]byte{v}, 65536), 0); err != nil {
			t.Fatal(err)
		}
		if err := im.Close(); err != nil {
			t.Fatal(err)
		}
	}
	fill(mkQcow2(t, sub, "b.qcow2", 1<<20), 0x11)
	fill(mkQcow2(t, dir, "b.qcow2", 1<<20), 0x22) // the working directory's
	if err := qcow2.Create(filepath.Join(sub, "o.qcow2"), qcow2.CreateOptions{Size: 1 << 20, BackingFile: "b.qcow2", BackingFormat: "qcow2"}); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	for _, spec := range []string{
		"driver=qcow2,file.driver=file,file.filename=sub/o.qcow2,file.aio=threads",
		"driver=qcow2,file.driver=file,file.filename=sub/o.qcow2,file.locking=off",
		"driver=qcow2,file.driver=raw,file.file.filename=sub/o.qcow2",
		"driver=qcow2,file.driver=throttle,file.file.driver=file,file.file.filename=sub/o.qcow2",
	} {
		o, err := OpenSpec(spec, Spec{AIO: "threads", ReadOnly: true})
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		b := make([]byte, 512)
		err = o.Dev.Readv(0, [][]byte{b})
		o.Close()
		if err != nil || b[0] != 0x11 {
			t.Errorf("%s: reads %#x, %v; want sub/b.qcow2's 0x11", spec, b[0], err)
		}
	}
}

// TestParseSpec_JSONDuplicateKey: a key twice in one JSON object is
// refused, as QEMU refuses it (the last value was taken: a raw window
// at another offset than the first one written).
func TestParseSpec_JSONDuplicateKey(t *testing.T) {
	for _, c := range []struct {
		spec string
		ok   bool
	}{
		{`json:{"driver":"raw","offset":"512","offset":"1024","file":"x"}`, false},
		{`json:{"driver":"raw","file":{"driver":"file","filename":"a","filename":"b"}}`, false},
		{`json:{"driver":"quorum","children":[{"driver":"file","filename":"a"},{"driver":"file","filename":"a"}]}`, true},
		{`json:{"driver":"raw","file":{"driver":"file","filename":"a"},"x":{"filename":"a"}}`, true},
	} {
		_, err := ParseSpec(c.spec)
		if (err == nil) != c.ok {
			t.Errorf("%s: %v", c.spec, err)
		}
	}
}

// TestIsSpec_ExistingFile: an argument that starts with driver= but
// names an existing file is that file, as for QEMU's tools.
func TestIsSpec_ExistingFile(t *testing.T) {
	t.Chdir(t.TempDir())
	name := "driver=raw,offset=512,file.filename=pat.img"
	if !IsSpec(name) || !IsSpec("json:{}") || IsSpec("x.qcow2") {
		t.Fatal("IsSpec without the file")
	}
	if err := os.WriteFile(name, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if IsSpec(name) {
		t.Fatal("an existing file taken for a spec")
	}
}

// TestNodeBoolean_LikeQemu: booleans as QEMU's qapi_bool_parse: on, yes,
// true, y and their opposites; 1 and 0 are refused (they were taken).
func TestNodeBoolean_LikeQemu(t *testing.T) {
	for v, want := range map[string]bool{"on": true, "yes": true, "true": true, "y": true, "off": false, "no": false, "false": false, "n": false} {
		if got, err := newNode(map[string]any{"k": v}, "").boolean("k", !want); err != nil || got != want {
			t.Errorf("%q: %v, %v", v, got, err)
		}
	}
	for _, v := range []string{"1", "0", "", "On"} {
		if _, err := newNode(map[string]any{"k": v}, "").boolean("k", false); err == nil {
			t.Errorf("%q accepted", v)
		}
	}
}

// TestOpenSpec_BackingWithoutDirectory: an image stored in a quorum or
// blkverify node has no directory (QEMU's bdrv_dirname: "Cannot generate a
// base directory for quorum nodes"), and a relative backing file name in
// it is refused, as qemu-io refuses it; it was taken relative to the
// working directory, and read that directory's file of that name. A
// mirror node over a file, and a qcow2 node over a qcow2 node, look
// through to the file's directory (they took the working directory's
// file too).
func TestOpenSpec_BackingWithoutDirectory(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(p string, b []byte) {
		im, err := qcow2.Open(p, qcow2.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := block.WriteAt(im, b, 0); err != nil {
			t.Fatal(err)
		}
		if err := im.Close(); err != nil {
			t.Fatal(err)
		}
	}
	write(mkQcow2(t, sub, "b.qcow2", 1<<20), bytes.Repeat([]byte{0x11}, 65536))
	write(mkQcow2(t, dir, "b.qcow2", 1<<20), bytes.Repeat([]byte{0x22}, 65536)) // the working directory's
	for _, n := range []string{"o.qcow2", "o2.qcow2", "m.qcow2"} {
		if err := qcow2.Create(filepath.Join(sub, n), qcow2.CreateOptions{Size: 1 << 20, BackingFile: "b.qcow2", BackingFormat: "qcow2"}); err != nil {
			t.Fatal(err)
		}
	}
	// A qcow2 image in sub whose guest disk holds o.qcow2's bytes.
	ob, err := os.ReadFile(filepath.Join(sub, "o.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	write(mkQcow2(t, sub, "in.qcow2", 1<<20), ob)
	t.Chdir(dir)
	for spec, want := range map[string]string{
		"driver=qcow2,file.driver=quorum,file.vote-threshold=1,file.children.0.driver=file,file.children.0.filename=sub/o.qcow2,file.children.1.driver=file,file.children.1.filename=sub/o2.qcow2": "Cannot generate a base directory for quorum nodes",
		"driver=qcow2,file.driver=blkverify,file.test.driver=file,file.test.filename=sub/o.qcow2,file.raw.driver=file,file.raw.filename=sub/o2.qcow2":                                              "Cannot generate a base directory for blkverify nodes",
		"driver=qcow2,file.driver=throttle,file.file.driver=quorum,file.file.vote-threshold=1,file.file.children.0.driver=file,file.file.children.0.filename=sub/o.qcow2":                          "Cannot generate a base directory for quorum nodes",
	} {
		o, err := OpenSpec(spec, Spec{AIO: "threads", ReadOnly: true})
		if err == nil {
			b := make([]byte, 512)
			err = o.Dev.Readv(0, [][]byte{b})
			o.Close()
			t.Errorf("%s: opened (reads %#x, %v); want %q", spec, b[0], err, want)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v; want %q", spec, err, want)
		}
	}
	for _, spec := range []string{
		"driver=qcow2,file.driver=mirror,file.file.driver=file,file.file.filename=sub/m.qcow2,file.target=" + filepath.Join(dir, "t.raw"),
		"driver=qcow2,file.driver=qcow2,file.file.driver=file,file.file.filename=sub/in.qcow2",
	} {
		o, err := OpenSpec(spec, Spec{AIO: "threads"})
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		b := make([]byte, 512)
		err = o.Dev.Readv(0, [][]byte{b})
		o.Close()
		if err != nil || b[0] != 0x11 {
			t.Errorf("%s: reads %#x, %v; want sub/b.qcow2's 0x11", spec, b[0], err)
		}
	}
}
