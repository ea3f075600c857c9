package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/qring/qring/cmd/internal/buildinfo"
)

// wantsHelp reports whether a subcommand's arguments ask for its usage:
// -h or --help before any "--".
func wantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "--help":
			return true
		}
	}
	return false
}

// commandUsage prints one command's usage ("qimg CMD --help", "qimg help
// CMD").
func commandUsage(w io.Writer, name string) {
	fmt.Fprintf(w, "usage: qimg %s %s\n", name, commands[name].usage)
	if n := commandNotes[name]; n != "" {
		fmt.Fprintf(w, "\n%s", n)
	}
}

// commandNotes are what a command's --help says beyond the usage line:
// where qimg deliberately differs from qemu-img.
var commandNotes = map[string]string{
	"create": "Formats: qcow2, raw, vmdk, vpc and luks. Without -f the image is qcow2\n" +
		"(qemu-img's default is raw: give -f raw for it). -o help lists the options.\n" +
		"qcow2 images are created with zlib (default) or zstd compression type;\n" +
		"extended_l2=on (subclusters) needs cluster_size >= 16k.\n",
	"convert": "Output formats: raw (default), qcow2, vmdk, vpc and luks; -o help lists\n" +
		"the options of -O's format.\n" +
		"An output that is the input (the same file under any name) or one of its\n" +
		"backing files is refused. -c writes qcow2 clusters compressed (zlib or zstd,\n" +
		"the output's compression_type). -n writes into an existing output (opened\n" +
		"with -O's format, at least as large as the input) instead of creating it.\n" +
		"Several inputs are written one after another into one output (their sizes\n" +
		"in whole sectors add up). --target-image-opts (with -n) takes the output as\n" +
		"an option string, as --image-opts takes the inputs.\n" +
		"-t unsafe skips the host flushes, as qemu-img's does; the default (qemu-img's\n" +
		"is unsafe) is writeback here: the output is flushed when convert ends.\n",
	"compare": "-s (strict) also compares the block status (allocated, zero, data) of each\n" +
		"range, as qemu-img: exit 1 with \"Strict mode: Offset N block status mismatch!\".\n" +
		"An NBD export's holes the server does not call zeros are read and compared\n" +
		"(qemu-img takes them for zeros).\n",
	"check": "-r all rebuilds the refcount structures when they cannot be trusted, as\n" +
		"qemu-img, but changes nothing (exit 1) where references lie past the end of\n" +
		"the file or tables other than the refcount structures are damaged\n" +
		"(qemu-img rebuilds or repairs around the damage). Refcounts left past the\n" +
		"end of the file are reported as leaks, and -r leaks clears them (qemu-img\n" +
		"does not look there).\n",
	"snapshot": "Snapshots carry no VM state. Applying one taken at another disk size first\n" +
		"resizes the image to it, as QEMU does.\n",
	"resize": "--preallocation of a qcow2 image with a backing file or encryption is\n" +
		"refused (qemu-img preallocates there; its falloc and full ranges of an\n" +
		"encrypted image read as garbage).\n",
	"amend": "-o compat=0.10 gives a snapshot's preallocated zero cluster a new cluster\n" +
		"of zeros (qemu-img 7.2 writes zeros over the old one, which another\n" +
		"snapshot may still use), and refuses a zstd image whose only compressed\n" +
		"clusters are in a snapshot (qemu-img 7.2 downgrades it).\n",
	"bench": "-i native and -n (Linux AIO) are not supported: io_uring (the default) or\n" +
		"threads. qbench runs the same workload with latency percentiles and engine\n" +
		"counters.\n",
	"map": "--output=json prints QEMU 8.2's layout: a \"compressed\" key after \"data\" in\n" +
		"each entry (qemu-img 7.2 has none).\n",
	"info": "--backing-chain prints every image of the chain (a JSON array with\n" +
		"--output=json). --metrics adds the engine's cache and counters (qring only).\n",
	"io": "-i io_uring fails where no ring can be set up (\"Unable to use io_uring\");\n" +
		"without -i, io_uring is used if it works and threads otherwise. native\n" +
		"(Linux AIO) is not supported.\nWithout -c, commands are read from stdin, one a line, after qemu-io's prompt;\nwithout FILE, the open command opens an image.\n",
}

// isHelpOption reports whether a -o argument asks for the option list
// (qemu's is_help_option: "help" or "?" as one of its options).
func isHelpOption(o string) bool {
	for _, p := range strings.Split(o, ",") {
		if p == "help" || p == "?" {
			return true
		}
	}
	return false
}

