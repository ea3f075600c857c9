package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// A LUKS header each of whose faults QEMU checks: qimg info and io
// refuse it with qemu-img's and qemu-io's message, in a raw volume and
// in an encrypted qcow2 image's crypto header (qimg said crypto/luks's
// words, and described volumes QEMU refuses to open).
func TestLUKS_CorruptHeaderLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := testkit.Dir(t)
	vol := filepath.Join(d, "v.luks")
	img := filepath.Join(d, "v.qcow2")
	mustQ(t, "create", "-q", "-f", "luks", "--object", luksSecret, "-o", "key-secret=s,iter-time=10", vol, "1M")
	mustQ(t, "create", "-q", "-f", "qcow2", "--object", luksSecret, "-o", "encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10", img, "1M")
	put32 := func(off int, v uint32) func([]byte) { return func(b []byte) { binary.BigEndian.PutUint32(b[off:], v) } }
	str := func(off int, s string) func([]byte) {
		return func(b []byte) { copy(b[off:off+32], append([]byte(s), make([]byte, 32)...)) }
	}
	const slots, slot = 208, 48
	faults := map[string]func([]byte){
		"magic":         func(b []byte) { b[0] = 'X' },
		"version":       put32(4, 0x4babe<<8|2), // "LUKS\xba\xbe" then version 2
		"cipher name":   str(8, "blowfish"),
		"mode":          str(40, "lrw-plain64"),
		"mode shape":    str(40, "xts"),
		"ivgen":         str(40, "xts-benbi"),
		"essiv no hash": str(40, "xts-essiv"),
		"essiv sha512":  str(40, "xts-essiv:sha512"),
		"iv hash":       str(40, "xts-plain64:md4"),
		"hash":          str(72, "md4"),
		"key bytes":     put32(108, 17),
		"payload":       put32(104, 1),
		"mk iterations": put32(164, 0),
		"stripes":       put32(slots+3*slot+44, 0),
		"state":         put32(slots+2*slot, 1),
		"slot iters":    put32(slots+4, 0),
		"in header":     put32(slots+40, 4),
		"overlap":       put32(slots+slot+40, 100),
		"no NUL":        func(b []byte) { copy(b[40:72], bytes.Repeat([]byte("x"), 32)) },
		"two faults":    func(b []byte) { put32(104, 1)(b); str(8, "blowfish")(b) }, // QEMU's order: the payload first
	}
	for _, base := range []string{vol, img} {
		orig, err := os.ReadFile(base)
		if err != nil {
			t.Fatal(err)
		}
		at := bytes.Index(orig, []byte("LUKS\xba\xbe"))
		for name, f := range faults {
			switch {
			case base == img && name == "payload":
				continue // the qcow2 extension's length is checked first
			case base == img && name != "magic" && name != "stripes" && name != "cipher name" && name != "two faults":
				continue // the same words through qcow2.QemuText: a sample
			}
			b := bytes.Clone(orig)
			f(b[at:])
			p := filepath.Join(d, "bad"+filepath.Ext(base))
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			_, oerr, ocode := runQ(t, "info", p)
			_, qerr, qcode := testkit.Run(t, "qemu-img", "info", p)
			if oerr = strings.Replace(oerr, "qimg: info: ", "qemu-img: ", 1); oerr != qerr || ocode != qcode {
				t.Errorf("%s, %s: info:\nqimg (exit %d): %sqemu-img (exit %d): %s", filepath.Base(base), name, ocode, oerr, qcode, qerr)
			}
			spec := luksSpec(p)
			if base == img {
				spec = "driver=qcow2,encrypt.key-secret=s,file.filename=" + p
			}
			_, oerr, _ = runQ(t, "io", "--object", luksSecret, "--image-opts", spec, "-c", "read 0 512")
			_, qerr, _ = testkit.Run(t, "qemu-io", "--object", luksSecret, "--image-opts", spec, "-c", "read 0 512")
			if strings.Replace(oerr, "qimg: io: ", "qemu-io: ", 1) != qerr { // qemu-io's whole line
				t.Errorf("%s, %s: io: qimg %q, qemu-io %q", filepath.Base(base), name, oerr, qerr)
			}
		}
	}
}
