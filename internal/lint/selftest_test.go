package lint

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The lint of the lint: every rule runs on a small synthetic tree (a
// temporary directory, only parsed, never built) that breaks it, and
// must report each break at its file:line; the clean tree passes every
// rule.

// cleanTree follows every rule: packages under the real dependency
// table's names, labels Q1 and B1 with their prefixes in docs/style.md,
// typed atomics, the kernel doors in uring only, a test file allowed to
// import the ring.
var cleanTree = map[string]string{
	"go.mod": "module example.com/m\n\ngo 1.26\n",
	"docs/style.md": "# Style\n\n" + tableStart + "\n| prefix | package |\n|---|---|\n" +
		"| `B` | `block` |\n| `Q` | `qcow2` |\n" + tableEnd + "\n",
	"README.md":      "See [the style](docs/style.md).\n",
	"block/doc.go":   "// Package block.\n//\n//\tB1  Safe for concurrent use.\npackage block\n",
	"block/block.go": "package block\n\ntype Device interface{}\n",
	"qcow2/doc.go":   "// Package qcow2.\n//\n//\tQ1  Refcount before link,\n//\t    continued (block's B1).\npackage qcow2\n",
	"qcow2/l2.go": `package qcow2

import (
	"sync/atomic"

	"example.com/m/block"
)

// l1 is read without the lock (Q1, B1): one L2 table per entry, QD64.
type l1 struct {
	dev block.Device
	e   []atomic.Uint64
	p   atomic.Pointer[int]
}

func (t *l1) load(i int) uint64 { return t.e[i].Load() }
`,
	"qcow2/l2_test.go": `package qcow2

import (
	"testing"

	"example.com/m/uring"
)

func TestL1(t *testing.T) { _ = uring.Open }
`,
	"uring/ring.go": `package uring

import (
	"github.com/iceber/iouring-go/syscall"
	"golang.org/x/sys/unix"

	"example.com/m/block"
)

var _ block.Device
var _ = unix.Mmap
var _ = syscall.IORING_OP_NOP

func Open() {}
`,
	"uring/ring_test.go": "package uring\n\nimport \"golang.org/x/sys/unix\"\n\nvar _ = unix.EIO\n",
	"cmd/tool/main.go": `package main

import (
	"example.com/m/qcow2"
	"example.com/m/uring"
)

func main() { _ = qcow2.Q; uring.Open() }
`,
	"qcow2/testdata/bad.go": "package bad\n\nimport \"example.com/m/uring\"\n\n// Q99, style.md\nvar _ = uring.Open\n",
}

// writeTree writes cleanTree with the changes applied (an empty content
// deletes the file) and parses it.
func writeTree(t *testing.T, changes map[string]string) *tree {
	t.Helper()
	root := t.TempDir()
	files := map[string]string{}
	for p, s := range cleanTree {
		files[p] = s
	}
	for p, s := range changes {
		files[p] = s
		if s == "" {
			delete(files, p)
		}
	}
	for p, s := range files {
		full := filepath.Join(root, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tr, err := loadTree(root)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func ruleNamed(t *testing.T, name string) rule {
	for _, r := range rules {
		if r.name == name {
			return r
		}
	}
	t.Fatalf("no rule %q", name)
	return rule{}
}

func TestRules_CleanTreePasses(t *testing.T) {
	tr := writeTree(t, nil)
	for _, r := range rules {
		for _, f := range r.check(tr) {
			t.Errorf("clean tree: %s", f)
		}
	}
}

// TestRules_EveryRuleIsShownFailing keeps the cases below in step with
// the rule list: a new rule needs a case that breaks it.
func TestRules_EveryRuleIsShownFailing(t *testing.T) {
	shown := map[string]bool{}
	for _, c := range breakCases {
		shown[c.rule] = true
	}
	for _, r := range rules {
		if !shown[r.name] {
			t.Errorf("rule %s has no case in breakCases", r.name)
		}
	}
}

// breakCases each change the clean tree so that one rule fails, and say
// what its findings must contain, one string per finding.
var breakCases = []struct {
	name    string
	rule    string
	changes map[string]string
	want    []string
}{{
	name: "engine imports the ring",
	rule: "deps",
	changes: map[string]string{
		"qcow2/open.go":  "package qcow2\n\nimport \"example.com/m/uring\"\n\nvar _ = uring.Open\n",
		"sched/sched.go": "package sched\n\nimport (\n\t\"example.com/m/block\"\n\t\"example.com/m/cache\"\n)\n",
	},
	want: []string{
		"qcow2/open.go:3: [deps] qcow2 imports uring",
		"sched/sched.go:5: [deps] sched imports cache",
	},
}, {
	name:    "package without a row",
	rule:    "deps",
	changes: map[string]string{"newpkg/x.go": "package newpkg\n"},
	want:    []string{"newpkg/x.go:1: [deps] package newpkg has no row"},
}, {
	name: "x/sys/unix outside uring",
	rule: "kernel",
	changes: map[string]string{
		"cmd/tool/tty.go":       "package main\n\nimport \"golang.org/x/sys/unix\"\n\nvar _ = unix.IoctlGetTermios\n",
		"qcow2/kill_test.go":    "package qcow2\n\nimport (\n\t\"testing\"\n\n\t\"golang.org/x/sys/unix\"\n)\n",
		"block/osfile.go":       "package block\n\nimport \"github.com/iceber/iouring-go/syscall\"\n",
		"uring/sys/sys.go":      "package sys\n\nimport \"golang.org/x/sys/unix\"\n", // the uring tree may
		"uring/sys/sys_test.go": "package sys\n\nimport \"golang.org/x/sys/unix\"\n",
		"cmd/tool/ioctl.go":     "package main\n\nimport \"syscall\"\n\nfunc f() { syscall.Syscall(syscall.SYS_IOCTL, 0, 0, 0) }\n",
		"cmd/tool/sig.go":       "package main\n\nimport \"syscall\"\n\nvar _ = syscall.SIGTERM\n", // signals are not a door
	},
	want: []string{
		"cmd/tool/ioctl.go:5: [kernel] cmd/tool calls syscall.Syscall",
		"cmd/tool/tty.go:3: [kernel] cmd/tool imports golang.org/x/sys/unix",
		"qcow2/kill_test.go:6: [kernel] qcow2 imports golang.org/x/sys/unix",
		"block/osfile.go:3: [kernel] block imports github.com/iceber/iouring-go/syscall",
	},
}, {
	name:    "iceber root package",
	rule:    "iceber",
	changes: map[string]string{"uring/lib.go": "package uring\n\nimport iouring \"github.com/iceber/iouring-go\"\n\nvar _ = iouring.New\n"},
	want:    []string{"uring/lib.go:3: [iceber] imports github.com/iceber/iouring-go:"},
}, {
	name: "raw atomic functions",
	rule: "atomics",
	changes: map[string]string{
		"qcow2/raw.go": `package qcow2

import (
	"sync/atomic"
	at "sync/atomic"
)

var n int64

func f(p *uint64) uint64 {
	atomic.AddInt64(&n, 1)
	cas := atomic.CompareAndSwapInt32
	_ = cas
	return at.LoadUint64(p)
}
`,
		"sched/dot_test.go": "package sched\n\nimport . \"sync/atomic\"\n",
	},
	want: []string{
		"qcow2/raw.go:11: [atomics] atomic.AddInt64 is a raw atomic function",
		"qcow2/raw.go:12: [atomics] atomic.CompareAndSwapInt32 is a raw atomic function",
		"qcow2/raw.go:14: [atomics] at.LoadUint64 is a raw atomic function",
		"sched/dot_test.go:3: [atomics] dot-imports sync/atomic",
	},
}, {
	name: "label prefix in two packages",
	rule: "labels",
	changes: map[string]string{
		"sched/doc.go": "// Package sched.\n//\n//\tQ1  One allocation per cluster.\n//\tQ2  No deadlock.\npackage sched\n",
	},
	want: []string{"sched/doc.go:3: [labels] prefix Q is defined by 2 packages: qcow2 (Q1 at qcow2/doc.go:3), sched (Q1-Q2 at sched/doc.go:3); each package needs its own prefix; labels defined in more than one package: Q1"},
}, {
	name: "label defined twice, reserved prefix",
	rule: "labels",
	changes: map[string]string{
		"qcow2/more.go":          "package qcow2\n\n// More rules:\n//\n//\tQ1  Again.\nvar x int\n",
		"block/latdev/doc.go":    "// Package latdev.\n//\n//\tL1  At most Parallel ops.\npackage latdev\n",
		"block/latdev/x_test.go": "package latdev\n\n// Restating a rule in a test is not a definition:\n//\n//\tB1  Safe.\n",
	},
	want: []string{
		"qcow2/more.go:5: [labels] label Q1 is defined twice in qcow2: here and at qcow2/doc.go:3",
		"block/latdev/doc.go:3: [labels] label L1 uses the prefix L, which reads as qcow2's L1 and L2 tables",
	},
}, {
	name: "stale citations",
	rule: "citations",
	changes: map[string]string{
		"qcow2/write.go":      "package qcow2\n\n// write links the cluster (Q1, Q7).\nfunc write() {}\n",
		"block/filter/cor.go": "package filter\n\n// Copy-on-read owns its children (F4, L2).\nvar x int\n",
	},
	want: []string{
		"qcow2/write.go:3: [citations] Q7 is not a defined label (qcow2 defines Q1 at qcow2/doc.go:3)",
		"block/filter/cor.go:3: [citations] F4 is not a defined label and prefix F is owned by no package",
	},
}, {
	name: "prefix table out of date",
	rule: "prefixes",
	changes: map[string]string{
		"docs/style.md": "# Style\n\n" + tableStart + "\n| `Q` | `qcow2` |\n| `F` | `uring` |\n| `S` | `qcow2` |\n" + tableEnd + "\n",
		"sched/doc.go":  "// Package sched.\n//\n//\tS1  One allocation per cluster.\npackage sched\n",
	},
	want: []string{
		"block/doc.go:3: [prefixes] prefix B (block) is not in the label prefix table",
		"docs/style.md:5: [prefixes] docs/style.md lists prefix F for uring, but no package defines a label with it",
		"docs/style.md:6: [prefixes] docs/style.md gives prefix S to qcow2, but sched defines it",
	},
}, {
	name:    "no prefix table",
	rule:    "prefixes",
	changes: map[string]string{"docs/style.md": ""},
	want:    []string{"docs/style.md: [prefixes] cannot read the label prefix table"},
}, {
	name: "documents outside the repository",
	rule: "docs",
	changes: map[string]string{
		"qcow2/trace_test.go": "package qcow2\n\n// Golden traces (style.md rule 4).\n// Eviction honours dependencies (§8 trap 7).\nvar x int\n",
		"cache/doc.go":        "// Package cache follows the house style rule 2\n// and ../shared/ref/qemu-qcow2.md.\npackage cache\n",
		"perf/README.md":      "Disk speed swings (/work/shared/ref/baseline.md).\nOur rules: [style](../docs/style.md).\n",
	},
	want: []string{
		"qcow2/trace_test.go:3: [docs] cites style.md, which is not a file in the repository",
		"qcow2/trace_test.go:4: [docs] cites \"§8 trap\"",
		"cache/doc.go:1: [docs] cites \"house style\"",
		"cache/doc.go:2: [docs] cites ../shared/ref/qemu-qcow2.md, which is not a file in the repository",
		"perf/README.md:1: [docs] cites /work/shared/ref/baseline.md, which is not a file in the repository",
	},
}}

func TestRules_EachRuleReportsItsBreak(t *testing.T) {
	for _, c := range breakCases {
		t.Run(c.rule+"/"+c.name, func(t *testing.T) {
			fs := ruleNamed(t, c.rule).check(writeTree(t, c.changes))
			sortFindings(fs)
			var got []string
			for _, f := range fs {
				got = append(got, f.String())
			}
			for _, w := range c.want {
				found := false
				for _, g := range got {
					found = found || strings.Contains(g, w)
				}
				if !found {
					t.Errorf("no finding contains %q", w)
				}
			}
			if len(got) != len(c.want) {
				t.Errorf("%d findings, want %d", len(got), len(c.want))
			}
			if t.Failed() {
				t.Logf("findings:\n%s", strings.Join(got, "\n"))
			}
		})
	}
}
