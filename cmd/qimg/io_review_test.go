package main

import (
	"bytes"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// sameIO runs qimg io and qemu-io with the same arguments, each on its
// own copy of the image at tmpl (the file name last; none with tmpl ""),
// and fails t unless stdout (timings aside), stderr (qimg's "qimg: io: "
// as qemu-io's prefix) and the exit code agree. It returns the two
// copies.
func sameIO(t *testing.T, tmpl string, args ...string) (ours, theirs string) {
	t.Helper()
	var oargs, qargs []string
	if tmpl != "" {
		ours, theirs = tmpl+".ours", tmpl+".theirs"
		cp(t, tmpl, ours)
		cp(t, tmpl, theirs)
		oargs, qargs = append(oargs, ours), append(qargs, theirs)
	}
	o, e, code := runQLocked(t, append(append([]string{"io"}, args...), oargs...)...)
	qo, qe, qcode := testkit.Run(t, "qemu-io", append(args, qargs...)...)
	norm := func(s string) string {
		if tmpl != "" {
			s = strings.NewReplacer(ours, "IMG", theirs, "IMG").Replace(s)
		}
		return machineTiming.ReplaceAllString(normTiming(s), "$1,<timing>")
	}
	if code != qcode || norm(o) != norm(qo) || norm(asQemuIO(e)) != norm(qe) {
		t.Errorf("%q: qimg exit %d\n%s%s\nqemu-io exit %d\n%s%s", args, code, o, e, qcode, qo, qe)
	}
	return ours, theirs
}

// TestIOCompressedFailure_LikeQemu: a compressed write over several
// clusters whose first cluster is allocated already fails with EIO and
// writes only the clusters QEMU's pool of 8 tasks had started (clusters
// 1 to 8): 576 KiB allocated, as qemu-io's. qimg wrote every cluster but
// the refused one (1 MiB).
func TestIOCompressedFailure_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	d := workDir(t)
	tmpl := filepath.Join(d, "t.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", tmpl, "4M")
	qio(t, tmpl, "write -P 1 0 64k")
	ours, theirs := sameIO(t, tmpl, "-c", "write -c -P 0x22 0 1M", "-c", "map", "-c", "read -P 1 0 64k", "-c", "read -P 0x22 64k 512k")
	testkit.MustRun(t, "qemu-img", "compare", "-q", ours, theirs)
	if got := qimgIO(t, ours, "map"); !strings.HasPrefix(got, "576 KiB (0x90000) bytes     allocated") {
		t.Errorf("map after the failed write:\n%s", got)
	}
}

// TestIOAllocFormats_LikeQemu: alloc and map count what the top layer
// allocates on every format, as qemu-io's bdrv_is_allocated: a VMDK's
// grains, a raw node over qcow2 (--image-opts, with and without a
// window) its clusters, a vpc and a raw file all. qimg's alloc counted
// all of any image but qcow2, and its map all of a raw node over qcow2
// (4 MiB where qemu-io says 128 KiB).
func TestIOAllocFormats_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	d := workDir(t)
	cmds := ioArgs([]string{"alloc 0 4M", "alloc 1M", "alloc 64k 128k", "alloc 100k 1M", "map"})
	for _, f := range []string{"vmdk", "vpc", "raw", "qcow2"} {
		tmpl := filepath.Join(d, "a."+f)
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", f, tmpl, "4M")
		qio(t, tmpl, "write -P 1 0 128k")
		sameIO(t, tmpl, append([]string{"-f", f}, cmds...)...)
	}
	q := filepath.Join(d, "a.qcow2")
	for _, opts := range []string{"driver=raw,file.driver=qcow2,file.file.filename=" + q,
		"driver=raw,offset=64k,file.driver=qcow2,file.file.filename=" + q} {
		for _, cache := range [][]string{nil, {"-t", "writeback"}} {
			sameIO(t, "", append(append(append([]string{"--image-opts"}, cache...), cmds...), opts)...)
		}
	}
}

