package lint

import (
	"os"
	"testing"
)

// TestLint runs every rule over the repository. A failure names the
// file:line, the rule in brackets, and what to do.
func TestLint(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root, err := findRoot(wd)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := loadTree(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.files) == 0 {
		t.Fatalf("no Go files under %s", root)
	}
	for _, r := range rules {
		t.Run(r.name, func(t *testing.T) {
			fs := r.check(tr)
			sortFindings(fs)
			for _, f := range fs {
				t.Error(f)
			}
			if len(fs) > 0 {
				t.Logf("%d finding(s) of rule %s", len(fs), r.name)
			}
		})
	}
}
