package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"syscall"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/internal/protocol"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/qcow2/format"
	"github.com/qring/qring/vhd"
	"github.com/qring/qring/vmdk"
)

// imageInfo is qemu-img info's ImageInfo (the fields we fill).
//
// The fields are in the order qemu-img prints them: the order of its
// QDict's hash buckets (qdict.c's tdb_hash of the key, modulo 512),
// which is the same for every image.
type imageInfo struct {
	BackingFilenameFormat string          `json:"backing-filename-format,omitempty"`
	Snapshots             []snapshotInfo  `json:"snapshots,omitempty"`
	VirtualSize           int64           `json:"virtual-size"`
	Filename              string          `json:"filename"`
	ClusterSize           int64           `json:"cluster-size,omitempty"`
	Format                string          `json:"format"`
	ActualSize            *int64          `json:"actual-size,omitempty"` // nil: unavailable (an NBD export)
	FormatSpecific        *formatSpecific `json:"format-specific,omitempty"`
	FullBackingFilename   string          `json:"full-backing-filename,omitempty"`
	Encrypted             bool            `json:"encrypted,omitempty"`
	BackingFilename       string          `json:"backing-filename,omitempty"`
	DirtyFlag             *bool           `json:"dirty-flag,omitempty"` // nil: not known (raw over an NBD export)

	metrics func(io.Writer) // --metrics: prints the engine's metrics
}

type formatSpecific struct {
	Type string       `json:"type"`
	Data *qcow2Detail `json:"-"`
	// VMDK is the vmdk driver's data (ImageInfoSpecificVmdk) when Type
	// is "vmdk"; Data is qcow2's.
	VMDK *vmdkDetail `json:"-"`
	// LUKS is the luks driver's data (QCryptoBlockInfoLUKS) when Type is
	// "luks".
	LUKS *luksInfo `json:"-"`
}

// MarshalJSON writes {"type", "data"} with the detail of the type.
func (f *formatSpecific) MarshalJSON() ([]byte, error) {
	var data any = f.Data
	if f.VMDK != nil {
		data = f.VMDK
	}
	if f.LUKS != nil {
		data = f.LUKS
	}
	return json.Marshal(struct {
		Type string `json:"type"`
		Data any    `json:"data"`
	}{f.Type, data})
}

// qcow2Detail is ImageInfoSpecificQCow2.
type qcow2Detail struct {
	Compat          string       `json:"compat"`
	CompressionType string       `json:"compression-type"`
	LazyRefcounts   *bool        `json:"lazy-refcounts,omitempty"`
	Bitmaps         []bitmapInfo `json:"bitmaps,omitempty"`
	RefcountBits    int          `json:"refcount-bits"`
	DataFile        *string      `json:"data-file,omitempty"` // the header extension's name
	Encrypt         encryptInfo  `json:"encrypt,omitempty"`
	DataFileRaw     *bool        `json:"data-file-raw,omitempty"` // with the external data file bit
	Corrupt         *bool        `json:"corrupt,omitempty"`
	ExtendedL2      *bool        `json:"extended-l2,omitempty"`
}

// bitmapInfo is Qcow2BitmapInfo (keys in qemu-img's order, imageInfo's
// comment).
type bitmapInfo struct {
	Flags       []string `json:"flags"`
	Name        string   `json:"name"`
	Granularity int64    `json:"granularity"`
}

// readBitmaps lists the persistent dirty bitmaps of an image as QEMU
// loads them: none while the autoclear bit says a program without bitmap
// support wrote the image since (QEMU then ignores them), and none if
// the directory cannot be read.
func readBitmaps(im *qcow2.Image) []format.BitmapEntry {
	h := im.Header()
	if h.AutoclearFeatures&format.AutoclearBitmaps == 0 {
		return nil
	}
	for _, e := range h.Extensions {
		if e.Type != format.ExtBitmaps {
			continue
		}
		ext, err := format.ParseBitmapsExt(e.Data)
		if err != nil {
			return nil
		}
		dir := make([]byte, ext.DirSize)
		if err := im.Device().Readv(int64(ext.DirOffset), [][]byte{dir}); err != nil {
			return nil
		}
		bms, err := format.ParseBitmapDirectory(dir, ext.N)
		if err != nil {
			return nil
		}
		return bms
	}
	return nil
}

