package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/internal/testkit/imgcheck"
	"github.com/qring/qring/qcow2"
)

func TestParse_Table(t *testing.T) {
	for _, tc := range []struct {
		args  string
		check func(c *cli) string // "" when fine
		err   string              // substring of the expected error
	}{
		{args: "", check: func(c *cli) string {
			g := c.cfg
			if g.File != "" || g.Count != 75000 || g.Depth != 64 || g.Size != 4096 || g.Step != 4096 ||
				g.Cache != "none" || !g.Write || g.AIO != "io_uring" || g.Format != "qcow2" {
				return "defaults"
			}
			return ""
		}},
		{args: "-n 1M -s 4k", check: func(c *cli) string {
			if c.cfg.Count != 1<<20 || c.cfg.Size != 4096 {
				return "suffixes"
			}
			return ""
		}},
		{args: "-c 2k -n 2048 x.img", check: func(c *cli) string {
			if c.cfg.Count != 2048 || c.cfg.File != "x.img" {
				return "same count twice"
			}
			return ""
		}},
		{args: "x.img", check: func(c *cli) string {
			if !c.cfg.Queue {
				return "the queue is the default"
			}
			return ""
		}},
		{args: "--queue x.img", check: func(c *cli) string {
			if !c.cfg.Queue {
				return "--queue"
			}
			return ""
		}},
		{args: "--workers x.img", check: func(c *cli) string {
			if c.cfg.Queue {
				return "--workers"
			}
			return ""
		}},
		{args: "-i threads x.img", check: func(c *cli) string {
			if c.cfg.Queue {
				return "-i threads runs workers"
			}
			return ""
		}},
		{args: "--queue --workers x.img", err: "choose one"},
		{args: "-c 1k -n 2k", err: "disagree"},
		{args: "-d 0", err: "queue depth"},
		{args: "-n 0", err: "request count"},
		{args: "-n -5", err: "request count"},
		{args: "-s 4q", err: "request size"},
		{args: "--bogus", err: "not defined"},
		{args: "a b", err: "at most one FILE"},
		{args: "-o 1M -S 0 x.img -w", check: func(c *cli) string {
			// -S 0 is the request size, as qemu-img 7.2's step ?: bufsize.
			if c.cfg.Offset != 1<<20 || c.cfg.Step != 4096 || !c.cfg.Write || c.cfg.File != "x.img" {
				return "offset, step 0 = size, flag after FILE"
			}
			return ""
		}},
		{args: "-o l2-cache-size=1M,prealloc=off -o 4k", check: func(c *cli) string {
			if c.cfg.Offset != 4096 || c.cfg.Engine.L2CacheSize != 1<<20 || c.cfg.Engine.Prealloc != "off" {
				return "-o ambiguity"
			}
			return ""
		}},
		{args: "--opt prealloc-size=1M -O prealloc-align=64k --prealloc on --l2-cache-size 2M", check: func(c *cli) string {
			e := c.cfg.Engine
			if e.PreallocSize != 1<<20 || e.PreallocAlign != 64<<10 || e.Prealloc != "on" || e.L2CacheSize != 2<<20 {
				return "engine options"
			}
			return ""
		}},
		{args: "--prealloc-fill zeroes -o prealloc-fill=unwritten", check: func(c *cli) string {
			// The flag is applied after -o, as --prealloc-size.
			if c.cfg.Engine.PreallocFill != "zeroes" || !slices.Contains(c.cfg.EngineOpts, "prealloc-fill=zeroes") {
				return "--prealloc-fill"
			}
			return ""
		}},
		{args: "-o prealloc-fill=auto", check: func(c *cli) string {
			if c.cfg.Engine.PreallocFill != "auto" {
				return "-o prealloc-fill"
			}
			return ""
		}},
		{args: "--prealloc-fill zeros", err: "prealloc-fill"},
		{args: "-o prealloc-fill=bogus", err: "prealloc-fill"},
		{args: "-o nope=1", err: "unknown option"},
		{args: "-o cluster_size=4k x.img", err: "needs --create"},
		{args: "-o cluster_size=4k --create 1G x.img", check: func(c *cli) string {
			if c.cfg.Create.ClusterSize != 4096 || c.cfg.CreateSize != 1<<30 {
				return "create options"
			}
			return ""
		}},
		{args: "--create 1G", err: "needs a FILE"},
		{args: "--pattern 0xab x.img", err: "write tests"},
		{args: "--pattern 0x1ff -w x.img", err: "pattern"},
		{args: "-w --pattern 0xab x.img", check: func(c *cli) string {
			if c.cfg.Pattern != 0xab {
				return "pattern"
			}
			return ""
		}},
		{args: "-h", err: "help"},
		{args: "--keep x.img", err: "seed image only"},
	} {
		t.Run(tc.args, func(t *testing.T) {
			cl, err := parse(strings.Fields(tc.args))
			if err == nil {
				err = cl.cfg.Resolve()
			}
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if msg := tc.check(cl); msg != "" {
				t.Errorf("%s: %+v", msg, cl.cfg)
			}
		})
	}
}

