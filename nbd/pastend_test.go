package nbd

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
)

// TestPastEnd pins the answer to each command whose range leaves the
// export (doc.go, "Errors"): ENOSPC for WRITE and WRITE_ZEROES, as the
// spec's "Error values" and NBD_CMD_WRITE_ZEROES sections say a server
// SHOULD; EINVAL for READ, TRIM (the spec's SHOULD), BLOCK_STATUS (its
// SHOULD) and CACHE (unspecified; EINVAL as qemu-nbd). qemu-nbd 7.2
// answers EINVAL to all of them. A range that ends exactly at the end,
// and an empty one there, are fine; an offset whose range wraps around
// 2^64 is past the end too; nothing reaches the device.
func TestPastEnd(t *testing.T) {
	mem := newMem(memdev.Options{})
	s := newTestServer(t, &Export{Dev: mem, Unmap: true}, &Export{Name: "ro", Dev: newMem(memdev.Options{}), ReadOnly: true})
	ranges := []struct {
		name string
		off  uint64
		n    uint32
	}{
		{"straddling", testSize - 1, 2},
		{"after", testSize + 4096, 1},
		{"empty after", testSize + 1, 0},
		{"wrapping", 1<<64 - 512, 1024},
	}
	want := map[uint16]uint32{
		cmdRead: errInval, cmdWrite: errNoSpc, cmdWriteZeroes: errNoSpc,
		cmdTrim: errInval, cmdCache: errInval, cmdBlockStatus: errInval,
	}
	for _, structured := range []bool{false, true} {
		t.Run(fmt.Sprint("structured=", structured), func(t *testing.T) {
			c := dial(t, s)
			if structured {
				c.connect("", true, "base:allocation")
			} else {
				c.connect("", false)
			}
			for _, typ := range []uint16{cmdRead, cmdWrite, cmdWriteZeroes, cmdTrim, cmdCache, cmdBlockStatus} {
				if typ == cmdBlockStatus && !structured {
					continue // no context without structured replies: EINVAL anyway
				}
				for _, r := range ranges {
					var pl []byte
					if typ == cmdWrite {
						pl = bytes.Repeat([]byte{0xee}, int(r.n))
					}
					code, _, chunks := c.do(typ, 0, r.off, r.n, pl)
					if code != want[typ] {
						t.Errorf("%s %s [%d, +%d): error %d, want %d", cmdName(typ), r.name, r.off, r.n, code, want[typ])
					}
					// With structured replies every error is a chunk
					// with a message, as qemu-nbd's.
					if structured && (chunks[0].simple || chunks[0].typ != replyError || len(chunks[0].data) <= 6) {
						t.Errorf("%s %s: reply %+v, want an error chunk with a message", cmdName(typ), r.name, chunks[0])
					}
				}
				// Up to the end is inside.
				var pl []byte
				if typ == cmdWrite {
					pl = []byte{0x11}
				}
				if code, _, _ := c.do(typ, 0, testSize-1, 1, pl); code != 0 {
					t.Errorf("%s of the last byte: error %d", cmdName(typ), code)
				}
				if typ != cmdBlockStatus {
					if code, _, _ := c.do(typ, 0, testSize, 0, nil); code != 0 {
						t.Errorf("%s of nothing at the end: error %d", cmdName(typ), code)
					}
				}
			}
		})
	}
	// The refused writes changed nothing: the last byte is what the
	// in-range WRITE put there, then the in-range WRITE_ZEROES and TRIM
	// zeroed.
	last := make([]byte, 1)
	if err := block.ReadAt(mem, last, testSize-1); err != nil || last[0] != 0 {
		t.Fatalf("last byte %x (%v), want 0", last[0], err)
	}
	// A read-only export refuses writes with EPERM first, past the end or
	// not (the spec's "Error values": EPERM for a write or trim there).
	c := dial(t, s)
	c.connect("ro", false)
	for _, typ := range []uint16{cmdWrite, cmdWriteZeroes, cmdTrim} {
		var pl []byte
		if typ == cmdWrite {
			pl = []byte{1, 2}
		}
		if code, _, _ := c.do(typ, 0, testSize-1, 2, pl); code != errPerm {
			t.Errorf("%s past the end of a read-only export: error %d, want EPERM", cmdName(typ), code)
		}
	}
}
