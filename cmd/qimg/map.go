package main

import (
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/qring/qring/block"
	"github.com/qring/qring/crypto/luksdisk"
	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/internal/protocol"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/vhd"
	"github.com/qring/qring/vmdk"
)

// mapExtents returns qemu-img map's extents for an open image: the
// engine's Map for qcow2, the VHD's blocks for vpc (vhd's VD5), one
// data extent for luks, and data/hole runs of the host file for raw.
func mapExtents(img *imgopen.Opened) ([]qcow2.MapEntry, error) {
	if img.Image != nil {
		return img.Image.Map()
	}
	if img.VHD != nil {
		return vhdExtents(img.VHD)
	}
	if img.VMDK != nil {
		ext, _, err := vmdkExtents(img.VMDK, false)
		return ext, err
	}
	if img.LUKS != nil {
		return luksExtents(img.LUKS)
	}
	if im := imgopen.CORImage(img.Dev); im != nil {
		return im.Map() // a copy-on-read root: its image's map
	}
	if size, err := img.Dev.Size(); err != nil {
		return nil, err
	} else if ext, ok, err := rawNodeExtents(img.Dev, 0, size); ok {
		return ext, err
	}
	return qcow2.MapRaw(img.Dev)
}

// luksExtents is a LUKS volume's map: QEMU's crypto driver has no block
// status, so all of it is data, at no offset it can show (the human map
// refuses it).
func luksExtents(d *luksdisk.Disk) ([]qcow2.MapEntry, error) {
	size, err := d.Size()
	if err != nil || size == 0 {
		return nil, err
	}
	return []qcow2.MapEntry{{Length: size, Present: true, Data: true}}, nil
}

// rawNodeExtents is the map of a raw node (a window or not) over a
// format node (qcow2, vpc, vmdk): QEMU's raw driver passes its child's
// status through (BDRV_BLOCK_RAW), so the map is the child node's own
// (its backing files are not the raw node's: qcow2.NodeMap) within the
// window, for [from, to) of the raw node (where qemu-img map starts
// asking matters: qcow2.NodeMap). ok is false for anything else.
func rawNodeExtents(dev block.Device, from, to int64) (ext []qcow2.MapEntry, ok bool, err error) {
	child, off := imgopen.RawStack(dev)
	if child == dev {
		return nil, false, nil
	}
	switch c := child.(type) {
	case *qcow2.Image:
		ext, err = c.NodeMap(off+from, off+to)
	case *vhd.Disk:
		ext, err = vhdExtents(c)
	case *vmdk.Disk:
		ext, err = vmdkNodeExtents(c)
	case *luksdisk.Disk:
		ext, err = luksExtents(c)
	default:
		return nil, false, nil
	}
	if ext == nil {
		return nil, true, err
	}
	// With an error, what was mapped before it (qcow2.Image.Map).
	ext = clipExtents(ext, off+from, off+to)
	for i := range ext {
		ext[i].Start -= off
	}
	return ext, true, err
}

// vmdkNodeExtents is the map of a VMDK node alone, as a raw node over
// it sees its status (QEMU's raw driver passes its child's status
// through, and the walk stops at the raw node): where the image leaves
// a grain to its parent, the extent is neither present, nor zero, nor
// data (zero from the grain after the parent's end on, and without a
// parent), as
// bdrv_co_block_status says for a layer with a backing file.
func vmdkNodeExtents(d *vmdk.Disk) ([]qcow2.MapEntry, error) {
	size, err := d.Size()
	if err != nil {
		return nil, err
	}
	psize := int64(-1)
	if p := d.Parent(); p != nil {
		if psize, err = p.Size(); err != nil {
			return nil, err
		}
		// QEMU's vmdk answers a grain at a time, zero or not by the
		// answer's start: the grain holding the parent's end is no zero.
		psize = imgopen.VMDKGrainEnd(d, psize)
	}
	var out []qcow2.MapEntry
	for off := int64(0); off < size; {
		e, err := d.Status(off, size-off)
		if err != nil {
			return nil, err
		}
		m := qcow2.MapEntry{Start: off, Length: min(e.Length, size-off), Present: e.Present, Zero: e.Zero, Data: e.Data, Compressed: e.Compressed}
		if !e.Present && off < psize {
			m.Length, m.Zero = min(m.Length, psize-off), false
		}
		if e.Offset >= 0 {
			o := e.Offset
			m.Offset = &o
		}
		off += m.Length
		if k := len(out); k > 0 {
			p := &out[k-1]
			contig := (p.Offset == nil && m.Offset == nil) || (p.Offset != nil && m.Offset != nil && *m.Offset == *p.Offset+p.Length)
			if p.Present == m.Present && p.Zero == m.Zero && p.Data == m.Data && p.Compressed == m.Compressed && contig {
				p.Length += m.Length
				continue
			}
		}
		out = append(out, m)
	}
	return out, nil
}

