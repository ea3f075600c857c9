package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/internal/secret"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/qcow2/format"
)

// measureInfo is qemu-img measure's BlockMeasureInfo.
type measureInfo struct {
	Bitmaps        *int64 `json:"bitmaps,omitempty"`
	Required       uint64 `json:"required"` // QEMU's uint64: a raw 2^63-1 is 2^63
	FullyAllocated uint64 `json:"fully-allocated"`
}

// MarshalJSON writes the sizes as QEMU's QAPI does, as int64s (a raw
// 2^63 is -9223372036854775808 there, 9223372036854775808 in the human
// output).
func (m *measureInfo) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Bitmaps        *int64 `json:"bitmaps,omitempty"`
		Required       int64  `json:"required"`
		FullyAllocated int64  `json:"fully-allocated"`
	}{m.Bitmaps, int64(m.Required), int64(m.FullyAllocated)})
}

// measureTarget is the output format and its -o options, as measure
// reads them.
type measureTarget struct {
	format        string // raw, qcow2 or luks (measureLUKSTarget)
	clusterSize   int64
	refcountOrder uint
	v3            bool
	fullPrealloc  bool   // preallocation=full or falloc
	l2eSize       int64  // an L2 entry's bytes: 16 with extended_l2=on, else 8
	backing       bool   // backing_file given
	cryptBytes    int64  // the LUKS header area of encrypt.format=luks, or a luks volume's
	keySecret     string // encrypt.key-secret of encrypt.format=luks: it must name a secret
	optSize       uint64 // -o size= (0: not given), checked against an input's measure
}

func parseMeasureTarget(format string, optStrs []string) (*measureTarget, error) {
	t := &measureTarget{format: format}
	if format == "vpc" || format == "vmdk" {
		return nil, fmt.Errorf("Block driver '%s' does not support size measurement", format)
	}
	if format != "raw" && format != "qcow2" {
		return nil, outFormatErrorOf(format, "qcow2, raw")
	}
	var co qcow2.CreateOptions
	clusterGiven := false      // cluster_size=0 is refused, not the default
	late := map[string]error{} // a refused compat or preallocation, unless given again
	for _, s := range optStrs {
		kv, err := qcow2.SplitOptions(s)
		if err != nil {
			return nil, err
		}
		for _, p := range kv {
			delete(late, p[0])
			if err := setMeasureOption(&co, format, p[0], p[1]); err != nil {
				if p[0] != "compat" && p[0] != "preallocation" {
					return nil, err
				}
				late[p[0]] = err // qcow2_measure reads the last value
			}
			if p[0] == "cluster_size" {
				clusterGiven = true
			}
			if p[0] == "size" {
				t.optSize, _ = qcow2.ParseSizeFull(p[1]) // its type checked
			}
		}
	}
	for _, k := range []string{"compat", "preallocation"} {
		if err := late[k]; err != nil {
			return nil, err
		}
	}
	t.clusterSize = int64(co.ClusterSize)
	if t.clusterSize == 0 && !clusterGiven {
		t.clusterSize = 65536
	}
	if t.clusterSize < 512 || t.clusterSize > 2<<20 || t.clusterSize&(t.clusterSize-1) != 0 {
		return nil, fmt.Errorf("Cluster size must be a power of two between 512 and 2048k")
	}
	rb := co.RefcountBits
	if rb == 0 {
		rb = 16
	}
	if rb > 64 || rb&(rb-1) != 0 {
		return nil, fmt.Errorf("Refcount width must be a power of two and may not exceed 64 bits")
	}
	for 1<<t.refcountOrder < rb {
		t.refcountOrder++
	}
	t.v3 = co.Compat != "0.10"
	if !t.v3 && rb != 16 {
		return nil, fmt.Errorf("Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)")
	}
	t.fullPrealloc = co.Preallocation == qcow2.PreallocFull || co.Preallocation == qcow2.PreallocFalloc
	t.l2eSize = 8
	if co.ExtendedL2 {
		if t.clusterSize < 16384 {
			return nil, fmt.Errorf("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes")
		}
		t.l2eSize = 16
	}
	t.backing = co.BackingFile != ""
	var err error
	if t.cryptBytes, err = luksAreaBytes(&co); err != nil {
		return nil, err
	}
	if t.cryptBytes > 0 {
		t.keySecret = co.Encrypt.KeySecret
	}
	return t, nil
}

