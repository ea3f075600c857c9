package main

import (
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestList_LikeQemuNbd: qnbd -L lists a server's exports as qemu-nbd -L
// does (the same lines), whichever of the two serves them: a named
// export with a description, the default name, a read-only one; and
// both fail against a server that requires TLS.
func TestList_LikeQemuNbd(t *testing.T) {
	need(t, "qemu-img", "qemu-nbd")
	dir := shortDir(t)
	img := filepath.Join(dir, "a.qcow2")
	sh(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "3M")
	sock := filepath.Join(dir, "s.sock")
	pki := writePKI(t, filepath.Join(dir, "pki"))
	tlsObj := []string{"--object", "tls-creds-x509,id=tls0,dir=" + pki.Server + ",endpoint=server", "--tls-creds=tls0"}
	for _, args := range [][]string{
		{"-x", "disk", "-D", "my disk", "-f", "qcow2", img},
		{"-f", "qcow2", img},
		{"-r", "-x", "ro", "-f", "qcow2", img},
		append(append([]string(nil), tlsObj...), "-f", "qcow2", img),
	} {
		for _, server := range []string{"qemu-nbd", "qnbd"} {
			var stop func()
			if server == "qemu-nbd" {
				stop = serveQemuNbd(t, sock, args...)
			} else {
				stop = start(t, "", sock, append([]string{"-k", sock}, args...)...).stop
			}
			qout, _, qcode := testkit.Run(t, "qemu-nbd", "-L", "-k", sock)
			out, errOut, code := testkit.Run(t, filepath.Join(bin, "qnbd"), "-L", "-k", sock)
			stop()
			if code != qcode || out != qout {
				t.Errorf("%q served by %s: qnbd -L exit %d:\n%s%s\nqemu-nbd -L exit %d:\n%s", args, server, code, out, errOut, qcode, qout)
			}
		}
	}
}
