package secret

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/crypto/luks"
	"github.com/qring/qring/internal/testkit"
)

func TestAdd(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pwb64 := filepath.Join(dir, "pw64")
	if err := os.WriteFile(pwb64, []byte("YWJj"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		arg, id string
		want    []byte
	}{
		{"secret,id=sec0,data=abc", "sec0", []byte("abc")},
		{"qom-type=secret,id=s,data=abc", "s", []byte("abc")},
		{"secret,id=c,data=a,,b,,,,c", "c", []byte("a,b,,c")},
		{"secret,id=eq,data=a=b", "eq", []byte("a=b")},
		{"secret,id=f,file=" + pw, "f", []byte("abc\n")}, // QEMU keeps the newline
		{"secret,id=f64,file=" + pwb64 + ",format=base64", "f64", []byte("abc")},
		{"secret,id=b,data=YWJjCg==,format=base64", "b", []byte("abc\n")},
		{"secret,id=r,data=x,format=raw", "r", []byte("x")},
		{`{"qom-type":"secret","id":"j","data":"abc"}`, "j", []byte("abc")},
		{"secret,id=empty,data=", "empty", []byte{}},
	} {
		var s Store
		if err := s.Add(c.arg); err != nil {
			t.Fatalf("%s: %v", c.arg, err)
		}
		got, err := s.Lookup(c.id)
		if err != nil || !bytes.Equal(got, c.want) {
			t.Fatalf("%s: %q, %v; want %q", c.arg, got, err, c.want)
		}
	}
}

func TestAddErrors(t *testing.T) {
	for _, c := range []struct {
		arg  string
		want error
	}{
		{"iothread,id=io0", ErrNotSecret},
		{"secret_keyring,id=k,serial=1", ErrUnsupported},
		{"secret,id=k,data=x,keyid=sec0,iv=abc", ErrUnsupported},
		{"secret,data=abc", ErrInvalid},
		{"secret,id=x", ErrInvalid},
		{"secret,id=1x,data=a", ErrInvalid},
		{"id=x,data=a", ErrInvalid},
		{"bogus,id=x", ErrNotSecret},
		{"secret,id=x,data=a,file=/dev/null", ErrInvalid},
		{"secret,id=x,data=a,format=hex", ErrInvalid},
		{"secret,id=x,data=!!!,format=base64", ErrInvalid},
		{"secret,id=x,data=a,colour=red", ErrInvalid},
		{"secret,id=x,data", ErrInvalid},
		{"secret,=a", ErrInvalid},
		{`{"qom-type":"secret","id":"j","data":1}`, ErrInvalid},
		{`{"qom-type":"secret"`, ErrInvalid},
		{`{"qom-type":"secret","id":"j","data":"a"} x`, ErrInvalid},
	} {
		var s Store
		if err := s.Add(c.arg); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.arg, err, c.want)
		}
	}
	var s Store
	if err := s.Add("secret,id=x,file=/nonexistent/pw"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if err := s.Add("secret,id=d,data=1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Add("secret,id=d,data=2"); !errors.Is(err, ErrInvalid) {
		t.Errorf("duplicate id: %v", err)
	}
}

func TestKeyPassphrase(t *testing.T) {
	var s Store
	for _, a := range []string{"secret,id=sec0,data=abc", "secret,id=bin,data=YWL/,format=base64", "secret,id=nul,data=YQBi,format=base64"} {
		if err := s.Add(a); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		opts, prefix string
		want         string
		err          error
	}{
		{"encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10", "encrypt.", "abc", nil},
		{"driver=qcow2,encrypt.key-secret=sec0,file.filename=a,,b.qcow2", "encrypt.", "abc", nil},
		{"driver=luks,key-secret=sec0,file.filename=x.luks", "", "abc", nil},
		{"encrypt.format=luks", "encrypt.", "", ErrNoKeySecret},
		{"key-secret=sec0", "encrypt.", "", ErrNoKeySecret},
		{"encrypt.key-secret=sec1", "encrypt.", "", ErrUnknown},
		{"encrypt.key-secret=sec0,encrypt.key-secret=sec0", "encrypt.", "", ErrInvalid},
		{"encrypt.key-secret=", "encrypt.", "", ErrInvalid},
		{"encrypt.key-secret=bin", "encrypt.", "", ErrInvalid}, // not UTF-8
		{"encrypt.key-secret=nul", "encrypt.", "a", nil},       // a C string
	} {
		got, err := s.KeyPassphrase(c.opts, c.prefix)
		if !errors.Is(err, c.err) || string(got) != c.want {
			t.Errorf("%q: got %q, %v; want %q, %v", c.opts, got, err, c.want, c.err)
		}
	}
}

// The passphrase of a file secret QEMU used to create a volume opens it
// here; QEMU's file secrets keep a trailing newline.
func TestInterop_FileSecret(t *testing.T) {
	testkit.NeedQemu(t)
	dir := testkit.Dir(t)
	pw, img := filepath.Join(dir, "pw"), filepath.Join(dir, "x.luks")
	if err := os.WriteFile(pw, []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	obj := "secret,id=sec0,file=" + pw
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "luks", "--object", obj,
		"-o", "key-secret=sec0,iter-time=10", img, "1M")
	var s Store
	if err := s.Add(obj); err != nil {
		t.Fatal(err)
	}
	pass, err := s.KeyPassphrase("driver=luks,key-secret=sec0,file.filename="+img, "")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	phdr := make([]byte, luks.HeaderSize)
	if _, err := f.ReadAt(phdr, 0); err != nil {
		t.Fatal(err)
	}
	h, err := luks.ParseHeader(phdr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Unlock(f, pass); err != nil {
		t.Fatalf("file secret %q: %v", pass, err)
	}
	if _, err := h.Unlock(f, []byte("abc")); !errors.Is(err, luks.ErrWrongKey) {
		t.Fatalf("without the newline: %v", err)
	}
}

// TestAdd_LastValueWins: of a property given twice, the last counts, as
// QEMU's (qemu-io unlocks an image with the second data=).
func TestAdd_LastValueWins(t *testing.T) {
	var s Store
	if err := s.Add("secret,id=x,data=a,data=b"); err != nil {
		t.Fatal(err)
	}
	if d, err := s.Lookup("x"); err != nil || string(d) != "b" {
		t.Fatalf("got %q, %v; want \"b\"", d, err)
	}
}
