package buildinfo

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestFormat(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v1.2.3"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.time", Value: "2026-11-29T00:00:00Z"},
			{Key: "vcs.modified", Value: "true"}}}
	if got, want := format("qimg", bi), "qimg version v1.2.3 (commit abc123, modified, 2026-11-29T00:00:00Z) go1.26.0"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, want := format("qbench", &debug.BuildInfo{GoVersion: "go1.26.0"}), "qbench version (devel) go1.26.0"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if v := Version("x"); !strings.HasPrefix(v, "x version ") {
		t.Errorf("Version: %q", v)
	}
}
