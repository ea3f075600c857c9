package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/internal/protocol"
	"github.com/qring/qring/qcow2"
)

// opts is the result of getopt: option values by name (the letter of a
// short option, the name of a long one) and the positional arguments.
type opts struct {
	vals map[string][]string
	args []string
	// order is every option and its value as they came: o.order[i][0]
	// the option's name, [1] its value.
	order [][2]string
	// repairLog prints the lines a writable open's repair of a dirty
	// image writes (qcow2.Options.RepairLog), on the command's stderr as
	// qemu-img prints them; nil prints none.
	repairLog func(string)
}

// getopt is getopt for e's command: its opts print repair lines on e's
// stderr.
func (e *env) getopt(args []string, shorts string, longs ...string) (*opts, error) {
	o, err := getopt(args, shorts, longs...)
	if o != nil {
		o.repairLog = e.repairLine
	}
	return o, err
}

// getoptOutput is getoptOutput for e's command (see env.getopt).
func (e *env) getoptOutput(args []string, shorts string, longs ...string) (*opts, string, error) {
	o, out, err := getoptOutput(args, shorts, longs...)
	if o != nil {
		o.repairLog = e.repairLine
	}
	return o, out, err
}

// repairLine prints one line of a dirty image's repair on open.
func (e *env) repairLine(s string) { fmt.Fprintln(e.stderr, s) }

func (o *opts) has(k string) bool { _, ok := o.vals[k]; return ok }

// get returns the last value of k, or def.
func (o *opts) get(k, def string) string {
	if v := o.vals[k]; len(v) > 0 {
		return v[len(v)-1]
	}
	return def
}

// optionLists refuses an -o list qemu-img refuses (is_valid_option_list:
// empty, a leading comma, or an odd run of trailing commas, which would
// end in an escaped one), before the command does anything: an empty
// list created or converted over an existing file where qemu-img stops.
func (o *opts) optionLists() error {
	for _, s := range o.vals["o"] {
		t := strings.TrimRight(s, ",")
		if s == "" || s[0] == ',' || (len(s)-len(t))%2 != 0 {
			return fmt.Errorf("Invalid option list: %s", s)
		}
	}
	return nil
}

// optError is an option getopt refuses: the word it is in, its letter
// ('-' for a long option, as glibc's getopt without long options names
// it), and whether it lacks its value rather than being unknown. Its
// message is qemu-img's; qimg io's commands word it as qemu-io's
// (io_errors.go).
type optError struct {
	word    string
	c       byte
	missing bool
}

func (e *optError) Error() string {
	if e.missing {
		return fmt.Sprintf("missing argument for option '%s'", e.word)
	}
	return fmt.Sprintf("unrecognized option '%s'", e.word)
}

// getopt parses args like GNU getopt_long with permutation: options may
// come before or after positional arguments; "--" ends options. Its
// errors are qemu-img's (which names the whole word: '-qZ'). shorts is
// a getopt string ("f:pq": f takes a value); longs lists long options, a
// trailing ':' meaning a value ("output:").
func getopt(args []string, shorts string, longs ...string) (*opts, error) {
	o := &opts{vals: map[string][]string{}}
	shortArg := map[byte]bool{}
	for i := 0; i < len(shorts); i++ {
		c := shorts[i]
		has := i+1 < len(shorts) && shorts[i+1] == ':'
		shortArg[c] = has
		if has {
			i++
		}
	}
	longArg := map[string]bool{}
	for _, l := range longs {
		longArg[strings.TrimSuffix(l, ":")] = strings.HasSuffix(l, ":")
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			o.args = append(o.args, args[i+1:]...)
			return o, nil
		case strings.HasPrefix(a, "--"):
			name, val, hasVal := strings.Cut(a[2:], "=")
			need, ok := longArg[name]
			if !ok {
				return nil, &optError{word: a, c: '-'}
			}
			if need && !hasVal {
				if i+1 >= len(args) {
					return nil, &optError{word: a, c: '-', missing: true}
				}
				i++
				val = args[i]
			} else if !need && hasVal {
				return nil, fmt.Errorf("option '--%s' doesn't allow an argument", name)
			}
			o.vals[name] = append(o.vals[name], val)
			o.order = append(o.order, [2]string{name, val})
		case len(a) > 1 && a[0] == '-':
			for j := 1; j < len(a); j++ {
				c := a[j]
				need, ok := shortArg[c]
				if !ok {
					return nil, &optError{word: a, c: c}
				}
				if !need {
					o.vals[string(c)] = append(o.vals[string(c)], "")
					o.order = append(o.order, [2]string{string(c), ""})
					continue
				}
				val := a[j+1:]
				if val == "" {
					if i+1 >= len(args) {
						return nil, &optError{word: a, c: c, missing: true}
					}
					i++
					val = args[i]
				}
				o.vals[string(c)] = append(o.vals[string(c)], val)
				o.order = append(o.order, [2]string{string(c), val})
				break
			}
		default:
			o.args = append(o.args, a)
		}
	}
	return o, nil
}