// mapImage is the qcow2 image whose chain map's human table names: the
// image, or the qcow2 node under a raw node.
func mapImage(img *imgopen.Opened) *qcow2.Image {
	if img.Image != nil {
		return img.Image
	}
	dev, _ := imgopen.RawStack(img.Dev)
	im, _ := dev.(*qcow2.Image)
	return im
}

// clipExtents is qemu-img map --start-offset/--max-length: the extents
// within [start, end), the first and last cut to it (a host offset moved
// with the start). Nothing to map (start at or past end) is qemu-img's
// one empty extent at start.
func clipExtents(ext []qcow2.MapEntry, start, end int64) []qcow2.MapEntry {
	if start >= end {
		return []qcow2.MapEntry{{Start: start}}
	}
	var out []qcow2.MapEntry
	for _, e := range ext {
		s, t := max(e.Start, start), min(e.Start+e.Length, end)
		if s >= t {
			continue
		}
		if e.Offset != nil {
			off := *e.Offset + s - e.Start
			e.Offset = &off
		}
		e.Start, e.Length = s, t-s
		out = append(out, e)
	}
	return out
}

// chainNames returns the file name of each layer of the backing chain,
// as qemu prints them (backing names combined with the overlay's path).
func chainNames(path string, im *qcow2.Image) []string {
	names := []string{dataName(path, im)}
	for cur := im; cur != nil; {
		h := cur.Header()
		if h.BackingFile == "" {
			break
		}
		full := pathCombine(path, h.BackingFile)
		if strings.HasPrefix(path, "json:") {
			full, _ = cur.BackingPath() // the image's node's directory (see info)
		} else if p, err := protocol.Path(full, false); err == nil && protocol.HasPrefix(full) {
			full = p // "file:base.raw" names the file base.raw, as QEMU prints it
		}
		path = nbdCanonical(imgopen.SpecFilename(full))
		next, _ := cur.Backing().(*qcow2.Image)
		names = append(names, dataName(path, next))
		cur = next
	}
	return names
}

// dataName is the file a layer's data lives in, as qemu-img map names
// it: the external data file's name (as it was opened), else the
// layer's own path (for a spec, the file its nodes end in).
func dataName(path string, im *qcow2.Image) string {
	if im != nil && im.HasDataFile() && im.DataFileName() != "" {
		return im.DataFileName()
	}
	if f := imgopen.SpecLeafFile(path); f != "" {
		return f
	}
	return path
}

// writeMapJSON prints the extents like qemu-img map --output=json (8.2
// layout: one object per line, "compressed" after "data"). A map cut
// short by an error (partial) is printed as qemu-img prints it before
// it fails: each object followed by a comma, and no closing bracket.
func writeMapJSON(w io.Writer, ext []qcow2.MapEntry, partial bool) {
	var b strings.Builder
	b.WriteString("[")
	for i, e := range ext {
		fmt.Fprintf(&b, `{ "start": %d, "length": %d, "depth": %d, "present": %t, "zero": %t, "data": %t, "compressed": %t`,
			e.Start, e.Length, e.Depth, e.Present, e.Zero, e.Data, e.Compressed)
		if e.Offset != nil {
			fmt.Fprintf(&b, `, "offset": %d`, *e.Offset)
		}
		b.WriteString("}")
		if partial || i+1 < len(ext) {
			b.WriteString(",\n")
		}
	}
	if !partial {
		b.WriteString("]\n")
	}
	io.WriteString(w, b.String())
}

// cHex is C's "%#x": 0 prints as "0".
func cHex(v int64) string {
	if v == 0 {
		return "0"
	}
	return fmt.Sprintf("%#x", v)
}

