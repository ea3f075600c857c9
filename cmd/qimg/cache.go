package main

import (
	"github.com/qring/qring/block"
	"github.com/qring/qring/uring"
)

// cacheMode is a cache mode of qemu-img's -t (the image written) and -T
// (the images read) options, as QEMU's bdrv_parse_cache_mode reads it.
//
//	none, off    O_DIRECT host files
//	directsync   O_DIRECT, and writethrough
//	writeback    the default (convert's is unsafe)
//	writethrough each write is flushed before it completes
//	unsafe       writeback without host flushes (QEMU's BDRV_O_NO_FLUSH):
//	             nothing is durable before the OS writes it back, and a
//	             host crash or power cut may leave the image corrupt; a
//	             crash of qimg alone does not (its writes are in the
//	             host's page cache, in order)
type cacheMode struct {
	direct       bool
	writethrough bool
	noFlush      bool
}

// cacheModes are the modes QEMU knows, by name.
var cacheModes = map[string]cacheMode{
	"none":         {direct: true},
	"off":          {direct: true},
	"directsync":   {direct: true, writethrough: true},
	"writeback":    {},
	"writethrough": {writethrough: true},
	"unsafe":       {noFlush: true},
}

// CacheError is a -t or -T value that names no cache mode.
type CacheError struct {
	Source bool // -T (the images read), else -t
	Mode   string
}

func (e *CacheError) Error() string {
	if e.Source {
		return "Invalid source cache option: " + e.Mode
	}
	return "Invalid cache option: " + e.Mode
}

// cacheOpt parses -t (source false) or -T (source true); absent, it is
// writeback.
func (o *opts) cacheOpt(source bool) (cacheMode, error) {
	k := "t"
	if source {
		k = "T"
	}
	s := o.get(k, "writeback")
	m, ok := cacheModes[s]
	if !ok {
		return m, &CacheError{Source: source, Mode: s}
	}
	return m, nil
}

// imgopen is the mode as imgopen.Spec.Cache names it: what the host
// file's opening depends on.
func (m cacheMode) imgopen() string {
	if m.direct {
		return "none"
	}
	return "writeback"
}

// testHookFileDev, if set, stands in front of the host file of every
// image a writing command opens with its -t mode (tests count the
// flushes that reach the file).
var testHookFileDev func(block.Device) block.Device

// wrapFile is imgopen.Spec.WrapFile for the image a command writes in
// mode m: in unsafe, the host file's flushes do nothing.
func (m cacheMode) wrapFile() func(block.Device) block.Device {
	if !m.noFlush && testHookFileDev == nil {
		return nil
	}
	return func(d block.Device) block.Device {
		if testHookFileDev != nil {
			d = testHookFileDev(d)
		}
		if m.noFlush {
			d = noFlushes(d)
		}
		return d
	}
}

// noFlushes is d with Flush doing nothing. A host file keeps its other
// methods (its locks, its queues, its data map).
func noFlushes(d block.Device) block.Device {
	if f, ok := d.(*uring.File); ok {
		return noFlushFile{f}
	}
	return noFlushDevice{d}
}

type noFlushFile struct{ *uring.File }

func (noFlushFile) Flush() error { return nil }

type noFlushDevice struct{ block.Device }

func (noFlushDevice) Flush() error { return nil }

// writeThrough is a device, or image, in writethrough mode: each write
// (of data or of zeros) is flushed before it completes, as QEMU's block
// backend without a write cache does (blk_co_pwritev_part). Discards are
// not flushed, as in QEMU.
type writeThrough struct {
	block.Device
}

// testHookCacheDev, if set, stands in front of every device withCache
// puts in a mode (tests count its writes and flushes).
var testHookCacheDev func(block.Device) block.Device

// withCache puts d in mode m: writethrough wraps it, other modes leave it
// as it is (their host files were opened for them).
func withCache(d block.Device, m cacheMode) block.Device {
	if testHookCacheDev != nil {
		d = testHookCacheDev(d)
	}
	if !m.writethrough {
		return d
	}
	return writeThrough{d}
}

func (w writeThrough) Writev(off int64, bufs [][]byte) error {
	if err := w.Device.Writev(off, bufs); err != nil {
		return err
	}
	return w.Device.Flush()
}

// Discard passes through, not flushed (as QEMU's).
func (w writeThrough) Discard(off, n int64) error {
	d, ok := w.Device.(block.Discarder)
	if !ok {
		return block.ErrNotSupported
	}
	return d.Discard(off, n)
}

// Unwrap is the device in writethrough mode.
func (w writeThrough) Unwrap() block.Device { return w.Device }

// CacheModeWrapped makes writeThrough an imgopen.CacheModeWrapper
// (imgopen.CORImage looks through it).
func (w writeThrough) CacheModeWrapped() block.Device { return w.Device }

func (w writeThrough) WriteZeroes(off, n int64, flags block.Flags) error {
	if err := w.Device.WriteZeroes(off, n, flags); err != nil {
		return err
	}
	return w.Device.Flush()
}