func TestParse_ResolveConflicts(t *testing.T) {
	for _, tc := range []struct{ args, err string }{
		{"-w --flush-interval 10 x.img", "smaller than depth"},
		{"--flush-interval 100 x.img", "write tests"},
		{"-w --no-drain x.img", "requires --flush-interval"},
		{"-s 1000 -t none", "multiple of 512"},
		{"-t bogus", "cache mode"},
		{"-i native2", "aio"},
		{"-f vmdk", "format"},
	} {
		cl, err := parse(strings.Fields(tc.args))
		if err == nil {
			err = cl.cfg.Resolve()
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: error %v, want %q", tc.args, err, tc.err)
		}
	}
}

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func TestRun_BadInputOneLine(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"--bogus"},
		{"-d", "0"},
		{"-s", "4x"},
		{"-s", "1000", "-t", "none", "-w", filepath.Join(dir, "missing.qcow2")},
		{filepath.Join(dir, "missing.qcow2")},
	} {
		code, out, errOut := runCLI(t, args...)
		if code != 1 || out != "" || strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "qbench: ") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "missing.qcow2")); err == nil {
		t.Errorf("a failed run created the image")
	}
}

func TestRun_WriteOnCorruptImageRefused(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.qcow2")
	if err := qcow2.Create(p, qcow2.CreateOptions{Size: 64 << 20}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	// incompatible_features bit 1: corrupt (qcow2.rst); a writable open
	// of such an image is refused, as QEMU refuses it.
	binary.BigEndian.PutUint64(b[72:], binary.BigEndian.Uint64(b[72:])|2)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	before := sha256.Sum256(b)
	code, _, errOut := runCLI(t, "-n", "16", "-w", p)
	if code != 1 || !strings.Contains(errOut, "Image is corrupt; cannot be opened read/write") || strings.Count(errOut, "\n") != 1 {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
	after, _ := os.ReadFile(p)
	if sha256.Sum256(after) != before {
		t.Errorf("the corrupt image was modified")
	}
}

type jsonOut struct {
	Requests        *int64             `json:"requests"`
	BytesPerRequest *int64             `json:"bytes_per_request"`
	Depth           *int               `json:"depth"`
	Seconds         *float64           `json:"seconds"`
	IOPS            *float64           `json:"iops"`
	MiBps           *float64           `json:"mib_per_s"`
	LatUS           map[string]float64 `json:"lat_us"`
	CPU             map[string]float64 `json:"cpu"`
	Engine          map[string]float64 `json:"engine"`
	Prealloc        map[string]any     `json:"prealloc"`
	Config          map[string]any     `json:"config"`
}

func TestRun_JSONSeed(t *testing.T) {
	dir := t.TempDir()
	code, out, errOut := runCLI(t, "-n", "2k", "-s", "4k", "-q", "--json", "--dir", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var j jsonOut
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, out)
	}
	if j.Requests == nil || *j.Requests != 2048 || *j.BytesPerRequest != 4096 || *j.Depth != 64 ||
		j.Seconds == nil || j.IOPS == nil || j.MiBps == nil {
		t.Errorf("top-level fields: %s", out)
	}
	for _, k := range []string{"p50", "p90", "p99", "p999", "max"} {
		if _, ok := j.LatUS[k]; !ok {
			t.Errorf("lat_us.%s missing", k)
		}
	}
	for _, k := range []string{"user_s", "sys_s"} {
		if _, ok := j.CPU[k]; !ok {
			t.Errorf("cpu.%s missing", k)
		}
	}
	for _, k := range []string{"fallocates", "zero_pad_bytes", "cow_bytes", "clusters_allocated", "l2_hits", "l2_misses"} {
		if _, ok := j.Engine[k]; !ok {
			t.Errorf("engine.%s missing", k)
		}
	}
	if j.Engine["clusters_allocated"] != 2048*4096/(64<<10) {
		t.Errorf("clusters_allocated %v", j.Engine["clusters_allocated"])
	}
	for _, k := range []string{"file", "format", "cache", "aio", "count", "depth", "size", "step", "offset", "write", "pattern", "prealloc", "cluster_size", "image_size"} {
		if _, ok := j.Config[k]; !ok {
			t.Errorf("config.%s missing", k)
		}
	}
	if j.Config["cache"] != "none" || j.Config["write"] != true || j.Config["image_size"] != float64(4<<30) {
		t.Errorf("seed config: %v", j.Config)
	}
	if j.Config["prealloc_fill"] != "auto" {
		t.Errorf("config.prealloc_fill %v", j.Config["prealloc_fill"])
	}
	// The engine's choice: any fill mode, with a reason, under a reserve.
	if p := j.Prealloc; p == nil || p["on"] != true || p["ahead"] != float64(128<<20) ||
		(p["fill"] != "zeroes" && p["fill"] != "unwritten") || !strings.HasPrefix(p["fill_reason"].(string), "auto: ") {
		t.Errorf("prealloc: %v", j.Prealloc)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("seed image left behind: %v", ents)
	}
}

func TestRun_RawTextOutput(t *testing.T) {
	p := filepath.Join(t.TempDir(), "r.raw")
	code, out, errOut := runCLI(t, "--create", "16M", "-f", "raw", "-w", "-n", "1k", "-d", "4", "-t", "none",
		"--flush-interval", "256", "--gobench-output", p)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"Sending 1024 write requests, 4096 bytes each, 4 in parallel (starting at offset 0, step size 4096)\n",
		"Sending flush every 256 requests\n",
		"Run completed in ",
		"IOPS",
		"\nBenchmarkFile/raw/write/bs=4096/d=4/t=none-",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "engine:") {
		t.Errorf("raw run shows qcow2 counters:\n%s", out)
	}
}

