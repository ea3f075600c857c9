package testkit

import (
	"flag"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"
)

// SeedEnv is the environment variable Seed reads when -seed is not given.
// It is the one to use with go test ./...: the test binaries of packages
// that do not import testkit have no -seed flag and refuse it.
const SeedEnv = "QRING_SEED"

var seedFlag = flag.Uint64("seed", 0, "seed for randomised tests (0: $"+SeedEnv+", else time-based)")

// Seed returns the seed for t's random choices: the -seed flag when it is
// not 0, else $QRING_SEED when set and not 0, else one from the clock. A
// QRING_SEED that is not an unsigned number (decimal, 0x hex, 0o octal)
// fails the test instead of being ignored. The seed is logged with the
// go test command that reruns t with it (shown when t fails, or with -v).
func Seed(t testing.TB) uint64 {
	t.Helper()
	s := *seedFlag
	if s == 0 {
		if v := os.Getenv(SeedEnv); v != "" {
			n, err := strconv.ParseUint(v, 0, 64)
			if err != nil {
				t.Fatalf("%s=%q is not a seed: %v", SeedEnv, v, err)
			}
			s = n
		}
	}
	if s == 0 {
		s = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d; reproduce (from the module root): %s", s, rerun(t, "-seed="+strconv.FormatUint(s, 10)))
	return s
}

// Rand returns a generator seeded by Seed(t).
func Rand(t testing.TB) *rand.Rand {
	t.Helper()
	s := Seed(t)
	return rand.New(rand.NewPCG(s, s^0x9e3779b97f4a7c15))
}

// rerun is the go test command, run from the module root, that runs t
// alone with this binary's -race and -tags, followed by extra flags for
// the test binary.
func rerun(t testing.TB, extra ...string) string {
	cmd := []string{"go", "test"}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch {
			case s.Key == "-race" && s.Value == "true":
				cmd = append(cmd, "-race")
			case s.Key == "-tags" && s.Value != "":
				cmd = append(cmd, "-tags", s.Value)
			}
		}
	}
	cmd = append(cmd, "-count=1", "-run", "'"+runPattern(t.Name())+"'", packageDir())
	return strings.Join(append(cmd, extra...), " ")
}

// runPattern matches the test or subtest name (as t.Name() gives it)
// and nothing else.
func runPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

// packageDir is the test's package directory relative to the module root
// (go test runs a test binary in its package's directory), e.g. ./qcow2.
func packageDir() string {
	wd, err := os.Getwd()
	if err != nil {
		return "."
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			rel, err := filepath.Rel(d, wd)
			if err != nil || rel == "." {
				return "."
			}
			return "./" + filepath.ToSlash(rel)
		}
		if filepath.Dir(d) == d {
			return "."
		}
	}
}
