package nbd

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"
)

// fuzzServer is a server's side of a listing: bytes from the fuzzer,
// whatever the client writes is dropped.
type fuzzServer struct{ r io.Reader }

func (s fuzzServer) Read(b []byte) (int, error)  { return s.r.Read(b) }
func (s fuzzServer) Write(b []byte) (int, error) { return len(b), nil }

// canned is a server's side of a listing written ahead: the greeting,
// then the replies rep adds.
type canned struct{ b bytes.Buffer }

func newCanned() *canned {
	c := &canned{}
	c.be(uint64(magicInit))
	c.be(uint64(magicOpts))
	c.be(uint16(flagFixedNewstyle | flagNoZeroes))
	return c
}

func (c *canned) be(v any) { binary.Write(&c.b, binary.BigEndian, v) }

// rep adds one option reply.
func (c *canned) rep(opt, typ uint32, data []byte) {
	c.be(uint64(magicRep))
	c.be(opt)
	c.be(typ)
	c.be(uint32(len(data)))
	c.b.Write(data)
}

// FuzzListExports: a hostile server's replies to a listing end in an
// error or a bounded list, never a panic or a hang.
func FuzzListExports(f *testing.F) {
	c := newCanned()
	rep := c.rep
	rep(optStructuredReply, repAck, nil)
	rep(optList, repServer, append([]byte{0, 0, 0, 4}, "disk"...))
	rep(optList, repAck, nil)
	rep(optInfo, repInfo, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 1})
	rep(optInfo, repAck, nil)
	rep(optListMetaContext, repMetaContext, append([]byte{0, 0, 0, 0}, "base:allocation"...))
	rep(optListMetaContext, repAck, nil)
	f.Add(c.b.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		es, err := ListExports(fuzzServer{bytes.NewReader(data)})
		if err == nil && len(es) > maxListed {
			t.Fatalf("%d exports", len(es))
		}
	})
}
