// Package testkit holds the helpers every package's tests share (after
// cilium/ebpf's internal/testutils and bbolt's internal/btesting), so a
// rule about tests lives in one place:
//
//   - Seed and Rand: the seed of a randomised test comes from the -seed
//     flag (registered here, once), else QRING_SEED, else the clock; a
//     malformed QRING_SEED fails the test; the seed is logged with the
//     command that reruns the test with it.
//   - The QEMU oracle: HaveQemu, NeedQemu (skip without qemu-img and
//     qemu-io), Run and MustRun for the tools, QemuImgCheck and its two
//     verdicts, QemuCheck (clean: no corruption, no leak, not a word on
//     stderr) and QemuCheckNoCorruption (leaks allowed). Without qemu-img
//     the checks do nothing: CI installs qemu-utils, a developer's machine
//     may not have it.
//   - Dir and KeepDir: a directory for a test's images that is removed
//     when the test passes and kept, and named in the log, when it fails;
//     KeepFile keeps one file of a failing test.
//   - MustEqual (got, want), FirstDiff and ReadAll for comparing a
//     device's contents.
//   - Parallel: n workers on their own goroutines, the first error
//     returned, for concurrent workloads; Within: whether a function
//     returned in time, for hang checks.
//   - CheckSub: every numeric field of a metrics type's Sub is checked, so
//     a field added to the type and forgotten in Sub fails a test.
//
// The package imports only the standard library, so any package's tests,
// internal or external, may use it.
package testkit
