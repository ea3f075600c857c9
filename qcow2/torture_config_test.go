package qcow2

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
)

// This file holds the torture suite's configurations (TestTorture): a
// configuration is a point of the engine's option space, named by its
// tokens (c64k-r16-v3-mem); a name parses back, so any configuration can
// be reproduced with -torture.config=NAME.

// tcfg is one torture configuration.
type tcfg struct {
	cs      int  // cluster size
	rb      int  // refcount bits
	v2      bool // compat 0.10
	lazy    bool // lazy refcounts
	xl2     bool // extended L2 entries (subclusters)
	backing bool // a raw backing file with data
	bqcow   bool // with backing: a qcow2 one (qback; torture_qback_test.go)
	// prealloc: created with preallocation=metadata (meta), falloc
	// (falloc: the data's space reserved) or full (full: zeros
	// written); "" is off. Create lays these out as qemu-img does
	// (createPreallocated: reserveData on the file), or preallocates
	// through the engine (preallocate) where it cannot.
	prealloc string
	poff     bool   // Options.Prealloc "off"
	psize    int64  // PreallocSize: 0 default, -1 off (prealloc-size=0), else bytes
	palign   int64  // PreallocAlign: 0 default
	fill     string // PreallocFill: "" (auto), FillZeroes, FillUnwritten
	tiny     bool   // tiny L2 and refcount caches
	luks     bool   // LUKS encrypted (crypt.go)
	aes      bool   // QEMU's legacy AES encryption (crypt_method 1: IV = guest sector)
	comp     string // "zlib"/"zstd": whole clusters of writes go compressed (compress_torture_test.go)
	queue    bool   // one batch goroutine's stripe goes through a Queue (Q14)
	bm       bool   // a persistent dirty bitmap kept and checked (torture_bitmap_test.go)
	df       bool   // an external data file (torture_datafile_test.go)
	dfRaw    bool   // with data_file_raw: the data file is the disk's raw image (dfr; no backing file)
	// The memdev's advertised capabilities (memdev backends only;
	// memDevOptions): the paths the engine takes over an O_DIRECT file
	// (request alignment: tables written by the device's blocks,
	// zeroing refused at sub-block edges, COW zeros written instead) and
	// over RAM (auto fill streams zeros; the queue's allocator sends
	// adjacent fills together, B10), under crash clones.
	align   int64  // Caps().Align: 0 (1 byte), 512 or 4096 (al512, al4k)
	ram     bool   // Caps().Media RAM and MergesWrites (ram)
	backend string // see tortureBackends
}

// tortureBackends: mem = memdev (synchronous); hold = memdev under
// holddev with random delays (completions reorder: early writes); lat =
// memdev under latdev (a queueing model); ud/ub = the io_uring file with
// O_DIRECT / buffered; unm = O_DIRECT without request merging; uhd =
// O_DIRECT under holddev delays.
var tortureBackends = []string{"mem", "hold", "lat", "ud", "ub", "unm", "uhd"}

func (c tcfg) memBacked() bool {
	return c.backend == "mem" || c.backend == "hold" || c.backend == "lat"
}

func sizeTok(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dm", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dk", n>>10)
	}
	return strconv.FormatInt(n, 10)
}

func parseSizeTok(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "k"):
		mult, s = 1<<10, strings.TrimSuffix(s, "k")
	case strings.HasSuffix(s, "m"):
		mult, s = 1<<20, strings.TrimSuffix(s, "m")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n * mult, err
}

// String is the configuration's name; parseTcfg parses it back.
func (c tcfg) String() string {
	t := []string{"c" + sizeTok(int64(c.cs)), "r" + strconv.Itoa(c.rb)}
	if c.v2 {
		t = append(t, "v2")
	} else {
		t = append(t, "v3")
	}
	if c.xl2 {
		t = append(t, "xl2")
	}
	if c.lazy {
		t = append(t, "lazy")
	}
	switch {
	case c.bqcow:
		t = append(t, "qback")
	case c.backing:
		t = append(t, "back")
	}
	switch c.prealloc {
	case PreallocMetadata:
		t = append(t, "meta")
	case PreallocFalloc, PreallocFull:
		t = append(t, c.prealloc)
	}
	if c.poff {
		t = append(t, "poff")
	}
	switch {
	case c.psize < 0:
		t = append(t, "ps0")
	case c.psize > 0:
		t = append(t, "ps"+sizeTok(c.psize))
	}
	if c.palign > 0 {
		t = append(t, "pa"+sizeTok(c.palign))
	}
	switch c.fill {
	case FillZeroes:
		t = append(t, "fz")
	case FillUnwritten:
		t = append(t, "fu")
	}
	if c.tiny {
		t = append(t, "tiny")
	}
	if c.luks {
		t = append(t, "luks")
	}
	if c.aes {
		t = append(t, "aes")
	}
	if c.comp != "" {
		t = append(t, c.comp)
	}
	if c.queue {
		t = append(t, "q")
	}
	if c.bm {
		t = append(t, "bm")
	}
	switch {
	case c.dfRaw:
		t = append(t, "dfr")
	case c.df:
		t = append(t, "df")
	}
	if c.align > 0 {
		t = append(t, "al"+sizeTok(c.align))
	}
	if c.ram {
		t = append(t, "ram")
	}
	return strings.Join(append(t, c.backend), "-")
}

