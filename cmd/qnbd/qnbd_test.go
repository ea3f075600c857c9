package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"github.com/qring/qring/internal/testkit"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The interop tests run the qnbd binary against clients nobody here
// wrote: QEMU's (qemu-io, qemu-img), libnbd's (nbdinfo, nbdcopy) and
// fio's nbd engine. A missing tool skips its test (CI installs them all:
// .ci/run).

var bin string // directory with qnbd and qimg, built by TestMain

func TestMain(m *testing.M) {
	flag.Parse()
	if fuzzing() {
		// The fuzz targets call the parsers only; the fuzzer's workers
		// run TestMain too, and would each build the binaries.
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "qnbd-bin")
	if err != nil {
		panic(err)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		for _, p := range []string{".", "../qimg"} {
			args := append([]string{"build", "-o", dir + "/"}, buildFlags...)
			if p == "../qimg" {
				args = []string{"build", "-o", dir + "/"}
			}
			out, err := exec.Command("go", append(args, p)...).CombinedOutput()
			if err != nil {
				fmt.Fprintf(os.Stderr, "go build %s: %v\n%s", p, err, out)
				return 1
			}
		}
		bin = dir
		return m.Run()
	}()
	os.Exit(code)
}

// fuzzing reports whether go test runs a fuzz target (-test.fuzz) or is
// one of its workers.
func fuzzing() bool {
	for _, name := range []string{"test.fuzz", "test.fuzzworker"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" && f.Value.String() != "false" {
			return true
		}
	}
	return false
}

func need(t *testing.T, tools ...string) {
	t.Helper()
	testkit.NeedTools(t, tools...)
}

// sh runs a command and returns its stdout; failure fails the test.
func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	// testkit's runner retries what QEMU's tools fail for transiently
	// on a loaded machine (a LUKS create's PBKDF2 benchmark, a lock a
	// forked command still held), and fails t on a pattern mismatch.
	return testkit.MustRun(t, name, args...)
}

// server is a running qnbd.
type server struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr bytes.Buffer
	uri    string
	done   chan error
}

// shortDir is a temporary directory with a path short enough for a Unix
// socket.
func shortDir(t *testing.T) string {
	d, err := os.MkdirTemp("", "qnbd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// spawn starts cmd as a server, killed at the test's end if it is
// still running; its exit goes to done.
func spawn(t *testing.T, cmd *exec.Cmd) *server {
	t.Helper()
	s := &server{t: t, cmd: cmd, done: make(chan error, 1)}
	s.cmd.Stderr = &s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			s.cmd.Process.Kill()
			<-s.done
		}
	})
	return s
}

