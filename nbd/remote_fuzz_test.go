package nbd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/qring/qring/block"
)

// serverScript is what a well-behaved server sends a Client that asks
// for structured replies and base:allocation and then reads 4 KiB at 0
// (cookie 1) and asks for block status there (cookie 2); with short, the
// READ's reply ends (DONE) after its first half.
func serverScript(short bool) [][]byte {
	var parts [][]byte
	var b []byte
	cut := func() { parts = append(parts, b); b = nil }
	u16 := func(v uint16) { b = binary.BigEndian.AppendUint16(b, v) }
	u32 := func(v uint32) { b = binary.BigEndian.AppendUint32(b, v) }
	u64 := func(v uint64) { b = binary.BigEndian.AppendUint64(b, v) }
	rep := func(opt, typ uint32, data []byte) {
		u64(magicRep)
		u32(opt)
		u32(typ)
		u32(uint32(len(data)))
		b = append(b, data...)
	}
	u64(magicInit)
	u64(magicOpts)
	u16(flagFixedNewstyle | flagNoZeroes)
	cut()
	cut() // the client's flags
	rep(optStructuredReply, repAck, nil)
	cut()
	rep(optSetMetaContext, repMetaContext, append([]byte{0, 0, 0, 1}, "base:allocation"...))
	rep(optSetMetaContext, repAck, nil)
	cut()
	info := []byte{0, infoExport}
	info = binary.BigEndian.AppendUint64(info, 1<<20)
	info = binary.BigEndian.AppendUint16(info, FlagHasFlags|FlagSendFlush|FlagSendWriteZeroes)
	rep(optGo, repInfo, info)
	rep(optGo, repAck, nil)
	cut()
	chunk := func(flags, typ uint16, cookie uint64, data []byte) {
		u32(magicStruct)
		u16(flags)
		u16(typ)
		u64(cookie)
		u32(uint32(len(data)))
		b = append(b, data...)
	}
	d := binary.BigEndian.AppendUint64(nil, 0)
	if short {
		chunk(replyFlagDone, replyOffsetData, 1, append(d, make([]byte, 2048)...))
		cut()
		return parts
	}
	chunk(0, replyOffsetData, 1, append(d, make([]byte, 2048)...))
	h := binary.BigEndian.AppendUint64(nil, 2048)
	chunk(replyFlagDone, replyOffsetHole, 1, binary.BigEndian.AppendUint32(h, 2048))
	cut()
	s := binary.BigEndian.AppendUint32(nil, 1)
	s = binary.BigEndian.AppendUint32(s, 4096)
	s = binary.BigEndian.AppendUint32(s, StateHole|StateZero)
	chunk(replyFlagDone, replyBlockStatus, 2, s)
	cut()
	return parts
}

// FuzzClient: whatever a server sends, a Client returns an error or
// data, and never panics or hangs (the test's timeout is the hang).
func FuzzClient(f *testing.F) {
	good := bytes.Join(serverScript(false), nil)
	f.Add(good)
	f.Add(bytes.Join(serverScript(true), nil))
	f.Add(good[:len(good)-10])
	f.Add(good[:16])
	// A minimum block size: the 512-byte write goes as a
	// read-modify-write of its block.
	f.Add(bytes.Join(blockSizeScript(4096, 4096, 1<<25, 1<<20), nil))
	f.Fuzz(func(t *testing.T, script []byte) {
		c, err := hostileServer(t, script)
		if err != nil {
			return
		}
		buf := make([]byte, 4096)
		block.ReadAt(c, buf, 0)
		c.DataRun(0, 4096)
		c.Writev(0, [][]byte{buf[:512]})
		c.Flush()
		c.Close()
	})
}

// TestClient_ScriptedServer: the well-behaved script reads as it says.
func TestClient_ScriptedServer(t *testing.T) {
	c, err := hostileServer(t, serverScript(false)...)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for i := range buf {
		buf[i] = 0xff
	}
	if err := block.ReadAt(c, buf, 0); err != nil {
		t.Fatal(err)
	}
	for i, v := range buf {
		if v != 0 {
			t.Fatalf("byte %d is %#x", i, v)
		}
	}
	if d, n, err := c.DataRun(0, 1<<20); err != nil || d || n != 4096 {
		t.Fatalf("DataRun: %v %d %v", d, n, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestClient_ReadNotFilled: a READ reply that ends (DONE) without
// filling the range is a protocol error for the read, not a wait for
// ever (the request had left the pending set before the check, and the
// connection's end failed nobody: found by the review of the client).
func TestClient_ReadNotFilled(t *testing.T) {
	c, err := hostileServer(t, serverScript(true)...)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- block.ReadAt(c, make([]byte, 4096), 0) }()
	select {
	case err := <-done:
		var pe *ProtocolError
		if !errors.As(err, &pe) {
			t.Fatalf("read: %v, want a ProtocolError", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("read of a reply that does not fill it hangs")
	}
	c.Close()
}