// TestIOAioExitCodes_LikeQemu: the exit codes and lines of aio_read and
// aio_write, and the order of readv's, writev's and their -P checks, as
// qemu-io's: a write command on a read-only image is refused before its
// options are read ("Block node is read-only", exit 1, aio_write and -z
// too), -P is parsed before the range ("x is not a valid pattern byte",
// exit 1), aio_read's pattern mismatch and a failed aio request exit 0.
func TestIOAioExitCodes_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	d := workDir(t)
	tmpl := filepath.Join(d, "e.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", tmpl, "4M")
	for _, c := range [][]string{
		{"-r", "-c", "aio_write 0 1"}, {"-r", "-c", "aio_write -z 0 512"}, {"-r", "-c", "aio_write -x 0 1"},
		{"-r", "-c", "aio_write -q 0 512"}, {"-r", "-c", "write -P x 0 1"}, {"-r", "-c", "w -c 0 1"},
		{"-r", "-c", "writev -P x 0 5M"}, {"-r", "-c", "discard -x 0 1"}, {"-r", "-c", "truncate x"},
		{"-r", "-c", "write 0"}, {"-r", "-s", "-c", "write 0 1"}, {"-c", "reopen -r", "-c", "aio_write 0 1"},
		{"-c", "aio_write -P x 0 5M"}, {"-c", "aio_write -z -P x 0 5M"}, {"-c", "aio_read -P x 0 5M"},
		{"-c", "aio_read -P 0x12 0 512"}, {"-c", "aio_read -v -P 0x12 0 16"}, {"-c", "aio_read 0 5M"},
		{"-c", "aio_write 0 5M"}, {"-c", "aio_write -z 0 5M"}, {"-c", "readv -P x 0 5M"},
		{"-c", "writev -P x 0 5M"}, {"-c", "readv -P 0x12 0 512"},
	} {
		sameIO(t, tmpl, c...)
	}
}

// TestIOLongOptions_LikeQemu: qemu-io's long options: --cmd runs its
// commands in command-line order with -c's, and --format, --cache,
// --aio, --discard, --misalign, --read-only, --snapshot, --nocache and
// --force-share are their short options. -V and --version print qimg's
// version. qimg took --cmd and ran nothing, and refused the others.
func TestIOLongOptions_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	d := workDir(t)
	tmpl := filepath.Join(d, "l.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", tmpl, "4M")
	for _, args := range [][]string{
		{"--cmd", "write -P 3 0 1", "-c", "read -P 3 0 1", "--cmd=map", "--format", "qcow2", "--cache=none",
			"--aio", "threads", "--discard", "ignore", "--misalign", "-c", "discard 0 64k", "--cmd", "alloc 0"},
		{"--read-only", "--force-share", "--cmd", "write 0 1", "--cmd", "length"},
		{"--snapshot", "--nocache", "--cmd", "write -P 5 0 1", "--cmd", "read -P 5 0 1"},
		{"--read-only", "--snapshot", "--cmd", "write 0 1"},
	} {
		sameIO(t, tmpl, args...)
	}
	want := mustQ(t, "--version")
	for _, v := range []string{"-V", "--version"} {
		if got := mustQ(t, "io", v, tmpl); got != want {
			t.Errorf("io %s: %q, want %q", v, got, want)
		}
	}
}