// errMeasureTooLarge is qcow2_measure's refusal of a virtual size whose
// L1 table QEMU would not open.
var errMeasureTooLarge = errors.New("The image size is too large (try using a larger cluster size)")

// optSizeTooLarge is qcow2_measure's check of -o size= when an input image
// is measured: its L1 table must fit, though the input's size is what is
// measured (with --size, qemu-img sets the size option to it instead). In
// QEMU's uint64: rounded up to a cluster, sizes in the last cluster below
// 2^64 wrap to 0 and pass.
func (t *measureTarget) optSizeTooLarge() bool { return t.l1TooLarge(t.optSize) }

// l1TooLarge is qcow2_measure's check of a virtual size, in its uint64.
func (t *measureTarget) l1TooLarge(size uint64) bool {
	cs := uint64(t.clusterSize)
	vs := (size + cs - 1) &^ (cs - 1)
	l2 := (vs/cs + cs/uint64(t.l2eSize) - 1) / (cs / uint64(t.l2eSize))
	return l2*8 > maxL1Bytes
}

// setMeasureOption sets -o k=v for a measure of format (raw or qcow2) as
// qemu-img measure reads it: the option must be one of the format's
// create options, of its type (QEMU's option parser, whose refusal names
// the format on a second line); then qcow2_measure reads only what sizes
// the image: compat only as 0.10 or 1.1, preallocation as one of its
// modes, and compression_type not at all.
func setMeasureOption(co *qcow2.CreateOptions, format, k, v string) error {
	opts := qcow2CreateOptions
	if format == "raw" {
		opts = rawCreateOptions
	}
	if isHintOption(k) {
		// The file driver's options, which qemu-img measure takes
		// beside the format's (checked, then not read).
		opts = fileHintOptions
	}
	v, err := checkOptionType(opts, k, v)
	if err != nil {
		return fmt.Errorf("%v\nInvalid options for file format '%s'", err, format)
	}
	switch k {
	case "compat":
		if v != "0.10" && v != "1.1" {
			return fmt.Errorf("Invalid compatibility level: '%s'", v)
		}
	case "preallocation":
		switch v {
		case "off", "metadata", "falloc", "full":
		default:
			if format == "raw" {
				return nil // raw's measure does not read it
			}
			return fmt.Errorf("invalid parameter value: %s", v)
		}
	case "compression_type", "size", "nocow", "extent_size_hint":
		return nil // size: measureTarget.optSize
	}
	if err := co.Set(k, v); err != nil {
		if q, ok := qemuParamNames[k]; ok && !errors.Is(err, qcow2.ErrUnsupported) {
			return &enumError{param: q, value: v} // QEMU's words, as create's
		}
		return err
	}
	return nil
}

func roundUp(n, a int64) int64 { return (n + a - 1) / a * a }

func divRoundUp(n, d int64) int64 { return (n + d - 1) / d }

// refcountMetadataSize is QEMU's qcow2_refcount_metadata_size (without
// the generous increase): the refcount table and blocks that count
// clusters clusters and themselves, found as a fixed point.
func refcountMetadataSize(clusters, clusterSize int64, refcountOrder uint) int64 {
	perTable := clusterSize / 8
	perBlock := clusterSize * 8 / (1 << refcountOrder)
	var table, blocks, n, last int64
	for {
		last = n
		blocks = divRoundUp(clusters+table+blocks, perBlock)
		table = divRoundUp(blocks, perTable)
		n = clusters + blocks + table
		if n == last {
			break
		}
	}
	return (blocks + table) * clusterSize
}

// qcow2PreallocSize is QEMU's qcow2_calc_prealloc_size: a fully
// allocated image of size bytes (header, L2 and L1 tables, refcounts,
// data).
func qcow2PreallocSize(size, clusterSize int64, refcountOrder uint, l2eSize int64) int64 {
	aligned := roundUp(size, clusterSize)
	meta := clusterSize // header
	nl2e := roundUp(aligned/clusterSize, clusterSize/l2eSize)
	meta += nl2e * l2eSize
	nl1e := roundUp(nl2e*l2eSize/clusterSize, clusterSize/8)
	meta += nl1e * 8
	meta += refcountMetadataSize((meta+aligned)/clusterSize, clusterSize, refcountOrder)
	return meta + aligned
}

