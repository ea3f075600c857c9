package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// runMainEnv set to 1 makes the test binary run qimg (TestMain).
const runMainEnv = "QIMG_TEST_RUN_MAIN"

// straceLine is one system call strace -f -y -o printed (after its pid): its name and the
// file it names, by descriptor ("9</dir/f>") or by path ("\"/dir/f\"").
var straceLine = regexp.MustCompile(`^(?:\d+ +)?(\w+)\((?:-?\d+<([^>]*)>|"([^"]*)")`)

// TestDurable_SyncedBeforeExit: every file a command writes is synced
// (fdatasync or fsync, after its last write, truncate or fallocate)
// before qimg exits 0, as qemu-img's close flushes every node. qimg dd
// to a raw output synced nothing (a power cut could lose what it said
// it copied); create -f luks left the header unsynced, a flat VMDK its
// extent, resize of a raw file its new size (found by the durability
// review). The engine runs on its threads backend here (io_uring_setup
// refused), so that its writes are system calls strace sees.
func TestDurable_SyncedBeforeExit(t *testing.T) {
	testkit.NeedQemu(t)
	testkit.NeedTools(t, "strace")
	d := workDir(t)
	src := filepath.Join(d, "src.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", src, "8M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 3M", "-c", "write -P 2 5M 64k", src)
	raw := filepath.Join(d, "r.raw")
	ov := filepath.Join(d, "ov.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", src, "-F", "qcow2", ov)
	testkit.MustRun(t, "qemu-io", "-c", "write -P 3 1M 1M", ov)
	top := filepath.Join(d, "top.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", ov, "-F", "qcow2", top)
	testkit.MustRun(t, "qemu-io", "-c", "write -P 4 2M 1M", top)
	for _, c := range []struct {
		args  []string
		files []string // written, synced
	}{
		{[]string{"dd", "if=" + src, "of=" + filepath.Join(d, "dd.raw"), "bs=1M", "count=8"}, []string{"dd.raw"}},
		{[]string{"dd", "if=" + src, "of=" + filepath.Join(d, "dd.raw"), "bs=64k", "skip=16"}, []string{"dd.raw"}},
		{[]string{"dd", "-O", "qcow2", "if=" + src, "of=" + filepath.Join(d, "dd.qcow2"), "bs=1M"}, []string{"dd.qcow2"}},
		{[]string{"convert", "-O", "raw", src, raw}, []string{"r.raw"}},
		{[]string{"resize", "-f", "raw", raw, "12M"}, []string{"r.raw"}},
		{[]string{"resize", "-f", "raw", "--preallocation=falloc", raw, "16M"}, []string{"r.raw"}},
		{[]string{"resize", "-f", "raw", "--shrink", raw, "4M"}, []string{"r.raw"}},
		{[]string{"create", "-f", "luks", "--object", "secret,id=s0,data=abc", "-o", "key-secret=s0,iter-time=10", filepath.Join(d, "l.luks"), "4M"}, []string{"l.luks"}},
		{[]string{"resize", "--object", "secret,id=s0,data=abc", "--image-opts", "driver=luks,key-secret=s0,file.filename=" + filepath.Join(d, "l.luks"), "8M"}, []string{"l.luks"}},
		{[]string{"create", "-f", "vmdk", "-o", "subformat=monolithicFlat", filepath.Join(d, "f.vmdk"), "4M"}, []string{"f.vmdk", "f-flat.vmdk"}},
		{[]string{"create", "-f", "qcow2", filepath.Join(d, "c.qcow2"), "4M"}, []string{"c.qcow2"}},
		{[]string{"create", "-f", "raw", "-o", "preallocation=full", filepath.Join(d, "p.raw"), "4M"}, []string{"p.raw"}},
		{[]string{"convert", "-O", "vpc", src, filepath.Join(d, "c.vpc")}, []string{"c.vpc"}},
		{[]string{"convert", "-O", "vmdk", src, filepath.Join(d, "c.vmdk")}, []string{"c.vmdk"}},
		{[]string{"convert", "-c", "-O", "qcow2", src, filepath.Join(d, "z.qcow2")}, []string{"z.qcow2"}},
		{[]string{"io", "-f", "raw", "-c", "write -P 7 0 64k", raw}, []string{"r.raw"}},
		{[]string{"io", "-c", "write -P 7 0 64k", ov}, []string{"ov.qcow2"}},
		{[]string{"snapshot", "-c", "s1", ov}, []string{"ov.qcow2"}},
		{[]string{"bitmap", "--add", ov, "b0"}, []string{"ov.qcow2"}},
		{[]string{"amend", "-o", "lazy_refcounts=on", ov}, []string{"ov.qcow2"}},
		{[]string{"rebase", "-b", "", ov}, []string{"ov.qcow2"}},
		{[]string{"commit", top}, []string{"ov.qcow2", "top.qcow2"}},
		{[]string{"resize", "--shrink", filepath.Join(d, "z.qcow2"), "2M"}, []string{"z.qcow2"}},
	} {
		cmd := exec.Command("strace", append([]string{"-f", "-y", "-qq", "-o", filepath.Join(d, "trace"),
			"-e", "inject=io_uring_setup:error=ENOSYS",
			"-e", "trace=io_uring_setup,write,pwrite64,pwritev,pwritev2,ftruncate,truncate,fallocate,fdatasync,fsync", // the injection needs its call traced
			os.Args[0]}, c.args...)...)
		cmd.Env = append(os.Environ(), runMainEnv+"=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%q: %v\n%s", c.args, err, out)
		}
		trace, err := os.ReadFile(filepath.Join(d, "trace"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range c.files {
			if why := unsynced(string(trace), filepath.Join(d, f)); why != "" {
				t.Errorf("%q: %s %s", c.args, f, why)
			}
		}
	}
}

// unsynced says what in trace (strace -f -y) leaves the file at path
// unsynced at exit ("" when nothing does): a change after its last sync,
// or no change at all.
func unsynced(trace, path string) string {
	changed, last := false, ""
	for _, line := range strings.Split(trace, "\n") {
		m := straceLine.FindStringSubmatch(line)
		if m == nil || (m[2] != path && m[3] != path) {
			continue
		}
		switch m[1] {
		case "fdatasync", "fsync":
			last = ""
		default:
			changed, last = true, line
		}
	}
	switch {
	case !changed:
		return "was not written"
	case last != "":
		return "is not synced after: " + last
	}
	return ""
}
