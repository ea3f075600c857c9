package qcow2

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/qring/qring/internal/testkit"
)

// The metamorphic torture suite (after pebble's metamorphic test): a
// seeded generator makes one op sequence (writes of 1 byte to 3 clusters
// at any alignment, zero writes with and without MayUnmap (and
// Allocate), discards,
// flushes, reads, reopens with other options, growth and shrinking,
// regrow episodes (data in the cluster a shrink cuts into, below the
// initial size too, grown straight back: the range reads zeros),
// concurrent phases with read-your-writes checks, some with a resizer,
// a snapshotter or a refcount width change running beside the writers,
// torture_resize_test.go); the same sequence
// runs under many configurations (tortureMatrix, randomTcfg: cluster
// sizes 512 B-2 MiB, refcount widths 1-64, v2/v3, lazy refcounts, a
// backing file, prealloc and its reserve/fill options, tiny caches,
// memdev/holddev/latdev, aligned as an O_DIRECT file or as RAM, and the
// io_uring file), and every configuration
// must read back exactly the flat model. After each batch our Check must find nothing; at the end
// qemu-img check is clean and qemu-img convert -O raw equals the model.
// On memdev backends, a crash clone is taken and verified at boundary
// events (Options.OnEvent) and sampled device ops.
//
//	go test -run 'TestTorture$' ./qcow2                       # the short deterministic sample
//	go test -run 'TestTorture$' ./qcow2 -torture.seed=S -torture.config=NAME
//	make torture TORTURE_TIME=10m                              # TestTortureLoop

var (
	tortureSeed        = flag.Uint64("torture.seed", 0, "torture: run this seed (with -torture.config: one case; alone: a sample of configurations)")
	tortureConfig      = flag.String("torture.config", "", "torture: configuration name (e.g. c512-r64-v3-hold)")
	tortureOps         = flag.Int("torture.ops", 0, "torture: ops per case (0: 400)")
	tortureSize        = flag.String("torture.size", "", "torture: initial virtual size (default 32m)")
	tortureTime        = flag.Duration("torture.time", 0, "TestTortureLoop: run cases for this long")
	tortureKeep        = flag.String("torture.keep", "", "torture: directory for failing cases' images (default $TMPDIR/qring-torture)")
	tortureRequireGrow = flag.Bool("torture.requiregrow", false, "torture: fail when Image.Truncate returns ErrUnsupported instead of skipping the growth")
	tortureCrash       = flag.Int("torture.crash", 3, "torture: crash clones verified per kind per case (memdev backends)")
	tortureParallel    = flag.Int("torture.parallel", 0, "TestTortureLoop: cases run at once (0: max(1, NumCPU/2))")
	tortureTolerate    = flag.String("torture.tolerate", "", "torture: comma list of known-bug classes counted instead of failing: ryw (read-your-writes after early writes, bug 2)")
	tortureTrace       = flag.Bool("torture.trace", false, "torture: print every op, device request (memdev backends) and crash clone to stderr, for a failing seed's story")
	tortureCaseTimeout = flag.Duration("torture.casetimeout", 5*time.Minute, "TestTortureLoop: a case running longer is killed (SIGQUIT: goroutine dump) and failed")
)

func genParamsFromFlags(t *testing.T) tgenParams {
	p := defaultGenParams()
	if *tortureOps > 0 {
		p.ops = *tortureOps
	}
	if *tortureSize != "" {
		n, err := parseSizeTok(*tortureSize)
		if err != nil || n < 4<<20 || n%(1<<20) != 0 {
			t.Fatalf("-torture.size %q: want whole MiB, at least 4m", *tortureSize)
		}
		p.size, p.maxSize = n, 2*n
	}
	p.batchOps = min(max(p.ops/10, 8), 40)
	return p
}

