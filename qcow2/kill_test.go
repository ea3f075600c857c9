package qcow2

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/uring"
)

// Kill tests: a child process (this test binary re-executed with
// QRING_KILL_CHILD=1, running TestKill_Child) opens an image with the
// io_uring backend and writes random data with periodic Flushes; the
// parent SIGKILLs it at a random moment, then checks the image (qemu-img
// check and our Check: no corruption, leaks allowed) and that everything
// flushed reads back.
//
// SIGKILL ends the process, not the machine: data in the page cache still
// reaches the file, so this tests process death (torn in-flight requests,
// metadata still in our caches, a dirty bit left set), not power loss;
// the crash clones in crash_test.go and faultsweep_test.go cover power
// loss.
//
// Protocol on the child's stdout (one write(2) per line, so a kill never
// interleaves lines; a last line without '\n' is ignored):
//
//	KILL O <backend>           opened
//	KILL I <off> <len> <seed>  about to write pattern(len, seed) at off
//	KILL Z <off> <len>         about to write zeros at off
//	KILL F <n>                 Flush #n returned: every I/Z line before
//	                           this one completed before the Flush began
//	KILL E <error>             the child failed
//
// Intent lines come before the request is issued, so the parent knows
// which ranges an unflushed (possibly torn) request may have changed.

const (
	killSize     = 32 << 20
	killChildEnv = "QRING_KILL_CHILD"
)

// TestKill_Child is the child side; it does nothing in a normal run.
func TestKill_Child(t *testing.T) {
	if os.Getenv(killChildEnv) != "1" {
		t.Skip("child process of TestKill_SIGKILL only")
	}
	if err := killChild(os.Getenv("QRING_KILL_IMAGE"), os.Getenv("QRING_KILL_DIRECT") == "1", os.Getenv("QRING_KILL_SEED")); err != nil {
		fmt.Fprintf(os.Stdout, "KILL E %v\n", strings.ReplaceAll(err.Error(), "\n", " "))
		os.Exit(1)
	}
}

func killChild(path string, direct bool, seedStr string) error {
	seed, err := strconv.ParseUint(seedStr, 10, 64)
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(seed, 3))
	var backend string
	opener := func(p string, ro bool) (block.Device, error) {
		f, err := uring.Open(p, uring.Options{Direct: direct, ReadOnly: ro})
		if err != nil {
			return nil, err
		}
		if backend == "" {
			backend = f.Backend().String() + "(" + f.BackendReason() + ")"
		}
		return f, nil
	}
	im, err := Open(path, Options{Opener: opener})
	if err != nil {
		return err
	}
	if im.ReadOnly() {
		return errors.New("image opened read-only")
	}
	var out sync.Mutex
	say := func(format string, args ...any) {
		out.Lock()
		fmt.Fprintf(os.Stdout, "KILL "+format+"\n", args...)
		out.Unlock()
	}
	say("O %s", backend)
	deadline := time.Now().Add(60 * time.Second) // never outlive a lost parent
	type req struct {
		off, n int64
		seed   byte
		zero   bool
	}
	for flushes := 1; time.Now().Before(deadline); {
		// A batch of up to 4 non-overlapping concurrent requests.
		var batch []req
		for len(batch) < 1+rng.IntN(4) {
			var r req
			switch k := rng.IntN(10); {
			case k < 4: // 4 KiB aligned (the O_DIRECT fast path)
				r.n = 4096 * int64(1+rng.IntN(16))
				r.off = rng.Int64N((killSize-r.n)/4096) * 4096
			case k < 9:
				r.n = 1 + rng.Int64N(100000)
				r.off = rng.Int64N(killSize - r.n)
			default:
				r.n = 1 + rng.Int64N(200000)
				r.off = rng.Int64N(killSize - r.n)
				r.zero = true
			}
			r.seed = byte(rng.Uint32())
			ok := true
			for _, o := range batch {
				if r.off < o.off+o.n && o.off < r.off+r.n {
					ok = false
				}
			}
			if ok {
				batch = append(batch, r)
			}
		}
		var wg sync.WaitGroup
		errs := make(chan error, len(batch))
		for _, r := range batch {
			if r.zero {
				say("Z %d %d", r.off, r.n)
			} else {
				say("I %d %d %d", r.off, r.n, r.seed)
			}
			wg.Add(1)
			go func(r req) {
				defer wg.Done()
				var err error
				if r.zero {
					err = im.WriteZeroes(r.off, r.n, block.MayUnmap)
				} else {
					_, err = im.WriteAt(pattern(int(r.n), r.seed), r.off)
				}
				errs <- err
			}(r)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				return err
			}
		}
		if rng.IntN(3) == 0 {
			if err := im.Flush(); err != nil {
				return err
			}
			say("F %d", flushes)
			flushes++
		}
	}
	return im.Close()
}

// killOp is one parsed request line.
type killOp struct {
	off, n int64
	seed   byte
	zero   bool
}

// TestKill_SIGKILL runs the kill rounds: 4 kills by default (one per case),
// QRING_KILL_ROUNDS per case when set. Each case keeps its image across
// rounds, so later children open an image a killed process left.
func TestKill_SIGKILL(t *testing.T) {
	if os.Getenv(killChildEnv) == "1" {
		t.Skip("in the child")
	}
	rounds := 1
	if v, err := strconv.Atoi(os.Getenv("QRING_KILL_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	cases := []struct {
		name   string
		direct bool
		lazy   bool
	}{
		{"direct", true, false},
		{"buffered", false, false},
		{"lazy-direct", true, true},
		{"lazy-buffered", false, true},
	}
	rng := testkit.Rand(t)
	kills := 0
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(testkit.Dir(t), "kill.qcow2")
			if err := Create(p, CreateOptions{Size: killSize, ClusterSize: 16384, LazyRefcounts: tc.lazy}); err != nil {
				t.Fatal(err)
			}
			model := make([]byte, killSize) // what the image holds
			for round := 0; round < rounds; round++ {
				model = killRound(t, p, tc.direct, tc.lazy, rng, model, round)
				kills++
				if t.Failed() {
					return
				}
			}
		})
	}
	t.Logf("%d kills", kills)
}

