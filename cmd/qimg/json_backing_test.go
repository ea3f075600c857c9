package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2"
)

// specOf is a json: spec of a qcow2 image over a plain file node, as
// QEMU writes one as a backing file name.
func specOf(file string) string {
	return fmt.Sprintf(`json:{"driver":"qcow2","file":{"driver":"file","filename":"%s"}}`, file)
}

// TestJSONBacking_LikeQemu: an image whose backing file name is a json:
// spec (QEMU writes them when the backing node had options) opens as
// QEMU opens it: the spec's tree, its file names relative to the working
// directory (they were refused: "a json: backing file name is not
// supported"). Reads, info --backing-chain, map, check, compare, convert,
// commit and rebase agree with qemu-img's; a json: argument opens too.
func TestJSONBacking_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := testkit.Dir(t) // checked below, from d: the specs name files relative to it
	t.Chdir(d)
	qemuImage(t, filepath.Join(d, "base.qcow2"), "qcow2", "1M", "write -P 0x5a 0 128k", "write -z 512k 64k")
	qemuImage(t, filepath.Join(d, "b2.qcow2"), "qcow2", "1M", "write -P 0x11 0 64k")
	top := qemuOverlay(t, filepath.Join(d, "top.qcow2"), specOf("base.qcow2"), "qcow2", "write -P 0x33 64k 64k")
	mustQ(t, "io", "-c", "read -P 0x5a 0 64k", "-c", "read -P 0x33 64k 64k", "-c", "read -P 0 128k 896k", top)
	for _, args := range [][]string{
		{"info", "--backing-chain", "top.qcow2"}, {"info", "--backing-chain", "--output=json", "top.qcow2"},
		{"map", "top.qcow2"}, {"map", "--output=json", "top.qcow2"}, {"check", "top.qcow2"},
		{"compare", "top.qcow2", "base.qcow2"}, {"info", specOf("base.qcow2")}, {"map", specOf("base.qcow2")},
		{"check", specOf("base.qcow2")},
	} {
		ours, oerr, code := runQ(t, args...)
		theirs, terr, qcode := testkit.Run(t, "qemu-img", args...)
		ours = strings.ReplaceAll(ours, `"compressed": false, `, "") // QEMU 8.2's map layout (known)
		ours = strings.ReplaceAll(ours, `, "compressed": false}`, "}")
		if ours != theirs || code != qcode {
			t.Errorf("%q: exit %d, qemu-img %d\nours:\n%s%s\nqemu-img:\n%s%s", args, code, qcode, ours, oerr, theirs, terr)
		}
	}
	mustQ(t, "convert", "-O", "raw", "top.qcow2", "ours.raw")
	testkit.MustRun(t, "qemu-img", "convert", "-O", "raw", "top.qcow2", "theirs.raw")
	testkit.MustRun(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", "ours.raw", "theirs.raw")

	// rebase from one json: backing to another, then commit into it: the
	// guest view is kept, and the base holds it, as QEMU's.
	mustQ(t, "rebase", "-F", "qcow2", "-b", specOf("b2.qcow2"), "top.qcow2")
	testkit.MustRun(t, "qemu-img", "compare", "-F", "raw", "top.qcow2", "theirs.raw")
	mustQ(t, "commit", "top.qcow2")
	testkit.MustRun(t, "qemu-img", "compare", "-F", "raw", "b2.qcow2", "theirs.raw")
	for _, f := range []string{"top.qcow2", "base.qcow2", "b2.qcow2"} {
		testkit.QemuCheck(t, f)
	}
}