// TestIOStdin_LikeQemu: without -c, qimg io reads its commands from
// stdin as qemu-io does: a line at a time, "qemu-io> " before each read
// (stdin a pipe or not), until quit or the end of the input (a last line
// without its newline runs too), exit status 1 after a failed command.
// Words are split at spaces only: "read\t0 1" is no command. qimg ran
// nothing. Not parallel: it sets ioStdin.
func TestIOStdin_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := workDir(t)
	tmpl := filepath.Join(d, "s.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", tmpl, "4M")
	old := ioStdin
	defer func() { ioStdin = old }()
	for _, tc := range []struct {
		input string
		img   bool
	}{
		{"write -P 8 0 1\nread\t0 1\n\nread  -P 8 0 1\nfoo\nquit\nread 0 1\n", true},
		{"write -P 9 0 1\nread -P 9 0 1", true},
		{"read -P 9 0 1\nread -P 0 0 1\n", true},
		{"", true},
		{"open " + tmpl + ".ours\nread -P 0 0 1\nclose\n", false},
	} {
		ours, theirs := tmpl+".ours", tmpl+".theirs"
		cp(t, tmpl, ours)
		cp(t, tmpl, theirs)
		var oargs, qargs []string
		if tc.img {
			oargs, qargs = []string{ours}, []string{theirs}
		}
		ioStdin = strings.NewReader(tc.input)
		o, e, code := runQ(t, append([]string{"io"}, oargs...)...)
		cmd := exec.Command("qemu-io", qargs...)
		cmd.Stdin = strings.NewReader(strings.ReplaceAll(tc.input, ours, theirs))
		var qo, qe bytes.Buffer
		cmd.Stdout, cmd.Stderr = &qo, &qe
		qcode := 0
		if err := cmd.Run(); err != nil {
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatal(err)
			}
			qcode = ee.ExitCode()
		}
		if code != qcode || normTiming(o) != normTiming(qo.String()) || asQemuIO(e) != qe.String() {
			t.Errorf("%q: qimg exit %d\n%s%s\nqemu-io exit %d\n%s%s", tc.input, code, o, e, qcode, qo.String(), qe.String())
		}
		if tc.img {
			testkit.MustRun(t, "qemu-img", "compare", "-q", ours, theirs)
		}
	}
}

// TestIOWording_LikeQemu: read, readv and aio_read -v -q print nothing
// (-q wins; qimg dumped), truncate's unreadable size is print_cvtnum_err's
// line on stdout, naming argv[1] after getopt's permutation as qemu-io
// 7.2 does (qimg: on stderr, the size), sleep reads its number as strtol
// in base 0 (qimg refused 0x10 and took 08), and a tab does not split
// words.
func TestIOWording_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	d := workDir(t)
	tmpl := filepath.Join(d, "w.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", tmpl, "4M")
	qio(t, tmpl, "write -P 3 0 1")
	for _, c := range []string{
		"read -vq 0 16", "readv -vq 0 16", "aio_read -vq 0 16", "read -v -q -P 1 0 16", "readv -vq -P 1 0 16",
		"aio_read -vq -P 1 0 16", "read -Cvq 0 16", "read -Cv 0 16",
		"truncate x", "truncate -m falloc x", "truncate x -m off", "truncate -mfalloc x", "truncate 99999999999999999999999",
		"sleep 0x10", "sleep 010", "sleep 08", "sleep 0x", "sleep +5", "sleep -0", "sleep 1_0", "sleep 0b1", "sleep 1k",
		"sleep 99999999999999999999", "read\t0 1", "read 0\t1", "length\t",
	} {
		sameIO(t, tmpl, "-c", c)
	}
}

// TestStrtol0: sleep's number as C's strtol(s, &end, 0) with nothing
// after it.
func TestStrtol0(t *testing.T) {
	for _, tc := range []struct {
		s  string
		v  int64
		ok bool
	}{
		{"10", 10, true}, {"0x10", 16, true}, {"0X1f", 31, true}, {"010", 8, true}, {"0", 0, true}, {"-0", 0, true},
		{"+5", 5, true}, {" 7", 7, true}, {"-3", -3, true}, {"08", 0, false}, {"0x", 0, false}, {"1k", 0, false},
		{"", 0, false}, {"-", 0, false}, {"1_0", 0, false}, {"0b1", 0, false}, {"7 ", 0, false},
		{"99999999999999999999", 1<<63 - 1, true}, {"-99999999999999999999", -1 << 63, true},
		{"9223372036854775807", 1<<63 - 1, true}, {"-9223372036854775808", -1 << 63, true},
	} {
		if v, ok := strtol0(tc.s); v != tc.v || ok != tc.ok {
			t.Errorf("strtol0(%q) = %d, %v; want %d, %v", tc.s, v, ok, tc.v, tc.ok)
		}
	}
}
