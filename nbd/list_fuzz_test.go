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

// FuzzListExports: a hostile server's replies to a listing end in an
// error or a bounded list, never a panic or a hang.
func FuzzListExports(f *testing.F) {
	var b bytes.Buffer
	be := func(v any) { binary.Write(&b, binary.BigEndian, v) }
	be(uint64(magicInit))
	be(uint64(magicOpts))
	be(uint16(flagFixedNewstyle | flagNoZeroes))
	rep := func(opt, typ uint32, data []byte) {
		be(uint64(magicRep))
		be(opt)
		be(typ)
		be(uint32(len(data)))
		b.Write(data)
	}
	rep(optStructuredReply, repAck, nil)
	rep(optList, repServer, append([]byte{0, 0, 0, 4}, "disk"...))
	rep(optList, repAck, nil)
	rep(optInfo, repInfo, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 1})
	rep(optInfo, repAck, nil)
	rep(optListMetaContext, repMetaContext, append([]byte{0, 0, 0, 0}, "base:allocation"...))
	rep(optListMetaContext, repAck, nil)
	f.Add(b.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		es, err := ListExports(fuzzServer{bytes.NewReader(data)})
		if err == nil && len(es) > maxListed {
			t.Fatalf("%d exports", len(es))
		}
	})
}