// TestJSONBacking_Loop: json: backing names that loop (an image naming
// itself, two naming each other) are refused as a loop at once, by the
// engine's open and by info --backing-chain in qemu-img's words.
func TestJSONBacking_Loop(t *testing.T) {
	testkit.NeedQemu(t)
	d := testkit.Dir(t) // the chains loop: not for checkAll
	t.Chdir(d)
	for _, n := range []string{"a.qcow2", "b.qcow2", "self.qcow2"} {
		qemuImage(t, filepath.Join(d, n), "qcow2", "1M")
	}
	for _, r := range [][2]string{{"a.qcow2", "b.qcow2"}, {"b.qcow2", "a.qcow2"}, {"self.qcow2", "self.qcow2"}} {
		testkit.MustRun(t, "qemu-img", "rebase", "-q", "-u", "-F", "qcow2", "-b", specOf(r[1]), r[0])
	}
	for _, img := range []string{"a.qcow2", "self.qcow2"} {
		done := make(chan string, 1)
		go func() {
			_, e, code := runQ(t, "io", "-c", "read 0 512", img)
			done <- fmt.Sprintf("exit %d: %s", code, e)
		}()
		select {
		case res := <-done:
			if !strings.Contains(res, "infinite loop") {
				t.Errorf("io %s: %s", img, res)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("io %s: still opening after 30 s", img)
		}
		args := []string{"info", "--backing-chain", img}
		ours, oerr, code := runQ(t, args...)
		theirs, terr, qcode := testkit.Run(t, "qemu-img", args...)
		if ours != theirs || code != qcode || ourMessage(oerr) != qemuMessage(terr) {
			t.Errorf("%q: exit %d, qemu-img %d\nours:\n%s%s\nqemu-img:\n%s%s", args, code, qcode, ours, oerr, theirs, terr)
		}
	}
}

// TestJSONBacking_LibraryRefuses: the engine parses no specs; without an
// Options.OpenBacking a json: backing file name is a clear error.
func TestJSONBacking_LibraryRefuses(t *testing.T) {
	d := qemuDir(t)
	qemuImage(t, filepath.Join(d, "base.qcow2"), "qcow2", "1M")
	top := qemuOverlay(t, filepath.Join(d, "top.qcow2"), specOf(filepath.Join(d, "base.qcow2")), "qcow2")
	im, err := qcow2.Open(top, qcow2.Options{ReadOnly: true})
	if err == nil {
		im.Close()
		t.Fatal("opened a json: backing file without a spec opener")
	}
	if be := (*qcow2.BackingError)(nil); !strings.Contains(err.Error(), "json:") || !errors.As(err, &be) {
		t.Errorf("error %v: want a *qcow2.BackingError naming the json: name", err)
	}
}

// TestJSONBacking_Forms: the spellings QEMU takes for a json: backing
// file: dotted keys, no driver (the header's backing format), a file node
// with options of its own. Each reads and maps as qemu-img's (a file
// node with options made the backing a plain device: map showed the
// whole disk as data at offset 0).
func TestJSONBacking_Forms(t *testing.T) {
	testkit.NeedQemu(t)
	d := testkit.Dir(t) // checked below, from d
	t.Chdir(d)
	qemuImage(t, filepath.Join(d, "base.qcow2"), "qcow2", "1M", "write -P 0x5a 0 128k", "write -z 512k 64k")
	for i, spec := range []string{
		`json:{"driver":"qcow2","file.driver":"file","file.filename":"base.qcow2"}`,
		`json:{"driver":"qcow2","file.filename":"base.qcow2"}`,
		`json:{"file":{"driver":"file","filename":"base.qcow2"}}`,
		`json:{"driver":"qcow2","file":{"driver":"file","filename":"base.qcow2","aio":"threads"}}`,
		`json:{"driver":"qcow2","file":{"driver":"raw","file":{"driver":"file","filename":"base.qcow2"}}}`,
	} {
		top := fmt.Sprintf("top%d.qcow2", i)
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", spec, "-F", "qcow2", top, "1M")
		qemuIO(t, top, "qcow2", "write -P 0x33 64k 64k")
		mustQ(t, "io", "-c", "read -P 0x5a 0 64k", "-c", "read -P 0x33 64k 64k", "-c", "read -P 0 128k 896k", top)
		args := []string{"map", "--output=json", top}
		ours, oerr, code := runQ(t, args...)
		theirs, terr, qcode := testkit.Run(t, "qemu-img", args...)
		ours = strings.ReplaceAll(ours, `"compressed": false, `, "") // QEMU 8.2's map layout (known)
		ours = strings.ReplaceAll(ours, `, "compressed": false}`, "}")
		if ours != theirs || code != qcode {
			t.Errorf("%s: %q: exit %d, qemu-img %d\nours:\n%s%s\nqemu-img:\n%s%s", spec, args, code, qcode, ours, oerr, theirs, terr)
		}
		testkit.QemuCheck(t, top)
	}
}
