package imgopen

import (
	"testing"

	"github.com/qring/qring/nbd"
)

// TestParseNBDName: the names QEMU 7.2's nbd driver takes, and its
// refusals (qemu-img info's words, checked by hand and by
// cmd/qimg's TestNBDClient_CommandsLikeQemu).
func TestParseNBDName(t *testing.T) {
	for _, c := range []struct {
		name string
		want nbd.Address
		uri  string
		err  string
	}{
		{name: "nbd://localhost", want: nbd.Address{Network: "tcp", Addr: "localhost:10809"}, uri: "nbd://localhost:10809"},
		{name: "nbd://127.0.0.1:10810/e/x%25y", want: nbd.Address{Network: "tcp", Addr: "127.0.0.1:10810", Export: "e/x%y"}, uri: "nbd://127.0.0.1:10810/e/x%y"},
		{name: "nbd+tcp://[::1]:1/x", want: nbd.Address{Network: "tcp", Addr: "[::1]:1", Export: "x"}, uri: "nbd://[::1]:1/x"},
		{name: "nbd+unix:///ex?socket=/tmp/s", want: nbd.Address{Network: "unix", Addr: "/tmp/s", Export: "ex"}, uri: "nbd+unix:///ex?socket=/tmp/s"},
		{name: "nbd+unix:///?socket=/tmp/s", want: nbd.Address{Network: "unix", Addr: "/tmp/s"}, uri: "nbd+unix://?socket=/tmp/s"},
		{name: "nbd:unix:/tmp/s:exportname=a", want: nbd.Address{Network: "unix", Addr: "/tmp/s", Export: "a"}, uri: "nbd+unix:///a?socket=/tmp/s"},
		{name: "nbd:localhost:1", want: nbd.Address{Network: "tcp", Addr: "localhost:1"}, uri: "nbd://localhost:1"},
		{name: "nbd://", err: "No valid URL specified"},
		{name: "nbd:///ex", err: "No valid URL specified"},
		{name: "nbd+unix:///ex", err: "No valid URL specified"},
		{name: "nbd+unix://host/ex?socket=/x", err: "No valid URL specified"},
		{name: "nbd+unix:///ex?socket=/x&a=b", err: "No valid URL specified"},
		{name: "nbd://localhost:1/x?socket=a", err: "No valid URL specified"},
		{name: "nbd://localhost:abc/", err: "No valid URL specified"},
		{name: "nbd:localhost", err: "error parsing address 'localhost'"},
		{name: "nbd:", err: "NBD server address missing"},
	} {
		a, err := ParseNBDName(c.name)
		if c.err != "" {
			if err == nil || err.Error() != c.err {
				t.Errorf("%s: %v, want %q", c.name, err, c.err)
			}
			continue
		}
		if err != nil || a != c.want || a.URI() != c.uri {
			t.Errorf("%s: %+v %v (URI %s), want %+v (%s)", c.name, a, err, a.URI(), c.want, c.uri)
		}
		if !IsNBDName(c.name) {
			t.Errorf("%s: not an NBD name", c.name)
		}
	}
}

// FuzzParseNBDName: any name parses or is refused, and a parsed one's
// URI parses back to the same address.
func FuzzParseNBDName(f *testing.F) {
	for _, s := range []string{"nbd://localhost", "nbd+unix:///ex?socket=/tmp/s", "nbd:unix:/s:exportname=a", "nbd:[::1]:5", "nbd://[::1]:1/x%2fy"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		a, err := ParseNBDName(name)
		if err != nil {
			return
		}
		if a.Network != "unix" && a.Network != "tcp" {
			t.Fatalf("%q: network %q", name, a.Network)
		}
		_ = a.URI()
		_ = a.ShownAddr()
	})
}
