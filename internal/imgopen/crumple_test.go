package imgopen

import (
	"reflect"
	"strings"
	"testing"
)

// TestParseSpec_DottedJSON: a json: spec's dotted keys name nodes, as
// QEMU reads them (it flattens the tree): "file.filename" was a key of
// the qcow2 node ("file: missing"), so a spec QEMU opens was refused.
func TestParseSpec_DottedJSON(t *testing.T) {
	nested, err := ParseSpec(`json:{"driver":"qcow2","file":{"driver":"file","filename":"a.qcow2"}}`)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		`json:{"driver":"qcow2","file.driver":"file","file.filename":"a.qcow2"}`,
		`json:{"driver":"qcow2","file":{"driver":"file"},"file.filename":"a.qcow2"}`,
		`json:{"driver":"qcow2","file":{"driver":"file","filename":"a.qcow2"}}`,
	} {
		got, err := ParseSpec(s)
		if err != nil || !reflect.DeepEqual(got, nested) {
			t.Errorf("%s: %v, %v; want %v", s, got, err, nested)
		}
	}
	// Two levels deep, nested and dotted alike.
	want, err := ParseSpec(`json:{"driver":"qcow2","file":{"driver":"raw","file":{"driver":"file","filename":"a"}}}`)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		`json:{"driver":"qcow2","file":{"driver":"raw","file":{"driver":"file"}},"file.file.filename":"a"}`,
		`json:{"driver":"qcow2","file.file":{"filename":"a"},"file":{"driver":"raw","file":{"driver":"file"}}}`,
	} {
		got, err := ParseSpec(s)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{
		`json:{"driver":"qcow2","file":{"file":{"filename":"a"}},"file.file.filename":"b"}`, // one key twice, deep
		`json:{"driver":"qcow2","file":"a.qcow2","file.filename":"a.qcow2"}`,                // a value and a node
		`json:{"driver":"qcow2","file":{"filename":"a"},"file.filename":"b"}`,               // one key twice
		`json:{"driver":"qcow2","file..filename":"a"}`, `json:{"driver":"qcow2",".x":1}`,    // empty components
	} {
		if got, err := ParseSpec(s); err == nil {
			t.Errorf("%s: parsed as %v", s, got)
		}
	}
}

// TestSpecFilename: the name QEMU gives a json: backing file of a qcow2
// node over a plain file is that file's; other specs keep their name.
func TestSpecFilename(t *testing.T) {
	for s, want := range map[string]string{
		`json:{"driver":"qcow2","file":{"driver":"file","filename":"a.qcow2"}}`: "a.qcow2",
		`json:{"driver":"qcow2","file.filename":"a.qcow2"}`:                     "a.qcow2",
		`json:{"file":{"driver":"file","filename":"a.qcow2"}}`:                  "a.qcow2",
		`json:{"driver":"qcow2","file":"a.qcow2"}`:                              "a.qcow2",
		`json:{"driver":"raw","file":"a.raw"}`:                                  "a.raw",
		// Runtime options QEMU leaves out of the name (not "strong").
		`json:{"driver":"qcow2","file":{"driver":"file","filename":"a.qcow2","aio":"threads","locking":"off"}}`: "a.qcow2",
		`json:{"driver":"qcow2","l2-cache-size":"1M","read-only":true,"file":{"driver":"file","filename":"a"}}`: "a",
		`json:{"driver":"qcow2","file":{"driver":"file","filename":"a","cache":{"direct":true}}}`:               "a",
		`json:{"driver":"qcow2","file.filename":"a","file.cache.no-flush":"on"}`:                                "a",
		"plain.qcow2": "plain.qcow2",
		// backing=null: qemu-img info opens with BDRV_O_NO_IO, where
		// QEMU does not count an overridden backing file.
		`json:{"driver":"qcow2","backing":null,"file":"a"}`: "a",
		// Strong options: QEMU's own json: name (its QDict's order,
		// the file node's driver written out, weak options left out),
		// as qemu-img 7.2 prints these.
		`json:{"driver":"raw","offset":512,"file":"a"}`:                                               `json:{"offset": 512, "driver": "raw", "file": {"driver": "file", "filename": "a"}}`,
		`json:{"driver":"luks","key-secret":"s","file":{"filename":"v.luks","aio":"threads"}}`:        `json:{"driver": "luks", "file": {"driver": "file", "filename": "v.luks"}, "key-secret": "s"}`,
		`json:{"driver":"raw","size":"1M","file":{"driver":"luks","key-secret":"s","file":"v.luks"}}`: `json:{"driver": "raw", "size": "1M", "file": {"driver": "luks", "file": {"driver": "file", "filename": "v.luks"}, "key-secret": "s"}}`,
	} {
		if got := SpecFilename(s); got != want {
			t.Errorf("SpecFilename(%s) = %q, want %q", s, got, want)
		}
	}
	for _, s := range []string{`json:{"driver":"throttle","file":"a.qcow2"}`, `json:{"driver":"qcow2","file":{"driver":"throttle","file":"a"}}`, `json:{bad`,
		`json:{"driver":"qcow2","file":{"driver":"file","filename":"a","file":{"driver":"file","filename":"b"}}}`} {
		if got := SpecFilename(s); got != s || !strings.HasPrefix(got, "json:") {
			t.Errorf("SpecFilename(%s) = %q, want it unchanged", s, got)
		}
	}
}
