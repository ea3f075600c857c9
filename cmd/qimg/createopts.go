package main

import (
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strconv"

	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/qcow2"
)

// setCreateOption sets one qcow2 create option. compression_type is zlib
// or zstd; extended_l2 (on, off) creates images with subclusters or
// without.
func setCreateOption(o *qcow2.CreateOptions, k, v string) error {
	v, err := checkOptionType(qcow2CreateOptions, k, v)
	if err != nil {
		return err
	}
	if err := setQcow2Option(o, k, v); err != nil {
		if q, ok := qemuParamNames[k]; ok && !errors.Is(err, qcow2.ErrUnsupported) {
			return &enumError{param: q, value: v}
		}
		return err
	}
	return nil
}

// enumError is a value an enum option does not have, in QEMU's words.
// qemu-img create refuses it only when the driver creates the image,
// after its "Formatting" line (the option parser takes any string).
type enumError struct{ param, value string }

func (e *enumError) Error() string {
	return fmt.Sprintf("Parameter '%s' does not accept value '%s'", e.param, e.value)
}

// qemuParamNames are the names QEMU's qcow2 driver gives the create
// options whose values are enums when it refuses a value.
var qemuParamNames = map[string]string{
	"compat":                 "version",
	"preallocation":          "preallocation",
	"compression_type":       "compression-type",
	"encrypt.format":         "format",
	"encrypt.cipher-alg":     "cipher-alg",
	"encrypt.cipher-mode":    "cipher-mode",
	"encrypt.ivgen-alg":      "ivgen-alg",
	"encrypt.hash-alg":       "hash-alg",
	"encrypt.ivgen-hash-alg": "ivgen-hash-alg",
}

// optionSize is -o size=v (checked by checkOptionType) as qemu-img
// create takes it: any size qemu_strtosz parses, cast to the int64 QEMU
// keeps it in, so 2^63 and up are negative, and 2^64-1 is -1, QEMU's "no
// size given". Sizes the engine does not take (past 2^62, negative) are
// refused in QEMU's words when the image is created (create_huge.go).
func optionSize(v string) int64 {
	n, _ := qcow2.ParseSizeFull(v)
	return int64(n)
}

// errSizeParam is the rest of QEMU's message for a size option that does
// not parse.
const errSizeParam = imgopen.SizeParamText

// checkOptionType checks -o k=v against the type of option k in opts, as
// QEMU's option parser does before a driver sees them, with its messages:
// an option not in opts, a size, number or bool that does not parse. It
// returns v, a bool spelt as QEMU accepts it (y, n) as on or off.
func checkOptionType(opts []createOption, k, v string) (string, error) {
	i := slices.IndexFunc(opts, func(c createOption) bool { return c.name == k })
	if i < 0 {
		return v, fmt.Errorf("Invalid parameter '%s'", k)
	}
	switch opts[i].typ {
	case "size":
		n, err := qcow2.ParseSizeFull(v)
		if errors.Is(err, qcow2.ErrSizeRange) {
			return v, fmt.Errorf("Value '%s' is out of range for parameter '%s'", v, k)
		}
		if err != nil || (n > 1<<62 && k != "size") {
			// Past 2^62 only the image size goes on (optionSize);
			// other size options keep the parser's words.
			return v, fmt.Errorf("Parameter '%s' %s", k, errSizeParam)
		}
	case "num":
		n, err := qcow2.ParseNumber(v)
		if err != nil {
			return v, fmt.Errorf("Parameter '%s' expects a number", k)
		}
		return strconv.FormatUint(n, 10), nil // QEMU's base 0: 0x10, 020
	case "bool (on/off)":
		switch v {
		case "on", "yes", "true", "y":
			return "on", nil
		case "off", "no", "false", "n":
			return "off", nil
		}
		return v, fmt.Errorf("Parameter '%s' expects 'on' or 'off'", k)
	}
	return v, nil
}

// checkQcow2Create refuses what QEMU's qcow2 driver refuses when it
// creates the image (after qemu-img create printed its Formatting line),
// with its messages. clusterGiven says cluster_size was given: 0 is then
// refused, not the default.
func checkQcow2Create(o *qcow2.CreateOptions, given map[string]bool) error {
	const v3 = " (use version=v3 or greater)"
	v2 := o.Compat == "0.10"
	if v2 && o.ExtendedL2 {
		// QEMU's first check, before the cluster size's.
		return errors.New("Extended L2 entries are only supported with compatibility level 1.1 and above" + v3)
	}
	if cs := o.ClusterSize; (cs != 0 || given["cluster_size"]) && (bits.OnesCount(uint(cs)) != 1 || cs < 512 || cs > 2<<20) {
		return errors.New("Cluster size must be a power of two between 512 and 2048k")
	}
	if cs := o.ClusterSize; o.ExtendedL2 && cs != 0 && cs < 16<<10 {
		return errors.New("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes")
	}
	if o.BackingFormat != "" && o.BackingFile == "" {
		return errors.New("Backing format cannot be used without backing file")
	}
	if o.BackingFile != "" && o.Preallocation != "" && o.Preallocation != qcow2.PreallocOff && !o.ExtendedL2 {
		return errors.New("Backing file and preallocation can only be used at the same time if extended_l2 is on")
	}
	if o.LazyRefcounts && v2 {
		return errors.New("Lazy refcounts only supported with compatibility level 1.1 and above" + v3)
	}
	if rb := o.RefcountBits; (rb != 0 || given["refcount_bits"]) && (bits.OnesCount(uint(rb)) != 1 || rb > 64) {
		return errors.New("Refcount width must be a power of two and may not exceed 64 bits")
	}
	if rb := o.RefcountBits; v2 && rb != 0 && rb != 16 {
		return errors.New("Different refcount widths than 16 bits require compatibility level 1.1 or above" + v3)
	}
	if err := checkDataFileCreate(o); err != nil {
		return err
	}
	if v2 && o.CompressionType != "" && o.CompressionType != "zlib" {
		return errors.New("Non-zlib compression type is only supported with compatibility level 1.1 and above" + v3)
	}
	return nil
}

// setQcow2Option sets one qcow2 create option whose type checked.
func setQcow2Option(o *qcow2.CreateOptions, k, v string) error {
	switch k {
	case "size":
		o.Size = optionSize(v)
		return nil
	case "compression_type":
		switch v {
		case "zlib", "zstd":
			return o.Set(k, v)
		}
		return fmt.Errorf("invalid compression_type '%s' (zlib, zstd)", v)
	case "refcount_bits":
		// Any number (its type checked): the driver refuses 0, a width
		// that is not a power of two or past 64 (checkQcow2Create),
		// after "Formatting" shows it as given.
		n, err := qcow2.ParseNumber(v)
		if err != nil {
			return err
		}
		o.RefcountBits = int(min(n, 1<<20))
		return nil
	case "extended_l2":
		switch v {
		case "off", "false":
			o.ExtendedL2 = false
			return nil
		case "on", "true":
			o.ExtendedL2 = true
			return nil
		}
		return fmt.Errorf("invalid extended_l2 '%s' (on, off)", v)
	}
	return o.Set(k, v)
}