// tcfgTokens are the whole tokens of a configuration name, each setting
// one field (v3 is the default).
var tcfgTokens = map[string]func(c *tcfg){
	"v2":     func(c *tcfg) { c.v2 = true },
	"v3":     func(c *tcfg) {},
	"lazy":   func(c *tcfg) { c.lazy = true },
	"xl2":    func(c *tcfg) { c.xl2 = true },
	"back":   func(c *tcfg) { c.backing = true },
	"qback":  func(c *tcfg) { c.backing, c.bqcow = true, true },
	"meta":   func(c *tcfg) { c.prealloc = PreallocMetadata },
	"falloc": func(c *tcfg) { c.prealloc = PreallocFalloc },
	"full":   func(c *tcfg) { c.prealloc = PreallocFull },
	"poff":   func(c *tcfg) { c.poff = true },
	"ps0":    func(c *tcfg) { c.psize = -1 },
	"fz":     func(c *tcfg) { c.fill = FillZeroes },
	"fu":     func(c *tcfg) { c.fill = FillUnwritten },
	"tiny":   func(c *tcfg) { c.tiny = true },
	"luks":   func(c *tcfg) { c.luks = true },
	"aes":    func(c *tcfg) { c.aes = true },
	"q":      func(c *tcfg) { c.queue = true },
	"bm":     func(c *tcfg) { c.bm = true },
	"df":     func(c *tcfg) { c.df = true },
	"dfr":    func(c *tcfg) { c.df, c.dfRaw = true, true },
	"ram":    func(c *tcfg) { c.ram = true },
}

func parseTcfg(name string) (tcfg, error) {
	c := tcfg{cs: 64 << 10, rb: 16, backend: "mem"}
	for _, tok := range strings.Split(name, "-") {
		var err error
		switch set := tcfgTokens[tok]; {
		case set != nil:
			set(&c)
		case tok == "zlib" || tok == "zstd":
			c.comp = tok
		case strings.HasPrefix(tok, "ps"):
			c.psize, err = parseSizeTok(tok[2:])
		case strings.HasPrefix(tok, "pa"):
			c.palign, err = parseSizeTok(tok[2:])
		case strings.HasPrefix(tok, "al"):
			c.align, err = parseSizeTok(tok[2:])
		case strings.HasPrefix(tok, "c"):
			var n int64
			n, err = parseSizeTok(tok[1:])
			c.cs = int(n)
		case strings.HasPrefix(tok, "r"):
			c.rb, err = strconv.Atoi(tok[1:])
		default:
			ok := false
			for _, b := range tortureBackends {
				ok = ok || tok == b
			}
			if !ok {
				return c, fmt.Errorf("torture config %q: unknown token %q", name, tok)
			}
			c.backend = tok
		}
		if err != nil {
			return c, fmt.Errorf("torture config %q: token %q: %v", name, tok, err)
		}
	}
	return c, c.valid()
}

