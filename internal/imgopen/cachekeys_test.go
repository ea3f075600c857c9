package imgopen

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestImageOpts_FileIOKeys: QEMU's file.aio, file.cache.direct and
// file.cache.no-flush (and cache.* on the format node) are taken as the
// cache mode and AIO they stand for (they were refused: "Block protocol
// 'file' doesn't support the option 'aio'"), over -t's mode; bad values
// and unknown cache keys are errors of the open, in QEMU's words.
func TestImageOpts_FileIOKeys(t *testing.T) {
	const f = "driver=qcow2,file.driver=file,file.filename=x.qcow2"
	for _, c := range []struct{ spec, def, cache, aio string }{
		{f + ",file.aio=threads,file.cache.direct=on", "", "none", "threads"},
		{f + ",file.aio=io_uring", "", "", "io_uring"},
		{f + ",file.cache.no-flush=on", "", "unsafe", ""},
		{f + ",file.cache.direct=on,file.cache.no-flush=on", "", cacheDirectNoFlush, ""},
		{f + ",cache.direct=on", "", "none", ""},
		{f + ",cache.direct=on,file.cache.direct=off", "", "writeback", ""},
		{f + ",file.cache.direct=off", "none", "writeback", ""},
		{f + ",file.cache.direct=on", "writethrough", "directsync", ""},
		{f + ",file.cache.no-flush=off", "unsafe", "writeback", ""},
		{f, "none", "none", ""},
	} {
		s, err := ImageOpts(c.spec, Spec{Cache: c.def})
		if err != nil || s.Cache != c.cache || s.AIO != c.aio || s.Path != "x.qcow2" {
			t.Errorf("%s over -t %q: cache %q aio %q path %q, %v; want cache %q aio %q", c.spec, c.def, s.Cache, s.AIO, s.Path, err, c.cache, c.aio)
		}
	}
	for _, c := range []struct{ spec, want string }{
		{f + ",file.cache.direct=maybe", "Parameter 'cache.direct' expects 'on' or 'off'"},
		{f + ",file.aio=foo", "invalid parameter value: foo"},
		{f + ",file.cache.foo=on", "Block protocol 'file' doesn't support the option 'cache.foo'"},
		{f + ",cache.x=on", "Block format 'qcow2' does not support the option 'cache.x'"},
		{f + ",aio=threads", "Block format 'qcow2' does not support the option 'aio'"},
	} {
		_, err := ImageOpts(c.spec, Spec{})
		var oe *OptionError
		var ve *ValueError
		if err == nil || err.Error() != c.want || !errors.As(err, &oe) && !errors.As(err, &ve) {
			t.Errorf("%s: %v; want %q as an *OptionError or *ValueError", c.spec, err, c.want)
		}
	}
	if o, err := FileOptions(cacheDirectNoFlush, "", false); err != nil || !o.Direct || !o.NoFlush {
		t.Errorf("FileOptions(%s): %+v, %v", cacheDirectNoFlush, o, err)
	}
}

// TestOpenSpec_CacheInherited: a qcow2 node's cache.direct reaches its
// file child, unless the child sets its own (QEMU passes the cache
// options down; the file node opened without O_DIRECT).
func TestOpenSpec_CacheInherited(t *testing.T) {
	p := mkQcow2(t, t.TempDir(), "a.qcow2", 1<<20)
	for _, c := range []struct {
		spec   string
		direct bool
	}{
		{`json:{"driver":"qcow2","cache":{"direct":true},"file":{"driver":"file","filename":"` + p + `","aio":"threads"}}`, true},
		{`json:{"driver":"qcow2","cache":{"direct":true},"file":{"driver":"file","filename":"` + p + `","aio":"threads","cache":{"direct":false}}}`, false},
		{`json:{"driver":"qcow2","file":{"driver":"file","filename":"` + p + `","aio":"threads"}}`, false},
	} {
		o, err := OpenSpec(c.spec, Spec{ReadOnly: true})
		if errors.Is(err, syscall.EINVAL) && c.direct {
			t.Skipf("no O_DIRECT on this file system: %v", err)
		}
		if err != nil {
			t.Fatalf("%s: %v", c.spec, err)
		}
		direct, found := openedDirect(t, p)
		o.Close()
		if !found || direct != c.direct {
			t.Errorf("%s: file open with O_DIRECT %v (found %v), want %v", c.spec, direct, found, c.direct)
		}
	}
}

// openedDirect says whether this process has path open, and with O_DIRECT.
func openedDirect(t *testing.T, path string) (direct, found bool) {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	for _, fd := range fds {
		if l, err := os.Readlink("/proc/self/fd/" + fd.Name()); err != nil || l != path {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + fd.Name())
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				f, err := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
				if err == nil {
					return f&syscall.O_DIRECT != 0, true
				}
			}
		}
	}
	return false, false
}