func qcow2Specific(h format.Header) *qcow2Detail {
	d := &qcow2Detail{Compat: "0.10", CompressionType: "zlib", RefcountBits: 1 << h.RefcountOrder}
	if h.CompressionType != 0 {
		d.CompressionType = "zstd"
	}
	if h.Version >= 3 {
		lazy := h.CompatibleFeatures&format.CompatLazyRefcounts != 0
		corrupt := h.IncompatibleFeatures&format.IncompatCorrupt != 0
		ext := h.ExtendedL2()
		d.Compat, d.LazyRefcounts, d.Corrupt, d.ExtendedL2 = "1.1", &lazy, &corrupt, &ext
	}
	dataFileSpecific(d, h)
	return d
}

func writeSpecificHuman(w io.Writer, d *qcow2Detail, indent string) {
	fmt.Fprintf(w, "%scompat: %s\n", indent, d.Compat)
	fmt.Fprintf(w, "%scompression type: %s\n", indent, d.CompressionType)
	if d.LazyRefcounts != nil {
		fmt.Fprintf(w, "%slazy refcounts: %t\n", indent, *d.LazyRefcounts)
	}
	if len(d.Bitmaps) > 0 {
		fmt.Fprintf(w, "%sbitmaps:\n", indent)
		for i, b := range d.Bitmaps {
			fmt.Fprintf(w, "%s    [%d]:\n%s        flags:\n", indent, i, indent)
			for j, f := range b.Flags {
				fmt.Fprintf(w, "%s            [%d]: %s\n", indent, j, f)
			}
			fmt.Fprintf(w, "%s        name: %s\n%s        granularity: %d\n", indent, b.Name, indent, b.Granularity)
		}
	}
	fmt.Fprintf(w, "%srefcount bits: %d\n", indent, d.RefcountBits)
	if d.DataFile != nil {
		fmt.Fprintf(w, "%sdata file: %s\n", indent, *d.DataFile)
	}
	if d.Encrypt != nil {
		fmt.Fprintf(w, "%sencrypt:\n", indent)
		d.Encrypt.writeFields(w, indent+"    ")
	}
	if d.DataFileRaw != nil {
		fmt.Fprintf(w, "%sdata file raw: %t\n", indent, *d.DataFileRaw)
	}
	if d.Corrupt != nil {
		fmt.Fprintf(w, "%scorrupt: %t\n", indent, *d.Corrupt)
	}
	if d.ExtendedL2 != nil {
		fmt.Fprintf(w, "%sextended l2: %t\n", indent, *d.ExtendedL2)
	}
}

// diskUsage is the file's allocated size (st_blocks * 512).
func diskUsage(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}

// rawNodeClusterSize is the cluster size of the format node under raw
// nodes (qcow2, vpc, vmdk), which QEMU's raw driver reports as its own
// (raw_get_info), or 0.
func rawNodeClusterSize(img *imgopen.Opened) int64 {
	child, _ := imgopen.RawStack(img.Dev)
	if child == img.Dev {
		return 0
	}
	switch c := child.(type) {
	case *qcow2.Image:
		h := c.Header()
		return int64(h.ClusterSize())
	case *vhd.Disk:
		return c.BlockSize()
	case *vmdk.Disk:
		return c.ClusterSize()
	}
	return 0
}