func (c tcfg) valid() error {
	switch {
	case c.cs < 512 || c.cs > 2<<20 || c.cs&(c.cs-1) != 0:
		return fmt.Errorf("cluster size %d", c.cs)
	case c.rb < 1 || c.rb > 64 || c.rb&(c.rb-1) != 0:
		return fmt.Errorf("refcount bits %d", c.rb)
	case c.v2 && (c.rb != 16 || c.lazy):
		return fmt.Errorf("compat 0.10 needs refcount_bits=16 and no lazy refcounts")
	case c.xl2 && (c.v2 || c.cs < 16<<10):
		return fmt.Errorf("extended L2 needs compat 1.1 and clusters of at least 16k")
	case c.bqcow && !c.backing:
		return fmt.Errorf("a qcow2 backing file is a backing file (qback)")
	case c.preallocated() && c.backing:
		return fmt.Errorf("preallocation with a backing file")
	case c.luks && (c.v2 || c.preallocated()):
		return fmt.Errorf("encryption needs compat 1.1 and no preallocation")
	case c.aes && (c.luks || c.preallocated()):
		return fmt.Errorf("legacy AES: one method, no preallocation")
	case c.v2 && c.comp == "zstd":
		return fmt.Errorf("compression_type=zstd needs compat 1.1")
	case c.encrypted() && c.comp != "":
		return fmt.Errorf("compressed writes are refused on encrypted images")
	case c.bm && c.v2:
		return fmt.Errorf("persistent bitmaps need compat 1.1")
	case c.df && (c.v2 || c.preallocated() || c.comp != ""):
		// QEMU refuses v2 and compression.
		return fmt.Errorf("an external data file needs compat 1.1, and no preallocation or compression")
	case c.dfRaw && (!c.df || c.backing):
		return fmt.Errorf("data_file_raw needs a data file and no backing file")
	case c.align != 0 && c.align != 512 && c.align != 4096:
		return fmt.Errorf("device alignment %d (al512, al4k)", c.align)
	case (c.align != 0 || c.ram) && !c.memBacked():
		return fmt.Errorf("device capabilities (al, ram) are memdev's (mem, hold, lat)")
	}
	return nil
}

func (c tcfg) createOptions(size int64) CreateOptions {
	co := CreateOptions{Size: size, ClusterSize: c.cs, RefcountBits: c.rb, LazyRefcounts: c.lazy, Compat: "1.1", ExtendedL2: c.xl2}
	if c.v2 {
		co.Compat = "0.10"
	}
	if c.preallocated() {
		co.Preallocation = c.prealloc
	}
	if c.luks {
		co.Encrypt = EncryptOptions{Format: "luks", Passphrase: []byte(tortureLUKSPass), Iterations: 1000}
	}
	if c.aes {
		co.Encrypt = EncryptOptions{Format: "aes", Passphrase: []byte(tortureLUKSPass)}
	}
	if c.comp == "zstd" {
		co.CompressionType = "zstd"
	}
	// Encrypted: Create refuses data_file_raw (QEMU links every cluster
	// over the data file's plain zeros); setup sets the bit afterwards.
	co.DataFileRaw = c.dfRaw && !c.encrypted()
	return co
}

// options are the configuration's open options (without Opener/Backing).
func (c tcfg) options() Options {
	var o Options
	if c.poff {
		o.Prealloc = "off"
	}
	o.PreallocSize, o.PreallocAlign, o.PreallocFill = c.psize, c.palign, c.fill
	if c.tiny {
		e := min(c.cs, 4096)
		o.L2CacheEntrySize = e
		o.L2CacheSize = int64(2 * e)
		o.RefcountCacheSize = int64(2 * c.cs)
	}
	if c.encrypted() {
		o.Passphrase = []byte(tortureLUKSPass)
	}
	return o
}

// memDevOptions are the options of the configuration's memdevs (the
// image's, and the data file's).
func (c tcfg) memDevOptions() memdev.Options {
	o := memdev.Options{Align: c.align}
	if c.ram {
		o.Media, o.MergesWrites = block.MediaRAM, true
	}
	return o
}

// preallocated: created with preallocation metadata, falloc or full.
func (c tcfg) preallocated() bool { return c.prealloc != "" }

// encrypted: LUKS or legacy AES.
func (c tcfg) encrypted() bool { return c.luks || c.aes }

