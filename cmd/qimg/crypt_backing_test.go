package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// An encrypted backing file opens with QEMU's backing.* options: its key
// (backing.encrypt.key-secret for qcow2, backing.key-secret for a LUKS
// file), its own backing file's (backing.backing.*), each checked as
// QEMU checks them. qemu-img makes the chain (an encrypted base under an
// encrypted middle image under a plain top); qimg and QEMU's tools run
// the same command lines on copies of it, and what they print, exit
// with and leave behind is compared.

var backingSecrets = []string{"--object", "secret,id=s0,data=pw0", "--object", "secret,id=s1,data=pw1"}

// encryptedChain makes base.qcow2 (key s0) < mid.qcow2 (key s1) <
// top.qcow2 (plain), and lb.luks (a LUKS file, key s0) < tl.qcow2, in a
// new directory, and returns it. qemu-img makes the chain once per test
// binary and each caller gets a copy: each of its three LUKS headers
// took qemu-img 2.5-4 s whatever the iter-time (it measures the hash
// for the master key's digest first), 25 s of the three tests' 60
// (2026-12-07).
func encryptedChain(t *testing.T) string {
	t.Helper()
	chainTemplate.Do(func() {
		d, err := os.MkdirTemp("", "qimg-chain-")
		if err != nil {
			t.Fatal(err)
		}
		chainTemplate.tmp = d
		makeEncryptedChain(t, d)
		chainTemplate.dir = d
	})
	if chainTemplate.dir == "" {
		t.Fatal("the encrypted chain could not be made (an earlier test's failure)")
	}
	return copyDir(t, chainTemplate.dir)
}

// chainTemplate is the chain encryptedChain copies (dir, once it is
// whole), in tmp, which TestMain removes.
var chainTemplate struct {
	sync.Once
	tmp, dir string
}

func makeEncryptedChain(t *testing.T, d string) {
	t.Helper()
	enc := func(name, key string, args ...string) {
		testkit.MustRun(t, "qemu-img", append(append([]string{"create", "-q", "-f", "qcow2"}, backingSecrets...),
			append([]string{"-o", "encrypt.format=luks,encrypt.iter-time=10,encrypt.key-secret=" + key, filepath.Join(d, name)}, args...)...)...)
	}
	io := func(opts string, cmds ...string) {
		args := append([]string{}, backingSecrets...)
		for _, c := range cmds {
			args = append(args, "-c", c)
		}
		testkit.MustRun(t, "qemu-io", append(args, "--image-opts", opts)...)
	}
	enc("base.qcow2", "s0", "4M")
	io("driver=qcow2,encrypt.key-secret=s0,file.filename="+filepath.Join(d, "base.qcow2"), "write -P 0x11 0 2M")
	enc("mid.qcow2", "s1", "-b", "base.qcow2", "-F", "qcow2")
	io("driver=qcow2,encrypt.key-secret=s1,backing.encrypt.key-secret=s0,file.filename="+filepath.Join(d, "mid.qcow2"),
		"write -P 0x22 1M 1M", "write -z 1536k 4k")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", filepath.Join(d, "top.qcow2"))
	io("driver=qcow2,backing.encrypt.key-secret=s1,backing.backing.encrypt.key-secret=s0,file.filename="+filepath.Join(d, "top.qcow2"),
		"write -P 0x33 1700k 70000")
	testkit.MustRun(t, "qemu-img", append(append([]string{"create", "-q", "-f", "luks"}, backingSecrets...),
		"-o", "key-secret=s0,iter-time=10", filepath.Join(d, "lb.luks"), "2M")...)
	io("driver=luks,key-secret=s0,file.filename="+filepath.Join(d, "lb.luks"), "write -P 0x44 4k 1M")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "lb.luks", "-F", "luks", filepath.Join(d, "tl.qcow2"))
}

