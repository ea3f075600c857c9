package nbd

import (
	"encoding/binary"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/qring/qring/block"
)

// errorOffsetScript is serverScript's handshake, then an
// NBD_REPLY_TYPE_ERROR_OFFSET chunk (EIO, a message, offset off) ending
// the reply to the client's first request, a 4 KiB READ at 0.
func errorOffsetScript(off uint64) [][]byte {
	parts := serverScript(false)[:5]
	var b []byte
	b = binary.BigEndian.AppendUint32(b, magicStruct)
	b = binary.BigEndian.AppendUint16(b, replyFlagDone)
	b = binary.BigEndian.AppendUint16(b, replyErrorOffset)
	b = binary.BigEndian.AppendUint64(b, 1)
	msg := "bad sector"
	b = binary.BigEndian.AppendUint32(b, uint32(6+len(msg)+8))
	b = binary.BigEndian.AppendUint32(b, 5) // EIO
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	b = append(b, msg...)
	b = binary.BigEndian.AppendUint64(b, off)
	return append(parts, b)
}

// TestClient_ErrorOffsetChecked: an error chunk's offset must lie inside
// its request (the protocol's "MUST"); one outside is a protocol error,
// not the server's errno passed on as if it named a byte of the read.
func TestClient_ErrorOffsetChecked(t *testing.T) {
	for _, tc := range []struct {
		off    uint64
		inside bool
	}{
		{0, true}, {4095, true}, {4096, false}, {1 << 40, false}, {^uint64(0), false},
	} {
		c, err := hostileServer(t, errorOffsetScript(tc.off)...)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- block.ReadAt(c, make([]byte, 4096), 0) }()
		select {
		case err = <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("offset %d: read hangs", tc.off)
		}
		var pe *ProtocolError
		var re *RemoteError
		switch {
		case tc.inside && (!errors.As(err, &re) || re.Errno != syscall.EIO || re.Msg != "bad sector"):
			t.Errorf("offset %d inside the request: %v, want the server's EIO and message", tc.off, err)
		case !tc.inside && !errors.As(err, &pe):
			t.Errorf("offset %d outside the request: %v, want a ProtocolError", tc.off, err)
		}
		c.Close()
	}
}
