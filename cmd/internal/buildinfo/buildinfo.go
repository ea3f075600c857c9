// Package buildinfo tells the binaries' --version: the module version and
// the VCS commit the Go toolchain stamped into the binary
// (runtime/debug.ReadBuildInfo).
package buildinfo

import (
	"fmt"
	"runtime/debug"
)

// Version returns "PROG version V (commit C[, modified], DATE) GOVERSION":
// V is the main module's version ("(devel)" for a build in the source
// tree), C the vcs.revision setting, when the build recorded one.
func Version(prog string) string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return prog + " version unknown (no build information)"
	}
	return format(prog, bi)
}

func format(prog string, bi *debug.BuildInfo) string {
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, when string
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	out := fmt.Sprintf("%s version %s", prog, v)
	if rev != "" {
		out += " (commit " + rev
		if modified {
			out += ", modified"
		}
		if when != "" {
			out += ", " + when
		}
		out += ")"
	}
	return out + " " + bi.GoVersion
}