// getoptOutput is getopt for the commands that print in two formats: it
// adds the --output option and returns its validated value too.
func getoptOutput(args []string, shorts string, longs ...string) (*opts, string, error) {
	o, err := getopt(args, shorts, append(longs, "output:")...)
	if err != nil {
		return nil, "", err
	}
	f := o.get("output", "human")
	if f != "human" && f != "json" {
		return nil, "", fmt.Errorf("--output must be used with human or json as argument.")
	}
	return o, f, nil
}

// cvtnum is qemu-img's cvtnum (cvtnum_full from 0 to INT64_MAX): s as a
// size, or qemu-img's message naming what it is (what: "image size").
// Sizes past the engine's 2^62 pass: each caller refuses what it cannot
// take in QEMU's words (create_huge.go for create's).
func cvtnum(what, s string) (int64, error) {
	n, err := qcow2.ParseSizeFull(s)
	if errors.Is(err, qcow2.ErrSizeRange) || (err == nil && n > math.MaxInt64) {
		return 0, fmt.Errorf("Invalid %s specified. Must be between 0 and %d.", what, int64(math.MaxInt64))
	}
	if err != nil {
		return 0, fmt.Errorf("Invalid %s specified. You may use k, M, G, T, P or E suffixes for\n"+
			"kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.", what)
	}
	return int64(n), nil
}

// sizeToStr is QEMU's size_to_str: "1 GiB", "196 KiB", "1.5 MiB".
func sizeToStr(v int64) string {
	suffixes := []string{"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"}
	_, e := math.Frexp(float64(v) / (1000.0 / 1024.0))
	i := (e - 1) / 10
	if i < 0 {
		i = 0
	}
	div := float64(uint64(1) << (uint(i) * 10))
	return fmt.Sprintf("%s %sB", cFormatG(float64(v)/div), suffixes[i])
}

// cFormatG is C's "%0.3g" for values below 1000.
func cFormatG(f float64) string {
	return strconv.FormatFloat(f, 'g', 3, 64)
}

// cvtstr is qemu-io's cvtstr: "68.359 KiB", "1 bytes", "180.583646 bytes".
func cvtstr(v float64) string {
	units := []struct {
		n   float64
		suf string
	}{{1 << 60, " EiB"}, {1 << 50, " PiB"}, {1 << 40, " TiB"}, {1 << 30, " GiB"}, {1 << 20, " MiB"}, {1 << 10, " KiB"}}
	s, suf := "", " bytes"
	for _, u := range units {
		if v >= u.n {
			s, suf = fmt.Sprintf("%.3f", v/u.n), u.suf
			break
		}
	}
	if s == "" {
		s = fmt.Sprintf("%f", v)
	}
	if i := strings.Index(s, ".000"); i >= 0 {
		s = s[:i]
	}
	return s + suf
}

// noReserve is the engine's PreallocSize for the commands that change
// metadata only (snapshot, bitmap, resize): no space reserved ahead, as
// qemu-img reserves none. They take a few clusters at most (resize
// --preallocation=metadata aside), which a reserve does not speed up,
// and on a nearly full ext4 a reservation that fails part-way keeps the
// blocks it got until Close: a snapshot -c, bitmap --add or resize with
// 4 to 64 KiB free then failed where qemu-img succeeds.
const noReserve = -1