// maxL1Bytes is QEMU's QCOW_MAX_L1_SIZE.
const maxL1Bytes = 32 << 20

// measureQcow2 is QEMU's qcow2_measure. virtual is the --size (or the
// input's size) and data the bytes the input needs copied (-1 without
// an input image); fromQcow2 (a qcow2 v3 input) adds the bitmaps field
// as QEMU does for a v3 target.
func measureQcow2(t *measureTarget, virtual, data int64, fromQcow2 bool) (*measureInfo, error) {
	if t.l1TooLarge(uint64(virtual)) { // before any int64 arithmetic on it
		return nil, errMeasureTooLarge
	}
	cs := t.clusterSize
	vs := roundUp(virtual, cs)
	required := int64(0)
	if data >= 0 {
		required = data
		if t.backing {
			required = vs
		}
	}
	if t.fullPrealloc {
		required = vs
	}
	full := qcow2PreallocSize(vs, cs, t.refcountOrder, t.l2eSize)
	full += roundUp(t.cryptBytes, cs) // QEMU: luks_payload_size
	m := &measureInfo{FullyAllocated: uint64(full), Required: uint64(full - vs + required)}
	if t.v3 && fromQcow2 {
		m.Bitmaps = new(int64)
	}
	return m, nil
}

// measureData is the data loop of qcow2_measure over an input's
// extents: zero ranges are skipped, data is counted up to the end of its
// target cluster (plus, as QEMU does, the offset into the first one).
func measureData(ext []qcow2.MapEntry, size, cs int64) int64 {
	var required int64
	i := 0
	for off := int64(0); off < size; {
		for i < len(ext) && ext[i].Start+ext[i].Length <= off {
			i++
		}
		if i == len(ext) {
			break
		}
		e := ext[i]
		if e.Start > off { // a gap in the extents: unallocated, zeros
			off = e.Start
			continue
		}
		pnum := e.Start + e.Length - off
		if !e.Zero && e.Data && e.Present {
			pnum = roundUp(off+pnum, cs) - off
			required += off%cs + pnum
		}
		off += pnum
	}
	return required
}

func runMeasure(e *env, args []string) int {
	o, out, err := e.getoptOutput(args, "f:O:o:l:U", "size:", "image-opts", "object:", "force-share")
	if err != nil {
		return e.usageErr(err)
	}
	if err := o.optionLists(); err != nil {
		return e.errorf(1, "%v", err)
	}
	if len(o.args) > 1 {
		return e.errorf(1, "At most one filename argument is allowed.")
	}
	if o.has("size") && len(o.args) > 0 {
		return e.errorf(1, "--size N cannot be used together with a filename.")
	}
	if !o.has("size") && len(o.args) != 1 {
		return e.errorf(1, "Either --size N or one filename must be specified.")
	}
	var m *measureInfo
	if o.has("size") {
		n, err := cvtnum("image size", o.get("size", ""))
		if err != nil {
			return e.errorf(1, "%v", err)
		}
		t, err := measureTargetOf(o)
		if err != nil {
			return e.errorf(1, "%v", err)
		}
		m, err = measureSize(t, n, -1, false)
		if err != nil {
			return e.errorf(1, "%v", err)
		}
	} else {
		snap, err := o.snapshotOpt()
		if err != nil {
			return e.errorf(1, "%v", err)
		}
		spec, err := o.imageSpec(o.args[0], imgopen.Spec{Format: o.get("f", ""), ReadOnly: true,
			Opts: qcow2.Options{ForceShare: o.forceShare()}})
		if err != nil {
			return e.usageErr(err)
		}
		// As qemu-img's img_measure: the image is opened (and its
		// snapshot loaded) before the output format and its options
		// are looked at, so that an image that does not open is the
		// error reported.
		img, err := openMeasured(spec, snap)
		if err != nil {
			return e.errorf(1, "%v", err)
		}
		t, err := measureTargetOf(o)
		if err == nil {
			m, err = measureFile(t, img)
		}
		img.Close()
		if err != nil {
			return e.errorf(1, "%v", err)
		}
	}
	if out == "json" {
		if err := writeJSON(e.stdout, m); err != nil {
			return e.errorf(1, "%v", err)
		}
		return 0
	}
	writeMeasureHuman(e.stdout, m)
	return 0
}

