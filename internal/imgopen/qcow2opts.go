package imgopen

import (
	"fmt"
	"math"
	"strconv"

	"github.com/qring/qring/internal/cnum"
	"github.com/qring/qring/qcow2"
)

// SizeParamText is the rest of QEMU's message for a size option that
// does not parse ("Parameter 'NAME' " before it).
const SizeParamText = "expects a non-negative number below 2^64\n" +
	"Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n" +
	"and exabytes, respectively."

// SizeParamError is QEMU's refusal of a size option's value.
func SizeParamError(name string) error {
	return &ValueError{Msg: fmt.Sprintf("Parameter '%s' %s", name, SizeParamText)}
}

// setQcow2Option applies the qcow2 open option k of a spec node (name:
// its full name) to o. Of QEMU's options, a value of the wrong type is
// refused as QEMU's option parser refuses it, before the driver: a size
// (SizeParamError), a number (cache-clean-interval, read as QEMU's
// qemu_strtou64: base 0, a negative number wraps, past UINT_MAX "too
// big"), a bool ("on", "yes", "true", "y" and their opposites). qring's
// own options keep the engine's messages.
func setQcow2Option(o *qcow2.Options, name, k, v string) error {
	switch k {
	case "l2-cache-size", "l2-cache-entry-size", "refcount-cache-size":
		if _, err := qcow2.ParseSize(v); err != nil {
			return SizeParamError(name)
		}
	case "cache-clean-interval":
		n, ok := cnum.Uint64(v)
		if !ok {
			return &ValueError{Msg: fmt.Sprintf("Parameter '%s' expects a number", name)}
		}
		if n > math.MaxUint32 {
			return &ValueError{Msg: "Cache clean interval too big"}
		}
		v = strconv.FormatUint(n, 10)
	case "pass-discard-request", "read-only":
		switch v {
		case "on", "yes", "true", "y":
			v = "on"
		case "off", "no", "false", "n":
			v = "off"
		default:
			return &ValueError{Msg: fmt.Sprintf("Parameter '%s' expects 'on' or 'off'", name)}
		}
	}
	if err := o.Set(k, v); err != nil {
		return fmt.Errorf("image spec: %s: %w", name, err)
	}
	return nil
}