// shortSample is the default run (go test ./qcow2, make test): fixed
// seeds and configurations, small images. Under the race detector only
// the entries marked race run (a third of the time): those whose
// goroutines interleave most (pausing devices, the queue's allocator,
// the filler, crash clones beside them); make test's pass without it
// runs them all, with longer sequences.
var shortSample = []struct {
	seed uint64
	cfg  string
	race bool
}{
	{1, "c64k-r16-v3-bm-hold", false},
	{1, "c512-r64-v3-mem", false},
	{2, "c512-r64-v3-ps4m-pa8m-fu-mem", false},
	{2, "c4k-r16-v2-back-hold", true},
	{3, "c2m-r16-v3-mem", false},
	{3, "c64k-r16-v3-lazy-back-ud", false},
	{4, "c16k-r1-v3-fz-tiny-hold", true},
	{4, "c8k-r32-v3-unm", true},
	{5, "c16k-r16-v3-xl2-back-hold", false},
	{5, "c64k-r16-v3-xl2-tiny-ud", false},
	{6, "c64k-r16-v3-q-ud", false},
	{6, "c4k-r16-v3-tiny-q-bm-hold", true},      // and a dirty bitmap (Q22)
	{7, "c64k-r16-v3-xl2-back-q-mem", true},     // the queue's allocator on extended L2, crash clones
	{8, "c4k-r16-v3-back-tiny-df-mem", false},   // an external data file: both devices cloned at once
	{9, "c16k-r16-v3-xl2-back-df-hold", false},  // subclusters in a data file (datafile_xl2.go)
	{10, "c4k-r16-v3-back-luks-df-hold", false}, // ciphertext in a data file; regrow episodes (ed2a14c)
	{11, "c16k-r16-v2-back-aes-hold", false},    // legacy AES: IV = guest sector, COW from a backing file
	{12, "c4k-r16-v3-back-al4k-mem", false},     // a memdev aligned as an O_DIRECT file: COW zeros as buffers
	{13, "c64k-r16-v3-falloc-ud", false},        // created with preallocation=falloc: a real fallocate, every cluster linked
	{13, "c4k-r16-v3-lazy-full-hold", false},    // preallocation=full, crash clones over linked clusters
	{14, "c16k-r16-v3-xl2-qback-hold", false},   // a qcow2 backing file: subcluster COW through its zero and unallocated clusters
	{14, "c4k-r16-v2-qback-mem", false},         // v2 over a qcow2 backing file: no zero clusters above it
}