// answerOptionsHelp answers a -o argument that asks for the option list
// (isHelpOption): it prints the create options of format f, or refuses
// a format other than qcow2 and raw with the usage error unknown (a
// format string for f). done reports whether -o asked, and code is then
// the exit code.
func (e *env) answerOptionsHelp(o *opts, f string) (code int, done bool) {
	if !slices.ContainsFunc(o.vals["o"], isHelpOption) {
		return 0, false
	}
	if f != "qcow2" && f != "raw" && f != "vpc" && f != "vmdk" && f != "luks" {
		return e.errorf(1, "%v", outFormatError(f)), true
	}
	createOptionsHelp(e.stdout, f, len(o.args) > 0)
	return 0, true
}

// createOption is one create option as -o help lists it.
type createOption struct{ name, typ, help string }

var qcow2CreateOptions = []createOption{
	{"backing_file", "str", "File name of a base image"},
	{"backing_fmt", "str", "Image format of the base image (qcow2, raw, vmdk, vpc, luks)"},
	{"cluster_size", "size", "qcow2 cluster size (512 to 2M, a power of two; default 64k)"},
	{"compat", "str", "Compatibility level (v2 [0.10] or v3 [1.1]; default 1.1)"},
	{"compression_type", "str", "Compression method used for image cluster compression (zlib or zstd)"},
	{"data_file", "str", "File name of an external data file"},
	{"data_file_raw", "bool (on/off)", "The external data file must stay valid as a raw image"},
	{"encrypt.cipher-alg", "str", "Name of encryption cipher algorithm (aes-128, aes-192, aes-256, twofish-128, twofish-192, twofish-256, serpent-128, serpent-192, serpent-256, cast5-128)"},
	{"encrypt.cipher-mode", "str", "Name of encryption cipher mode (xts, cbc, ecb, ctr)"},
	{"encrypt.format", "str", "Encrypt the image, format choices: 'aes', 'luks'"},
	{"encrypt.hash-alg", "str", "Name of encryption hash algorithm (md5, sha1, sha224, sha256, sha384, sha512, ripemd160)"},
	{"encrypt.iter-time", "num", "Time to spend in PBKDF in milliseconds"},
	{"encrypt.ivgen-alg", "str", "Name of IV generator algorithm (plain64, plain, essiv)"},
	{"encrypt.ivgen-hash-alg", "str", "Name of IV generator hash algorithm"},
	{"encrypt.key-secret", "str", "ID of secret providing qcow AES key or LUKS passphrase (--object secret)"},
	{"encryption", "bool (on/off)", "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)"},
	{"extended_l2", "bool (on/off)", "Extended L2 tables (subclusters; cluster_size 16k to 2M)"},
	{"lazy_refcounts", "bool (on/off)", "Postpone refcount updates"},
	{"preallocation", "str", "Preallocation mode (allowed values: off, metadata, falloc, full)"},
	{"refcount_bits", "num", "Width of a reference count entry in bits (1 to 64, a power of two; default 16)"},
	{"size", "size", "Virtual disk size"},
}

var vpcCreateOptions = []createOption{
	{"force_size", "bool (on/off)", "Force disk size calculation to use the actual size specified, rather than using the nearest CHS-based calculation"},
	{"size", "size", "Virtual disk size"},
	{"subformat", "str", "Type of virtual hard disk format. Supported formats are {dynamic (default) | fixed} "},
}

var rawCreateOptions = []createOption{
	{"preallocation", "str", "Preallocation mode (allowed values: off, falloc, full)"},
	{"size", "size", "Virtual disk size"},
}

// createOptionsHelp prints the create options of a format with their
// meaning, in qemu-img's layout; withFile: a file name was given.
func createOptionsHelp(w io.Writer, format string, withFile bool) {
	opts := qcow2CreateOptions
	switch format {
	case "raw":
		opts = rawCreateOptions
	case "vpc":
		opts = vpcCreateOptions
	case "vmdk":
		opts = vmdkCreateOptions
	case "luks":
		opts = luksCreateOptions
	}
	if withFile {
		// As qemu-img: the file driver's options too (nocow,
		// extent_size_hint; preallocation for vmdk and vpc) once a
		// file name says where.
		opts = withHints(opts, format)
	}
	fmt.Fprintf(w, "Supported %s options:\n", format)
	for _, o := range opts {
		fmt.Fprintf(w, "  %-22s - %s\n", o.name+"=<"+o.typ+">", o.help)
	}
}

// version prints --version.
func version(w io.Writer) {
	fmt.Fprintln(w, buildinfo.Version("qimg"))
}
