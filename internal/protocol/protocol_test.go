package protocol

import (
	"errors"
	"strings"
	"testing"
)

func TestPath(t *testing.T) {
	for _, c := range []struct {
		name, path, err string
		create, early   bool
	}{
		{name: "disk.qcow2", path: "disk.qcow2"},
		{name: "dir/a:b", path: "dir/a:b"}, // a '/' before the colon: a file
		{name: "file:x", path: "x"},
		{name: "file:", path: ""},
		{name: "file:x:y", path: "./x:y"}, // not the protocol x: QEMU's "./"
		{name: "file:file:x", path: "./file:x"},
		{name: "file:a/b:c", path: "a/b:c"},
		{name: "json:{}", path: "json:{}"}, // opened: the spec parser's
		{name: "json:{}", create: true, err: "Unknown protocol 'json'", early: true},
		{name: "foo:x", err: "Unknown protocol 'foo'", early: true},
		{name: "http:x", create: true, err: "Protocol driver 'http' does not support image creation", early: true},
		{name: "fat:x", create: true, err: "Protocol driver 'vvfat' does not support image creation", early: true},
		{name: "nbd+unix:x", create: true, path: "nbd+unix:x"}, // formatted: cmd/qimg's create_nbd.go
		{name: "nbd:x", path: "nbd:x"}, // opened: imgopen connects
		{name: "nbd+unix:///e?socket=s", path: "nbd+unix:///e?socket=s"},
		{name: "host_device:/nonexistent", create: true, err: "Protocol driver 'host_device' does not support image creation, and opening the image failed: Could not open '/nonexistent': No such file or directory"},
		{name: "host_device:/", err: "'host_device' driver requires '/' to be either a character or block device"},
		{name: "host_device:/dev/null", path: "/dev/null"},
		{name: "ssh:x", create: true, err: "qring has no 'ssh' protocol driver"},
	} {
		p, err := Path(c.name, c.create)
		if c.err == "" {
			if err != nil || p != c.path {
				t.Errorf("Path(%q, %v) = %q, %v; want %q", c.name, c.create, p, err, c.path)
			}
			continue
		}
		var pe *Error
		if !errors.As(err, &pe) || err.Error() != c.err || pe.Early() != c.early {
			t.Errorf("Path(%q, %v) = %q, %v; want error %q (early %v)", c.name, c.create, p, err, c.err, c.early)
		}
	}
}

// FuzzPath: any name gives a path or an *Error, never a panic; a name
// whose first ':' follows a '/' (or that has none) is its own path.
func FuzzPath(f *testing.F) {
	for _, s := range []string{"a", "file:a", "json:{}", "nbd:x", ":", "a/b:c", "host_device:", "\x00:"} {
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, name string, create bool) {
		p, err := Path(name, create)
		var pe *Error
		if err != nil && !errors.As(err, &pe) {
			t.Fatalf("%q: %T %v", name, err, err)
		}
		if i := strings.IndexAny(name, ":/"); (i < 0 || name[i] == '/') && (err != nil || p != name) {
			t.Fatalf("%q: %q, %v", name, p, err)
		}
	})
}
