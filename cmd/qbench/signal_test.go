package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHelperQbench is not a test: run as a subprocess by
// TestRun_SignalRemovesSeed, it is qbench with the arguments after "--".
func TestHelperQbench(t *testing.T) {
	if os.Getenv("QBENCH_HELPER") != "1" {
		t.Skip("helper process only")
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	os.Exit(run(args, os.Stdout, os.Stderr))
}

// TestRun_SignalRemovesSeed: a seed run ended by SIGINT or SIGTERM
// removes its temporary image, and dies of that signal.
func TestRun_SignalRemovesSeed(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperQbench$", "--",
				"-n", "1G", "-d", "4", "-s", "4k", "-q", "-t", "writeback", "--dir", dir)
			cmd.Env = append(os.Environ(), "QBENCH_HELPER=1")
			var out strings.Builder
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Wait until the seed image exists and the run is under way.
			deadline := time.Now().Add(30 * time.Second)
			for {
				m, _ := filepath.Glob(filepath.Join(dir, "qbench-*", "seed.qcow2"))
				if len(m) == 1 {
					break
				}
				if time.Now().After(deadline) {
					cmd.Process.Kill()
					cmd.Wait()
					t.Fatalf("no seed image after 30 s; output:\n%s", out.String())
				}
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(200 * time.Millisecond)
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			err := cmd.Wait()
			ee, ok := err.(*exec.ExitError)
			if !ok {
				t.Fatalf("qbench ended with %v, want death by %v; output:\n%s", err, sig, out.String())
			}
			if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != sig {
				t.Errorf("qbench ended with %v, want death by %v", err, sig)
			}
			if left, _ := os.ReadDir(dir); len(left) != 0 {
				t.Errorf("after %v, %s still holds %v", sig, dir, left)
			}
		})
	}
}
