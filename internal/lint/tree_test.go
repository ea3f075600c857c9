package lint

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// tree is a parsed source tree: every Go file under root (testdata,
// hidden and underscore directories skipped, as the go tool does) and
// the paths of its Markdown files.
type tree struct {
	root   string
	module string // module path from go.mod
	fset   *token.FileSet
	files  []*goFile
	docs   []string // Markdown files, relative to root

	defs     []labelDef // label definitions, once computed
	defsDone bool
}

// goFile is one parsed Go file.
type goFile struct {
	rel  string // path relative to root, slash-separated
	pkg  string // package directory relative to root ("." for the root)
	test bool   // a _test.go file
	ast  *ast.File
}

// finding is one broken rule at one place.
type finding struct {
	pos  string // file:line, relative to the tree's root
	rule string
	msg  string
}

func (f finding) String() string { return fmt.Sprintf("%s: [%s] %s", f.pos, f.rule, f.msg) }

var moduleLine = regexp.MustCompile(`(?m)^module\s+(\S+)\s*$`)

// loadTree parses the tree rooted at root, which holds go.mod.
func loadTree(root string) (*tree, error) {
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return nil, err
	}
	m := moduleLine.FindSubmatch(mod)
	if m == nil {
		return nil, fmt.Errorf("%s/go.mod: no module line", root)
	}
	t := &tree{root: root, module: string(m[1]), fset: token.NewFileSet()}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (name == "testdata" || name == "vendor" ||
				strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		switch {
		case strings.HasSuffix(name, ".md"):
			t.docs = append(t.docs, rel)
		case strings.HasSuffix(name, ".go"):
			f, err := parser.ParseFile(t.fset, path, nil, parser.ParseComments|parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			t.files = append(t.files, &goFile{
				rel:  rel,
				pkg:  filepath.ToSlash(filepath.Dir(rel)),
				test: strings.HasSuffix(name, "_test.go"),
				ast:  f,
			})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

// findRoot returns the nearest directory at or above dir holding go.mod.
func findRoot(dir string) (string, error) {
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		up := filepath.Dir(dir)
		if up == dir {
			return "", fmt.Errorf("no go.mod above the test's directory")
		}
		dir = up
	}
}

// at renders a position as file:line relative to the root.
func (t *tree) at(p token.Pos) string {
	pos := t.fset.Position(p)
	rel, err := filepath.Rel(t.root, pos.Filename)
	if err != nil {
		rel = pos.Filename
	}
	return fmt.Sprintf("%s:%d", filepath.ToSlash(rel), pos.Line)
}

// internal returns the module-relative package an import path names, or
// false if it is outside the module.
func (t *tree) internal(path string) (string, bool) {
	if path == t.module {
		return ".", true
	}
	if rest, ok := strings.CutPrefix(path, t.module+"/"); ok {
		return rest, true
	}
	return "", false
}

// imports calls fn for every import of every file.
func (t *tree) imports(fn func(f *goFile, path string, spec *ast.ImportSpec)) {
	for _, f := range t.files {
		for _, s := range f.ast.Imports {
			fn(f, strings.Trim(s.Path.Value, "`\""), s)
		}
	}
}

// sortFindings orders findings by position, for stable output.
func sortFindings(fs []finding) {
	sort.SliceStable(fs, func(i, j int) bool { return fs[i].pos < fs[j].pos })
}
