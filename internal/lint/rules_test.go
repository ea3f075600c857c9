package lint

import (
	"fmt"
	"go/ast"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// rule is one lint rule over a parsed tree.
type rule struct {
	name  string
	check func(t *tree) []finding
}

var rules = []rule{
	{"deps", checkDeps},
	{"kernel", checkKernel},
	{"iceber", checkIceber},
	{"atomics", checkAtomics},
	{"labels", checkLabels},
	{"citations", checkCitations},
	{"prefixes", checkPrefixes},
	{"docs", checkDocs},
}

// checkDeps: the module-internal imports of non-test files follow deps.
func checkDeps(t *tree) []finding {
	var out []finding
	noRow := map[string]bool{}
	for _, f := range t.files {
		if f.test || rowFor(deps, f.pkg) != nil || noRow[f.pkg] {
			continue
		}
		noRow[f.pkg] = true
		out = append(out, finding{t.at(f.ast.Package), "deps", fmt.Sprintf(
			"package %s has no row in the dependency table (internal/lint/deps_test.go): add one saying what it may import", f.pkg)})
	}
	t.imports(func(f *goFile, path string, s *ast.ImportSpec) {
		to, ok := t.internal(path)
		if f.test || !ok {
			return
		}
		row := rowFor(deps, f.pkg)
		if row == nil || row.allowed(to) {
			return
		}
		allow := strings.Join(append(slices.Clone(row.allow), anywhere...), ", ")
		out = append(out, finding{t.at(s.Pos()), "deps", fmt.Sprintf(
			"%s imports %s, against the dependency direction (row %s may import %s)", f.pkg, to, row.pkg, allow)})
	})
	return out
}

// kernelDoors are the packages that reach the kernel directly.
var kernelDoors = []string{"golang.org/x/sys/unix", "github.com/iceber/iouring-go/syscall"}

// kernelTree is the one package tree that may import them, tests included.
const kernelTree = "uring/..."

// checkKernel: only the uring tree imports the kernel doors.
func checkKernel(t *tree) []finding {
	var out []finding
	t.imports(func(f *goFile, path string, s *ast.ImportSpec) {
		if slices.Contains(kernelDoors, path) && !match(kernelTree, f.pkg) {
			out = append(out, finding{t.at(s.Pos()), "kernel", fmt.Sprintf(
				"%s imports %s: only %s talks to the kernel (add what you need there)", f.pkg, path, kernelTree)})
		}
	})
	// The standard library's raw system calls are a door too.
	for _, f := range t.files {
		if match(kernelTree, f.pkg) {
			continue
		}
		name := ""
		for _, s := range f.ast.Imports {
			if strings.Trim(s.Path.Value, "`\"") == "syscall" {
				name = "syscall"
				if s.Name != nil {
					name = s.Name.Name
				}
			}
		}
		if name == "" {
			continue
		}
		ast.Inspect(f.ast, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); ok && x.Name == name && slices.Contains(rawSyscalls, sel.Sel.Name) {
				out = append(out, finding{t.at(sel.Pos()), "kernel", fmt.Sprintf(
					"%s calls syscall.%s: only %s talks to the kernel (add what you need there)", f.pkg, sel.Sel.Name, kernelTree)})
			}
			return true
		})
	}
	return out
}

// rawSyscalls are the standard library's raw system call entries.
var rawSyscalls = []string{"Syscall", "Syscall6", "RawSyscall", "RawSyscall6"}

// iceberRoot is the iceber library's high-level package; the ring uses
// only its ABI subpackage.
const iceberRoot = "github.com/iceber/" + "iouring-go" // split, so that greps for the import find no false positive here

// checkIceber: the iceber root package is never imported.
func checkIceber(t *tree) []finding {
	var out []finding
	t.imports(func(f *goFile, path string, s *ast.ImportSpec) {
		if path == iceberRoot {
			out = append(out, finding{t.at(s.Pos()), "iceber", fmt.Sprintf(
				"imports %s: use only %s/syscall (the ABI layer)", iceberRoot, iceberRoot)})
		}
	})
	return out
}

// typedAtomics are the sync/atomic types; every other exported name of
// the package is a function on a raw word.
var typedAtomics = []string{"Bool", "Int32", "Int64", "Uint32", "Uint64", "Uintptr", "Pointer", "Value"}

