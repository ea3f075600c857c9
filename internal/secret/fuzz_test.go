package secret

import (
	"errors"
	"testing"
)

// FuzzParseObject: an --object argument (key=value or JSON) parses to
// properties or to an ErrInvalid error, and never panics; the secret it
// defines is stored or refused with one of the package's errors.
func FuzzParseObject(f *testing.F) {
	for _, s := range []string{
		"secret,id=sec0,data=abc",
		"secret,id=sec0,file=/dev/null,format=base64",
		`{"qom-type":"secret","id":"sec0","data":"abc"}`,
		`{"qom-type":1}`,
		"secret,,id=x,data=a,,b",
		"", ",", "=", "{", `{"a":"b"} x`,
		"secret,id=s,format=base64,data=eHl=eA", "secret,id=s,format=base64,file=x",
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
		// The secret it defines, if any (file= reads the argument
		// itself: base64 decoding of any bytes): stored or refused with
		// one of the package's errors.
		st := Store{ReadFile: func(string) ([]byte, error) { return []byte(s), nil }}
		if err := st.Add(s); err != nil && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrNotSecret) && !errors.Is(err, ErrUnsupported) {
			t.Fatalf("Add(%q): %v, not one of the package's errors", s, err)
		}
	})
}