// tortureMatrix is the curated list `make torture` cycles (every value of
// every dimension appears, in combinations that matter); odd iterations
// of the loop draw random configurations (randomTcfg) as well.
var tortureMatrix = []string{
	"c64k-r16-v3-mem",
	"c64k-r16-v3-hold",
	"c64k-r16-v3-ud",
	"c64k-r16-v3-ub",
	"c64k-r16-v3-unm",
	"c64k-r16-v3-uhd",
	"c512-r64-v3-hold",                 // refcount table grows often, reserve renews across refblocks
	"c512-r64-v3-ps4m-pa8m-fu-mem",     // known bug 1 shape
	"c512-r64-v3-ps256k-pa64k-fz-hold", // fill pieces under small reserves
	"c512-r1-v3-tiny-hold",
	"c1k-r2-v3-lazy-back-hold",
	"c2k-r4-v3-ps0-ud",
	"c4k-r8-v3-tiny-lat",
	"c4k-r16-v2-back-mem",
	"c4k-r16-v2-hold",
	"c8k-r32-v3-fz-ub",
	"c16k-r16-v3-lazy-tiny-ud",
	"c32k-r16-v3-back-poff-hold",
	"c64k-r64-v3-meta-mem",
	"c64k-r16-v3-back-fz-uhd",
	"c128k-r16-v3-ps256k-pa1m-fz-unm",
	"c256k-r1-v3-lazy-mem",
	"c1m-r16-v3-back-ub",
	"c2m-r16-v3-hold", // whole-cluster zero writes (known bug 8)
	"c2m-r8-v3-poff-mem",
	"c4k-r16-v3-poff-ps0-tiny-unm",
	"c64k-r16-v3-fz-tiny-hold",
	"c512-r16-v2-back-lat",
	"c64k-r16-v3-luks-hold",        // encrypted: whole-sector RMW, encrypted COW
	"c4k-r16-v3-back-tiny-luks-ud", // encrypted COW from a backing file
	"c512-r64-v3-lazy-luks-mem",
	"c64k-r16-v3-xl2-back-luks-hold", // encrypted subcluster COW ranges
	"c64k-r16-v2-aes-hold",           // legacy AES: IV = guest sector, v2
	"c16k-r16-v3-xl2-back-aes-ud",    // legacy AES subcluster COW from a backing file
	"c64k-r16-v3-zstd-hold",          // compressed writes: packing, COW of compressed clusters, Q13
	"c4k-r8-v3-lazy-back-zlib-mem",
	"c16k-r16-v3-xl2-back-zstd-mem", // compressed clusters in extended L2 (bitmap clear)
	// Extended L2 (subclusters, issue 18).
	"c16k-r16-v3-xl2-back-hold",
	"c64k-r16-v3-xl2-mem",
	"c128k-r16-v3-xl2-back-fz-uhd",
	"c2m-r16-v3-xl2-tiny-ud",
	// Queues (Q14): a stripe of queued reads, writes, zeroings and discards at depth beside
	// the synchronous goroutines' discards and allocations.
	"c64k-r16-v3-q-ud",
	"c4k-r16-v3-tiny-q-hold",
	"c64k-r16-v3-back-fz-q-unm",
	"c16k-r16-v3-xl2-q-ub",
	"c64k-r16-v3-xl2-back-q-mem", // the allocator on extended L2 (COW from the backing file), crash clones
	// A persistent dirty bitmap (Q22) through writes, resizes, snapshots and queues.
	"c64k-r16-v3-bm-hold",
	"c512-r16-v3-back-q-bm-mem", // bitmap tables over many small clusters
	"c4k-r16-v3-fz-q-bm-ud",
	"c64k-r16-v3-luks-bm-ub",
	// An external data file (DF4-DF6): crash clones of both devices at one moment.
	"c64k-r16-v3-df-hold",
	"c4k-r16-v3-back-tiny-df-mem",
	"c512-r64-v3-lazy-df-lat",
	"c64k-r16-v3-q-bm-df-mem",
	"c16k-r16-v3-back-df-ud",
	"c4k-r16-v3-back-luks-df-hold", // ciphertext in the data file, encrypted COW
	"c16k-r16-v3-xl2-back-df-hold", // subclusters in a data file (datafile_xl2.go)
	"c64k-r16-v3-xl2-df-mem",
	"c64k-r16-v3-xl2-back-luks-df-mem", // encrypted subcluster COW into a data file
	"c16k-r16-v3-back-aes-df-hold",     // legacy AES in a data file: IV = guest sector = data file sector
	// data_file_raw: zeroing and discards also reach the data file (DF5), whole
	// (sub)clusters only where it holds ciphertext.
	"c64k-r16-v3-dfr-hold",
	"c4k-r16-v3-luks-dfr-mem",
	"c16k-r16-v3-xl2-luks-dfr-hold",
	"c64k-r16-v3-aes-dfr-mem", // legacy AES, data_file_raw set after Create (setup)
	"c64k-r16-v3-xl2-q-dfr-ud",
	// The memdev as an O_DIRECT file (al512, al4k: tables written by the
	// device's blocks, zeroing refused at sub-block edges so COW zeros
	// are written as buffers) and as RAM (ram: auto fill streams zeros,
	// the queue's allocator sends adjacent fills together), under crash
	// clones: the file backends (ud, unm, uhd) take these paths without.
	"c512-r64-v3-al4k-hold",
	"c4k-r16-v3-back-al4k-mem",
	"c2k-r8-v3-lazy-al512-hold",
	"c1k-r16-v3-tiny-al4k-lat",
	"c16k-r16-v3-xl2-back-al4k-hold",
	"c64k-r16-v3-zstd-al4k-mem",
	"c64k-r16-v3-luks-al4k-hold",
	"c4k-r16-v3-dfr-al4k-hold",
	"c64k-r16-v3-ram-hold",
	"c64k-r16-v3-q-al4k-ram-mem",
	// Combinations the entries above left to random draws (about one
	// random case in forty for each), where the ordering rules meet:
	// lazy refcounts on extended L2 (a link that sets subcluster bits
	// depends on a flush of its data, Q2), metadata preallocation on
	// extended L2 and with lazy refcounts (writes into linked clusters
	// whose subclusters are not allocated), and widths, sizes and
	// version 2 compression that had clones only on file backends.
	"c16k-r16-v3-xl2-lazy-back-hold",
	"c64k-r16-v3-xl2-lazy-q-mem",
	"c16k-r16-v3-xl2-lazy-df-hold",
	"c32k-r16-v3-xl2-meta-hold",
	"c4k-r16-v3-lazy-meta-tiny-mem",
	"c2k-r4-v3-ps0-hold",
	"c8k-r32-v3-fz-mem",
	"c128k-r16-v3-back-hold",
	"c1m-r16-v3-xl2-back-mem",
	"c4k-r16-v2-back-zlib-mem",
	// Created with preallocation=falloc or full (createPreallocated's
	// reserveData: fallocate, or zeros written, on the file; every
	// cluster linked): writes overwrite in place, discards and
	// unmapping zeroings free linked clusters, growth allocates past
	// them. On the io_uring file the reserve is a real fallocate; on
	// memdevs (created in a file, then loaded) crash clones.
	"c64k-r16-v3-falloc-ud",
	"c4k-r16-v3-lazy-full-hold",
	"c16k-r16-v3-xl2-falloc-tiny-mem",
	"c512-r64-v3-full-ub",
	"c64k-r16-v2-full-q-mem",
	// A qcow2 backing file (qback: data, zero clusters, unallocated
	// clusters that read through to nothing; its own cluster size) under
	// crash clones, read through the chain after each reopen; its bytes
	// never change.
	"c64k-r16-v3-qback-hold",
	"c4k-r16-v2-qback-mem",
	"c16k-r16-v3-xl2-qback-hold",
	"c512-r16-v3-lazy-qback-tiny-mem",
	"c64k-r16-v3-qback-q-ud",
	"c4k-r16-v3-qback-luks-hold",
	"c16k-r16-v3-qback-df-mem",
}