// collectInfo gathers qemu-img info's fields for an open image.
func collectInfo(path string, size int64, img *imgopen.Opened) (*imageInfo, error) {
	if p, err := protocol.Path(path, false); err == nil {
		path = p // "file:x" is x, as QEMU names it
	}
	path = imgopen.SpecFilename(path) // a json: backing file: its file
	du := path
	if f := imgopen.SpecLeafFile(path); f != "" {
		du = f // a spec: the file its nodes end in
	}
	inf := &imageInfo{VirtualSize: size, Filename: path, Format: img.Format()}
	switch {
	case imgopen.IsNBDName(path):
		// QEMU names an export by its canonical URI, and knows no
		// disk size for it.
		inf.Filename = nbdCanonical(path)
	case onExport(img.Dev):
		// A spec whose file node is an export (a LUKS volume on
		// one): no disk size, no dirty flag, as in QEMU.
	default:
		du := diskUsage(du)
		inf.ActualSize = &du
		// QEMU's raw driver asks its file for the flag: a host file
		// says false, an NBD export nothing.
		clean := false
		inf.DirtyFlag = &clean
	}
	if img.VHD != nil {
		// vpc_get_info: a dynamic disk's block size, none for fixed.
		inf.ClusterSize = img.VHD.BlockSize()
	}
	if img.VMDK != nil {
		vmdkInfo(inf, path, img.VMDK)
	}
	if img.LUKS != nil {
		li := newLUKSInfo(img.LUKS.Header())
		li.Format = "" // the format is the image's
		inf.Encrypted = true
		inf.FormatSpecific = &formatSpecific{Type: "luks", LUKS: li}
	}
	im := img.Image
	if im == nil {
		if c := rawNodeClusterSize(img); c != 0 {
			inf.ClusterSize = c
		}
		return inf, nil
	}
	snaps, err := readSnapshots(im)
	if err != nil {
		return nil, err
	}
	inf.Snapshots = snaps
	h := im.Header()
	inf.ClusterSize = int64(h.ClusterSize())
	dirty := h.IncompatibleFeatures&format.IncompatDirty != 0
	inf.DirtyFlag = &dirty
	inf.Encrypted = im.Encrypted()
	inf.FormatSpecific = &formatSpecific{Type: "qcow2", Data: qcow2Specific(h)}
	if lh := im.EncryptionHeader(); lh != nil {
		inf.FormatSpecific.Data.Encrypt = newLUKSInfo(lh)
	} else if im.LegacyAES() {
		inf.FormatSpecific.Data.Encrypt = &aesInfo{Format: "aes"}
	}
	for _, b := range readBitmaps(im) {
		bi := bitmapInfo{Flags: []string{}, Name: b.Name, Granularity: int64(1) << b.GranularityBits}
		if b.Flags&format.BitmapInUse != 0 {
			bi.Flags = append(bi.Flags, "in-use")
		}
		if b.Flags&format.BitmapAuto != 0 {
			bi.Flags = append(bi.Flags, "auto")
		}
		inf.FormatSpecific.Data.Bitmaps = append(inf.FormatSpecific.Data.Bitmaps, bi)
	}
	if h.BackingFile != "" {
		inf.BackingFilename = h.BackingFile
		inf.FullBackingFilename = pathCombine(path, h.BackingFile)
		if strings.HasPrefix(path, "json:") {
			// A spec QEMU names by its JSON: the directory is its file
			// node's, and none (qemu-img info: "cannot determine actual
			// path") where the image is stored in a quorum or blkverify
			// node.
			inf.FullBackingFilename, _ = im.BackingPath()
		}
		inf.BackingFilenameFormat = h.BackingFormat
	}
	return inf, nil
}

