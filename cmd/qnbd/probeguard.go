package main

import (
	"bytes"
	"encoding/binary"
	"sync"
	"syscall"

	"github.com/qring/qring/block"
)

// probeLen is the part of an image a format probe reads (QEMU's
// BLOCK_PROBE_BUF_SIZE).
const probeLen = 512

// probedWarning is what qemu-nbd prints when it serves a writable image
// whose format it probed as raw.
const probedWarning = "WARNING: Image format was not specified for '%s' and probing guessed raw.\n" +
	"         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n" +
	"         Specify the 'raw' format explicitly to remove the restrictions.\n"

// probeGuard is a raw image whose format was probed, not given: as
// QEMU's raw driver does for such an image, it refuses with EPERM a write
// after which the first 512 bytes would probe as another format. A
// client could otherwise write a qcow2 header there, naming any host
// file as its backing file, and the next start without -f would serve
// that image, and that file's contents, to it.
//
// It has no queue of its own (block.Queuer) so that every write passes
// through Writev; Discard and the rest go to the device.
type probeGuard struct {
	block.Device
	mu sync.Mutex // a write into the first 512 bytes, with its check
}

// Writev implements block.Device. A write that covers only part of the
// first 512 bytes is checked with the rest read from the device.
func (g *probeGuard) Writev(off int64, bufs [][]byte) error {
	n := block.VecLen(bufs)
	if off >= probeLen || n == 0 || off < 0 {
		return g.Device.Writev(off, bufs)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	head := make([]byte, probeLen)
	if off > 0 || n < probeLen {
		if err := block.ReadAt(g.Device, head, 0); err != nil {
			return err
		}
	}
	p := head[off:]
	for _, b := range bufs {
		if len(p) == 0 {
			break
		}
		p = p[copy(p, b):]
	}
	if !probesRaw(head) {
		return &block.OpError{Op: "write", Off: off, Len: n, Err: syscall.EPERM}
	}
	return g.Device.Writev(off, bufs)
}

// Discard implements block.Discarder when the device does: a discarded
// range reads as zeros on a raw file, which probe as raw.
func (g *probeGuard) Discard(off, n int64) error {
	if d, ok := g.Device.(block.Discarder); ok {
		return d.Discard(off, n)
	}
	return block.ErrNotSupported
}

// probesRaw reports whether QEMU 7.2's probe of the first 512 bytes of an
// image (bdrv_probe_all) finds no format but raw: none of the magics of
// qcow and qcow2, QED, VMDK (binary, or a text descriptor's version=
// line), VPC, VHDX, VDI, LUKS, Parallels, Bochs or cloop is there. (DMG
// is probed from the file's name, not its contents.)
func probesRaw(b []byte) bool {
	for _, m := range []string{"QFI\xfb", "QED\x00", "KDMV", "COWD", "conectix", "vhdxfile",
		"LUKS\xba\xbe", "WithoutFreeSpace", "WithouFreSpacExt", "Bochs Virtual HD Image",
		"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n"} {
		if bytes.HasPrefix(b, []byte(m)) {
			return false
		}
	}
	// VDI: the signature and version 1.1 after the 64-byte text.
	if len(b) >= 72 && binary.LittleEndian.Uint32(b[64:]) == 0xbeda107f && binary.LittleEndian.Uint32(b[68:]) == 0x00010001 {
		return false
	}
	return !vmdkDescriptor(b)
}

// vmdkDescriptor is vmdk_probe's test for a text descriptor: comment
// lines and blank lines, then a "version=1", "=2" or "=3" line.
func vmdkDescriptor(b []byte) bool {
	for len(b) > 0 {
		switch b[0] {
		case '#':
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				return false
			}
			b = b[i+1:]
			continue
		case ' ':
			b = bytes.TrimLeft(b, " ")
			if len(b) > 0 && b[0] == '\r' {
				b = b[1:]
			}
			if len(b) == 0 || b[0] != '\n' {
				return false
			}
			b = b[1:]
			continue
		}
		for _, v := range []string{"version=1\n", "version=2\n", "version=3\n", "version=1\r\n", "version=2\r\n", "version=3\r\n"} {
			if bytes.HasPrefix(b, []byte(v)) {
				return true
			}
		}
		return false
	}
	return false
}
