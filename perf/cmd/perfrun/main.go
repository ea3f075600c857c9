// Command perfrun is the Go half of the perf/ scripts: it runs one
// benchmark command and records it, and turns the records into the tables,
// chart and JSON the scripts publish.
//
//	perfrun exec --out runs.jsonl [--label k=v]... -- CMD ARGS...
//	    Runs CMD, passing its stderr through, and appends one JSON line:
//	    the labels, exit status, wall time, the child's user and system CPU
//	    seconds (getrusage of the child), and the benchmark's own time:
//	    "seconds" of a qbench/latbench --json object on stdout, or
//	    qemu-img bench's "Run completed in X seconds", or fio's
//	    (--output-format=json, one job) job_runtime. Exits with CMD's
//	    status. With --blockdev DEV (a name under /sys/class/block), also
//	    the bytes DEV was sent to write and read during the run, from its
//	    stat counters; --sync DIR first runs sync -f DIR after CMD, so
//	    the file system's delayed writes (journal, metadata) are counted.
//	    Also the machine's busy CPU seconds while CMD ran (/proc/stat).
//	perfrun machine [--dev NAME=DIR]...          machine info as JSON
//	perfrun seed-table --in runs.jsonl --outdir DIR [--machine m.json] [--title T]
//	perfrun vs-qemu    --in runs.jsonl --outdir DIR [--machine m.json]
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Record is one benchmark run.
type Record struct {
	Labels  map[string]string `json:"labels"`
	Cmd     []string          `json:"cmd"`
	Start   time.Time         `json:"start"`
	OK      bool              `json:"ok"`
	Exit    int               `json:"exit"`
	Seconds float64           `json:"seconds"` // the benchmark's own run time
	WallS   float64           `json:"wall_s"`  // the whole command
	UserS   float64           `json:"user_s"`
	SysS    float64           `json:"sys_s"`
	// MachineS is the CPU seconds the whole machine spent busy while the
	// command ran (/proc/stat, busy.go): its own CPU plus the kernel
	// work it caused elsewhere, and anything else running; absent when
	// /proc/stat cannot be read.
	MachineS *float64 `json:"machine_s,omitempty"`
	// ModelS is a latency-model run's sum of modelled costs (latdev).
	ModelS float64 `json:"model_s,omitempty"`
	// DevWriteB and DevReadB are the bytes the --blockdev device was
	// asked to write and read during the run (sectors x 512 from
	// /sys/class/block/DEV/stat); absent when not measured.
	DevWriteB *int64          `json:"dev_write_b,omitempty"`
	DevReadB  *int64          `json:"dev_read_b,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	Output    string          `json:"output,omitempty"` // non-JSON stdout (qemu-img)
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: perfrun exec|machine|seed-table|vs-qemu ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "exec":
		var code int
		code, err = execCmd(os.Args[2:])
		if err == nil {
			os.Exit(code)
		}
	case "machine":
		err = machine(os.Args[2:])
	case "seed-table":
		err = seedTable(os.Args[2:])
	case "vs-qemu":
		err = vsQemu(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "perfrun:", err)
		os.Exit(1)
	}
}

// kv parses repeated NAME=VALUE flags.
type kv map[string]string

func (m kv) String() string { return fmt.Sprint(map[string]string(m)) }
func (m kv) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("want NAME=VALUE, got %q", s)
	}
	m[k] = v
	return nil
}

var qemuRun = regexp.MustCompile(`Run completed in ([0-9.]+) seconds`)

func execCmd(args []string) (int, error) {
	labels := kv{}
	out, blockdev, syncDir := "", "", ""
	i := 0
	for ; i < len(args); i++ {
		switch a := args[i]; {
		case a == "--":
			i++
			goto done
		case a == "--out" && i+1 < len(args):
			i++
			out = args[i]
		case a == "--blockdev" && i+1 < len(args):
			i++
			blockdev = args[i]
		case a == "--sync" && i+1 < len(args):
			i++
			syncDir = args[i]
		case a == "--label" && i+1 < len(args):
			i++
			if err := labels.Set(args[i]); err != nil {
				return 0, err
			}
		default:
			return 0, fmt.Errorf("exec: unexpected %q (want --out F --label k=v -- CMD...)", a)
		}
	}
done:
	if out == "" || i >= len(args) {
		return 0, fmt.Errorf("exec: need --out FILE -- CMD [ARGS]")
	}
	rec := Record{Labels: labels, Cmd: args[i:], Start: time.Now().UTC()}
	cmd := exec.Command(args[i], args[i+1:]...)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = os.Stderr
	var st0 blockStat
	if blockdev != "" {
		if syncDir != "" {
			syncFS(syncDir)
		}
		st0 = readBlockStat(blockdev)
	}
	busy0, busyOK := machineBusy()
	t0 := time.Now()
	err := cmd.Run()
	rec.WallS = time.Since(t0).Seconds()
	if busy1, ok := machineBusy(); ok && busyOK {
		m := busy1 - busy0
		rec.MachineS = &m
	}
	if blockdev != "" {
		if syncDir != "" {
			syncFS(syncDir)
		}
		st1 := readBlockStat(blockdev)
		if st0.ok && st1.ok {
			w := (st1.writeSectors - st0.writeSectors) * 512
			r := (st1.readSectors - st0.readSectors) * 512
			rec.DevWriteB, rec.DevReadB = &w, &r
		}
	}
	if cmd.ProcessState != nil {
		rec.UserS = cmd.ProcessState.UserTime().Seconds()
		rec.SysS = cmd.ProcessState.SystemTime().Seconds()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Exited() {
			rec.Exit = ws.ExitStatus()
		} else {
			rec.Exit = -1
		}
	} else if err != nil {
		rec.Exit = 127
		fmt.Fprintln(os.Stderr, "perfrun exec:", err)
	}
	rec.OK = err == nil
	so := bytes.TrimSpace(stdout.Bytes())
	if secs, js, ok := fioSeconds(so); ok {
		rec.Seconds, rec.Result = secs, js
	} else if len(so) > 0 && so[0] == '{' {
		var r struct {
			Seconds float64 `json:"seconds"`
			Latdev  *struct {
				Stats struct {
					ModelledS float64 `json:"modelled_s"`
				} `json:"stats"`
			} `json:"latdev"`
		}
		if json.Unmarshal(so, &r) == nil {
			rec.Seconds = r.Seconds
			rec.Result = json.RawMessage(so)
			if r.Latdev != nil {
				rec.ModelS = r.Latdev.Stats.ModelledS
			}
		}
	} else {
		rec.Output = string(so)
		if m := qemuRun.FindSubmatch(so); m != nil {
			rec.Seconds, _ = strconv.ParseFloat(string(m[1]), 64)
		}
	}
	if rec.OK && rec.Seconds == 0 {
		rec.OK = false
		fmt.Fprintf(os.Stderr, "perfrun exec: no run time in the output of %v:\n%s\n", rec.Cmd, so)
	}
	line, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	f, err := os.OpenFile(out, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return 0, err
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		f.Close()
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	status := "ok"
	if !rec.OK {
		status = fmt.Sprintf("FAILED (exit %d)", rec.Exit)
	}
	fmt.Fprintf(os.Stderr, "  %-50s %8.3f s  (cpu %.2f+%.2f s)  %s\n", labelString(labels), rec.Seconds, rec.UserS, rec.SysS, status)
	if !rec.OK && rec.Exit == 0 {
		return 1, nil
	}
	return rec.Exit, nil
}

// fioSeconds reads the run time of fio's --output-format=json report (the
// JSON object may follow fio's own notes on stdout): the job's job_runtime
// (milliseconds the job spent issuing and completing I/O, without its
// setup), falling back to the longer of its read and write runtime. With
// several jobs it takes the longest. ok is false for output that is not a
// fio report.
func fioSeconds(out []byte) (secs float64, js json.RawMessage, ok bool) {
	i := bytes.IndexByte(out, '{')
	if i < 0 || !bytes.Contains(out, []byte(`"fio version"`)) {
		return 0, nil, false
	}
	var r struct {
		Version string `json:"fio version"`
		Jobs    []struct {
			JobRuntime  float64 `json:"job_runtime"`
			Read, Write struct {
				Runtime float64 `json:"runtime"`
			}
		} `json:"jobs"`
	}
	// Decode one JSON value: fio may print more (warnings) after it.
	dec := json.NewDecoder(bytes.NewReader(out[i:]))
	if dec.Decode(&r) != nil || r.Version == "" {
		return 0, nil, false
	}
	end := i + int(dec.InputOffset())
	var ms float64
	for _, j := range r.Jobs {
		t := j.JobRuntime
		if t == 0 {
			t = max(j.Read.Runtime, j.Write.Runtime)
		}
		ms = max(ms, t)
	}
	return ms / 1000, json.RawMessage(out[i:end]), true
}

// blockStat is the part of a block device's stat file perfrun reads
// (Documentation/block/stat.rst in the Linux sources: field 3 is sectors
// read, field 7 sectors written, in 512-byte units whatever the device's
// sector size).
type blockStat struct {
	readSectors, writeSectors int64
	ok                        bool
}

func readBlockStat(dev string) blockStat {
	b, err := os.ReadFile("/sys/class/block/" + dev + "/stat")
	if err != nil {
		fmt.Fprintln(os.Stderr, "perfrun exec:", err)
		return blockStat{}
	}
	f := strings.Fields(string(b))
	if len(f) < 7 {
		return blockStat{}
	}
	r, err1 := strconv.ParseInt(f[2], 10, 64)
	w, err2 := strconv.ParseInt(f[6], 10, 64)
	return blockStat{readSectors: r, writeSectors: w, ok: err1 == nil && err2 == nil}
}

// syncFS writes back the file system holding dir (sync -f: syncfs(2)).
func syncFS(dir string) {
	if out, err := exec.Command("sync", "-f", dir).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "perfrun exec: sync -f %s: %v %s\n", dir, err, out)
	}
}

func labelString(l map[string]string) string {
	var parts []string
	for _, k := range []string{"device", "fs", "workload", "variant", "tool", "rep"} {
		if v, ok := l[k]; ok {
			parts = append(parts, k+"="+v)
		}
	}
	return strings.Join(parts, " ")
}

// machine prints CPU, memory, kernel, Go and qemu-img versions, and the
// filesystem under each device directory.
func machine(args []string) error {
	devs := kv{}
	var order []string
	for i := 0; i < len(args); i++ {
		if args[i] == "--dev" && i+1 < len(args) {
			i++
			if err := devs.Set(args[i]); err != nil {
				return err
			}
			k, _, _ := strings.Cut(args[i], "=")
			order = append(order, k)
			continue
		}
		return fmt.Errorf("machine: unexpected %q", args[i])
	}
	host, _ := os.Hostname()
	info := map[string]any{
		"host":      host,
		"date":      time.Now().UTC().Format(time.RFC3339),
		"cpu":       cpuModel(),
		"cpus":      runtime.NumCPU(),
		"mem":       firstLine("/proc/meminfo"),
		"kernel":    strings.TrimSpace(cmdOut("uname", "-srvm")),
		"go":        strings.TrimSpace(cmdOut("go", "version")),
		"qemu_img":  firstLineOf(cmdOut("qemu-img", "--version")),
		"uid":       os.Getuid(),
		"commit":    strings.TrimSpace(cmdOut("git", "describe", "--always", "--dirty")),
		"os":        osRelease(),
		"hostdisks": strings.TrimSpace(cmdOut("lsblk", "-d", "-o", "NAME,SIZE,ROTA,MODEL,SCHED")),
	}
	var devInfo []map[string]string
	for _, name := range order {
		dir := devs[name]
		fs := strings.Fields(cmdOut("findmnt", "-n", "-o", "FSTYPE,SOURCE,TARGET,OPTIONS", "-T", dir))
		d := map[string]string{"name": name, "dir": dir}
		for i, k := range []string{"fstype", "source", "mount", "options"} {
			if i < len(fs) {
				d[k] = fs[i]
			}
		}
		devInfo = append(devInfo, d)
	}
	info["devices"] = devInfo
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(info)
}

func cmdOut(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return ""
	}
	return string(out)
}

func firstLineOf(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return strings.TrimSpace(l)
}

func firstLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.Join(strings.Fields(firstLineOf(string(b))), " ")
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func osRelease() string {
	b, err := os.ReadFile("/etc/os-release")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

func readMachine(path string) (json.RawMessage, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return json.RawMessage(b), nil
}

func writeFile(path string, write func(w io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
