package imgopen

import (
	"strings"
	"testing"
)

// FuzzParseSnapshotParam: a -l argument parses to an ID, a name or
// both (snapshot.id=, snapshot.name=), or to a bare ID_OR_NAME, or to an
// error, and never panics; the result, written back, parses to the
// same parameter.
func FuzzParseSnapshotParam(f *testing.F) {
	for _, s := range []string{
		"snap1", "1", "snapshot.id=1", "snapshot.name=a,,b", "snapshot.id=1,snapshot.name=n", "snapshot.id=",
		"snapshot.name=", "snapshot.id", "snapshot.x=1", "snapshot.", "snapshot.id=1,,", "snapshot.id=1,=2",
		"snapshot.name=a,snapshot.name=b", "a,b", ",,", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseSnapshotParam(s)
		if err != nil {
			if !strings.HasPrefix(s, "snapshot.") || err.Error() == "" {
				t.Fatalf("ParseSnapshotParam(%q): error %v", s, err)
			}
			return
		}
		if p.Either {
			if p.ID != s || p.Name != "" || p.emptyKey {
				t.Fatalf("ParseSnapshotParam(%q) = %+v", s, p)
			}
			return
		}
		if !strings.HasPrefix(s, "snapshot.") {
			t.Fatalf("ParseSnapshotParam(%q) = %+v: keys without snapshot.", s, p)
		}
		esc := func(v string) string { return strings.ReplaceAll(v, ",", ",,") }
		// The last value of each key counts; an empty value anywhere
		// stays (emptyKey): written back first, the values only when
		// not empty.
		var back []string
		if p.emptyKey {
			back = append(back, "snapshot.id=")
		}
		if p.ID != "" {
			back = append(back, "snapshot.id="+esc(p.ID))
		}
		if p.Name != "" {
			back = append(back, "snapshot.name="+esc(p.Name))
		}
		got, err := ParseSnapshotParam(strings.Join(back, ","))
		if err != nil || got != p {
			t.Fatalf("ParseSnapshotParam(%q) = %+v; written back as %q: %+v, %v", s, p, strings.Join(back, ","), got, err)
		}
	})
}