// writeMapHuman prints qemu-img map's table: data extents with their host
// offset and file. Compressed data cannot be shown, as in qemu.
func writeMapHuman(w io.Writer, ext []qcow2.MapEntry, names []string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File")
	for _, e := range ext {
		if !e.Data {
			continue
		}
		if e.Offset == nil {
			io.WriteString(w, b.String())
			return fmt.Errorf("File contains external, encrypted or compressed clusters.")
		}
		if e.Zero { // data in a host hole (metadata preallocation)
			continue
		}
		name := e.File // a VMDK extent file, under a qcow2 image
		if name == "" && e.Depth < len(names) {
			name = names[e.Depth]
		}
		fmt.Fprintf(&b, "%-16s%-16s%-16s%s\n", cHex(e.Start), cHex(e.Length), cHex(*e.Offset), name)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func runMap(e *env, args []string) int {
	o, out, err := e.getoptOutput(args, "o:f:t:U", "force-share", "object:", "image-opts", "start-offset:", "max-length:")
	if err != nil {
		return e.usageErr(err)
	}
	start, maxLen := int64(0), int64(math.MaxInt64)
	for _, w := range []struct {
		opt, name string
		v         *int64
	}{{"start-offset", "start offset", &start}, {"max-length", "max length", &maxLen}} {
		if o.has(w.opt) {
			n, err := cvtnum(w.name, o.get(w.opt, "")) // qemu-img's range, to INT64_MAX
			if err != nil {
				return e.errorf(1, "%v", err)
			}
			*w.v = n
		}
	}
	path, eo, err := oneImage(o)
	if err != nil {
		return e.usageErr(err)
	}
	// -t: a qimg extension (qemu-img has none here), read as convert's.
	cache, err := o.cacheOpt(false)
	if err != nil {
		return e.errorf(1, "%v", err)
	}
	spec, err := o.imageSpec(path, imgopen.Spec{Format: o.get("f", ""), Cache: cache.imgopen(), ReadOnly: true, Opts: eo})
	if err != nil {
		return e.usageErr(err)
	}
	img, err := openImage(spec)
	if err != nil {
		return e.errorf(1, "%v", err)
	}
	defer img.Close()
	ranged := o.has("start-offset") || o.has("max-length")
	end := int64(0)
	if ranged {
		size, err := img.Dev.Size()
		if err != nil {
			return e.errorf(1, "%v", err)
		}
		end = size
		if o.has("max-length") {
			// QEMU's int64 sum: past INT64_MAX it wraps negative,
			// and nothing is mapped (qemu-img 7.2's img_map).
			end = min(size, int64(uint64(start)+uint64(maxLen)))
		}
	}
	// A failed lookup leaves the extents before it: qemu-img prints
	// them, then the error.
	var ext []qcow2.MapEntry
	var mapErr error
	if ranged && img.Image != nil {
		// Only the range is looked at, as qemu-img's map: damage
		// outside it fails nothing (an empty range looks at nothing).
		if start < end {
			ext, mapErr = img.Image.MapRange(start, end)
		}
	} else {
		ext, mapErr = mapExtents(img)
	}
	if mapErr != nil && ext == nil {
		return e.errorf(1, "%v", mapErr)
	}
	if ranged {
		ext = clipExtents(ext, start, end)
		if start < end {
			// A raw node's child is asked from start (qcow2.NodeMap).
			if rext, ok, err := rawNodeExtents(img.Dev, start, end); ok || err != nil {
				ext, mapErr = rext, err
			}
		}
	}
	if out == "json" {
		if len(ext) == 0 && mapErr == nil {
			// An empty image: qemu-img prints its one empty run.
			ext = []qcow2.MapEntry{{Start: start}}
		}
		writeMapJSON(e.stdout, ext, mapErr != nil)
		if mapErr != nil {
			return e.errorf(1, "%v", mapErr)
		}
		return 0
	}
	if o.has("image-opts") {
		path = spec.Path // the file (or the json: spec) the options name
	}
	names := chainNames(nbdCanonical(imgopen.SpecFilename(path)), mapImage(img))
	if img.VMDK != nil {
		// Each extent's file is named (vmdk's KD5): the human table gets
		// entries whose Depth indexes the file names.
		if ext, names, err = vmdkExtents(img.VMDK, true); err != nil {
			return e.errorf(1, "%v", err)
		}
		if o.has("start-offset") || o.has("max-length") {
			size, _ := img.Dev.Size()
			ext = clipExtents(ext, start, min(size, start+min(maxLen, math.MaxInt64-start)))
		}
	}
	if spec.DataFile != "" {
		names[0] = spec.DataFile // the data file --image-opts gave (data-file.filename)
	}
	if err := writeMapHuman(e.stdout, ext, names); err != nil {
		return e.errorf(1, "%v", err)
	}
	if mapErr != nil {
		return e.errorf(1, "%v", mapErr)
	}
	return 0
}

// vhdExtents is a VHD image's map as qemu-img map shows it: one layer,
// every byte present.
func vhdExtents(d *vhd.Disk) ([]qcow2.MapEntry, error) {
	ext, err := d.Map()
	if err != nil {
		return nil, err
	}
	out := make([]qcow2.MapEntry, len(ext))
	for i, e := range ext {
		out[i] = qcow2.MapEntry{Start: e.Start, Length: e.Length, Present: true, Zero: e.Zero, Data: e.Data}
		if e.Offset >= 0 {
			off := e.Offset
			out[i].Offset = &off
		}
	}
	return out, nil
}

// vmdkExtents is a VMDK image's map as qemu-img map shows it (vmdk's
// KD5), through its parent chain (KD6). names lists the files the
// extents' offsets lie in; with byFile (for the human table only) each
// entry's Depth is its file's index in names, else its layer.
func vmdkExtents(d *vmdk.Disk, byFile bool) ([]qcow2.MapEntry, []string, error) {
	ext, err := d.Map()
	if err != nil {
		return nil, nil, err
	}
	out := make([]qcow2.MapEntry, len(ext))
	var names []string
	idx := map[string]int{}
	for i, e := range ext {
		out[i] = qcow2.MapEntry{Start: e.Start, Length: e.Length, Present: e.Present, Zero: e.Zero, Data: e.Data, Compressed: e.Compressed, Depth: e.Depth}
		if e.Offset >= 0 {
			off := e.Offset
			out[i].Offset = &off
			if _, ok := idx[e.File]; !ok {
				idx[e.File] = len(names)
				names = append(names, e.File)
			}
			if byFile {
				out[i].Depth = idx[e.File]
			}
		}
	}
	return out, names, nil
}