// openImage opens an image with the io_uring backend (imgopen), with
// qemu-img's messages (an *OpenError); Image is nil for raw images.
func openImage(s imgopen.Spec) (*imgopen.Opened, error) {
	name := s.Path // as given: the outer "Could not open" names it
	if s.Name != "" {
		name = s.Name // the --image-opts argument
	}
	if s.Name == "" && imgopen.IsNBDName(s.Path) {
		// An NBD export, opened as QEMU's nbd driver (a node of the
		// json: spec; its format probed unless given).
		s.Path = imgopen.NBDSpec(s.Path, "")
	}
	spec := s.Name // an --image-opts argument
	if strings.HasPrefix(s.Path, "json:") {
		spec = s.Path
	}
	if !s.ReadOnly && spec != "" && imgopen.SpecReadOnly(spec) {
		// read-only=on in a writable command's options: QEMU's open
		// refuses it (the engine would open read-only and fail later,
		// or a raw file be truncated by resize).
		return nil, &OpenError{Path: name, Err: errors.New("Block node is read-only")}
	}
	if strings.HasPrefix(s.Path, "json:") {
		// QEMU's json: pseudo-protocol: a driver tree (a backing file
		// name in --backing-chain, or given as the file): the spec names
		// the formats, so -f does not apply. Not a mirror, which writes
		// its target (qemu-img has no such driver either; a header's
		// name would otherwise choose a file to overwrite).
		if imgopen.SpecHasDriver(s.Path, "mirror") {
			return nil, &OpenError{Path: name, Err: formatError("mirror")}
		}
		img, err := imgopen.OpenSpec(s.Path, imgopen.Spec{Format: s.Format, Cache: s.Cache, AIO: s.AIO, ReadOnly: s.ReadOnly,
			Secrets: s.Secrets, Opts: s.Opts})
		if err != nil {
			return nil, &OpenError{Path: name, Err: specFileError(err)}
		}
		return img, nil
	}
	if s.Name == "" {
		// A file name as given ("file:x" is x); an --image-opts
		// file.filename (s.Name the argument) is the file's own.
		path, err := protocol.Path(name, false)
		if err != nil {
			return nil, &OpenError{Path: name, Err: err}
		}
		s.Path = path
	}
	if s.Format != "" && s.Format != "qcow2" && s.Format != "raw" && s.Format != "vpc" && s.Format != "vmdk" && s.Format != "luks" {
		return nil, &OpenError{Path: name, Err: formatError(s.Format)}
	}
	if _, err := os.Stat(s.Path); err != nil {
		if oe := hostOpenError(s.Path, err); oe != nil {
			return nil, &OpenError{Path: name, Err: oe}
		}
		return nil, &OpenError{Path: name, Err: err}
	}
	if s.Format == "qcow2" && !hasQcow2Magic(s.Path) {
		return nil, &OpenError{Path: name, Err: errNotQcow2}
	}
	img, err := imgopen.Open(s)
	if err != nil {
		if oe := hostOpenError(s.Path, err); oe != nil {
			err = oe
		}
		return nil, &OpenError{Path: name, Err: err}
	}
	return img, nil
}

// hostPath is the host file an image name stands for ("file:x" is x),
// or the name itself when it names none.
func hostPath(name string) string {
	if p, err := protocol.Path(name, false); err == nil {
		return p
	}
	return name
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// pathCombine is QEMU's bdrv_make_absolute_filename: a relative backing
// name is taken relative to the directory part of the image's name,
// textually; an absolute one, or one with a protocol prefix, as it is.
func pathCombine(base, name string) string {
	if name == "" || strings.HasPrefix(name, "/") || protocol.HasPrefix(name) {
		return name
	}
	if i := strings.LastIndexByte(base, '/'); i >= 0 {
		return base[:i+1] + name
	}
	return name
}

// oneImage returns the single image argument of info/check/map and the
// engine options of its -o flags.
func oneImage(o *opts) (string, qcow2.Options, error) {
	if len(o.args) != 1 {
		return "", qcow2.Options{}, fmt.Errorf("Expecting one image file name")
	}
	eo, err := engineOpts(o)
	return o.args[0], eo, err
}

// engineOpts parses every -o OPTS of an opening subcommand into engine
// options (l2-cache-size=1M,prealloc=off,...; see qcow2.Options.Set).
func engineOpts(o *opts) (qcow2.Options, error) {
	eo := qcow2.Options{ForceShare: o.forceShare(), RepairLog: o.repairLog}
	for _, s := range o.vals["o"] {
		if err := eo.ParseCommandLine(s); err != nil {
			return eo, err
		}
	}
	return eo, nil
}

// forceShare is -U / --force-share: open a read-only image that another
// process may be writing, without taking the write-excluding locks.
func (o *opts) forceShare() bool { return o.has("U") || o.has("force-share") }