// copyDir copies the regular files of src into a new directory.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := testkit.Dir(t)
	files, _ := filepath.Glob(filepath.Join(src, "*"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, filepath.Base(f)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// jsonTop and jsonMid open top.qcow2 and mid.qcow2 in D with their
// chains' keys, as json: names.
const (
	jsonTop = `json:{"driver":"qcow2","file":{"driver":"file","filename":"D/top.qcow2"},` +
		`"backing":{"encrypt":{"key-secret":"s1"},"backing":{"encrypt":{"key-secret":"s0"}}}}`
	jsonMid = `json:{"driver":"qcow2","file":{"driver":"file","filename":"D/mid.qcow2"},"encrypt":{"key-secret":"s1"},` +
		`"backing":{"encrypt":{"key-secret":"s0"}}}`
)

// topOpts opens top.qcow2 in d with both keys of its chain.
func topOpts(d string) string {
	return "driver=qcow2,backing.encrypt.key-secret=s1,backing.backing.encrypt.key-secret=s0,file.filename=" + filepath.Join(d, "top.qcow2")
}

// runTool runs qemu-img or qemu-io (tool), or qimg's command of that
// name, with the secrets first; QEMU's program prefix stands for qimg's,
// and d for the directory name, so the outputs compare.
func runTool(t *testing.T, qemu bool, tool, d string, args ...string) (string, int) {
	t.Helper()
	if tool == "qemu-io" {
		args = append(append([]string{}, backingSecrets...), args...)
	} else {
		args = append(append([]string{args[0]}, backingSecrets...), args[1:]...)
	}
	var out, errOut string
	var code int
	switch {
	case qemu:
		out, errOut, code = testkit.Run(t, tool, args...)
	case tool == "qemu-io":
		out, errOut, code = runQ(t, append([]string{"io"}, args...)...)
		errOut = strings.ReplaceAll(errOut, "qimg: io: ", "qemu-io: ")
	default:
		out, errOut, code = runQ(t, args...)
		errOut = strings.ReplaceAll(errOut, "qimg: "+args[0]+": ", "qemu-img: ")
	}
	return strings.ReplaceAll(out+errOut, d, "D"), code
}

func TestCrypt_BackingKeysLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	chain := encryptedChain(t)
	qd, od := copyDir(t, chain), copyDir(t, chain)
	for _, c := range []struct{ opts, cmd string }{
		// Reads through both encrypted layers, a LUKS file's.
		{"driver=qcow2,backing.encrypt.key-secret=s1,backing.backing.encrypt.key-secret=s0,file.filename=D/top.qcow2",
			"read -P 0x11 0 1M; read -P 0x22 1M 512k; read -P 0 1536k 4k; read -P 0x22 1540k 160k; read -P 0x33 1700k 70000; read -P 0x22 1810800 286352; read -P 0 2M 2M"},
		{"driver=qcow2,backing.key-secret=s0,file.filename=D/tl.qcow2", "read -P 0x44 4k 1M"},
		{`json:{"driver":"qcow2","file":{"driver":"file","filename":"D/tl.qcow2"},"backing":{"key-secret":"s0","backing":null}}`, "read -P 0x44 4k 4k"},
		// An encrypted image over its encrypted base: writes too.
		{"driver=qcow2,encrypt.key-secret=s1,backing.encrypt.key-secret=s0,file.filename=D/mid.qcow2",
			"write -P 0x55 100k 5000; read -P 0x11 0 100k; read -P 0x55 100k 5000"},
		{"driver=qcow2,encrypt.key-secret=s1,backing.encrypt.key-secret=s0,backing.encrypt.format=luks,file.filename=D/mid.qcow2", "read -P 0x11 0 4k"},
		// Without the base: zeros below.
		{"driver=qcow2,encrypt.key-secret=s1,backing=null,file.filename=D/mid.qcow2", "read -P 0 0 4k"},
		{"driver=qcow2,backing.encrypt.key-secret=s1,backing.backing=null,file.filename=D/top.qcow2", "read -P 0 0 4k; read -P 0x22 1M 4k"},
		// Refused as QEMU refuses them, with its words.
		{"driver=qcow2,file.filename=D/top.qcow2", "read 0 4k"},
		{"driver=qcow2,backing.encrypt.key-secret=s1,file.filename=D/top.qcow2", "read 0 4k"},
		{"driver=qcow2,backing.encrypt.key-secret=s0,backing.backing.encrypt.key-secret=s0,file.filename=D/top.qcow2", "read 0 4k"},
		{"driver=qcow2,backing.encrypt.key-secret=s9,file.filename=D/top.qcow2", "read 0 4k"},
		{"driver=qcow2,backing.encrypt.key-secret=s1,backing.backing.encrypt.key-secret=s9,file.filename=D/top.qcow2", "read 0 4k"},
		{"driver=qcow2,backing.encrypt.key-secret=s1,backing.key-secret=s1,backing.backing.encrypt.key-secret=s0,file.filename=D/top.qcow2", "read 0 4k"},
		{"driver=qcow2,backing.encrypt.key-secret=s1,backing.encrypt.format=aes,backing.backing.encrypt.key-secret=s0,file.filename=D/top.qcow2", "read 0 4k"},
		{"driver=qcow2,backing.encrypt.key-secret=s1,backing.backing.encrypt.key-secret=s0,backing.backing.backing.encrypt.key-secret=s0,file.filename=D/top.qcow2", "read 0 4k"},
		{"driver=qcow2,encrypt.key-secret=s0,backing.encrypt.key-secret=s0,file.filename=D/base.qcow2", "read 0 4k"},
		{"driver=qcow2,backing.encrypt.key-secret=s0,file.filename=D/tl.qcow2", "read 0 4k"},
		{"driver=qcow2,file.filename=D/tl.qcow2", "read 0 4k"},
		{"driver=qcow2,backing.key-secret=s1,file.filename=D/tl.qcow2", "read 0 4k"},
		{"driver=qcow2,backing.key-secret=s0,backing.encrypt.key-secret=s0,file.filename=D/tl.qcow2", "read 0 4k"},
		{`json:{"driver":"qcow2","file":{"driver":"file","filename":"D/tl.qcow2"},"backing":{"key-secret":"s0","backing":{"key-secret":"s0"}}}`, "read 0 4k"},
	} {
		var outs [2]string
		for i, d := range []string{qd, od} {
			args := []string{}
			for _, cmd := range strings.Split(c.cmd, "; ") {
				args = append(args, "-c", cmd)
			}
			opts := strings.ReplaceAll(c.opts, "D/", d+"/")
			if strings.HasPrefix(opts, "json:") {
				args = append(args, opts)
			} else {
				args = append(args, "--image-opts", opts)
			}
			out, code := runTool(t, i == 0, "qemu-io", d, args...)
			outs[i] = normTiming(out) + "exit " + string(rune('0'+code))
		}
		if strings.Contains(outs[0], "verification failed") {
			t.Errorf("%s %q: the test's patterns are wrong:\n%s", c.opts, c.cmd, outs[0])
		}
		if outs[0] != outs[1] {
			t.Errorf("%s %q:\nqemu-io: %s\nqimg:    %s", c.opts, c.cmd, outs[0], outs[1])
		}
	}
	for _, d := range []string{qd, od} {
		checkChain(t, d)
	}
	if !bytes.Equal(guestBytes(t, qd, "mid.qcow2"), guestBytes(t, od, "mid.qcow2")) {
		t.Errorf("mid.qcow2 written by qemu-io and qimg io differs")
	}
}

// checkChain runs qemu-img check on each image of an encryptedChain
// directory, with the keys each needs.
func checkChain(t *testing.T, d string) {
	t.Helper()
	for _, opts := range []string{
		"driver=qcow2,encrypt.key-secret=s0,file.filename=base.qcow2",
		"driver=qcow2,encrypt.key-secret=s1,backing.encrypt.key-secret=s0,file.filename=mid.qcow2",
		"driver=qcow2,backing.encrypt.key-secret=s1,backing.backing.encrypt.key-secret=s0,file.filename=top.qcow2",
		"driver=qcow2,backing.key-secret=s0,file.filename=tl.qcow2",
	} {
		opts = strings.ReplaceAll(opts, "filename=", "filename="+d+"/")
		out, code := runTool(t, true, "qemu-img", d, "check", "--image-opts", opts)
		if strings.Contains(out, "Must specify either driver or file") {
			// A top rebased onto nothing has no backing file to key.
			out, code = runTool(t, true, "qemu-img", d, "check", filepath.Join(d, "top.qcow2"))
		}
		if code != 0 {
			t.Errorf("qemu-img check %s: exit %d\n%s", opts, code, out)
		}
	}
}

// The commands that read a chain, and commit's writes into an encrypted
// base, through the backing keys.
func TestCrypt_BackingKeysCommandsLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	chain := encryptedChain(t)
	type result struct {
		out   string
		code  int
		files map[string][]byte
	}
	for _, c := range []struct {
		name   string
		writes bool // compare the images afterwards
		args   []string
	}{
		{"map", false, []string{"map", "--image-opts", topOpts("D")}},
		{"compare", false, []string{"compare", "--image-opts", topOpts("D"),
			"driver=qcow2,encrypt.key-secret=s1,backing.encrypt.key-secret=s0,file.filename=D/mid.qcow2"}},
		{"convert", true, []string{"convert", "-O", "raw", "--image-opts", topOpts("D"), "D/out.raw"}},
		{"commit", true, []string{"commit", "--image-opts", topOpts("D")}},
		{"commit the middle", true, []string{"commit", "--image-opts", "driver=qcow2,encrypt.key-secret=s1,backing.encrypt.key-secret=s0,file.filename=D/mid.qcow2"}},
		{"commit without the key", false, []string{"commit", "--image-opts", "driver=qcow2,backing.encrypt.key-secret=s1,file.filename=D/top.qcow2"}},
		{"rebase", true, []string{"rebase", "-b", "", "--image-opts", topOpts("D")}},
		{"check", false, []string{"check", "--image-opts", topOpts("D")}},
		{"measure", false, []string{"measure", "-O", "qcow2", "--image-opts", topOpts("D")}},
		{"dd", true, []string{"dd", "--image-opts", "if=" + topOpts("D"), "of=D/out.raw"}},
		// Commands that open no backing file refuse the options, as
		// QEMU's open with BDRV_O_NO_BACKING leaves them unused.
		{"info", false, []string{"info", "--backing-chain", "--image-opts", topOpts("D")}},
		{"bitmap", true, []string{"bitmap", "--add", "--image-opts", topOpts("D"), "b0"}},
		{"rebase -u", true, []string{"rebase", "-u", "-b", "", "--image-opts", topOpts("D")}},
		// The same options in a json: name.
		{"json: commit", true, []string{"commit", jsonTop}},
		{"json: info", false, []string{"info", jsonMid}},
		{"json: bitmap", true, []string{"bitmap", "--add", jsonMid, "b0"}},
		{"json: rebase -u", true, []string{"rebase", "-u", "-b", "", jsonMid}},
	} {
		var res [2]result
		for i := range res {
			d := copyDir(t, chain)
			args := make([]string, len(c.args))
			for j, a := range c.args {
				args[j] = strings.ReplaceAll(a, "D/", d+"/")
				if a == "D" {
					args[j] = d
				}
			}
			for j, a := range args {
				if strings.Contains(a, "file.filename=D") {
					args[j] = strings.ReplaceAll(a, "file.filename=D", "file.filename="+d)
				}
			}
			res[i].out, res[i].code = runTool(t, i == 0, "qemu-img", d, args...)
			if i == 1 {
				checkChain(t, d) // what qimg left
			}
			res[i].files = map[string][]byte{}
			for _, f := range []string{"base.qcow2", "mid.qcow2", "top.qcow2", "out.raw"} {
				if c.writes {
					res[i].files[f] = guestBytes(t, d, f)
				}
			}
		}
		if res[0].out != res[1].out || res[0].code != res[1].code {
			t.Errorf("%s: qemu-img exit %d:\n%s\nqimg exit %d:\n%s", c.name, res[0].code, res[0].out, res[1].code, res[1].out)
		}
		for f, b := range res[0].files {
			if !bytes.Equal(b, res[1].files[f]) {
				t.Errorf("%s: %s differs from qemu-img's", c.name, f)
			}
		}
	}
}