// start runs qnbd with args and waits until addr (a socket path or a
// host:port) accepts connections.
func start(t *testing.T, uri, addr string, args ...string) *server {
	t.Helper()
	s := spawn(t, exec.Command(filepath.Join(bin, "qnbd"), args...))
	s.uri = uri
	network := "tcp"
	if strings.HasPrefix(addr, "/") {
		network = "unix"
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		// A probe connection that closes without negotiating is not a
		// client, even for --once (TestOnceProbe).
		if c, err := net.Dial(network, addr); err == nil {
			c.Close()
			return s
		}
		select {
		case err := <-s.done:
			t.Fatalf("qnbd exited: %v\n%s", err, s.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("qnbd does not listen on %s\n%s", addr, s.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func startUnix(t *testing.T, dir, name string, args ...string) *server {
	sock := filepath.Join(dir, "nbd.sock")
	return start(t, fmt.Sprintf("nbd+unix:///%s?socket=%s", name, sock), sock,
		append([]string{"-k", sock, "-x", name}, args...)...)
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startTCP(t *testing.T, name string, args ...string) *server {
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	return start(t, fmt.Sprintf("nbd://%s/%s", addr, name), addr,
		append([]string{"-b", "127.0.0.1", "-p", fmt.Sprint(port), "-x", name}, args...)...)
}

// stop sends SIGTERM and expects a clean exit.
func (s *server) stop() {
	s.t.Helper()
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		if err != nil {
			s.t.Fatalf("qnbd after SIGTERM: %v\n%s", err, s.stderr.String())
		}
		if strings.Contains(s.stderr.String(), "DATA RACE") || strings.Contains(s.stderr.String(), "internal error") {
			s.t.Fatalf("qnbd:\n%s", s.stderr.String())
		}
	case <-time.After(30 * time.Second):
		s.t.Fatalf("qnbd did not stop on SIGTERM\n%s", s.stderr.String())
	}
}

func check(t *testing.T, img string) {
	t.Helper()
	out := sh(t, "qemu-img", "check", img)
	if !strings.Contains(out, "No errors were found") {
		t.Fatalf("qemu-img check %s:\n%s", img, out)
	}
	// And our own Check (qimg check exits non-zero on leaks too).
	if out := sh(t, filepath.Join(bin, "qimg"), "check", img); !strings.Contains(out, "No errors were found") {
		t.Fatalf("qimg check %s:\n%s", img, out)
	}
}

// create makes a qcow2 image of size with qemu-img in a new shortDir and
// returns both.
func create(t *testing.T, size string) (dir, img string) {
	dir = shortDir(t)
	img = filepath.Join(dir, "img")
	sh(t, "qemu-img", "create", "-f", "qcow2", img, size)
	return dir, img
}

// TestAcceptance is the acceptance sequence, verbatim.
func TestAcceptance(t *testing.T) {
	need(t, "qemu-img", "qemu-io", "nbdinfo")
	dir, img := create(t, "64M")
	s := startUnix(t, dir, "disk", "-f", "qcow2", img)
	sh(t, "qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 1M", "-c", "read -P 0x5a 0 1M", s.uri)
	m := sh(t, "nbdinfo", "--map", s.uri)
	if f := strings.Fields(m); strings.Join(f, " ") != "0 1048576 0 data 1048576 66060288 3 hole,zero" {
		t.Fatalf("nbdinfo --map:\n%s", m)
	}
	s.stop()
	check(t, img)
	sh(t, "qemu-io", "-c", "read -P 0x5a 0 1M", img)
}

type mapEntry struct {
	Start, Length int64
	Zero, Data    bool
}

// merged drops what NBD cannot tell (offsets, depth, presence) and
// merges neighbours.
func merged(es []mapEntry) []mapEntry {
	var out []mapEntry
	for _, e := range es {
		if k := len(out); k > 0 && out[k-1].Zero == e.Zero && out[k-1].Data == e.Data {
			out[k-1].Length += e.Length
			continue
		}
		out = append(out, mapEntry{e.Start, e.Length, e.Zero, e.Data})
	}
	return out
}

func qemuMap(t *testing.T, args ...string) []mapEntry {
	var es []mapEntry
	if err := json.Unmarshal([]byte(sh(t, "qemu-img", append([]string{"map", "--output=json"}, args...)...)), &es); err != nil {
		t.Fatal(err)
	}
	return merged(es)
}

// TestQEMU: qemu-io and qemu-img over both transports: patterns, zero
// writes with and without unmap, discard, read back; qemu-img map and
// convert through NBD equal the same through the file.
func TestQEMU(t *testing.T) {
	need(t, "qemu-img", "qemu-io")
	for _, transport := range []string{"unix", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			dir, img := create(t, "8M")
			args := []string{"-f", "qcow2", "--discard=unmap", img}
			var s *server
			if transport == "unix" {
				s = startUnix(t, dir, "d", args...)
			} else {
				s = startTCP(t, "d", args...)
			}
			sh(t, "qemu-io", "-f", "raw",
				"-c", "write -P 0x11 0 1M",
				"-c", "write -z 64k 64k",
				"-c", "write -z -u 256k 128k",
				"-c", "write -P 0x22 2M 512k",
				"-c", "discard 2304k 64k",
				"-c", "write -P 0x33 4095k 2k",
				"-c", "flush", s.uri)
			sh(t, "qemu-io", "-f", "raw",
				"-c", "read -P 0x11 0 64k",
				"-c", "read -P 0 64k 64k",
				"-c", "read -P 0x11 128k 128k",
				"-c", "read -P 0 256k 128k",
				"-c", "read -P 0x11 384k 640k",
				"-c", "read -P 0x22 2M 256k",
				"-c", "read -P 0 2304k 64k",
				"-c", "read -P 0x22 2368k 192k",
				"-c", "read -P 0x33 4095k 2k",
				"-c", "read -P 0 6M 2M", s.uri)
			viaNBD := qemuMap(t, "-f", "raw", s.uri)
			sh(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", s.uri, filepath.Join(dir, "nbd.raw"))
			s.stop()
			check(t, img)
			if viaFile := qemuMap(t, img); fmt.Sprint(viaFile) != fmt.Sprint(viaNBD) {
				t.Errorf("qemu-img map through NBD:\n%v\nthrough the file:\n%v", viaNBD, viaFile)
			}
			sh(t, "qemu-img", "convert", "-O", "raw", img, filepath.Join(dir, "file.raw"))
			sh(t, "cmp", filepath.Join(dir, "nbd.raw"), filepath.Join(dir, "file.raw"))
		})
	}
}

// TestLibnbd: nbdinfo's size, flags and map (against qimg map), nbdcopy
// in and out byte for byte.
func TestLibnbd(t *testing.T) {
	need(t, "qemu-img", "qemu-io", "nbdinfo", "nbdcopy")
	dir, img := create(t, "8M")
	// A source with data, zero runs and a tail of zeros.
	src := make([]byte, 8<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 5<<20; i++ {
		if (i>>16)%3 != 1 {
			src[i] = byte(rng.Uint32())
		}
	}
	srcPath := filepath.Join(dir, "src.raw")
	os.WriteFile(srcPath, src, 0o644)
	s := startUnix(t, dir, "x", "-e", "4", "--discard=unmap", "-A", img)
	var info struct {
		Exports []struct {
			Size      int64 `json:"export-size"`
			MultiConn bool  `json:"can_multi_conn"`
			FastZero  bool  `json:"can_fast_zero"`
			Trim      bool  `json:"can_trim"`
			Zero      bool  `json:"can_zero"`
			FUA       bool  `json:"can_fua"`
			ReadOnly  bool  `json:"is_read_only"`
			Contexts  []string
		}
	}
	if err := json.Unmarshal([]byte(sh(t, "nbdinfo", "--json", s.uri)), &info); err != nil {
		t.Fatal(err)
	}
	if e := info.Exports[0]; e.Size != 8<<20 || !e.MultiConn || !e.FastZero || !e.Trim || !e.Zero || !e.FUA || e.ReadOnly || len(e.Contexts) != 2 {
		t.Fatalf("nbdinfo: %+v", e)
	}
	sh(t, "nbdcopy", srcPath, s.uri)
	outPath := filepath.Join(dir, "out.raw")
	sh(t, "nbdcopy", s.uri, outPath)
	sh(t, "cmp", srcPath, outPath)
	var nm []struct {
		Offset, Length int64
		Type           int
	}
	if err := json.Unmarshal([]byte(sh(t, "nbdinfo", "--map", "--json", s.uri)), &nm); err != nil {
		t.Fatal(err)
	}
	var viaNBD []mapEntry
	for _, e := range nm {
		viaNBD = append(viaNBD, mapEntry{e.Offset, e.Length, e.Type&2 != 0, e.Type&1 == 0})
	}
	s.stop()
	check(t, img)
	var qm []mapEntry
	if err := json.Unmarshal([]byte(sh(t, filepath.Join(bin, "qimg"), "map", "--output=json", img)), &qm); err != nil {
		t.Fatal(err)
	}
	if a, b := fmt.Sprint(merged(viaNBD)), fmt.Sprint(merged(qm)); a != b {
		t.Errorf("nbdinfo --map:\n%s\nqimg map:\n%s", a, b)
	}
	// A raw export: its holes come from the file (SEEK_DATA), as in qimg
	// map.
	raw := filepath.Join(dir, "sparse.raw")
	sh(t, "qemu-img", "create", "-f", "raw", raw, "8M")
	sh(t, "qemu-io", "-f", "raw", "-c", "write -P 1 1M 64k", "-c", "write -P 2 5M 1M", raw)
	s = startUnix(t, dir, "x", "-f", "raw", raw)
	nm = nil
	if err := json.Unmarshal([]byte(sh(t, "nbdinfo", "--map", "--json", s.uri)), &nm); err != nil {
		t.Fatal(err)
	}
	viaNBD = nil
	for _, e := range nm {
		viaNBD = append(viaNBD, mapEntry{e.Offset, e.Length, e.Type&2 != 0, e.Type&1 == 0})
	}
	sh(t, "nbdcopy", s.uri, outPath)
	s.stop()
	sh(t, "cmp", raw, outPath)
	qm = nil
	if err := json.Unmarshal([]byte(sh(t, filepath.Join(bin, "qimg"), "map", "-f", "raw", "--output=json", raw)), &qm); err != nil {
		t.Fatal(err)
	}
	if a, b := fmt.Sprint(merged(viaNBD)), fmt.Sprint(merged(qm)); a != b || len(merged(qm)) < 3 {
		t.Errorf("raw: nbdinfo --map:\n%s\nqimg map:\n%s", a, b)
	}

	// Read-only export: nbdinfo sees it, nbdcopy cannot write.
	s = startUnix(t, dir, "x", "-r", img)
	if out := sh(t, "nbdinfo", s.uri); !strings.Contains(out, "is_read_only: true") {
		t.Errorf("nbdinfo on -r:\n%s", out)
	}
	if err := exec.Command("nbdcopy", srcPath, s.uri).Run(); err == nil {
		t.Error("nbdcopy into a read-only export succeeded")
	}
	s.stop()
}

// TestFio: fio's nbd engine, random and sequential 4 KiB writes with
// crc32c verification, two jobs on two connections.
func TestFio(t *testing.T) {
	need(t, "qemu-img", "fio")
	if out, _ := exec.Command("fio", "--enghelp=nbd").CombinedOutput(); !bytes.Contains(out, []byte("uri")) {
		testkit.Missing(t, "fio has no nbd engine")
	}
	dir, img := create(t, "16M")
	s := startUnix(t, dir, "f", "-e", "4", img)
	for _, rw := range []string{"randwrite", "write"} {
		out := sh(t, "fio", "--name=v", "--ioengine=nbd", "--uri="+s.uri, "--rw="+rw, "--bs=4k",
			"--size=4M", "--numjobs=2", "--offset_increment=4M", "--iodepth=16", "--verify=crc32c",
			"--do_verify=1", "--verify_fatal=1", "--verify_state_save=0", "--group_reporting", "--output-format=terse")
		if strings.Contains(out, "verify:") || strings.Contains(out, "bad magic") {
			t.Fatalf("fio %s:\n%s", rw, out)
		}
	}
	s.stop()
	check(t, img)
}

// TestKillClient: clients killed at random points leave the server
// serving and the image consistent, with flushed data intact.
func TestKillClient(t *testing.T) {
	need(t, "qemu-img", "qemu-io", "fio")
	dir, img := create(t, "16M")
	s := startUnix(t, dir, "k", "-e", "0", img)
	sh(t, "qemu-io", "-f", "raw", "-c", "write -P 0x77 8M 1M", "-c", "flush", s.uri)
	rng := rand.New(rand.NewPCG(3, 4))
	for range 4 {
		// --thread: the job runs in fio's own process, so killing it
		// kills the client (a job process, in a session of its own,
		// would outlive the test, blocked on its socket).
		cmd := exec.Command("fio", "--name=k", "--thread", "--ioengine=nbd", "--uri="+s.uri, "--rw=randrw", "--bs=4k",
			"--size=8M", "--iodepth=32", "--time_based", "--runtime=10")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(50+rng.IntN(400)) * time.Millisecond)
		cmd.Process.Kill()
		cmd.Wait()
	}
	sh(t, "qemu-io", "-f", "raw", "-c", "read -P 0x77 8M 1M", s.uri)
	s.stop()
	check(t, img)
	sh(t, "qemu-io", "-c", "read -P 0x77 8M 1M", img)
}

// TestFlags: --help, --version, bad options, --fork with --pid-file.
func TestFlags(t *testing.T) {
	q := filepath.Join(bin, "qnbd")
	if out := sh(t, q, "--help"); !strings.Contains(out, "--persistent") {
		t.Errorf("--help:\n%s", out)
	}
	sh(t, q, "--version")
	for _, args := range [][]string{{}, {"--bogus", "x"}, {"--discard=maybe", "x"}, {"-k", "/x", "-p", "1", "x"}, {"/nonexistent.qcow2"}} {
		if err := exec.Command(q, args...).Run(); err == nil {
			t.Errorf("qnbd %q succeeded", args)
		}
	}
	need(t, "qemu-img", "qemu-io")
	dir, img := create(t, "1M")
	sock, pidf := filepath.Join(dir, "s"), filepath.Join(dir, "pid")
	sh(t, q, "--fork", "--pid-file", pidf, "-k", sock, img)
	b, err := os.ReadFile(pidf)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	fmt.Sscan(string(b), &pid)
	sh(t, "qemu-io", "-f", "raw", "-c", "write -P 1 0 4k", "nbd+unix:///?socket="+sock)
	syscall.Kill(pid, syscall.SIGTERM)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(pidf); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("forked server did not exit")
		}
	}
	check(t, img)
	sh(t, "qemu-io", "-c", "read -P 1 0 4k", img)

	// --once: the server exits by itself when its client left.
	s := startUnix(t, dir, "o", "--once", img)
	sh(t, "qemu-io", "-f", "raw", "-c", "write -P 2 4k 4k", s.uri)
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatalf("--once: %v\n%s", err, s.stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("--once: still serving after the client left")
	}
	check(t, img)
	sh(t, "qemu-io", "-c", "read -P 2 4k 4k", img)
}

// TestCacheWriteThrough: with --cache=writethrough or directsync, as
// with qemu-nbd's, a write is flushed (data and the qcow2 metadata that
// maps it) before it is acknowledged: a server killed right after the
// reply, before any NBD_CMD_FLUSH, keeps it. qnbd took these modes for
// writeback and none, and lost the writes with the process.
func TestCacheWriteThrough(t *testing.T) {
	need(t, "qemu-img", "qemu-io", "nbdsh")
	env := nbdshEnv()
	if env == nil {
		testkit.Missing(t, "nbdsh does not run (python3-libnbd missing?)")
	}
	for _, cache := range []string{"writethrough", "directsync"} {
		t.Run(cache, func(t *testing.T) {
			dir, img := create(t, "4M")
			s := startUnix(t, dir, "w", "--cache="+cache, img)
			cmd := exec.Command("nbdsh", "-u", s.uri, "-c", `
h.pwrite(b"\x5a" * 65536, 1 << 20)
h.zero(4096, 1 << 20)
`)
			cmd.Env = env
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("nbdsh: %v\n%s", err, out)
			}
			s.cmd.Process.Kill()
			<-s.done
			check(t, img)
			sh(t, "qemu-io", "-c", "read -P 0 1M 4k", "-c", "read -P 0x5a 1028k 60k", img)
		})
	}
}

// nbdshEnv is the environment nbdsh runs in, nil if it does not: nbdsh
// runs the python3 on PATH, which must be the one python3-libnbd
// installed the module for, so the system's is tried too.
// needNbdsh skips t unless nbdsh runs and the tools are there, and
// returns the environment nbdsh runs in (nbdshEnv).
func needNbdsh(t *testing.T, tools ...string) []string {
	t.Helper()
	need(t, append(tools, "nbdsh")...)
	env := nbdshEnv()
	if env == nil {
		testkit.Missing(t, "nbdsh does not run (python3-libnbd missing?)")
	}
	return env
}

func nbdshEnv() []string {
	for _, path := range []string{os.Getenv("PATH"), "/usr/bin:" + os.Getenv("PATH")} {
		cmd := exec.Command("nbdsh", "-c", "pass")
		cmd.Env = append(os.Environ(), "PATH="+path)
		if cmd.Run() == nil {
			return cmd.Env
		}
	}
	return nil
}

// TestNbdsh runs nbdsh_test.py: FUA, FAST_ZERO (fast success, fast
// ENOTSUP), multi-conn flush visibility and BLOCK_STATUS edge cases.
func TestNbdsh(t *testing.T) {
	need(t, "qemu-img", "nbdsh")
	env := nbdshEnv()
	if env == nil {
		testkit.Missing(t, "nbdsh does not run (python3-libnbd missing?)")
	}
	dir, img := create(t, "16M")
	s := startUnix(t, dir, "s", "-e", "0", "--discard=unmap", "-A", img)
	script, err := filepath.Abs("nbdsh_test.py")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nbdsh", "-c", fmt.Sprintf("exec(open(%q).read())", script))
	cmd.Env = append(env, "URI="+s.uri)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "nbdsh: ok") {
		t.Fatalf("nbdsh: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	s.stop()
	check(t, img)
}

// TestTLS: --tls-creds makes TLS mandatory and, as QEMU's
// tls-creds-x509 (verify-peer=on), requires a client certificate the CA
// signs: libnbd (nbds://, tls-certificates=DIR) and QEMU (tls-creds-x509
// endpoint=client) connect with one; a plain client, a client without a
// certificate and one with a certificate from another CA are refused.
// With verify-peer=off a client without a certificate connects. Both
// with ECDSA certificates and with RSA ones signed with PKCS#1 v1.5
// (certtool's and openssl's default): GnuTLS 3.7 clients sent no RSA
// certificate over TLS 1.3 while the server's request named its CA
// (found by a review; tlscreds.go).
func TestTLS(t *testing.T) {
	need(t, "qemu-img", "qemu-io", "nbdinfo")
	for _, kind := range []string{"ecdsa", "rsa"} {
		t.Run(kind, func(t *testing.T) { testTLS(t, kind == "rsa") })
	}
}

func testTLS(t *testing.T, useRSA bool) {
	dir, img := create(t, "4M")
	p := writePKIKind(t, dir, useRSA)
	s := startTCP(t, "t", "--tls-creds", p.Server, img)
	tlsURI := func(creds string) string {
		return strings.Replace(s.uri, "nbd://", "nbds://", 1) + "?tls-certificates=" + creds
	}
	if out := sh(t, "nbdinfo", tlsURI(p.Server)); !strings.Contains(out, "with TLS") {
		t.Fatalf("nbdinfo over TLS:\n%s", out)
	}
	// (The request names no CA, so GnuTLS sends the certificate of
	// p.Other, and the server refuses it.)
	for what, uri := range map[string]string{"without TLS": s.uri, "without a client certificate": tlsURI(p.NoCert),
		"with a certificate of another CA": tlsURI(p.Other)} {
		if out, err := exec.Command("nbdinfo", uri).CombinedOutput(); err == nil {
			t.Errorf("nbdinfo %s succeeded:\n%s", what, out)
		}
	}
	host, port, _ := net.SplitHostPort(strings.TrimSuffix(strings.TrimPrefix(s.uri, "nbd://"), "/t"))
	qemuIO := func(creds string, cmds ...string) *exec.Cmd {
		args := []string{"--object", "tls-creds-x509,id=tls0,endpoint=client,dir=" + creds, "--image-opts",
			fmt.Sprintf("driver=nbd,host=%s,port=%s,export=t,tls-creds=tls0", host, port)}
		for _, c := range cmds {
			args = append(args, "-c", c)
		}
		return exec.Command("qemu-io", args...)
	}
	if out, err := qemuIO(p.Server, "write -P 0x42 0 64k", "read -P 0x42 0 64k").CombinedOutput(); err != nil {
		t.Fatalf("qemu-io over TLS: %v\n%s", err, out)
	}
	// (QEMU itself will not present a certificate its own ca-cert.pem
	// does not sign: p.Other is libnbd's case only.)
	if out, err := qemuIO(p.NoCert, "read -P 0x42 0 64k").CombinedOutput(); err == nil {
		t.Errorf("qemu-io without a client certificate succeeded:\n%s", out)
	}
	// libnbd's NBD_CMD_DISC (nbd_shutdown): the server ends the TLS
	// session with close_notify, so GnuTLS does not report a
	// truncation ("The TLS connection was non-properly terminated").
	if env := nbdshEnv(); env != nil {
		cmd := exec.Command("nbdsh", "-c", fmt.Sprintf(`
h.set_uri_allow_local_file(True)
h.set_debug(True)
h.connect_uri(%q)
assert h.get_tls_negotiated()
h.shutdown()
print("nbdsh: ok")`, tlsURI(p.Server)))
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "nbdsh: ok") || strings.Contains(string(out), "non-properly terminated") {
			t.Errorf("nbdsh over TLS: %v\n%s", err, out)
		}
	}
	s.stop()
	if !strings.Contains(s.stderr.String(), "certificate") {
		t.Errorf("the refusals are not logged:\n%s", s.stderr.String())
	}

	// verify-peer=off: any client that speaks TLS.
	s = startTCP(t, "t", "--tls-creds", p.Server+",verify-peer=off", img)
	if out := sh(t, "nbdinfo", tlsURI(p.NoCert)); !strings.Contains(out, "with TLS") {
		t.Fatalf("nbdinfo without a client certificate, verify-peer=off:\n%s", out)
	}
	if out, err := exec.Command("nbdinfo", s.uri).CombinedOutput(); err == nil {
		t.Errorf("nbdinfo without TLS succeeded (verify-peer=off):\n%s", out)
	}
	s.stop()
	check(t, img)
	sh(t, "qemu-io", "-c", "read -P 0x42 0 64k", img)
}

// TestOffsetHint: qemu-nbd's -o is --offset; qnbd's is --options. A
// number given to -o, or --offset, fails with a hint to the raw layer
// that does what qemu-nbd's offset does.
func TestOffsetHint(t *testing.T) {
	q := filepath.Join(bin, "qnbd")
	for _, args := range [][]string{{"-o", "1024", "img.qcow2"}, {"-o1024", "img.qcow2"}, {"--offset=1024", "img.qcow2"}} {
		out, err := exec.Command(q, args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "not qemu-nbd's -o/--offset") || !strings.Contains(string(out), "--image-opts driver=raw,offset=") {
			t.Errorf("qnbd %q: %v\n%s", args, err, out)
		}
		if args[0] != "--offset=1024" && !strings.Contains(string(out), "driver=raw,offset=1024,file.filename=img.qcow2") {
			t.Errorf("qnbd %q: the hint does not fill in the offset and the file:\n%s", args, out)
		}
	}
	// Engine options keep their meaning and their plain errors.
	if out, _ := exec.Command(q, "-o", "bogus=1", "img.qcow2").CombinedOutput(); strings.Contains(string(out), "offset") {
		t.Errorf("qnbd -o bogus=1:\n%s", out)
	}
}

// TestOnceProbe: with --once, connections that close without
// negotiating (nc -z, a port scan, a readiness probe) do not stop the
// server, over Unix or TCP; the first real client is served, and the
// server exits once it left and nothing else is open.
func TestOnceProbe(t *testing.T) {
	need(t, "qemu-img", "qemu-io")
	dir, img := create(t, "1M")
	exited := func(s *server, d time.Duration) bool {
		select {
		case err := <-s.done:
			if err != nil {
				t.Fatalf("--once: %v\n%s", err, s.stderr.String())
			}
			return true
		case <-time.After(d):
			return false
		}
	}
	for i, transport := range []string{"unix", "tcp"} {
		var s *server // start itself probed the socket
		if transport == "unix" {
			s = startUnix(t, dir, "o", "--once", "-e", "2", img)
		} else {
			s = startTCP(t, "o", "--once", "-e", "2", img)
		}
		network, addr := "unix", filepath.Join(dir, "nbd.sock")
		if transport == "tcp" {
			network, addr = "tcp", strings.TrimSuffix(strings.TrimPrefix(s.uri, "nbd://"), "/o")
		}
		for range 3 {
			if exited(s, 100*time.Millisecond) {
				t.Fatalf("%s: --once: the server exited after a bare connect and close", transport)
			}
			c, err := net.Dial(network, addr)
			if err != nil {
				t.Fatalf("%s: probe: %v\n%s", transport, err, s.stderr.String())
			}
			c.Close()
		}
		if exited(s, 100*time.Millisecond) {
			t.Fatalf("%s: --once: the server exited after a bare connect and close", transport)
		}
		// A probe still open when the client leaves keeps the server
		// up until it closes too (-e 2: with one connection at a time
		// the probe would hold the client off until the handshake
		// limit dropped it).
		probe, err := net.Dial(network, addr)
		if err != nil {
			t.Fatalf("%s: probe: %v\n%s", transport, err, s.stderr.String())
		}
		pat := fmt.Sprintf("%d", 0x31+i)
		sh(t, "qemu-io", "-f", "raw", "-c", "write -P "+pat+" 0 4k", "-c", "read -P "+pat+" 0 4k", s.uri)
		if exited(s, 100*time.Millisecond) {
			t.Fatalf("%s: --once: the server exited with a connection open", transport)
		}
		probe.Close()
		if !exited(s, 10*time.Second) {
			t.Fatalf("%s: --once: still serving after the client left", transport)
		}
		check(t, img)
		sh(t, "qemu-io", "-c", "read -P "+pat+" 0 4k", img)
	}
}