// TestRun_PreallocLine: the text output names the engine's choice of
// preallocation and fill, for each --prealloc-fill and prealloc=off.
func TestRun_PreallocLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--prealloc-fill", "zeroes"}, "prealloc: ahead 128 MiB, fill zeroes (prealloc-fill=zeroes); "},
		{[]string{"-o", "prealloc-fill=unwritten"}, "prealloc: ahead 128 MiB, fill unwritten (prealloc-fill=unwritten)\n"},
		{[]string{"--prealloc-size", "16M"}, "prealloc: ahead 16 MiB, fill "},
		{[]string{"--prealloc", "off"}, "prealloc: off\n"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			args := append([]string{"-w", "-n", "2k", "-q", "--dir", t.TempDir()}, tc.args...)
			code, out, errOut := runCLI(t, args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("output lacks %q:\n%s", tc.want, out)
			}
		})
	}
}

// TestRun_QemuAcceptance is the acceptance check: qemu-img create,
// qbench -w with a pattern, then qemu-img check and qemu-io read -P.
func TestRun_QemuAcceptance(t *testing.T) {
	testkit.NeedQemu(t)
	p := filepath.Join(testkit.Dir(t), "x.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-f", "qcow2", p, "1G")
	code, out, errOut := runCLI(t, "-c", "32768", "-s", "4k", "-w", "-t", "none", "--pattern", "0xab", p)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.HasPrefix(out, "Sending 32768 write requests, 4096 bytes each, 64 in parallel (starting at offset 0, step size 4096)\nRun completed in ") {
		t.Errorf("output:\n%s", out)
	}
	imgcheck.File(t, p, qcow2.Options{})
	if out := testkit.MustRun(t, "qemu-io", "-c", "read -P 0xab 0 128M", "-c", "read -P 0 128M 1M", p); strings.Contains(out, "failed") {
		t.Fatalf("qemu-io:\n%s", out)
	}
}