// measureTargetOf is the output format and its -o options.
func measureTargetOf(o *opts) (*measureTarget, error) {
	if o.get("O", "raw") == "luks" {
		return measureLUKSTarget(o)
	}
	t, err := parseMeasureTarget(o.get("O", "raw"), o.vals["o"])
	if err == nil && t.keySecret != "" {
		// QEMU's measure sets up the cipher: the secret must exist.
		var st *secret.Store
		if st, err = o.secrets(); err == nil {
			_, err = st.Passphrase(t.keySecret)
		}
	}
	return t, err
}

// measureSize dispatches on the target format.
func measureSize(t *measureTarget, virtual, data int64, fromQcow2 bool) (*measureInfo, error) {
	if t.format == "qcow2" {
		return measureQcow2(t, virtual, data, fromQcow2)
	}
	if t.format == "luks" {
		// block_crypto_measure: the payload offset more than the size
		// (as given, or the input's length), allocated or not.
		v := uint64(t.cryptBytes) + uint64(virtual)
		return &measureInfo{Required: v, FullyAllocated: v}, nil
	}
	// raw_measure: the input's length (or the size rounded to sectors),
	// allocated or not.
	v := uint64(virtual)
	if data < 0 {
		v = (v + 511) &^ 511
	}
	return &measureInfo{Required: v, FullyAllocated: v}, nil
}

// openMeasured opens the image to measure, at its snapshot snap if not
// nil.
func openMeasured(spec imgopen.Spec, snap *imgopen.SnapshotParam) (*imgopen.Opened, error) {
	img, err := openImage(spec)
	if err != nil {
		return nil, err
	}
	if snap != nil {
		if err := img.LoadSnapshot(*snap); err != nil {
			img.Close()
			return nil, err
		}
	}
	return img, nil
}

// measureFile measures the conversion of an open image.
func measureFile(t *measureTarget, img *imgopen.Opened) (*measureInfo, error) {
	size, err := img.Dev.Size()
	if err != nil {
		return nil, err
	}
	if t.format == "qcow2" && t.optSizeTooLarge() {
		return nil, errMeasureTooLarge
	}
	if t.format == "raw" || t.format == "luks" {
		return measureSize(t, size, size, false)
	}
	ext, err := mapExtents(img)
	if err != nil {
		return nil, err
	}
	v3 := img.Image != nil && img.Image.Header().Version >= 3
	m, err := measureSize(t, size, measureData(ext, size, t.clusterSize), v3)
	if err == nil && m.Bitmaps != nil {
		*m.Bitmaps = bitmapsSize(readBitmaps(img.Image), size, t.clusterSize)
	}
	return m, err
}

// bitmapsSize is what qcow2_measure reserves for the source's persistent
// bitmaps in a target of cluster size cs: each bitmap whole (one bit
// per granule of the disk), its table, and the directory.
func bitmapsSize(bms []format.BitmapEntry, size, cs int64) int64 {
	var total, dir int64
	for _, b := range bms {
		bits := (size + 1<<b.GranularityBits - 1) >> b.GranularityBits
		clusters := ((bits+7)/8 + cs - 1) / cs
		total += clusters*cs + roundUp(clusters*8, cs)
		dir += roundUp(24+int64(len(b.Name)), 8)
	}
	return total + roundUp(dir, cs)
}

func writeMeasureHuman(w io.Writer, m *measureInfo) {
	fmt.Fprintf(w, "required size: %d\n", m.Required)
	fmt.Fprintf(w, "fully allocated size: %d\n", m.FullyAllocated)
	if m.Bitmaps != nil {
		fmt.Fprintf(w, "bitmaps size: %d\n", *m.Bitmaps)
	}
}
