package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// qemuNbdServe is testkit.ServeQemuNbd.
func qemuNbdServe(t *testing.T, args ...string) string { return testkit.ServeQemuNbd(t, args...) }

// oneLine is stderr as qimg prints an error: its lines joined by "; ".
func oneLine(s string) string {
	return strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "; ") + "\n"
}

// TestNBDClient_CommandsLikeQemu: images named by NBD URIs and QEMU's
// older nbd: names open as qemu-img opens them (qring had no NBD client:
// every such name was refused): info, map, check, compare, measure and
// convert read a qcow2 image served raw (its format probed, or given)
// and served as qcow2, and their output, errors and exit codes are
// qemu-img's; convert -n writes into an export, as qemu-img's does.
func TestNBDClient_CommandsLikeQemu(t *testing.T) {
	d := qemuDir(t)
	img := qemuImage(t, filepath.Join(d, "a.qcow2"), "qcow2", "64M",
		"write -P 7 1M 1M", "write -z 3M 64k", "write -P 9 5M 4k")
	rawSock := qemuNbdServe(t, "-r", "-f", "raw", "-x", "ex", img)
	guestSock := qemuNbdServe(t, "-r", "-f", "qcow2", img)
	rawURI := "nbd+unix:///ex?socket=" + rawSock
	guestURI := "nbd+unix:///?socket=" + guestSock
	spec := `json:{"driver":"qcow2","file":{"driver":"nbd","server":{"type":"unix","path":"` + rawSock + `"},"export":"ex"}}`
	// An overlay whose backing file is an export.
	ov := filepath.Join(d, "ov.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", guestURI, "-F", "raw", ov)
	testkit.MustRun(t, "qemu-io", "-c", "write -P 3 5M 64k", ov)
	// Checked below while its backing export is served; gone before the
	// directory's final check, which runs after the servers stop.
	t.Cleanup(func() { os.Remove(ov) })
	// A metadata-preallocated image served as qcow2: its clusters whose
	// host space is a hole are data that reads as zeros, which qemu-nbd
	// says with NBD_STATE_ZERO without NBD_STATE_HOLE (qimg mapped them
	// as data that is not zero); served raw, a qcow2 node over the
	// export cannot tell (no allocated size), as in QEMU.
	pre := filepath.Join(d, "pre.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", pre, "8M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 5 64k 64k", "-c", "write -z 1M 64k", pre)
	preSock := qemuNbdServe(t, "-r", "-f", "qcow2", "-x", "p", pre)
	preURI := "nbd+unix:///p?socket=" + preSock
	preRawSock := qemuNbdServe(t, "-r", "-f", "raw", "-x", "p", pre)
	preSpec := `json:{"driver":"qcow2","file":{"driver":"nbd","server":{"type":"unix","path":"` + preRawSock + `"},"export":"p"}}`
	cases := [][]string{
		{"map", preURI},
		{"map", "--output=json", preURI},
		{"map", "--output=json", preSpec},
		{"compare", pre, preURI},
		{"info", rawURI},
		{"info", "--output=json", rawURI},
		{"info", "-f", "raw", rawURI},
		{"info", "-f", "qcow2", rawURI},
		{"info", guestURI},
		{"info", "--output=json", guestURI},
		{"info", "nbd:unix:" + rawSock + ":exportname=ex"},
		{"info", spec},
		{"map", rawURI},
		{"map", "--output=json", rawURI},
		{"map", guestURI},
		{"map", "--output=json", guestURI},
		{"check", rawURI},
		{"check", "--output=json", rawURI},
		{"compare", img, guestURI},
		{"compare", "-F", "qcow2", img, rawURI},
		{"compare", "-F", "raw", img, rawURI},
		{"measure", "-O", "qcow2", guestURI},
		{"map", ov},
		{"map", "--output=json", ov},
		{"check", ov},
		{"compare", ov, img},
		{"info", "--backing-chain", ov},
		{"resize", guestURI, "128M"},
		// Refusals.
		{"info", "nbd+unix:///nope?socket=" + rawSock},
		{"info", "nbd+unix:///ex?socket=" + filepath.Join(d, "none")},
		{"info", "nbd://"},
		{"info", "nbd+unix:///ex"},
		{"info", "nbd://localhost:abc/"},
		{"info", "nbd:"},
		{"info", "nbd:localhost"},
		{"info", "nbd://127.0.0.1:1/"},
		{"check", "-r", "all", guestURI},
	}
	for _, c := range cases {
		o, e, code := runQ(t, c...)
		qo, qe, qcode := testkit.Run(t, "qemu-img", c...)
		o = strings.ReplaceAll(o, `, "compressed": false`, "") // the 8.2 layout (documented)
		if code != qcode || o != qo {
			t.Errorf("%q: exit %d, stdout:\n%s\nqemu-img: exit %d, stdout:\n%s", c, code, o, qcode, qo)
		}
		if e, qe = asQemu(e), oneLine(qe); qe == "\n" {
			qe = ""
		}
		if e != qe {
			t.Errorf("%q:\n qimg:     %q\n qemu-img: %q", c, e, qe)
		}
	}

	// Converting from an export, and into one (-n: the export exists).
	out := filepath.Join(d, "out.qcow2")
	if _, e, code := runQ(t, "convert", "-O", "qcow2", guestURI, out); code != 0 {
		t.Fatalf("convert from an export: %s", e)
	}
	testkit.MustRun(t, "qemu-img", "compare", img, out)
	target := filepath.Join(d, "t.raw")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "raw", target, "64M")
	tSock := qemuNbdServe(t, "-f", "raw", target)
	if _, e, code := runQ(t, "convert", "-n", "-O", "raw", img, "nbd+unix:///?socket="+tSock); code != 0 {
		t.Fatalf("convert -n into an export: %s", e)
	}
	testkit.MustRun(t, "qemu-img", "compare", "-f", "qcow2", "-F", "raw", img, "nbd+unix:///?socket="+tSock)
	// Creating on an export formats it, as qemu-img does: twin exports
	// holding old bytes, one for each tool; each command's output,
	// errors and exit code, then the exports' contents, are the same.
	var socks [2]string
	for i := range socks {
		f := filepath.Join(d, fmt.Sprintf("export%d.raw", i))
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "raw", f, "64M")
		socks[i] = qemuNbdServe(t, "-f", "raw", f)
	}
	uri := func(i int) string { return "nbd+unix:///?socket=" + socks[i] }
	for _, c := range [][]string{
		{"create", "-f", "qcow2", "X", "1G"},
		{"create", "-f", "raw", "X", "32M"},
		{"create", "-f", "raw", "X", "128M"},
		{"create", "-f", "qcow2", "-b", img, "-F", "qcow2", "X"},
		{"convert", "-O", "qcow2", img, "X"},
		{"convert", "-O", "raw", img, "X"},
		{"dd", "if=" + img, "of=X", "-O", "raw", "bs=1M", "count=8"},
		{"create", "-f", "qcow2", "nbd+unix:///?socket=" + filepath.Join(d, "none"), "1M"},
	} {
		var outs [2]string
		for i := range socks {
			// Old bytes everywhere: a raw image's zeros must be written.
			testkit.MustRun(t, "qemu-io", "-f", "raw", "-c", "write -P 1 0 64M", uri(i))
			outs[i] = twinRun(t, i == 0, c, uri(i), socks[i])
		}
		if outs[0] != outs[1] {
			t.Errorf("%q:\nqimg:\n%s\nqemu-img:\n%s", c, outs[0], outs[1])
		}
		// The exports hold the same image: compared through both
		// tools' probes, then byte for byte as raw.
		if o, _, _ := testkit.Run(t, "qemu-img", "compare", uri(0), uri(1)); o != "Images are identical.\n" {
			t.Errorf("%q: the images on the exports differ: %s", c, o)
		}
		if c[1] == "qcow2" || c[1] == "-O" && c[2] == "qcow2" {
			if o, _, code := testkit.Run(t, "qemu-img", "check", uri(0)); code != 0 {
				t.Errorf("%q: qemu-img check of qimg's image: %s", c, o)
			}
		}
	}

	// A qcow2 image on each export, then commands that write, each
	// tool on its own twin: shrinking the image (QEMU's nbd driver takes
	// the file's shrink as done; qimg failed after the shrink, cutting
	// the URI as a host file), qemu-io's -s and open -o (qimg named the
	// temporary overlay's backing file, and open -o's file, as host
	// paths). The outputs, then the images, are the same.
	for i := range socks {
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", uri(i), "48M")
		testkit.MustRun(t, "qemu-io", "-f", "qcow2", "-c", "write -P 2 1M 1M", "-c", "write -P 3 40M 1M", uri(i))
	}
	for _, c := range [][]string{
		{"resize", "--shrink", "-f", "qcow2", "X", "32M"},
		{"resize", "--shrink", "-f", "qcow2", "nbd:unix:@S", "16M"},
		{"io", "-f", "qcow2", "-s", "-c", "write -P 4 0 4k", "-c", "read -P 4 0 4k", "X"},
		{"io", "-c", "open -o driver=qcow2 X", "-c", "read -P 2 1M 4k", "-c", "length"},
		{"io", "-c", "open -s -o driver=qcow2,file.driver=nbd X", "-c", "write -P 5 1M 4k", "-c", "length"},
		{"io", "-c", "open -o driver=raw nbd:unix:@S", "-c", "length"},
		{"io", "-c", "open -o driver=qcow2 X", "-c", "truncate 8M", "-c", "length"},
		// qemu-io's inexact truncate of an export: a shrink taken as
		// done, growing refused (qimg refused both).
		{"io", "-f", "raw", "-c", "truncate 1M", "-c", "length", "-c", "truncate 100M", "-c", "length", "-c", "truncate -m falloc 1M", "X"},
		// info over a raw export: qemu-io stops at the format name.
		{"io", "-f", "raw", "-c", "info", "X"},
		{"io", "-f", "qcow2", "-c", "info", "X"},
		// A fixed raw window over an export: the raw driver refuses
		// first (qimg took the shrink as done).
		{"io", "--image-opts", "-c", "truncate 512k", "driver=raw,offset=4096,size=512k,file.driver=nbd,file.server.type=unix,file.server.path=@S"},
	} {
		var outs [2]string
		for i := range socks {
			outs[i] = twinRun(t, i == 0, c, uri(i), socks[i])
		}
		if outs[0] != outs[1] {
			t.Errorf("%q:\nqimg:\n%s\nqemu-img:\n%s", c, outs[0], outs[1])
		}
		// The images (the free space past their ends aside: qimg's
		// shrink zeroes the clusters it frees, QEMU's discard is
		// ignored by qemu-nbd).
		if o, _, _ := testkit.Run(t, "qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", uri(0), uri(1)); o != "Images are identical.\n" {
			t.Errorf("%q: the images on the exports differ: %s", c, o)
		}
		if o, _, code := testkit.Run(t, "qemu-img", "check", uri(0)); code != 0 {
			t.Errorf("%q: qemu-img check of qimg's image: %s", c, o)
		}
	}
	// A LUKS volume on each export: qemu-io's info stops at the name
	// too (QEMU's crypto driver asks its file node; qimg printed all).
	for i := range socks {
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "luks", "--object", "secret,id=s0,data=pw", "-o", "key-secret=s0,iter-time=10", uri(i), "8M")
	}
	c := []string{"io", "--object", "secret,id=s0,data=pw", "--image-opts", "-c", "info", "driver=luks,key-secret=s0,file.driver=nbd,file.server.type=unix,file.server.path=@S"}
	if q, o := twinRun(t, true, c, uri(0), socks[0]), twinRun(t, false, c, uri(1), socks[1]); q != o {
		t.Errorf("%q:\nqimg:\n%s\nqemu-io:\n%s", c, q, o)
	}
	// Its info knows no disk size or dirty flag, as qemu-img's (qimg
	// said 0 B). (The json: name is laid out otherwise than QEMU's.)
	for _, out := range []string{"human", "json"} {
		c := []string{"info", "--output=" + out, "--object", "secret,id=s0,data=pw", "--image-opts",
			"driver=luks,key-secret=s0,file.driver=nbd,file.server.type=unix,file.server.path=@S"}
		q, o := twinRun(t, true, c, uri(0), socks[0]), twinRun(t, false, c, uri(1), socks[1])
		for _, w := range []string{"disk size: unavailable", "actual-size", "dirty-flag"} {
			if strings.Contains(q, w) != strings.Contains(o, w) {
				t.Errorf("%q: %q in qimg's output %v, in qemu-img's %v:\n%s\n%s", c, w, strings.Contains(q, w), strings.Contains(o, w), q, o)
			}
		}
	}
}