// tortureLUKSPass is the passphrase of the luks configurations.
const tortureLUKSPass = "torture"

// randomPrealloc draws a creation preallocation: one in eight, each
// mode alike.
func randomPrealloc(r *rand.Rand) string {
	if r.IntN(8) != 0 {
		return ""
	}
	return []string{PreallocMetadata, PreallocFalloc, PreallocFull}[r.IntN(3)]
}

// randomTcfg draws a valid configuration.
func randomTcfg(r *rand.Rand) tcfg {
	for {
		c := tcfg{
			cs:      512 << r.IntN(13),
			rb:      1 << r.IntN(7),
			v2:      r.IntN(5) == 0,
			lazy:    r.IntN(4) == 0,
			backing: r.IntN(3) == 0,
			// One in eight preallocated (metadata only, until
			// falloc and full joined it), in the same place of
			// the draws.
			prealloc: randomPrealloc(r),
			poff:     r.IntN(6) == 0,
			tiny:     r.IntN(4) == 0,
			backend:  tortureBackends[r.IntN(len(tortureBackends))],
		}
		if c.v2 {
			c.rb = 16
			c.lazy = false
		}
		switch r.IntN(4) {
		case 0:
			c.psize = -1
		case 1:
			c.psize = 256 << 10
		case 2:
			c.psize = 4 << 20
		}
		c.palign = []int64{0, 0, 64 << 10, 1 << 20, 8 << 20}[r.IntN(5)]
		c.fill = []string{"", FillZeroes, FillUnwritten}[r.IntN(3)]
		c.xl2 = r.IntN(4) == 0 && !c.v2 && c.cs >= 16<<10
		c.luks = r.IntN(6) == 0 && !c.v2 && !c.preallocated()
		c.aes = !c.luks && r.IntN(12) == 0 && !c.preallocated()
		c.queue = r.IntN(3) == 0
		c.bm = r.IntN(3) == 0 && !c.v2
		c.df = r.IntN(6) == 0 && !c.v2 && !c.preallocated()
		c.dfRaw = c.df && !c.backing && r.IntN(2) == 0
		if c.memBacked() {
			c.align = []int64{0, 0, 0, 512, 4096}[r.IntN(5)]
			c.ram = r.IntN(5) == 0
		}
		c.bqcow = c.backing && r.IntN(3) == 0 // last: the draws before keep their places
		if c.valid() == nil {
			return c
		}
	}
}