// TestRun_FillAfterLastRequest: with prealloc-fill=zeroes the report
// counts the fill up to Close and says which part came after the last
// request, in text and JSON, for a file and for a driver stack spec.
func TestRun_FillAfterLastRequest(t *testing.T) {
	textRe := regexp.MustCompile(`; (\d+) MiB zeroed ahead \((\d+) MiB after the last request\), \d+ allocation waits`)
	for _, spec := range []bool{false, true} {
		t.Run(fmt.Sprintf("spec=%v", spec), func(t *testing.T) {
			// A fresh image per run: the fill starts with allocations.
			run := func(json bool) string {
				img := filepath.Join(t.TempDir(), "t.qcow2")
				if err := qcow2.Create(img, qcow2.CreateOptions{Size: 256 << 20}); err != nil {
					t.Fatal(err)
				}
				file := img
				if spec {
					file = "driver=qcow2,file=" + img
				}
				args := []string{"-w", "-n", "256", "-d", "4", "-t", "writeback", "--prealloc-fill", "zeroes", file}
				if json {
					args = append(args, "--json")
				}
				code, out, errOut := runCLI(t, args...)
				if code != 0 {
					t.Fatalf("exit %d: %s", code, errOut)
				}
				imgcheck.File(t, img, qcow2.Options{})
				return out
			}
			out := run(false)
			sm := textRe.FindStringSubmatch(out)
			if sm == nil {
				t.Fatalf("no fill line:\n%s", out)
			}
			if total, after := atoi(t, sm[1]), atoi(t, sm[2]); total == 0 || after > total {
				t.Errorf("%d MiB zeroed ahead, %d after the last request:\n%s", total, after, out)
			}
			out = run(true)
			var j jsonOut
			if err := json.Unmarshal([]byte(out), &j); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			total, ok1 := j.Engine["fill_bytes"]
			after, ok2 := j.Engine["fill_bytes_after_last_request"]
			if !ok1 || !ok2 || total <= 0 || after < 0 || after > total {
				t.Errorf("engine fill_bytes %v (%v), fill_bytes_after_last_request %v (%v)", total, ok1, after, ok2)
			}
		})
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRun_QueueQemuAcceptance: --queue writes what the workers write. A
// fresh image is filled through the queue (new clusters: the engine's
// synchronous path in groups), then overwritten through it (the fast
// path), with a strided run beside; qemu-io reads every byte back and
// qemu-img check is clean. A read run through the queue succeeds.
func TestRun_QueueQemuAcceptance(t *testing.T) {
	testkit.NeedQemu(t)
	p := filepath.Join(testkit.Dir(t), "q.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-f", "qcow2", p, "1G")
	for _, args := range [][]string{
		{"-c", "32768", "-s", "4k", "-w", "-t", "none", "--pattern", "0xab", "--queue", p},
		{"-c", "16384", "-s", "4k", "-w", "-t", "none", "--pattern", "0xcd", "--queue", p},
		{"-c", "4096", "-s", "4k", "-S", "12k", "-o", "256M", "-w", "--pattern", "0xef", "--queue", "-i", "io_uring-nomerge", p},
		{"-c", "32768", "-s", "4k", "--queue", p},
	} {
		if code, out, errOut := runCLI(t, args...); code != 0 {
			t.Fatalf("qbench %v: exit %d\n%s%s", args, code, out, errOut)
		} else if !strings.Contains(out, "Run completed in ") {
			t.Fatalf("qbench %v:\n%s", args, out)
		}
	}
	imgcheck.File(t, p, qcow2.Options{})
	out := testkit.MustRun(t, "qemu-io", "-c", "read -P 0xcd 0 64M", "-c", "read -P 0xab 64M 64M",
		"-c", "read -P 0xef 256M 4k", "-c", "read -P 0 268439552 8k", "-c", "read -P 0xef 268447744 4k", "-c", "read -P 0 128M 128M", p)
	if strings.Contains(out, "failed") || strings.Contains(out, "Pattern verification") {
		t.Fatalf("qemu-io:\n%s", out)
	}
}
