package qcow2

import (
	"flag"
	"fmt"
	"os"
	"testing"
)

// TestMain lets make test's race pass skip the tests that its
// invariants pass runs again under the race detector: the Makefile sets
// QRING_INVPASS to that pass's -run pattern (INVPASS), and this package
// adds it to -test.skip. A -skip on the go test command line could not
// say it (it applies to every package, and cmd/qimg, uring and others
// have tests of those names). The variable is unset before any test
// runs, so that the test binaries the tests start run what they ask for.
func TestMain(m *testing.M) {
	flag.Parse()
	if p := os.Getenv("QRING_INVPASS"); p != "" {
		os.Unsetenv("QRING_INVPASS")
		if s := flag.Lookup("test.skip").Value.String(); s != "" {
			p = s + "|" + p
		}
		if err := flag.Set("test.skip", p); err != nil {
			fmt.Fprintln(os.Stderr, "QRING_INVPASS:", err)
			os.Exit(2)
		}
	}
	os.Exit(m.Run())
}