// checkAtomics: no sync/atomic functions (LoadUint64, AddInt64, ...),
// only the typed atomics.
func checkAtomics(t *tree) []finding {
	var out []finding
	for _, f := range t.files {
		names := map[string]bool{}
		for _, s := range f.ast.Imports {
			if strings.Trim(s.Path.Value, "`\"") != "sync/atomic" {
				continue
			}
			switch {
			case s.Name == nil:
				names["atomic"] = true
			case s.Name.Name == ".":
				out = append(out, finding{t.at(s.Pos()), "atomics",
					"dot-imports sync/atomic: import it by name and use the typed atomics"})
			case s.Name.Name != "_":
				names[s.Name.Name] = true
			}
		}
		if len(names) == 0 {
			continue
		}
		ast.Inspect(f.ast, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			x, ok := sel.X.(*ast.Ident)
			if !ok || !names[x.Name] || slices.Contains(typedAtomics, sel.Sel.Name) {
				return true
			}
			out = append(out, finding{t.at(sel.Pos()), "atomics", fmt.Sprintf(
				"%s.%s is a raw atomic function: use the typed atomics (atomic.Uint64, atomic.Pointer[T], ...)", x.Name, sel.Sel.Name)})
			return true
		})
	}
	return out
}

// A label definition is a list item in a comment of a non-test file,
// in the form gofmt gives doc comment lists: "//", a tab, the label,
// spaces, text. Q7 in qcow2/doc.go is one.
var defLine = regexp.MustCompile(`^//\t([A-Z]{1,3})([0-9]{1,2}) +\S`)

// labelWord is any label-shaped word in a comment.
var labelWord = regexp.MustCompile(`\b([A-Z]{1,3})([0-9]{1,2})\b`)

// reservedPrefixes name other things in this repository, so a label with
// one of them would read as that thing.
var reservedPrefixes = map[string]string{
	"L":  "qcow2's L1 and L2 tables",
	"QD": "queue depths (QD1, QD64)",
}

// notLabels are label-shaped words that are not labels.
var notLabels = regexp.MustCompile(`^(L1|L2|QD[0-9]+)$`)

type labelDef struct {
	label, prefix string
	n             int
	pkg, pos      string
}

// definitions returns every label definition, in file order (computed
// once per tree).
func definitions(t *tree) []labelDef {
	if t.defsDone {
		return t.defs
	}
	var defs []labelDef
	for _, f := range t.files {
		if f.test {
			continue
		}
		for _, g := range f.ast.Comments {
			for _, c := range g.List {
				m := defLine.FindStringSubmatch(c.Text)
				if m == nil {
					continue
				}
				n, _ := strconv.Atoi(m[2])
				defs = append(defs, labelDef{m[1] + m[2], m[1], n, f.pkg, t.at(c.Pos())})
			}
		}
	}
	t.defs, t.defsDone = defs, true
	return defs
}

// owners maps each prefix to the packages defining labels with it, in
// the order they were first seen, with their definitions.
func owners(defs []labelDef) (map[string][]string, map[string]map[string][]labelDef) {
	order := map[string][]string{}
	by := map[string]map[string][]labelDef{}
	for _, d := range defs {
		if by[d.prefix] == nil {
			by[d.prefix] = map[string][]labelDef{}
		}
		if by[d.prefix][d.pkg] == nil {
			order[d.prefix] = append(order[d.prefix], d.pkg)
		}
		by[d.prefix][d.pkg] = append(by[d.prefix][d.pkg], d)
	}
	return order, by
}

// span renders a package's labels of one prefix, e.g. "Q1-Q12 at qcow2/doc.go:20".
func span(ds []labelDef) string {
	lo, hi := ds[0].n, ds[0].n
	for _, d := range ds {
		lo, hi = min(lo, d.n), max(hi, d.n)
	}
	if lo == hi {
		return fmt.Sprintf("%s%d at %s", ds[0].prefix, lo, ds[0].pos)
	}
	return fmt.Sprintf("%s%d-%s%d at %s", ds[0].prefix, lo, ds[0].prefix, hi, ds[0].pos)
}