// killRound runs one child, kills it, verifies the image and returns its
// contents as the model for the next round.
func killRound(t *testing.T, p string, direct, lazy bool, rng *rand.Rand, model []byte, round int) []byte {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKill_Child$", "-test.count=1", "-test.v=false")
	cmd.Env = append(os.Environ(), killChildEnv+"=1", "QRING_KILL_IMAGE="+p,
		"QRING_KILL_DIRECT="+map[bool]string{true: "1", false: "0"}[direct],
		"QRING_KILL_SEED="+strconv.FormatUint(rng.Uint64(), 10))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		br := bufio.NewReader(stdout)
		for {
			s, err := br.ReadString('\n')
			if err != nil { // a partial last line is dropped
				if err != io.EOF {
					lines <- "KILL E read: " + err.Error()
				}
				return
			}
			lines <- strings.TrimSuffix(s, "\n")
		}
	}()
	// Kill after a random number of flushes, at a random moment after.
	wantF := 1 + rng.IntN(12)
	var got []string
	flushes := 0
	timeout := time.After(60 * time.Second)
	killed := false
	kill := func() {
		if !killed {
			cmd.Process.Signal(syscall.SIGKILL)
			killed = true
		}
	}
loop:
	for {
		select {
		case s, ok := <-lines:
			if !ok {
				break loop
			}
			got = append(got, s)
			if strings.HasPrefix(s, "KILL F ") {
				flushes++
				if flushes == wantF {
					d := time.Duration(rng.IntN(20000)) * time.Microsecond
					time.AfterFunc(d, kill) // races with the child's next requests
				}
			}
			if strings.HasPrefix(s, "KILL E ") {
				kill()
			}
		case <-timeout:
			kill()
			t.Errorf("round %d: no %d flushes after 60 s", round, wantF)
		}
	}
	werr := cmd.Wait()
	var backend string
	var ops []killOp
	lastF := 0 // ops[:lastF] completed before a completed Flush
	for _, s := range got {
		f := strings.Fields(s)
		if len(f) < 2 || f[0] != "KILL" {
			continue
		}
		switch f[1] {
		case "O":
			backend = strings.Join(f[2:], " ")
		case "E":
			t.Fatalf("round %d: child failed: %s\n%s", round, s, stderr.String())
		case "F":
			lastF = len(ops)
		case "I", "Z":
			var o killOp
			o.zero = f[1] == "Z"
			o.off, _ = strconv.ParseInt(f[2], 10, 64)
			o.n, _ = strconv.ParseInt(f[3], 10, 64)
			if !o.zero {
				s, _ := strconv.Atoi(f[4])
				o.seed = byte(s)
			}
			ops = append(ops, o)
		}
	}
	var ee *exec.ExitError
	if !errors.As(werr, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("round %d: child did not die of SIGKILL: %v\n%s", round, werr, stderr.String())
	}
	t.Logf("round %d (%s): killed after %d flushes, %d requests (%d flushed)", round, backend, flushes, len(ops), lastF)

	want := append([]byte(nil), model...)
	for _, o := range ops[:lastF] {
		if o.zero {
			clear(want[o.off : o.off+o.n])
		} else {
			copy(want[o.off:], pattern(int(o.n), o.seed))
		}
	}
	unknown := make([]bool, killSize/512)
	for _, o := range ops[lastF:] {
		for s := o.off / 512; s <= (o.off+o.n-1)/512; s++ {
			unknown[s] = true
		}
	}

	// A lazy-refcount image is dirty after a kill: qemu-img check would
	// (rightly) report the stale refcounts. Such an image is checked
	// after our writable open has repaired it.
	if !lazy {
		testkit.QemuCheckNoCorruption(t, p)
	}
	im, err := Open(p, Options{})
	if err != nil {
		t.Fatalf("round %d: reopen: %v", round, err)
	}
	if im.ReadOnly() {
		t.Fatalf("round %d: reopened read-only (corrupt bit set?)", round)
	}
	r, err := im.Check(CheckOptions{})
	if err != nil || r.Corruptions != 0 || r.CheckErrors != 0 {
		t.Errorf("round %d: check: %v corruptions=%d errors=%d %v", round, err, r.Corruptions, r.CheckErrors, head(r.Messages, 8))
	} else if lazy && !r.Clean() {
		t.Errorf("round %d: dirty image not clean after the repair on open: %d leaks %v", round, r.Leaks, head(r.Messages, 8))
	}
	cur := testkit.ReadAll(t, im)
	for s := int64(0); s < killSize/512; s++ {
		if unknown[s] {
			continue
		}
		lo, hi := s*512, s*512+512
		if i := testkit.FirstDiff(cur[lo:hi], want[lo:hi]); i >= 0 {
			t.Errorf("round %d: flushed data lost at guest offset %d: got %#x want %#x", round, lo+int64(i), cur[lo+int64(i)], want[lo+int64(i)])
			break
		}
	}
	if err := im.Close(); err != nil {
		t.Fatalf("round %d: close: %v", round, err)
	}
	if lazy {
		testkit.QemuCheckNoCorruption(t, p)
	}
	return cur
}
