package imgopen

import (
	"testing"
)

// FuzzParseSpec: a stack spec (json: or key=value) parses to a tree with
// a driver, or to an error, and never panics; every node of the tree
// turns into a list (node.list) or refuses to, without panicking or
// allocating more elements than the node has keys.
func FuzzParseSpec(f *testing.F) {
	for _, s := range []string{
		`json:{"driver":"blkverify","test":{"driver":"qcow2","file":"t.qcow2"},"raw":{"driver":"raw","file":"s.raw"}}`,
		"driver=quorum,children=a.qcow2:b.qcow2:c.qcow2,vote-threshold=2",
		"driver=throttle,iops-total=150,file.driver=qcow2,file.file=t.qcow2",
		"driver=quorum,children.0.file=a,children.1.file=b,children.3.file=c",
		"driver=qcow2,file.driver=file,file.filename=a,,b",
		"driver=x,a.b=1,a=2", "driver=x,a..b=1", "driver=x,a=1,a=2",
		`json:{"driver":"x","children":{"0":"a","99999999999":"b"}}`,
		"json:", "json:{} {}", "driver=", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseSpec(s)
		if err != nil {
			return
		}
		if m == nil {
			t.Fatalf("ParseSpec(%q): nil tree without an error", s)
		}
		var walk func(m map[string]any, depth int)
		walk = func(m map[string]any, depth int) {
			if depth > 64 {
				return
			}
			n := newNode(m, "")
			for k, v := range m {
				if l, err := n.list(k); err == nil {
					if sub, ok := v.(map[string]any); ok && len(l) != len(sub) {
						t.Fatalf("ParseSpec(%q): list %q of %d elements from %d keys", s, k, len(l), len(sub))
					}
				}
				if sub, ok := v.(map[string]any); ok {
					walk(sub, depth+1)
				}
			}
		}
		walk(m, 0)
	})
}
