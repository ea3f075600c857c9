package secret

import (
	"errors"
	"testing"
)

// FuzzParseObject: an --object argument (key=value or JSON) parses to
// properties or to an ErrInvalid error, and never panics.
func FuzzParseObject(f *testing.F) {
	for _, s := range []string{
		"secret,id=sec0,data=abc",
		"secret,id=sec0,file=/dev/null,format=base64",
		`{"qom-type":"secret","id":"sec0","data":"abc"}`,
		`{"qom-type":1}`,
		"secret,,id=x,data=a,,b",
		"", ",", "=", "{", `{"a":"b"} x`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := parseObject(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("parseObject(%q): %v, not ErrInvalid", s, err)
			}
			return
		}
		if p == nil {
			t.Fatalf("parseObject(%q): nil properties without an error", s)
		}
	})
}