// commit -b into an encrypted base through keyed backing nodes, which
// qemu-img 7.2 cannot do: the options make its backing nodes' names json:
// specs, and it finds no base of the name given ("Did not find
// 'base.qcow2' in the backing chain").
func TestCrypt_BackingKeysCommitToBase(t *testing.T) {
	testkit.NeedQemu(t)
	d := encryptedChain(t)
	if out, code := runTool(t, false, "qemu-img", d, "commit", "-b", "base.qcow2", "--image-opts", topOpts(d)); code != 0 || out != "Image committed.\n" {
		t.Fatalf("commit -b: exit %d\n%s", code, out)
	}
	checkChain(t, d)
	if out, code := runTool(t, true, "qemu-io", d, "--image-opts", "driver=qcow2,encrypt.key-secret=s0,file.filename="+filepath.Join(d, "base.qcow2"),
		"-c", "read -P 0x11 0 1M", "-c", "read -P 0x22 1M 512k", "-c", "read -P 0 1536k 4k", "-c", "read -P 0x22 1540k 160k",
		"-c", "read -P 0x33 1700k 70000", "-c", "read -P 0x22 1810800 286352", "-c", "read -P 0 2M 2M"); code != 0 || strings.Contains(out, "failed") {
		t.Errorf("the base after commit -b: exit %d\n%s", code, out)
	}
}

// guestBytes is what the guest sees of one image of an encryptedChain
// directory without its backing file (nil if there is no such file).
func guestBytes(t *testing.T, d, name string) []byte {
	t.Helper()
	p := filepath.Join(d, name)
	if _, err := os.Stat(p); err != nil {
		return nil
	}
	if strings.HasSuffix(name, ".raw") {
		b, _ := os.ReadFile(p)
		return b
	}
	key := map[string]string{"base.qcow2": `"encrypt":{"key-secret":"s0"},`, "mid.qcow2": `"encrypt":{"key-secret":"s1"},`}[name]
	out := filepath.Join(t.TempDir(), "g.raw")
	testkit.MustRun(t, "qemu-img", append(append([]string{"convert"}, backingSecrets...),
		"-O", "raw", `json:{"driver":"qcow2",`+key+`"backing":null,"file":{"driver":"file","filename":"`+p+`"}}`, out)...)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
