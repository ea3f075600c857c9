package main

import (
	"fmt"
	"io"
	"os"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/qcow2"
)

// convertImage copies the guest contents of src to dst, skipping ranges
// the map reports as zero and, within data, runs of zero bytes of at least
// sparse bytes (qemu-img convert -S). With sparse 0 nothing is skipped:
// every byte is written, zeros too, and the output is fully allocated
// (as qemu-img). dst must read as zeros beforehand. progress, if set, is
// called with bytes done.
func convertImage(src *image, dst block.Device, sparse int64, progress func(done, total int64)) error {
	buf := make([]byte, compareChunk)
	for off := int64(0); off < src.size; {
		if z := src.zm.zeroUntil(off); z > off && sparse > 0 {
			off = min(z, src.size)
			if progress != nil {
				progress(off, src.size)
			}
			continue
		}
		n := min(int64(len(buf)), src.size-off)
		p := buf[:n]
		if err := src.dev.Readv(off, [][]byte{p}); err != nil {
			return fmt.Errorf("error while reading at byte %d: %w", off, err)
		}
		if err := writeNonZero(dst, off, p, sparse); err != nil {
			return fmt.Errorf("error while writing at byte %d: %w", off, err)
		}
		off += n
		if progress != nil {
			progress(off, src.size)
		}
	}
	return dst.Flush()
}

// writeNonZero writes p at off, leaving out aligned blocks of sparse bytes
// that are all zero.
func writeNonZero(dst block.Device, off int64, p []byte, sparse int64) error {
	if sparse <= 0 {
		return dst.Writev(off, [][]byte{p})
	}
	start := -1 // start of the pending data run in p
	for i := 0; i < len(p); {
		// Blocks aligned to sparse in guest offsets.
		end := min(int64(len(p)), (off+int64(i))/sparse*sparse+sparse-off)
		blk := p[i:end]
		if isZero(blk) {
			if start >= 0 {
				if err := dst.Writev(off+int64(start), [][]byte{p[start:i]}); err != nil {
					return err
				}
				start = -1
			}
		} else if start < 0 {
			start = i
		}
		i = int(end)
	}
	if start >= 0 {
		return dst.Writev(off+int64(start), [][]byte{p[start:]})
	}
	return nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func runConvert(e *env, args []string) int {
	o, err := getopt(args, "f:O:o:pt:T:S:qUWm:c", "force-share", "object:", "image-opts")
	if err != nil {
		return e.usageErr(err)
	}
	if code, done := e.answerOptionsHelp(o, o.get("O", "raw"), "unknown output format '%s' (raw, qcow2)"); done {
		return code
	}
	if len(o.args) != 2 {
		return e.usageErr(fmt.Errorf("expecting one input and one output file name"))
	}
	in, out := o.args[0], o.args[1]
	ofmt := o.get("O", "raw")
	if ofmt != "raw" && ofmt != "qcow2" {
		return e.usageErr(fmt.Errorf("unknown output format '%s' (raw, qcow2)", ofmt))
	}
	if o.has("c") && ofmt != "qcow2" {
		return e.errorf(1, "Compression not supported for this file format")
	}
	sparse := int64(4096)
	if o.has("S") {
		if sparse, err = parseSize(o.get("S", "")); err != nil {
			return e.usageErr(err)
		}
		if sparse < 0 || sparse%512 != 0 || sparse > 16<<20 {
			return e.errorf(1, "Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16777216. Select 0 to disable sparse detection (fully allocates output).")
		}
	}
	sspec, err := o.imageSpec(in, imgopen.Spec{Format: o.get("f", ""), Cache: o.get("T", ""), ReadOnly: true,
		Opts: qcow2.Options{ForceShare: o.forceShare()}})
	if err != nil {
		return e.usageErr(err)
	}
	in = sspec.Path
	simg, err := openImage(sspec)
	if err != nil {
		return e.errorf(1, "%v", err)
	}
	defer simg.Close()
	if err := refuseOverwrite(in, out, backingChain(in, simg)); err != nil {
		return e.errorf(1, "%v", err)
	}
	src, err := loadImage(simg)
	if err != nil {
		return e.errorf(1, "%v", err)
	}
	req := &createRequest{path: out, format: ofmt, given: map[string]bool{}}
	for _, s := range o.vals["o"] {
		kv, err := qcow2.SplitOptions(s)
		if err != nil {
			return e.usageErr(err)
		}
		for _, p := range kv {
			if ofmt == "raw" || p[0] == "backing_file" || p[0] == "backing_fmt" || p[0] == "size" {
				return e.usageErr(fmt.Errorf("option '%s' is not supported for output format %s", p[0], ofmt))
			}
			if err := setCreateOption(&req.opts, p[0], p[1]); err != nil {
				return e.usageErr(err)
			}
		}
	}
	req.opts.Size = src.size
	if o.has("c") && req.opts.Encrypt.Format != "" {
		return e.errorf(1, "%s: compressed output (-c) of an encrypted image is not supported (QEMU would write the compressed clusters in the clear)", out)
	}
	if err := o.resolveEncrypt(&req.opts.Encrypt); err != nil {
		return e.errorf(1, "%s: %v", out, err)
	}
	_, statErr := os.Stat(out)
	created := os.IsNotExist(statErr) // a failure removes only what it made
	if err := doCreate(req); err != nil {
		if created {
			os.Remove(out)
		}
		return e.errorf(1, "%s: %v", out, err)
	}
	dst, err := openImage(imgopen.Spec{Path: out, Format: ofmt, Cache: o.get("t", ""),
		Opts: qcow2.Options{Passphrase: req.opts.Encrypt.Passphrase}})
	if err != nil {
		return e.errorf(1, "%v", err)
	}
	var progress func(done, total int64)
	if o.has("p") {
		progress = progressPrinter(e.stdout)
	}
	if o.has("c") && dst.Image == nil {
		err = fmt.Errorf("Compression not supported for this file format")
	} else if o.has("c") {
		err = convertCompressed(src, dst.Image, progress)
	} else {
		if ofmt == "raw" && isBlockDevice(out) {
			// convertImage skips what reads as zeros in the source, so
			// the output must read as zeros first; a device holds old
			// data (QEMU: no zero-init on host_device).
			// Whole sectors, as QEMU sees the image's end.
			var n int64
			if n, err = dst.Dev.Size(); err == nil {
				err = dst.Dev.WriteZeroes(0, min(roundUp(src.size, 512), n), block.MayUnmap)
			}
		}
		if err == nil {
			err = convertImage(src, dst.Dev, sparse, progress)
		}
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if progress != nil {
		fmt.Fprintln(e.stdout)
	}
	if err != nil {
		if created {
			os.Remove(out)
		}
		return e.errorf(1, "%v", err)
	}
	return 0
}

// progressPrinter prints qemu-img's "    (x.xx/100%)" lines.
func progressPrinter(w io.Writer) func(done, total int64) {
	last := -1.0
	return func(done, total int64) {
		pct := 100.0
		if total > 0 {
			pct = float64(done) * 100 / float64(total)
		}
		if pct-last >= 1 || (pct == 100 && last != 100) {
			fmt.Fprintf(w, "    (%.2f/100%%)\r", pct)
			last = pct
		}
	}
}

// isBlockDevice reports whether path is a block device.
func isBlockDevice(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0
}