// TestNBDClient_TLSLikeQemu: an export qemu-nbd serves over TLS only
// opens through an nbd node with tls-creds (a tls-creds-x509 object of
// the client endpoint), as with qemu-img: the same output, and the
// same refusals without credentials or with an unknown id; a server
// certificate another CA signed is refused (in TLS's words, not
// GnuTLS's).
func TestNBDClient_TLSLikeQemu(t *testing.T) {
	d := qemuDir(t)
	img := qemuImage(t, filepath.Join(d, "a.qcow2"), "qcow2", "16M", "write -P 7 1M 64k")
	p := testkit.WritePKI(t, filepath.Join(d, "pki"), false)
	sock := qemuNbdServe(t, "-r", "-f", "qcow2", "--object", "tls-creds-x509,id=tls0,dir="+p.Server+",endpoint=server", "--tls-creds", "tls0", img)
	rawSock := qemuNbdServe(t, "-r", "-f", "raw", "--object", "tls-creds-x509,id=tls0,dir="+p.Server+",endpoint=server", "--tls-creds", "tls0", img)
	node := "driver=nbd,server.type=unix,server.path=" + sock + ",tls-hostname=localhost"
	bare := "driver=nbd,server.type=unix,server.path=" + sock
	obj := func(dir string) []string {
		return []string{"--object", "tls-creds-x509,id=tls0,dir=" + dir + ",endpoint=client"}
	}
	cat := func(parts ...[]string) []string {
		var out []string
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	for _, c := range [][]string{
		cat([]string{"info"}, obj(p.Server), []string{"--image-opts", node + ",tls-creds=tls0"}),
		cat([]string{"map", "--output=json"}, obj(p.Server), []string{"--image-opts", node + ",tls-creds=tls0"}),
		cat([]string{"compare"}, obj(p.Server), []string{"--image-opts", "driver=qcow2,file.filename=" + img, node + ",tls-creds=tls0"}),
		{"info", "nbd+unix:///?socket=" + sock},
		cat([]string{"info"}, obj(p.Server), []string{"--image-opts", bare + ",tls-creds=tls0"}),
		cat([]string{"info"}, obj(p.Server), []string{"--image-opts", node + ",tls-creds=nope"}),
		cat([]string{"info"}, obj(filepath.Join(d, "none")), []string{"--image-opts", node + ",tls-creds=tls0"}),
		{"info", "--object", "tls-creds-x509,id=tls0,dir=" + p.Server + ",endpoint=server", "--image-opts", node + ",tls-creds=tls0"},
		// A qcow2 image on an export (its file node's TLS).
		cat([]string{"info"}, obj(p.Server), []string{"--image-opts", "driver=qcow2,file.driver=nbd,file.server.type=unix,file.server.path=" + rawSock +
			",file.tls-creds=tls0,file.tls-hostname=localhost"}),
		// Objects are made, and refused, before anything else.
		{"info", "--object", "tls-creds-x509,id=tls0,dir=" + p.NoCert + ",endpoint=server", img},
		{"info", "--object", "tls-creds-x509,id=tls0", img},
		{"create", "-f", "raw", "--object", "tls-creds-x509,id=c0", filepath.Join(d, "x.raw"), "1M"},
	} {
		o, e, code := runQ(t, c...)
		qo, qe, qcode := testkit.Run(t, "qemu-img", c...)
		o = strings.ReplaceAll(o, `, "compressed": false`, "")
		if e, qe = asQemu(e), oneLine(qe); qe == "\n" {
			qe = ""
		}
		if code != qcode || o != qo || e != qe {
			t.Errorf("%q:\nqimg: exit %d\n%s%s\nqemu-img: exit %d\n%s%s", c, code, o, e, qcode, qo, qe)
		}
	}
	// A client that trusts another CA (refused in QEMU's words), and
	// one without a certificate the server would verify (both tools
	// fail, in their TLS libraries' words).
	other := filepath.Join(d, "stranger")
	testkit.WriteFiles(t, other, map[string][]byte{"ca-cert.pem": testkit.NewCA(t, "stranger", false).PEM})
	for _, dir := range []string{other, p.NoCert} {
		c := cat([]string{"info"}, obj(dir), []string{"--image-opts", node + ",tls-creds=tls0"})
		_, e, code := runQ(t, c...)
		_, qe, qcode := testkit.Run(t, "qemu-img", c...)
		if code != 1 || qcode != 1 || !strings.HasPrefix(asQemu(e), "qemu-img: Could not open '"+node) ||
			(dir == other && asQemu(e) != oneLine(qe)) {
			t.Errorf("%s: exit %d (qemu-img %d): %s%s", dir, code, qcode, e, qe)
		}
	}
}

// twinRun runs command c on one of twin exports (X its URI, @S its
// socket's path), through qimg or through QEMU's tool (qemu-io for io,
// else qemu-img), and returns its exit code, output and errors in one
// string, normalized for comparison (the prefixes asQemu's, timings and
// the socket's path replaced).
func twinRun(t *testing.T, qimg bool, c []string, uri, sock string) string {
	t.Helper()
	args := make([]string, len(c))
	for k, a := range c {
		args[k] = strings.ReplaceAll(strings.ReplaceAll(a, "X", uri), "@S", sock)
	}
	var o, e string
	var code int
	if qimg {
		o, e, code = runQ(t, args...)
		e = asQemu(e)
	} else {
		tool := "qemu-img"
		if args[0] == "io" {
			tool, args = "qemu-io", args[1:]
		}
		o, e, code = testkit.Run(t, tool, args...)
		if e = oneLine(e); e == "\n" {
			e = ""
		}
	}
	e = strings.ReplaceAll(e, "qemu-io: ", "qemu-img: ") // asQemu's prefix for qimg io too
	return strings.ReplaceAll(normTiming(fmt.Sprintf("exit %d\n%s%s", code, o, e)), sock, "SOCK")
}
