package imgopen

import (
	"errors"
	"testing"

	"github.com/qring/qring/internal/secret"
)

func TestImageOpts_Encrypt(t *testing.T) {
	st := &secret.Store{}
	if err := st.Add("secret,id=sec0,data=abc"); err != nil {
		t.Fatal(err)
	}
	s, err := ImageOpts("driver=qcow2,encrypt.key-secret=sec0,encrypt.format=luks,file.filename=/x/y.qcow2,l2-cache-size=1M", Spec{Secrets: st, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if s.Path != "/x/y.qcow2" || s.Format != "qcow2" || string(s.Opts.Passphrase) != "abc" || s.Opts.L2CacheSize != 1<<20 || !s.ReadOnly {
		t.Fatalf("spec %+v", s)
	}
	for _, bad := range []string{
		"driver=qcow2,encrypt.key-secret=sec1,file.filename=a",    // unknown secret
		"driver=qcow2,encrypt.format=des,file.filename=a",         // no such method
		"driver=qcow2,encrypt.key-secret=sec0,encrypt.x=1,file=a", // unknown encrypt option
		"driver=qcow2,file.filename=a,bogus=1",                    // unknown option
		"driver=throttle,file.filename=a",                         // not a plain image
		"driver=qcow2,encrypt=sec0,file.filename=a",               // encrypt is a node
		"driver=qcow2,file.driver=throttle,file.file.filename=a",  // a stack under qcow2
	} {
		if _, err := ImageOpts(bad, Spec{Secrets: st}); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
	if _, err := ImageOpts("driver=qcow2,encrypt.key-secret=sec1,file.filename=a", Spec{Secrets: st}); !errors.Is(err, secret.ErrUnknown) {
		t.Errorf("unknown secret: %v", err)
	}
}