func writeInfoHuman(w io.Writer, inf *imageInfo) {
	fmt.Fprintf(w, "image: %s\n", inf.Filename)
	fmt.Fprintf(w, "file format: %s\n", inf.Format)
	fmt.Fprintf(w, "virtual size: %s (%d bytes)\n", sizeToStr(inf.VirtualSize), inf.VirtualSize)
	if inf.ActualSize == nil {
		fmt.Fprintln(w, "disk size: unavailable")
	} else {
		fmt.Fprintf(w, "disk size: %s\n", sizeToStr(*inf.ActualSize))
	}
	if inf.Encrypted {
		fmt.Fprintln(w, "encrypted: yes")
	}
	if inf.ClusterSize != 0 {
		fmt.Fprintf(w, "cluster_size: %d\n", inf.ClusterSize)
	}
	if inf.DirtyFlag != nil && *inf.DirtyFlag {
		fmt.Fprintln(w, "cleanly shut down: no")
	}
	if inf.BackingFilename != "" {
		fmt.Fprintf(w, "backing file: %s", inf.BackingFilename)
		switch inf.FullBackingFilename {
		case "":
			fmt.Fprint(w, " (cannot determine actual path)")
		case inf.BackingFilename:
		default:
			fmt.Fprintf(w, " (actual path: %s)", inf.FullBackingFilename)
		}
		fmt.Fprintln(w)
		if inf.BackingFilenameFormat != "" {
			fmt.Fprintf(w, "backing file format: %s\n", inf.BackingFilenameFormat)
		}
	}
	if len(inf.Snapshots) > 0 {
		writeSnapshotsHuman(w, inf.Snapshots)
	}
	if inf.FormatSpecific != nil {
		fmt.Fprintln(w, "Format specific information:")
		switch {
		case inf.FormatSpecific.VMDK != nil:
			writeVMDKHuman(w, inf.FormatSpecific.VMDK, "    ")
		case inf.FormatSpecific.LUKS != nil:
			writeLUKSFields(w, inf.FormatSpecific.LUKS, "    ")
		default:
			writeSpecificHuman(w, inf.FormatSpecific.Data, "    ")
		}
	}
}

// emptyList finds an empty JSON list at the end of a line of
// MarshalIndent's output (not "[]" inside a string).
var emptyList = regexp.MustCompile(`(?m)^( *)(.*)\[\](,?)$`)

func writeJSON(w io.Writer, v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // QEMU writes & < > as they are
	enc.SetIndent("", "    ")
	if err := enc.Encode(v); err != nil {
		return err
	}
	// QEMU prints an empty list over two lines.
	b := emptyList.ReplaceAll(qemuJSONStrings(buf.Bytes()), []byte("$1$2[\n$1]$3"))
	_, err := w.Write(b)
	return err
}

// qemuJSONStrings rewrites the strings of encoding/json's output the way
// QEMU's JSON writer escapes them: every character outside printable
// ASCII as \uXXXX in upper-case hex (two UTF-16 halves past U+FFFF),
// DEL included; \b, \f, \n, \r, \t, \" and \\ stay short.
func qemuJSONStrings(b []byte) []byte {
	out := make([]byte, 0, len(b))
	in := false
	for i := 0; i < len(b); {
		c := b[i]
		switch {
		case !in:
			in = c == '"'
			out = append(out, c)
			i++
		case c == '"':
			in = false
			out = append(out, c)
			i++
		case c == '\\' && i+1 < len(b) && b[i+1] == 'u' && i+6 <= len(b):
			out = append(out, '\\', 'u')
			out = append(out, bytes.ToUpper(b[i+2:i+6])...)
			i += 6
		case c == '\\' && i+1 < len(b):
			out = append(out, c, b[i+1])
			i += 2
		case c == 0x7f:
			out = append(out, `\u007F`...)
			i++
		case c < 0x80:
			out = append(out, c)
			i++
		default:
			r, n := utf8.DecodeRune(b[i:])
			if r1, r2 := utf16.EncodeRune(r); r1 != utf8.RuneError {
				out = fmt.Appendf(out, "\\u%04X\\u%04X", r1, r2)
			} else {
				out = fmt.Appendf(out, "\\u%04X", r)
			}
			i += n
		}
	}
	return out
}