// checkLabels: each label prefix is owned by one package, each label is
// defined once, and no label uses a reserved prefix.
func checkLabels(t *tree) []finding {
	var out []finding
	defs := definitions(t)
	seen := map[string]labelDef{} // package + label → first definition
	for _, d := range defs {
		if why, ok := reservedPrefixes[d.prefix]; ok {
			out = append(out, finding{d.pos, "labels", fmt.Sprintf(
				"label %s uses the prefix %s, which reads as %s: give %s another prefix", d.label, d.prefix, why, d.pkg)})
		}
		key := d.pkg + " " + d.label
		if first, ok := seen[key]; ok {
			out = append(out, finding{d.pos, "labels", fmt.Sprintf(
				"label %s is defined twice in %s: here and at %s", d.label, d.pkg, first.pos)})
			continue
		}
		seen[key] = d
	}
	order, by := owners(defs)
	prefixes := make([]string, 0, len(order))
	for p := range order {
		prefixes = append(prefixes, p)
	}
	sort.Strings(prefixes)
	for _, p := range prefixes {
		pkgs := order[p]
		if len(pkgs) < 2 {
			continue
		}
		var places []string
		count := map[string]int{}
		for _, pkg := range pkgs {
			places = append(places, fmt.Sprintf("%s (%s)", pkg, span(by[p][pkg])))
			for _, d := range by[p][pkg] {
				count[d.label]++
			}
		}
		var both []string
		for l, c := range count {
			if c > 1 {
				both = append(both, l)
			}
		}
		sort.Slice(both, func(i, j int) bool {
			return len(both[i]) < len(both[j]) || len(both[i]) == len(both[j]) && both[i] < both[j]
		})
		msg := fmt.Sprintf("prefix %s is defined by %d packages: %s; each package needs its own prefix",
			p, len(pkgs), strings.Join(places, ", "))
		if len(both) > 0 {
			msg += "; labels defined in more than one package: " + strings.Join(both, " ")
		}
		out = append(out, finding{by[p][pkgs[1]][0].pos, "labels", msg})
	}
	return out
}

// checkCitations: every label-shaped word in a comment of any Go file is
// a defined label or a known non-label word.
func checkCitations(t *tree) []finding {
	defs := definitions(t)
	defined := map[string]bool{}
	for _, d := range defs {
		defined[d.label] = true
	}
	order, by := owners(defs)
	var out []finding
	for _, f := range t.files {
		for _, g := range f.ast.Comments {
			for _, c := range g.List {
				for _, m := range labelWord.FindAllStringSubmatch(c.Text, -1) {
					w, p := m[0], m[1]
					if defined[w] || notLabels.MatchString(w) {
						continue
					}
					msg := fmt.Sprintf("%s is not a defined label and prefix %s is owned by no package", w, p)
					if pkgs := order[p]; len(pkgs) > 0 {
						var places []string
						for _, pkg := range pkgs {
							places = append(places, fmt.Sprintf("%s defines %s", pkg, span(by[p][pkg])))
						}
						msg = fmt.Sprintf("%s is not a defined label (%s)", w, strings.Join(places, "; "))
					}
					out = append(out, finding{t.at(c.Pos()), "citations",
						msg + ": cite the label by its current name (or, if the word is not a label, add it to notLabels)"})
				}
			}
		}
	}
	return out
}

// styleDoc holds the table of label prefixes, between these markers, one
// row per prefix: | `Q` | `qcow2` | ... |
const (
	styleDoc    = "docs/style.md"
	tableStart  = "<!-- lint:prefixes -->"
	tableEnd    = "<!-- /lint:prefixes -->"
	prefixesMsg = "the label prefix table in " + styleDoc
)

var tableRow = regexp.MustCompile("^\\|\\s*`([A-Z]{1,3})`\\s*\\|\\s*`([^`]+)`")

