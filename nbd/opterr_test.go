package nbd

import (
	"strings"
	"testing"

	"github.com/qring/qring/block/memdev"
)

// TestOptErrorMessageBounded: an error reply that names the client's
// export name stays within the spec's 4096 bytes for a string, the name
// cut at 80 bytes as qemu-nbd cuts it (a name of 4096 0xff bytes,
// escaped, made a 16 KiB message that libnbd refused to read).
func TestOptErrorMessageBounded(t *testing.T) {
	s := newTestServer(t, &Export{Name: "disk", Dev: newMem(memdev.Options{})})
	name := strings.Repeat("\xff", maxString)
	for _, c := range []struct {
		what string
		opt  uint32
		data []byte
	}{
		{"info", optInfo, infoData(name)},
		{"go", optGo, infoData(name)},
		{"list meta", optListMetaContext, metaData(name, "base:allocation")},
		{"set meta", optSetMetaContext, metaData(name, "base:allocation")},
	} {
		cl := dial(t, s)
		cl.greet()
		cl.opt(optStructuredReply, nil)
		rs := cl.opt(c.opt, c.data)
		if len(rs) != 1 || rs[0].typ != repErrUnknown {
			t.Fatalf("%s: %s", c.what, replies(rs))
		}
		if msg := string(rs[0].data); len(msg) > 400 || !strings.Contains(msg, "...") {
			t.Errorf("%s: error message of %d bytes: %.100q", c.what, len(msg), msg)
		}
	}
}

// TestCacheBounded: NBD_CMD_CACHE over more than MaxPayload is EINVAL,
// as qemu-nbd 7.2 answers it (it succeeded here).
func TestCacheBounded(t *testing.T) {
	s := newTestServer(t, &Export{Dev: memdev.FromBytes(make([]byte, 2*MaxPayload), memdev.Options{})})
	c := dial(t, s)
	c.connect("", false)
	if code, _, _ := c.do(cmdCache, 0, 0, MaxPayload, nil); code != 0 {
		t.Errorf("CACHE of %d bytes: error %d", MaxPayload, code)
	}
	if code, _, _ := c.do(cmdCache, 0, 0, MaxPayload+1, nil); code != errInval {
		t.Errorf("CACHE of %d bytes: error %d, want EINVAL", MaxPayload+1, code)
	}
}
