// Package lint holds the repository's lint, run as an ordinary test
// (after pebble's internal/lint): `go test ./internal/lint` and therefore
// `go test ./...` and `make test` fail when a rule is broken.
//
// The test walks the source tree itself (no `go list`, no build), parses
// each Go file with go/parser and checks:
//
//   - deps: the module-internal imports of every package's non-test files
//     follow the dependency table in deps_test.go (cmd → qcow2 →
//     {sched, cache, block}; uring → block; the engine never imports
//     uring, the binary picks the backend);
//   - kernel: only the uring tree imports golang.org/x/sys/unix and the
//     iceber io_uring ABI package, the one door to the kernel (as
//     cilium/ebpf's internal/unix);
//   - iceber: the root package github.com/iceber/iouring-go is never
//     imported, only its /syscall ABI subpackage;
//   - atomics: no sync/atomic function calls (LoadUint64, AddInt64,
//     CompareAndSwap...), only the typed atomics;
//   - labels: every invariant label defined in a doc comment list item
//     has a prefix that one package owns, is defined once, and does not
//     use a prefix reserved for other words (the L1/L2 tables);
//   - citations: every label-shaped word in a comment is a defined label
//     or a known non-label word, so a renamed label leaves no stale
//     citation behind;
//   - prefixes: the prefix table in docs/style.md lists exactly the
//     prefixes the code defines;
//   - docs: comments and Markdown files cite no document that is not in
//     the repository.
//
// Each failure names the file and line and the rule. selftest_test.go
// runs every rule on small synthetic trees that break it, so a rule that
// stops reporting fails too.
//
// The package has no non-test code but this comment.
package lint