// checkPrefixes: the prefix table in docs/style.md lists exactly the
// prefixes the code defines, each with its package.
func checkPrefixes(t *tree) []finding {
	b, err := os.ReadFile(filepath.Join(t.root, styleDoc))
	if err != nil {
		return []finding{{styleDoc, "prefixes", fmt.Sprintf("cannot read %s: %v", prefixesMsg, err)}}
	}
	var out []finding
	table := map[string]string{}
	rowAt := map[string]string{}
	in, found := false, false
	for i, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.TrimSpace(line) == tableStart:
			in, found = true, true
		case strings.TrimSpace(line) == tableEnd:
			in = false
		case in:
			m := tableRow.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			pos := fmt.Sprintf("%s:%d", styleDoc, i+1)
			if _, dup := table[m[1]]; dup {
				out = append(out, finding{pos, "prefixes", fmt.Sprintf("prefix %s is listed twice", m[1])})
			}
			table[m[1]], rowAt[m[1]] = m[2], pos
		}
	}
	if !found {
		return append(out, finding{styleDoc, "prefixes", fmt.Sprintf("no %s ... %s table", tableStart, tableEnd)})
	}
	order, by := owners(definitions(t))
	var prefixes []string
	for p := range order {
		prefixes = append(prefixes, p)
	}
	sort.Strings(prefixes)
	for _, p := range prefixes {
		pkg := order[p][0]
		switch listed, ok := table[p]; {
		case !ok:
			out = append(out, finding{by[p][pkg][0].pos, "prefixes", fmt.Sprintf(
				"prefix %s (%s) is not in %s", p, pkg, prefixesMsg)})
		case !slices.Contains(order[p], listed):
			out = append(out, finding{rowAt[p], "prefixes", fmt.Sprintf(
				"%s gives prefix %s to %s, but %s defines it (%s)", styleDoc, p, listed, pkg, span(by[p][pkg]))})
		}
	}
	for p, pkg := range table {
		if _, ok := order[p]; !ok {
			out = append(out, finding{rowAt[p], "prefixes", fmt.Sprintf(
				"%s lists prefix %s for %s, but no package defines a label with it", styleDoc, p, pkg)})
		}
	}
	return out
}

// outside are documents the code once cited that are not in the
// repository; a citation must be a repository path that exists.
var outside = regexp.MustCompile(`[\w./-]*\b(style|house|qemu-qcow2|dependencies|baseline)\.md\b`)

// outsideWords are other ways of citing notes outside the repository;
// hint is what to do, and quick a lower-case substring every match holds
// (regexps are slow under -race, and most lines hold none of these).
var outsideWords = []struct {
	quick string
	re    *regexp.Regexp
	hint  string
}{
	{"house", regexp.MustCompile(`(?i)\bhouse[ -]style\b`), "the house rules are in docs/style.md"},
	{"style rule", regexp.MustCompile(`(?i)\bstyle rule\b`), "cite docs/style.md by the rule's heading"},
	{"shared", regexp.MustCompile(`\.\./shared\b|/work/shared\b`), "a directory outside the repository"},
	{"§", regexp.MustCompile(`§\s*[0-9]+\s+trap`), "a section of notes outside the repository: cite docs/qcow2-format.md, trap N"},
}

// citesOutside returns what is wrong with a line of text in directory
// dir (relative to root), or "".
func citesOutside(root, dir, line string) string {
	lower := strings.ToLower(line)
	if strings.Contains(lower, ".md") {
		for _, m := range outside.FindAllString(line, -1) {
			p := strings.TrimRight(m, ".")
			if inRepo(root, p) || inRepo(root, filepath.Join(dir, p)) {
				continue
			}
			hint := "docs/ holds the repository's documents"
			if d := "docs/" + filepath.Base(p); inRepo(root, d) {
				hint = "did you mean " + d + "?"
			}
			return fmt.Sprintf("cites %s, which is not a file in the repository (%s)", p, hint)
		}
	}
	for _, w := range outsideWords {
		if !strings.Contains(lower, w.quick) {
			continue
		}
		if m := w.re.FindString(line); m != "" {
			return fmt.Sprintf("cites %q: %s", m, w.hint)
		}
	}
	return ""
}

// inRepo reports whether the relative path p names a file inside root.
func inRepo(root, p string) bool {
	if filepath.IsAbs(p) {
		return false
	}
	p = filepath.Clean(p)
	if p == ".." || strings.HasPrefix(p, "../") {
		return false
	}
	_, err := os.Stat(filepath.Join(root, p))
	return err == nil
}

// checkDocs: comments of Go files and Markdown files cite no document
// outside the repository.
func checkDocs(t *tree) []finding {
	var out []finding
	for _, f := range t.files {
		for _, g := range f.ast.Comments {
			for _, c := range g.List {
				if msg := citesOutside(t.root, f.pkg, c.Text); msg != "" {
					out = append(out, finding{t.at(c.Pos()), "docs", msg})
				}
			}
		}
	}
	for _, d := range t.docs {
		b, err := os.ReadFile(filepath.Join(t.root, d))
		if err != nil {
			out = append(out, finding{d, "docs", err.Error()})
			continue
		}
		for i, line := range strings.Split(string(b), "\n") {
			if msg := citesOutside(t.root, filepath.Dir(d), line); msg != "" {
				out = append(out, finding{fmt.Sprintf("%s:%d", d, i+1), "docs", msg})
			}
		}
	}
	return out
}