func TestTorture(t *testing.T) {
	t.Parallel()
	p := genParamsFromFlags(t)
	if *tortureConfig != "" {
		cfg, err := parseTcfg(*tortureConfig)
		if err != nil {
			t.Fatal(err)
		}
		seed := *tortureSeed
		if seed == 0 {
			seed = testkit.Seed(t)
		}
		runTorture(t, seed, cfg, p, *tortureCrash)
		return
	}
	if *tortureSeed != 0 {
		// A seed alone: the same sequence under a sample of
		// configurations (two from the matrix, two random).
		r := rand.New(rand.NewPCG(*tortureSeed, 5))
		var cfgs []tcfg
		for i := 0; i < 2; i++ {
			c, _ := parseTcfg(tortureMatrix[r.IntN(len(tortureMatrix))])
			cfgs = append(cfgs, c)
			cfgs = append(cfgs, randomTcfg(r))
		}
		for _, c := range cfgs {
			t.Run(c.String(), func(t *testing.T) { runTorture(t, *tortureSeed, c, p, *tortureCrash) })
		}
		return
	}
	// The short deterministic sample.
	sp := tgenParams{size: 8 << 20, maxSize: 16 << 20, ops: 150, batchOps: 15}
	if raceEnabled || testing.Short() {
		sp.ops, sp.batchOps = 80, 8
	}
	if *tortureOps > 0 || *tortureSize != "" {
		sp = p
	}
	total := newTstats()
	var mu sync.Mutex
	for _, c := range shortSample {
		if raceEnabled && !c.race {
			continue
		}
		cfg, err := parseTcfg(c.cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(fmt.Sprintf("s%d-%s", c.seed, cfg), func(t *testing.T) {
			// Each case has its own image and devices: in parallel
			// they pack beside the package's other parallel tests
			// (one after the other, they ran last and alone).
			t.Parallel()
			st := runTorture(t, c.seed, cfg, sp, 1)
			mu.Lock()
			total.add(st)
			mu.Unlock()
		})
	}
	t.Cleanup(func() { t.Logf("torture sample: %v", total) }) // after the parallel cases
}

func tolerate(class string) bool {
	for _, c := range strings.Split(*tortureTolerate, ",") {
		if c == class {
			return true
		}
	}
	return false
}

func runtimeStack(buf []byte) int { return runtime.Stack(buf, true) }

// TestTortureLoop is `make torture`: for -torture.time it runs cases in
// subprocesses (this binary, TestTorture with one seed and one
// configuration: a crash, hang or panic fails that case only), cycling
// seeds and configurations: each seed runs under the configuration of
// the matrix at seed modulo its length and under a random one. It prints
// one reproduction command per failure and ends with "N passed, M
// failed".
func TestTortureLoop(t *testing.T) {
	if *tortureTime <= 0 {
		t.Skip("run with -torture.time (make torture)")
	}
	par := *tortureParallel
	if par <= 0 {
		par = max(1, runtime.NumCPU()/2)
	}
	seed0 := *tortureSeed
	if seed0 == 0 {
		seed0 = testkit.Seed(t) % 1_000_000_000
	}
	fmt.Printf("torture: %v, %d at a time, seeds from %d, keep failures in %s\n", *tortureTime, par, seed0, tortureKeepRoot())
	deadline := time.Now().Add(*tortureTime)
	type job struct {
		seed uint64
		cfg  tcfg
	}
	jobs := make(chan job)
	go func() {
		defer close(jobs)
		// The matrix from seed0's place in it: from its first entry
		// every time, a run shorter than the matrix (61 entries, two
		// cases a seed: about half an hour on two cores) never reached
		// its tail (the luks-df entries), whatever the seeds.
		for i := uint64(0); time.Now().Before(deadline); i++ {
			seed := seed0 + i
			c, _ := parseTcfg(tortureMatrix[int(seed%uint64(len(tortureMatrix)))])
			jobs <- job{seed, c}
			if !time.Now().Before(deadline) {
				return
			}
			jobs <- job{seed, randomTcfg(rand.New(rand.NewPCG(seed, 6)))}
		}
	}()
	var mu sync.Mutex
	total := newTstats()
	passed, failed := 0, 0
	var failures []string
	var wg sync.WaitGroup
	for w := 0; w < par; w++ {
		wg.Go(func() {
			for j := range jobs {
				st, ok, msg := runTortureChild(j.seed, j.cfg)
				mu.Lock()
				if ok {
					passed++
					total.add(st)
				} else {
					failed++
					failures = append(failures, msg)
					fmt.Printf("FAIL seed %d config %s\n%s\n", j.seed, j.cfg, msg)
				}
				if (passed+failed)%10 == 0 {
					fmt.Printf("torture: %d passed, %d failed so far (%v left)\n", passed, failed, time.Until(deadline).Round(time.Second))
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	fmt.Printf("torture totals: %v\n", total)
	for _, f := range failures {
		fmt.Printf("failure: %s\n", firstLine(f))
	}
	if failed > 0 {
		t.Fail()
	}
	// Last line (the Makefile prints it again after go test's own).
	line := fmt.Sprintf("%d passed, %d failed", passed, failed)
	if p := os.Getenv("QRING_TORTURE_SUMMARY"); p != "" {
		os.WriteFile(p, []byte(line+"\n"), 0o644) // printed last by make torture
	} else {
		fmt.Println(line)
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// runTortureChild runs one case in a subprocess and returns its stats,
// or a failure message that starts with the reproduction command.
func runTortureChild(seed uint64, cfg tcfg) (*tstats, bool, string) {
	args := []string{"-test.run=^TestTorture$", "-test.v", "-test.count=1",
		fmt.Sprintf("-torture.seed=%d", seed), "-torture.config=" + cfg.String(),
		fmt.Sprintf("-torture.crash=%d", *tortureCrash), "-torture.keep=" + tortureKeepRoot(),
		"-test.timeout=0"}
	if *tortureOps > 0 {
		args = append(args, fmt.Sprintf("-torture.ops=%d", *tortureOps))
	}
	if *tortureSize != "" {
		args = append(args, "-torture.size="+*tortureSize)
	}
	if *tortureRequireGrow {
		args = append(args, "-torture.requiregrow")
	}
	if *tortureTolerate != "" {
		args = append(args, "-torture.tolerate="+*tortureTolerate)
	}
	cmd := exec.Command(os.Args[0], args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	p := defaultGenParams()
	if *tortureOps > 0 {
		p.ops = *tortureOps
	}
	if *tortureSize != "" {
		p.size, _ = parseSizeTok(*tortureSize)
	}
	repro := "reproduce: " + reproCmd(seed, cfg, p)
	if *tortureRequireGrow {
		repro += " -torture.requiregrow"
	}
	if *tortureTolerate != "" {
		repro += " -torture.tolerate=" + *tortureTolerate
	}
	if err := cmd.Start(); err != nil {
		return nil, false, repro + "\nstart: " + err.Error()
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	timedOut := false
	select {
	case err = <-done:
	case <-time.After(*tortureCaseTimeout):
		timedOut = true
		cmd.Process.Signal(syscall.SIGQUIT) // goroutine dump
		select {
		case err = <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			err = <-done
		}
	}
	var st *tstats
	var kept string
	var msgs []string
	sc := bufio.NewScanner(bytes.NewReader(out.Bytes()))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		l := sc.Text()
		if rest, ok := strings.CutPrefix(l, "TORTURE-STATS "); ok {
			st = newTstats()
			json.Unmarshal([]byte(rest), st)
		}
		if i := strings.Index(l, "TORTURE-FAIL image kept in "); i >= 0 {
			kept = l[i+len("TORTURE-FAIL image kept in "):]
		}
		tl := strings.TrimSpace(l)
		if strings.Contains(tl, "_test.go:") && !strings.Contains(tl, "TORTURE-") && !strings.Contains(tl, "torture seed") && len(msgs) < 6 {
			msgs = append(msgs, tl)
		}
	}
	if err == nil && !timedOut && st != nil {
		return st, true, ""
	}
	var b strings.Builder
	b.WriteString(repro)
	if timedOut {
		fmt.Fprintf(&b, "\n  timed out after %v (goroutine dump in the log)", *tortureCaseTimeout)
	}
	if strings.Contains(out.String(), "panic:") {
		b.WriteString("\n  panicked")
	}
	if kept != "" {
		b.WriteString("\n  image kept in " + kept)
	}
	for _, m := range msgs {
		if len(m) > 400 {
			m = m[:400] + "..."
		}
		b.WriteString("\n  " + m)
	}
	if kept == "" {
		// A crash (panic, timeout) skipped the case's cleanup: keep the log.
		if f, ferr := os.CreateTemp(tortureKeepRoot(), fmt.Sprintf("s%d-%s-*.log", seed, cfg)); ferr == nil {
			f.Write(out.Bytes())
			f.Close()
			b.WriteString("\n  log kept in " + f.Name())
		}
	} else {
		os.WriteFile(kept+"/test.log", out.Bytes(), 0o644)
		b.WriteString("\n  log: " + kept + "/test.log")
	}
	return nil, false, b.String()
}

// tortureTracef prints one line of -torture.trace.
func tortureTracef(f string, a ...any) {
	if *tortureTrace {
		fmt.Fprintf(os.Stderr, f+"\n", a...)
	}
}

// TestTorture_MatrixNames: every entry of the matrix and of the short
// sample is a valid configuration whose name parses back to itself (a
// name out of token order still runs, but a failure's reproduction
// names it otherwise, and a token the parser does not know fails only
// when the loop reaches it).
func TestTorture_MatrixNames(t *testing.T) {
	names := append([]string(nil), tortureMatrix...)
	for _, c := range shortSample {
		names = append(names, c.cfg)
	}
	for _, name := range names {
		cfg, err := parseTcfg(name)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if cfg.String() != name {
			t.Errorf("config %q parses back as %q", name, cfg)
		}
	}
}
