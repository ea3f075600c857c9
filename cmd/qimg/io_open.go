package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/internal/protocol"
	"github.com/qring/qring/qcow2"
)

// qemu-io's open and close: a session may start without an image
// (qemu-io -c 'open ...') and change it. Commands other than help, quit,
// sleep and open need one ("no file open, try 'help open'").

// ioGlobal are the commands that run without an open image (qemu-io's
// CMD_FLAG_GLOBAL).
var ioGlobal = map[string]bool{"help": true, "quit": true, "sleep": true, "open": true}

// errNoFile is a command that needs an image run without one.
var errNoFile = stderrError("no file open, try 'help open'")

// ioReport is an error qemu-io reports with error_report ("qemu-io:
// MSG" on stderr; qimg's "qimg: io: MSG").
type ioReport struct{ msg string }

func (e *ioReport) Error() string { return e.msg }

// openCmd is qemu-io's open [-rsCnkU] [-i aio] [-t cache] [-d discard]
// [-o options] [path]: the options of the command line (not its -f or
// -U: its own), -o the image's options as --image-opts takes them (or,
// with the command line's --image-opts, the argument itself).
func (s *ioSession) openCmd(args []string) error {
	o, err := ioOpts(args, "snCro:kt:d:Ui:")
	if err != nil {
		return err
	}
	req, err := ioOpenFlags(o, func(k, _ string) bool { return o.has(k) })
	if err != nil {
		return &ioReport{err.Error()}
	}
	optStr, hasOpts := o.get("o", ""), o.has("o")
	if hasOpts && s.imageOpts {
		fmt.Fprintln(s.out, "--image-opts and 'open -o' are mutually exclusive")
		return errReported
	}
	rest := o.args
	if s.imageOpts && len(rest) == 1 {
		optStr, hasOpts, rest = rest[0], true, nil
	}
	if len(rest) > 1 {
		return &ioUsageError{}
	}
	if s.Opened != nil {
		return &ioReport{"file open already, try 'help close'"}
	}
	name := ""
	if len(rest) == 1 {
		name = rest[0]
	}
	req.path = name
	if hasOpts {
		// QEMU opens the file name under these options: the spec's
		// file.filename.
		spec := optStr
		if strings.HasPrefix(name, "json:") {
			// The JSON's keys join the options (qemu-io merges them;
			// an option the JSON sets too keeps the option's value).
			if spec, err = imgopen.MergeSpec(name, optStr); err != nil {
				return openFailed(name, err)
			}
		} else if name != "" {
			if err := fileKeyConflict(optStr); err != nil {
				return openFailed(name, err)
			}
			if spec != "" {
				spec += ","
			}
			fn := name
			if p, err := protocol.Path(name, false); err == nil {
				fn = p // file:x is x
			}
			if protocol.IsNBD(name) && !specHasKey(optStr, "file.driver") {
				// QEMU takes the name's protocol: an nbd node.
				spec += "file.driver=nbd,"
			}
			spec += "file.filename=" + strings.ReplaceAll(fn, ",", ",,")
		}
		req.path, req.spec = spec, true
	} else if name == "" {
		return openFailed("", errors.New("Must specify either driver or file")) // open -r: neither
	} else {
		req.spec = s.imageOpts || imgopen.IsSpec(name)
	}
	req.eo = qcow2.Options{ForceShare: o.has("U")}
	if err := s.open(req); err != nil {
		return openFailed(name, err)
	}
	return nil
}

// openFailed is open's failure in qemu-io's words: "can't open device
// NAME: MSG" ("can't open: MSG" without a name).
func openFailed(name string, err error) error {
	var oe *OpenError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	msg := qcow2.QemuText(err)
	if name == "" {
		return &ioReport{"can't open: " + msg}
	}
	return &ioReport{"can't open device " + name + ": " + msg}
}

// fileKeyConflict is QEMU's refusal of options that name the file node
// beside a file name: file.filename=..., or file=NODE; other file.* keys
// (file.locking, file.aio...) apply to the named file.
func fileKeyConflict(spec string) error {
	for _, kv := range strings.Split(strings.ReplaceAll(spec, ",,", "\x00"), ",") {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "file.filename":
			return errors.New("Can't specify 'file' and 'filename' options at the same time")
		case "file":
			return errors.New("Cannot reference an existing block device with additional options or a new filename")
		}
	}
	return nil
}

// specHasKey reports whether the options spec sets key.
func specHasKey(spec, key string) bool {
	for _, kv := range strings.Split(strings.ReplaceAll(spec, ",,", "\x00"), ",") {
		if k, _, _ := strings.Cut(kv, "="); k == key {
			return true
		}
	}
	return false
}

// closeCmd is qemu-io's close: the image flushed and closed.
func (s *ioSession) closeCmd([]string) error {
	img := s.Opened
	s.Opened = nil
	if err := img.Dev.Flush(); err != nil {
		img.Close()
		return err
	}
	return img.Close()
}

// reopenCmd is qemu-io's reopen [-r|-w] [-c cache]: the image flushed,
// closed and opened again as it was, but read-only (-r), read-write (-w)
// or with another cache mode. A reopen that fails opens the image as it
// was, as QEMU's keeps it. Refused: -o (QEMU changes a driver's options
// in place), and a -s session, whose temporary overlay a reopen here
// would drop.
func (s *ioSession) reopenCmd(args []string) error {
	o, err := ioOpts(args, "rwc:o:")
	if err != nil {
		return err
	}
	if len(o.args) > 0 {
		return &ioUsageError{}
	}
	if len(o.vals["r"])+len(o.vals["w"]) > 1 { // -r -w, -rr...
		return &ioReport{"Only one -r/-w option may be given"}
	}
	req := s.req
	if o.has("c") {
		c := o.get("c", "")
		if _, ok := cacheModes[c]; !ok {
			return &ioReport{"Invalid cache option: " + c}
		}
		req.cache, req.nocache = c, false
	}
	switch {
	case o.has("o"):
		return &ioReport{"reopen -o (changing the driver's options) is not supported by qimg io"}
	case req.snapshot:
		return &ioReport{"reopen of an image opened with -s is not supported by qimg io"}
	}
	req.readOnly = o.has("r") || req.readOnly && !o.has("w")
	if req.readOnly && req.copyOnRead {
		return &ioReport{imgopen.ErrCopyOnReadOnly.Error()}
	}
	old := s.req
	if err := s.closeCmd(nil); err != nil {
		if rerr := s.openWarn(old, nil); rerr != nil {
			return openFailed(old.path, rerr)
		}
		return err
	}
	if err := s.openWarn(req, nil); err != nil {
		if rerr := s.openWarn(old, nil); rerr != nil {
			return openFailed(old.path, rerr)
		}
		var oe *OpenError
		if errors.As(err, &oe) {
			err = oe.Err
		}
		return &ioReport{qcow2.QemuText(err)}
	}
	return nil
}
