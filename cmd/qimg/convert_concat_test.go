package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// concatInputs makes convert's several inputs in d: a qcow2 image with
// data, a zero cluster and an unallocated tail; a qcow2 image of 4k
// clusters whose size is not a multiple of 64k; a raw file whose size is
// not a multiple of 512 (qemu-img pads it to its last sector) with
// data past a hole; and a qcow2 image with data at its end.
func concatInputs(t *testing.T, d string) []string {
	t.Helper()
	a := qemuImage(t, filepath.Join(d, "a.qcow2"), "qcow2", "1M", "write -P 1 0 64k", "write -z 128k 64k",
		"write -P 2 256k 128k")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", filepath.Join(d, "b.qcow2"), "300k")
	b := filepath.Join(d, "b.qcow2")
	qemuIO(t, b, "qcow2", "write -P 5 8k 20k", "write -z 64k 16k", "write -P 0 100k 8k")
	c := filepath.Join(d, "c.raw")
	if err := os.WriteFile(c, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(c, 70000); err != nil {
		t.Fatal(err)
	}
	qemuIO(t, c, "raw", "write -P 6 65536 1024")
	e := qemuImage(t, filepath.Join(d, "e.qcow2"), "qcow2", "2M", "write -P 7 1M 100k", "write -P 8 1984k 64k")
	return []string{a, b, c, e}
}

// normMap is qemu-img map --output=json of an image with the host
// file's holes inside allocated clusters left out: where a cluster is
// only partly written, the engine leaves the rest of it a hole in the
// host file, which qemu-img map shows as "zero" data (QEMU's own writes
// fill it; a layout difference of the engine, not of convert). Entries
// are merged again where that split them.
func normMap(t *testing.T, fmt, path string) string {
	t.Helper()
	var ents []map[string]any
	if err := json.Unmarshal([]byte(testkit.MustRun(t, "qemu-img", "map", "-f", fmt, "--output=json", path)), &ents); err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, e := range ents {
		if _, ok := e["offset"]; ok && e["data"] == true {
			e["zero"] = false
		}
		if n := len(out); n > 0 {
			p := out[n-1]
			same := p["depth"] == e["depth"] && p["present"] == e["present"] && p["zero"] == e["zero"] && p["data"] == e["data"]
			po, pok := p["offset"].(float64)
			eo, eok := e["offset"].(float64)
			contiguous := pok == eok && (!pok || po+p["length"].(float64) == eo)
			if same && contiguous {
				p["length"] = p["length"].(float64) + e["length"].(float64)
				continue
			}
		}
		out = append(out, e)
	}
	b, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sameImages fails t unless ours and qemu-img's output (both of format
// fmt) hold the same guest contents and, host holes aside (normMap), the
// same map.
func sameImages(t *testing.T, what, fmt, ours, theirs string) {
	t.Helper()
	if out, _, code := testkit.Run(t, "qemu-img", "compare", "-f", fmt, "-F", fmt, theirs, ours); code != 0 {
		t.Errorf("%s: qemu-img compare with qemu-img's output: exit %d: %s", what, code, out)
	}
	if a, b := normMap(t, fmt, ours), normMap(t, fmt, theirs); a != b {
		t.Errorf("%s: map of ours:\n%s\nof qemu-img's:\n%s", what, a, b)
	}
}

// TestConvert_ConcatLikeQemu: convert with several inputs writes them one
// after another, each from the end of the whole sectors of the ones
// before it, as qemu-img 7.2 does: into a new qcow2 or raw output, with
// -S 0, compressed (-c, clusters spanning two inputs), into an existing
// output (-n, which holds old data; --target-is-zero into a zero one)
// and with -p, whose progress lines are
// qemu-img's. Ours and qemu-img's outputs compare identical, have the
// same map and pass qemu-img check (qemuDir).
func TestConvert_ConcatLikeQemu(t *testing.T) {
	t.Parallel()
	d := qemuDir(t)
	ins := concatInputs(t, d)
	for i, tc := range []struct {
		fmt  string
		args []string
	}{
		{"qcow2", []string{"-O", "qcow2"}},
		{"raw", []string{"-O", "raw"}},
		{"qcow2", []string{"-O", "qcow2", "-S", "0"}},
		{"qcow2", []string{"-O", "qcow2", "-S", "64k", "-o", "cluster_size=16k"}},
		{"qcow2", []string{"-O", "qcow2", "-c"}},
		{"qcow2", []string{"-O", "qcow2", "-c", "-S", "0"}},
		{"qcow2", []string{"-O", "qcow2", "-p"}},
		{"qcow2", []string{"-O", "qcow2", "-c", "-p"}},
	} {
		what := strings.Join(tc.args, " ")
		ours, theirs := filepath.Join(d, "ours"+string(rune('0'+i))), filepath.Join(d, "theirs"+string(rune('0'+i)))
		args := append(append([]string{"convert"}, tc.args...), ins...)
		o := mustQ(t, append(args, ours)...)
		q := testkit.MustRun(t, "qemu-img", append(args, theirs)...)
		if o != q {
			t.Errorf("%s: stdout %q, qemu-img's %q", what, o, q)
		}
		sameImages(t, what, tc.fmt, ours, theirs)
	}
	info := testkit.MustRun(t, "qemu-img", "info", "--output=json", filepath.Join(d, "ours0"))
	// 1M + 300k + 70000 in whole sectors (70144) + 2M.
	if !strings.Contains(info, `"virtual-size": 3523072,`) {
		t.Errorf("size of the output: %s", info)
	}

	// -n: into an existing output holding old data, larger than the
	// inputs together; its tail stays.
	for _, fmt := range []string{"qcow2", "raw"} {
		ours := qemuImage(t, filepath.Join(d, "n-ours."+fmt), fmt, "4M", "write -P 0xaa 0 4M")
		theirs := qemuImage(t, filepath.Join(d, "n-theirs."+fmt), fmt, "4M", "write -P 0xaa 0 4M")
		args := append([]string{"convert", "-n", "-O", fmt}, ins...)
		mustQ(t, append(args, ours)...)
		testkit.MustRun(t, "qemu-img", append(args, theirs)...)
		sameImages(t, "-n -O "+fmt, fmt, ours, theirs)
	}
	// -n --target-is-zero: into a new (zero) output, the zeros left out.
	ours := qemuImage(t, filepath.Join(d, "z-ours.qcow2"), "qcow2", "4M")
	theirs := qemuImage(t, filepath.Join(d, "z-theirs.qcow2"), "qcow2", "4M")
	args := append([]string{"convert", "-n", "--target-is-zero", "-O", "qcow2"}, ins...)
	mustQ(t, append(args, ours)...)
	testkit.MustRun(t, "qemu-img", append(args, theirs)...)
	sameImages(t, "-n --target-is-zero", "qcow2", ours, theirs)
}

// TestConvert_ConcatErrorsLikeQemu: what qemu-img 7.2 refuses with
// several inputs, qimg refuses with its message and exit code: a backing
// file for the output (-B, -o backing_file, also with -n), bitmaps, a
// snapshot by bare name (snapshot.name= loads into the first input
// only), an input that cannot be opened, -c into raw. And no output is
// left behind.
func TestConvert_ConcatErrorsLikeQemu(t *testing.T) {
	t.Parallel()
	d := qemuDir(t)
	a := qemuImage(t, filepath.Join(d, "a.qcow2"), "qcow2", "1M", "write -P 1 0 64k")
	testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s1", a)
	b := qemuImage(t, filepath.Join(d, "b.qcow2"), "qcow2", "1M", "write -P 2 0 64k")
	existing := qemuImage(t, filepath.Join(d, "existing.qcow2"), "qcow2", "4M")
	out := filepath.Join(d, "out")
	for _, args := range [][]string{
		{"-O", "qcow2", "-B", a, "-F", "qcow2", a, b, out},
		{"-O", "qcow2", "-B", a, a, b, out},
		{"-O", "qcow2", "-o", "backing_file=" + a + ",backing_fmt=qcow2", a, b, out},
		{"-O", "raw", "-B", a, "-F", "qcow2", a, b, out},
		{"-n", "-O", "qcow2", "-B", a, a, b, existing},
		{"--bitmaps", "-O", "qcow2", a, b, out},
		{"-l", "s1", a, b, out},
		{"-l", "snapshot.name=s1", b, a, out},
		{a, filepath.Join(d, "missing"), b, out},
		{"-c", a, b, out},
		{"-O", "qcow2", "-c", "-o", "preallocation=metadata", a, b, out},
		{"-O", "qcow2", "-c", "-o", "preallocation=falloc", a, out},
		{"-O", "qcow2", "-c", "--object", "secret,id=s,data=x", "-o", "encrypt.format=luks,encrypt.key-secret=s", a, out},
		{out},
	} {
		what := strings.Join(args, " ")
		_, e, code := runQ(t, append([]string{"convert"}, args...)...)
		_, qe, qcode := testkit.Run(t, "qemu-img", append([]string{"convert"}, args...)...)
		if code != qcode || ourMessage(e) != qemuMessage(qe) {
			t.Errorf("%s: exit %d %q; qemu-img: exit %d %q", what, code, ourMessage(e), qcode, qemuMessage(qe))
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%s: left %s behind", what, out)
			os.Remove(out)
		}
	}
	// snapshot.name= with several inputs: the first input is read as
	// its snapshot, the others as they are.
	ours, theirs := filepath.Join(d, "snap-ours"), filepath.Join(d, "snap-theirs")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 9 0 64k", a)
	mustQ(t, "convert", "-O", "qcow2", "-l", "snapshot.name=s1", a, b, ours)
	testkit.MustRun(t, "qemu-img", "convert", "-O", "qcow2", "-l", "snapshot.name=s1", a, b, theirs)
	sameImages(t, "-l snapshot.name=s1", "qcow2", ours, theirs)
	testkit.MustRun(t, "qemu-io", "-r", "-c", "read -P 1 0 64k", "-c", "read -P 2 1M 64k", ours)
}
