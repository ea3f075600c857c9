package nbd

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// TestListExports_Bounds: a server's listing is refused, not kept, when
// a name, description or context name is longer than the spec's 4096
// bytes (as qemu-nbd -L refuses it), or when all it sends adds up past
// maxListBytes (200 exports with 1 MiB descriptions took 1.2 GB).
func TestListExports_Bounds(t *testing.T) {
	canned := func(exports []string, descLen, ctxLen, nctx int) []byte {
		c := newCanned()
		rep := c.rep
		rep(optStructuredReply, repAck, nil)
		for _, e := range exports {
			d := binary.BigEndian.AppendUint32(nil, uint32(len(e)))
			d = append(append(d, e...), strings.Repeat("d", descLen)...)
			rep(optList, repServer, d)
		}
		rep(optList, repAck, nil)
		for range exports {
			rep(optInfo, repAck, nil)
			for k := range nctx {
				c := binary.BigEndian.AppendUint32(nil, uint32(k))
				rep(optListMetaContext, repMetaContext, append(c, strings.Repeat("c", ctxLen)...))
			}
			rep(optListMetaContext, repAck, nil)
		}
		return c.b.Bytes()
	}
	for _, c := range []struct {
		what string
		data []byte
		want string
	}{
		{"fits", canned([]string{"a", "b"}, maxString, maxString, 3), ""},
		{"long description", canned([]string{"a"}, maxString+1, 10, 1), "incorrect name or description length"},
		{"long name", canned([]string{strings.Repeat("n", maxString+1)}, 0, 10, 1), "incorrect name or description length"},
		{"long context", canned([]string{"a"}, 0, maxString+1, 1), "longer than 4096"},
		{"too much", canned([]string{"a", "b"}, 0, maxString, maxListed), "larger than 32 MiB"},
	} {
		es, err := ListExports(fuzzServer{bytes.NewReader(c.data)})
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.what, err)
		case c.want == "" && (len(es) != 2 || len(es[1].Contexts) != 3):
			t.Errorf("%s: %+v", c.what, es)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want an error with %q", c.what, err, c.want)
		}
	}
}
