package main

import (
	"io"
	"strings"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/qcow2"
)

// FuzzIOCommands: qimg io's command lines (qemu-io's -c strings), any
// bytes, run on a small qcow2 image in memory return output or an error,
// never panic, and leave an image that checks clean. The input is lines
// of commands. Lines the harness leaves out do what the user asked of
// the host, not the parser's work: sleep, write -s (reads a host file),
// open and close (host files; the harness's image), and growth past 16 MiB (truncate -m full 1T would write a terabyte).
func FuzzIOCommands(f *testing.F) {
	for _, s := range []string{
		"write -P 0xab 0 64k\nread -P 0xab 0 64k",
		"write -z 4k 8k\nwrite -zu 64k 64k\nmap\nalloc 0 128k",
		"writev -P 5 512 1k 2k 3k\nreadv -P 5 512 1k 2k 3k",
		"aio_write -P 7 0 4k\naio_flush\naio_read -P 7 0 4k",
		"discard 0 64k\nread -v 0 16\nlength\ninfo",
		"write -c 0 64k\nwrite -b 0 512\nread -b 0 512",
		"truncate 2M\ntruncate -m falloc 3M\nlength",
		"read -P 1 -s 8 -l 8 0 64\nread -C -q 0 1",
		"help\nhelp read\nhelp nosuch\nflush\nw 0 1\nr 0 1\nd 0 512\nf\ni",
		"write 0x10 0x20\nread 1M 1\nwrite -P 256 0 1\nread -1 1\nwritev 0\nalloc\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, script string) {
		mem := memdev.New(memdev.Options{Media: block.MediaRAM})
		if err := qcow2.CreateDevice(mem, qcow2.CreateOptions{Size: 1 << 20, ClusterSize: 4096}); err != nil {
			t.Fatal(err)
		}
		// A small reserve: the default's zeros ahead in memory made each
		// input about 20 times slower.
		im, err := qcow2.OpenDevice(mem, qcow2.Options{PreallocSize: 256 << 10})
		if err != nil {
			t.Fatal(err)
		}
		s := &ioSession{Opened: &imgopen.Opened{Dev: im, Image: im}, out: io.Discard}
		for _, line := range strings.Split(script, "\n") {
			if !fuzzableIOLine(line) {
				continue
			}
			s.exec(line)
		}
		if err := im.Flush(); err != nil {
			t.Fatalf("flush after %q: %v", script, err)
		}
		r, err := im.Check(qcow2.CheckOptions{})
		if err != nil || r.Corruptions != 0 || r.Leaks != 0 {
			t.Fatalf("check after %q: %+v %v", script, r, err)
		}
		if err := im.Close(); err != nil {
			t.Fatalf("close after %q: %v", script, err)
		}
	})
}

// fuzzableIOLine reports whether FuzzIOCommands runs line (see there).
func fuzzableIOLine(line string) bool {
	f := strings.Fields(line)
	if len(f) == 0 {
		return true
	}
	switch f[0] {
	case "sleep":
		return false
	case "open", "o", "close", "c", "reopen":
		// open names host files; close and reopen end the harness's
		// image (TestIOOpen_LikeQemu, TestIOReopen_LikeQemu cover
		// them).
		return false
	case "write", "w", "aio_write":
		for _, a := range f[1:] {
			if strings.HasPrefix(a, "-") && strings.Contains(a, "s") {
				return false
			}
		}
	case "truncate":
		for _, a := range f[1:] {
			if n, err := ioNum(a); err == nil && n > 16<<20 {
				return false
			}
		}
	}
	return true
}
