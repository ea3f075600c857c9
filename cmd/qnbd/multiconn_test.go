package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qring/qring/internal/testkit"
)

// exportFlags is what nbdinfo --json says of an export's flags.
type exportFlags struct {
	MultiConn bool   `json:"can_multi_conn"`
	ReadOnly  bool   `json:"is_read_only"`
	Trim      bool   `json:"can_trim"`
	Zero      bool   `json:"can_zero"`
	FastZero  bool   `json:"can_fast_zero"`
	Cache     bool   `json:"can_cache"`
	DF        bool   `json:"can_df"`
	FUA       bool   `json:"can_fua"`
	Flush     bool   `json:"can_flush"`
	MinBlock  int    `json:"block_size_minimum"`
	PrefBlock int    `json:"block_size_preferred"`
	MaxBlock  int    `json:"block_size_maximum"`
	Desc      string `json:"description"`
}

func nbdinfoFlags(t *testing.T, uri string) exportFlags {
	t.Helper()
	var info struct{ Exports []exportFlags }
	if err := json.Unmarshal([]byte(sh(t, "nbdinfo", "--json", uri)), &info); err != nil || len(info.Exports) != 1 {
		t.Fatalf("nbdinfo --json %s: %v %+v", uri, err, info)
	}
	return info.Exports[0]
}

// TestMultiConnFlags_LikeQemuNbd: NBD_FLAG_CAN_MULTI_CONN, and the other
// flags nbdinfo shows, as qemu-nbd 7.2 advertises them: multi-conn
// whenever more than one client may connect (-e N, N != 1; -e 0 is no
// limit), read-only or writable, and not with -e 1 (the default), not
// even read-only (qemu 7.1's "nbd/server: Allow MULTI_CONN for shared
// writable exports" made it depend on the connection limit alone).
func TestMultiConnFlags_LikeQemuNbd(t *testing.T) {
	need(t, "qemu-img", "qemu-nbd", "nbdinfo")
	dir, img := create(t, "4M")
	configs := [][]string{{"-e", "2"}, {"-r"}, {"-r", "-e", "0"}, {}, {"-e", "0"}, {"-r", "-e", "3"}}
	if testing.Short() {
		configs = configs[:3]
	}
	for _, args := range configs {
		qsock := filepath.Join(dir, "q.sock")
		stop := serveQemuNbd(t, qsock, append([]string{"-f", "qcow2", "-D", "d"}, append(args, img)...)...)
		want := nbdinfoFlags(t, "nbd+unix:///?socket="+qsock)
		stop()
		s := startUnix(t, dir, "", append([]string{"-f", "qcow2", "-D", "d"}, append(args, img)...)...)
		got := nbdinfoFlags(t, s.uri)
		s.stop()
		if got != want {
			t.Errorf("%q: qnbd %+v\nqemu-nbd %+v", args, got, want)
		}
	}
}

// TestSharedLimit_LikeQemuNbd: with -e N, the client after the N-th
// is neither refused nor served: as with qemu-nbd, which stops
// accepting, its connection waits in the listen queue without a
// greeting until a client leaves, and is then served.
func TestSharedLimit_LikeQemuNbd(t *testing.T) {
	need(t, "qemu-img", "qemu-nbd")
	dir, img := create(t, "4M")
	for _, n := range []int{1, 2} {
		for _, server := range []string{"qemu-nbd", "qnbd"} {
			sharedLimit(t, server, n, img, filepath.Join(dir, "e.sock"))
		}
	}
}

// sharedLimit serves img with server -e n and checks that client n+1
// waits for one of the n before it to leave.
func sharedLimit(t *testing.T, server string, n int, img, sock string) {
	args := []string{"-f", "qcow2", "-e", fmt.Sprint(n), img}
	if server == "qemu-nbd" {
		defer serveQemuNbd(t, sock, args...)()
	} else {
		defer start(t, "", sock, append([]string{"-k", sock}, args...)...).stop()
	}
	var held []net.Conn
	for range n {
		nc, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		rawGo(t, nc)
		held = append(held, nc)
	}
	extra, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("%s -e %d: client %d not even queued: %v", server, n, n+1, err)
	}
	defer extra.Close()
	var g [18]byte
	extra.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := io.ReadFull(extra, g[:]); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s -e %d: client %d got a greeting or an end (%v) while %d clients are connected", server, n, n+1, err, n)
	}
	held[0].Close()
	extra.SetDeadline(time.Now().Add(10 * time.Second))
	rawGo(t, extra)
}

// TestMultiConnCoherence runs multiconn_test.py: through four
// connections of one multi-conn export (-e 4), a read on any connection
// sees what another wrote (one request at a time, and with writes in
// flight on all of them), and a FLUSH on one makes the writes of the
// others durable: the server killed (SIGKILL) right after it leaves an
// image with no corruption and those contents.
func TestMultiConnCoherence(t *testing.T) {
	need(t, "qemu-img", "nbdsh")
	env := nbdshEnv()
	if env == nil {
		testkit.Missing(t, "nbdsh does not run (python3-libnbd missing?)")
	}
	dir, img := create(t, "8M")
	s := startUnix(t, dir, "m", "-e", "4", "--discard=unmap", img)
	script, err := filepath.Abs("multiconn_test.py")
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(dir, "want.raw")
	n := "200"
	if testing.Short() {
		n = "60"
	}
	cmd := exec.Command("nbdsh", "-c", fmt.Sprintf("exec(open(%q).read())", script))
	cmd.Env = append(env, "URI="+s.uri, "OUT="+want, "N="+n)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "nbdsh: ok") {
		t.Fatalf("nbdsh: %v\n%s", err, out)
	}
	s.cmd.Process.Kill()
	<-s.done
	testkit.QemuCheckNoCorruption(t, img)
	got := filepath.Join(dir, "got.raw")
	sh(t, "qemu-img", "convert", "-O", "raw", img, got)
	sh(t, "cmp", want, got)
}

