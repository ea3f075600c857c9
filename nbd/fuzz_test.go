package nbd

import (
	"encoding/binary"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qring/qring/block/memdev"
)

// fuzzServe feeds stream to a fresh server connection as the client's
// bytes (after the client flags when prefix is set) and drains what the
// server says. The server must end the connection without a panic (a
// recovered one is logged as "internal error" and fails the run) and
// without hanging.
func fuzzServe(t *testing.T, prefix, stream []byte) {
	var mu sync.Mutex
	var bad []string
	logf := func(f string, a ...any) {
		if strings.Contains(f, "internal error") {
			mu.Lock()
			bad = append(bad, f)
			mu.Unlock()
		}
	}
	dev := memdev.FromBytes(make([]byte, 1<<16), memdev.Options{})
	s := &Server{Exports: []*Export{
		{Name: "", Dev: dev, Unmap: true, Status: fakeStatus{period: 8192, data: 4096}, AllocationDepth: true},
		{Name: "ro", Dev: dev, ReadOnly: true},
	}, Logf: logf, MaxInFlight: 4}
	a, b := net.Pipe()
	done := make(chan struct{})
	go func() {
		s.ServeConn(b)
		close(done)
	}()
	go io.Copy(io.Discard, a)
	a.SetDeadline(time.Now().Add(5 * time.Second))
	a.Write(prefix)
	a.Write(stream)
	a.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("server connection did not end")
	}
	if len(bad) > 0 {
		t.Fatalf("server panicked: %v", bad)
	}
}

func opt(o uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, magicOpts)
	b = binary.BigEndian.AppendUint32(b, o)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func req(typ, flags uint16, off uint64, n uint32, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, magicRequest)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, 1)
	b = binary.BigEndian.AppendUint64(b, off)
	b = binary.BigEndian.AppendUint32(b, n)
	return append(b, payload...)
}

func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

// FuzzNegotiation: the client's whole stream, from its flags on.
func FuzzNegotiation(f *testing.F) {
	flags := []byte{0, 0, 0, 3}
	f.Add(cat(flags, opt(optList, nil), opt(optGo, infoData("", 1, 2, 3)), req(cmdRead, 0, 0, 512, nil)))
	f.Add(cat(flags, opt(optStructuredReply, nil), opt(optSetMetaContext, metaData("", "base:allocation", "qemu:allocation-depth")),
		opt(optListMetaContext, metaData("")), opt(optInfo, infoData("ro")), opt(optGo, infoData("")),
		req(cmdBlockStatus, 0, 0, 1<<16, nil)))
	f.Add(cat(flags, opt(optExportName, []byte("ro")), req(cmdWrite, 0, 0, 1, []byte{1})))
	f.Add(cat(flags, opt(optStartTLS, nil), opt(99, []byte{1, 2}), opt(optAbort, nil)))
	f.Add(cat([]byte{0, 0, 0, 1}, opt(optGo, []byte{0, 0, 0, 9}), opt(optSetMetaContext, []byte{0, 0, 0, 0, 255, 255, 255, 255})))
	f.Fuzz(func(t *testing.T, stream []byte) {
		fuzzServe(t, nil, stream)
	})
}

// FuzzRequests: a negotiated connection (structured replies, both
// contexts), then the fuzzer's requests.
func FuzzRequests(f *testing.F) {
	prefix := cat([]byte{0, 0, 0, 3}, opt(optStructuredReply, nil),
		opt(optSetMetaContext, metaData("", "base:allocation", "qemu:allocation-depth")), opt(optGo, infoData("")))
	f.Add(cat(req(cmdWrite, cmdFlagFUA, 100, 3, []byte{1, 2, 3}), req(cmdRead, 0, 0, 8192, nil), req(cmdFlush, 0, 0, 0, nil)))
	f.Add(cat(req(cmdWriteZeroes, cmdFlagFastZero|cmdFlagNoHole, 0, 4096, nil), req(cmdTrim, 0, 4096, 4096, nil),
		req(cmdBlockStatus, cmdFlagReqOne, 10, 30000, nil), req(cmdCache, 0, 0, 1, nil), req(cmdDisc, 0, 0, 0, nil)))
	f.Add(cat(req(cmdRead, cmdFlagDF, 1<<16-1, 2, nil), req(77, 0xffff, 1<<63, 1<<31, nil)))
	f.Add(req(cmdWrite, 0, 0, 1<<30, []byte{1, 2}))
	f.Fuzz(func(t *testing.T, stream []byte) {
		fuzzServe(t, prefix, stream)
	})
}