func runInfo(e *env, args []string) int {
	o, out, err := e.getoptOutput(args, "o:f:t:i:U", "metrics", "force-share", "backing-chain", "object:", "image-opts")
	if err != nil {
		return e.usageErr(err)
	}
	path, eo, err := oneImage(o)
	if err != nil {
		return e.usageErr(err)
	}
	// info reads no data: QEMU's needs no key, and opens no data file
	// (BDRV_O_NO_IO).
	eo.NoBacking, eo.NoKey, eo.NoDataFile = true, true, true
	// -t: a qimg extension (qemu-img has none here), read as convert's.
	cache, err := o.cacheOpt(false)
	if err != nil {
		return e.errorf(1, "%v", err)
	}
	spec, err := o.imageSpec(path, imgopen.Spec{Format: o.get("f", ""), Cache: cache.imgopen(),
		AIO: o.get("i", ""), ReadOnly: true, Opts: eo})
	if err != nil {
		return e.usageErr(err)
	}
	if err := refuseBackingOptions(spec); err != nil {
		return e.errorf(1, "%v", err) // info opens no backing file
	}
	path = spec.Path
	var infos []*imageInfo
	seen := map[string]bool{spec.Path: true} // the names opened, for a loop (qemu-img compares them)
	for {
		inf, code := e.infoOf(spec, o.has("metrics"))
		if code != 0 {
			return code
		}
		infos = append(infos, inf)
		// --backing-chain: each backing file in turn, with the format its
		// overlay names (probed if none), as qemu-img info.
		if !o.has("backing-chain") || inf.BackingFilename == "" {
			break
		}
		if inf.FullBackingFilename == "" {
			return e.errorf(1, "Could not determine absolute backing filename, but backing filename '%s' present", inf.BackingFilename)
		}
		if seen[inf.FullBackingFilename] {
			return e.errorf(1, "Backing file '%s' creates an infinite loop.", inf.FullBackingFilename)
		}
		seen[inf.FullBackingFilename] = true
		if len(infos) > maxChain {
			return e.errorf(1, "backing chain of '%s' is longer than %d images", path, maxChain)
		}
		spec.Path, spec.Format = inf.FullBackingFilename, inf.BackingFilenameFormat
	}
	if out == "json" {
		var v any = infos[0]
		if o.has("backing-chain") {
			v = infos
		}
		if err := writeJSON(e.stdout, v); err != nil {
			return e.errorf(1, "%v", err)
		}
		for _, inf := range infos {
			if inf.metrics != nil {
				inf.metrics(e.stdout)
			}
		}
		return 0
	}
	for i, inf := range infos {
		if i > 0 {
			fmt.Fprintln(e.stdout)
		}
		writeInfoHuman(e.stdout, inf)
		if inf.metrics != nil {
			inf.metrics(e.stdout)
		}
	}
	return 0
}

// maxChain bounds --backing-chain (a loop of backing files would not end).
const maxChain = 64

// infoOf opens one image and gathers its info; with metrics, the
// engine's metrics are kept to print after it.
func (e *env) infoOf(s imgopen.Spec, metrics bool) (*imageInfo, int) {
	img, err := openImage(s)
	if err != nil {
		return nil, e.errorf(1, "%v", err)
	}
	defer img.Close()
	size, err := img.Dev.Size()
	if err != nil {
		return nil, e.errorf(1, "%v", err)
	}
	inf, err := collectInfo(s.Path, size, img)
	if err != nil {
		return nil, e.errorf(1, "%s: %v", s.Path, err)
	}
	if s.QemuName != "" {
		inf.Filename = s.QemuName
	}
	if metrics && img.Image != nil {
		var b strings.Builder
		writeMetrics(&b, img.Image)
		text := b.String()
		inf.metrics = func(w io.Writer) { io.WriteString(w, text) }
	}
	return inf, 0
}

// writeMetrics prints the engine's cache state and counters.
func writeMetrics(w io.Writer, im *qcow2.Image) {
	l2, rc := im.CacheMetrics()
	fmt.Fprintln(w, "Engine cache metrics:")
	fmt.Fprintf(w, "    l2 cache: %s (hit ratio %.2f)\n", l2, l2.HitRatio())
	fmt.Fprintf(w, "    refcount cache: %s (hit ratio %.2f)\n", rc, rc.HitRatio())
	fmt.Fprintf(w, "Engine metrics:\n    %s\n", im.Metrics())
}