// TestBlockSizes_LikeQemuNbd: the block sizes qnbd advertises
// (NBD_INFO_BLOCK_SIZE, which nbdinfo asks for) are qemu-nbd 7.2's for a
// qcow2 image, a raw one and one opened with O_DIRECT: minimum 1,
// preferred 4 KiB, maximum 32 MiB; for a raw image whose format was
// probed the minimum is 512 (QEMU's raw driver then aligns requests to
// sectors, to guard the first one; qnbd's guard checks writes of any
// size, but advertises qemu-nbd's minimum since 2026-12-06), read-only
// too, and so it is for an encrypted image (QEMU's crypto sectors; qnbd
// advertised 1 for both, and takes unaligned requests there).
func TestBlockSizes_LikeQemuNbd(t *testing.T) {
	need(t, "qemu-img", "qemu-nbd", "nbdinfo")
	dir, img := create(t, "4M")
	raw := filepath.Join(dir, "disk.raw")
	sh(t, "qemu-img", "create", "-f", "raw", raw, "4M")
	enc := filepath.Join(dir, "enc.qcow2")
	sh(t, "qemu-img", "create", "-q", "--object", "secret,id=s,data=pw", "-f", "qcow2",
		"-o", "encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10", enc, "4M")
	for _, c := range []struct {
		args    []string
		qemuMin int
	}{
		{args: []string{"-f", "raw", raw}, qemuMin: 1},
		{args: []string{"-f", "raw", "--cache=none", raw}, qemuMin: 1},
		{args: []string{"-f", "qcow2", "--cache=none", img}, qemuMin: 1},
		{args: []string{raw}, qemuMin: 512},
		{args: []string{"-r", raw}, qemuMin: 512},
		{args: []string{"--object", "secret,id=s,data=pw", "--image-opts", "driver=qcow2,encrypt.key-secret=s,file.filename=" + enc}, qemuMin: 512},
	} {
		qsock := filepath.Join(dir, "q.sock")
		stop := serveQemuNbd(t, qsock, c.args...)
		want := nbdinfoFlags(t, "nbd+unix:///?socket="+qsock)
		stop()
		s := startUnix(t, dir, "", c.args...)
		got := nbdinfoFlags(t, s.uri)
		s.stop()
		if want.MinBlock != c.qemuMin {
			t.Errorf("%q: qemu-nbd's minimum block size %d, expected %d", c.args, want.MinBlock, c.qemuMin)
		}
		if got != want {
			t.Errorf("%q: qnbd %+v\nqemu-nbd %+v", c.args, got, want)
		}
	}
}

// TestBlockSizes_UnaskedLikeQemuNbd: a client that does not ask for the
// block sizes gets qemu-nbd 7.2's answers: NBD_OPT_GO a minimum of 1
// (the server takes any alignment), NBD_OPT_INFO the error
// NBD_REP_ERR_BLOCK_SIZE_REQD where the minimum is more (qnbd advertised
// 512 to GO and answered INFO).
func TestBlockSizes_UnaskedLikeQemuNbd(t *testing.T) {
	need(t, "qemu-img", "qemu-nbd", "nbdsh")
	env := nbdshEnv()
	if env == nil {
		testkit.Missing(t, "nbdsh does not run (python3-libnbd missing?)")
	}
	dir, img := create(t, "4M")
	raw := filepath.Join(dir, "disk.raw")
	sh(t, "qemu-img", "create", "-f", "raw", raw, "4M")
	unasked := func(uri string) string {
		t.Helper()
		cmd := exec.Command("nbdsh", "-c", "h.set_request_block_size(False)", "-c", "h.set_opt_mode(True)",
			"-c", "h.connect_uri('"+uri+"')",
			"-c", "try:\n  h.opt_info(); print('info', h.get_block_size(nbd.SIZE_MINIMUM))\nexcept nbd.Error as e: print('info', e.errno)",
			"-c", "h.opt_go(); print('go', h.get_block_size(nbd.SIZE_MINIMUM))")
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("nbdsh: %v\n%s", err, out)
		}
		return string(out)
	}
	for _, args := range [][]string{{raw}, {"-r", raw}, {"-f", "qcow2", img}} {
		qsock := filepath.Join(dir, "q.sock")
		stop := serveQemuNbd(t, qsock, args...)
		want := unasked("nbd+unix:///?socket=" + qsock)
		stop()
		s := startUnix(t, dir, "", args...)
		got := unasked(s.uri)
		s.stop()
		if got != want {
			t.Errorf("%q: qnbd %q, qemu-nbd %q", args, got, want)
		}
	}
}
