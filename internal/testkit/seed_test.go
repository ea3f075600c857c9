package testkit

import (
	"strings"
	"testing"
)

func TestSeed_Sources(t *testing.T) {
	defer func(v uint64) { *seedFlag = v }(*seedFlag)
	for _, tc := range []struct {
		name, env string
		flag      uint64
		want      uint64 // 0: any (from the clock)
	}{
		{"flag", "7", 42, 42},
		{"env", "7", 0, 7},
		{"env-hex", "0x10", 0, 16},
		{"clock", "", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(SeedEnv, tc.env)
			*seedFlag = tc.flag
			f := newFakeT(t, "TestX/sub")
			var got uint64
			f.run(func(f *fakeT) { got = Seed(f) })
			if f.failed || (tc.want != 0 && got != tc.want) || got == 0 {
				t.Fatalf("Seed = %d (failed %v: %q), want %d", got, f.failed, f.errs, tc.want)
			}
			if len(f.logs) != 1 || !strings.Contains(f.logs[0], "-run '^TestX$/^sub$' ./internal/testkit -seed=") {
				t.Errorf("log %q lacks the reproduction command", f.logs)
			}
		})
	}
}

// TestSeed_BadEnv: a QRING_SEED that is not a number fails the test
// loudly instead of being ignored.
func TestSeed_BadEnv(t *testing.T) {
	defer func(v uint64) { *seedFlag = v }(*seedFlag)
	*seedFlag = 0
	t.Setenv(SeedEnv, "12x")
	f := newFakeT(t, "TestX")
	returned := false
	f.run(func(f *fakeT) { Seed(f); returned = true })
	if returned || len(f.errs) != 1 || !strings.Contains(f.errs[0], `QRING_SEED="12x" is not a seed`) {
		t.Fatalf("returned %v, errors %q", returned, f.errs)
	}
}

func TestRunPattern(t *testing.T) {
	if got, want := runPattern("TestA/b.c_(1)#01"), `^TestA$/^b\.c_\(1\)#01$`; got != want {
		t.Errorf("runPattern = %s, want %s", got, want)
	}
}
