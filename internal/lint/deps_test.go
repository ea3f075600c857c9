package lint

import "strings"

// depRow says which module-internal packages the non-test files of the
// packages matching pkg may import. Patterns are module-relative; "x/..."
// matches x and every package under it; "*" in allow means any package.
// A package matches its exact row first, else the longest "/..." row.
type depRow struct {
	pkg   string
	allow []string
}

// deps is the dependency direction of the repository: cmd → qcow2 →
// {sched, cache, block}; uring → block. The engine (qcow2, sched, cache,
// block) never imports uring: the binary picks the backend through
// qcow2.Options.Opener. Test files are not restricted (engine tests run
// on the real ring).
var deps = []depRow{
	// The pure format layer: codecs over byte slices, nothing else.
	{"qcow2/format", nil},
	{"qcow2", []string{"qcow2/format", "cache", "sched", "block", "crypto/luks", "internal/protocol", "internal/deflate4k"}},
	// Room for the engine's own subpackages, under the same arrows.
	{"qcow2/...", []string{"qcow2/...", "cache", "sched", "block", "crypto/luks", "internal/protocol"}},
	{"sched", []string{"block"}},
	{"cache", []string{"block"}},
	// VHD images (QEMU's vpc format): pure codecs, and a read-only
	// device over them.
	{"vhd/format", nil},
	{"vhd", []string{"vhd/format", "block"}},
	// VMDK images: pure codecs, and a read-only device over them.
	{"vmdk/format", nil},
	{"vmdk", []string{"vmdk/format", "block"}},
	// The device seam and the devices and filters over it.
	{"block", nil},
	{"block/...", []string{"block/..."}},
	// The ring: a block.Device, and nothing above it.
	{"uring/...", []string{"uring/...", "block"}},
	// LUKS1 headers and sector encryption: the standard library,
	// golang.org/x/crypto and the Serpent cipher only.
	{"crypto/luks", []string{"crypto/serpent"}},
	// The Serpent block cipher: the standard library.
	{"crypto/serpent", nil},
	// QEMU's luks format: the LUKS header and cipher over a block.Device.
	{"crypto/luksdisk", []string{"crypto/luks", "block"}},
	// QEMU's --object secret and key-secret options: the standard library.
	{"internal/secret", nil},
	{"internal/invariants", nil},
	// Splits QEMU option strings ("a=1,,b"): the standard library.
	{"internal/optstr", nil},
	// Reads numbers as QEMU's cutils (C's strtoull): the standard library.
	{"internal/cnum", nil},
	// The raw deflate encoder of qcow2's compressed clusters (zlib's
	// level 6 matching in a 4 KiB window): the standard library.
	{"internal/deflate4k", nil},
	// Reads "PROTOCOL:name" file names as QEMU does: the standard library.
	{"internal/protocol", nil},
	{"internal/testkit", nil}, // tests of every package import it: it imports nothing of ours
	// Checks the images tests leave with our Check and qemu-img: for the
	// tests of packages outside qcow2 (qcow2's own cannot import it).
	{"internal/testkit/imgcheck", []string{"internal/testkit", "qcow2", "block/memdev"}},
	{"internal/lint", nil},
	// The NBD server serves any block device; its qcow2 adapter (block
	// status from the engine's map) is a subpackage.
	{"nbd", []string{"block"}},
	{"nbd/nbdqcow2", []string{"nbd", "qcow2/...", "block"}},
	// Library code of the binaries: opens images over any backend.
	{"internal/imgopen", []string{"qcow2/...", "uring/...", "block/...", "internal/secret", "vhd/...", "vmdk/...", "crypto/luksdisk", "nbd", "internal/protocol"}},
	{"internal/bench", []string{"internal/imgopen", "internal/protocol", "qcow2/...", "uring/...", "block/..."}},
	// The binaries and the performance tools sit on top of everything.
	{"cmd/...", []string{"*"}},
	{"perf/...", []string{"*"}},
}

// anywhere lists packages every package may import: they import only the
// standard library.
var anywhere = []string{"internal/invariants", "internal/optstr", "internal/cnum"}

// match reports whether the module-relative package p matches pattern.
func match(pattern, p string) bool {
	if pattern == "*" || pattern == p {
		return true
	}
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return p == base || strings.HasPrefix(p, base+"/")
	}
	return false
}

// rowFor returns the row for package p, or nil if no row matches.
func rowFor(rows []depRow, p string) *depRow {
	var best *depRow
	for i := range rows {
		r := &rows[i]
		if r.pkg == p {
			return r
		}
		if strings.HasSuffix(r.pkg, "/...") && match(r.pkg, p) &&
			(best == nil || len(r.pkg) > len(best.pkg)) {
			best = r
		}
	}
	return best
}

// allowed reports whether a non-test file of from may import to.
func (r *depRow) allowed(to string) bool {
	for _, a := range r.allow {
		if match(a, to) {
			return true
		}
	}
	for _, a := range anywhere {
		if match(a, to) {
			return true
		}
	}
	return false
}
