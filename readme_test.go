package qring_test

import (
	"os"
	"strings"
	"testing"
)

// TestREADME_LibraryExample: the README's library example is
// example_test.go from its import block on, verbatim, so that what the
// README shows is what go test compiles and runs.
func TestREADME_LibraryExample(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(src), "import (")
	if i < 0 {
		t.Fatal("example_test.go has no import block")
	}
	want := "```go\n" + string(src[i:]) + "```\n"
	if !strings.Contains(string(readme), want) {
		t.Errorf("README.md does not hold example_test.go (from its import block) as a ```go block; copy it:\n%s", want)
	}
}
