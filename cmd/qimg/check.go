package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/vmdk"
)

// imageCheck is qemu's ImageCheck; the optional counters are omitted when
// zero, as qemu-img does. The fields are in qemu-img's order (imageInfo's
// comment).
type imageCheck struct {
	ImageEndOffset     int64  `json:"image-end-offset,omitempty"`
	CompressedClusters int64  `json:"compressed-clusters,omitempty"`
	TotalClusters      int64  `json:"total-clusters,omitempty"`
	Corruptions        int    `json:"corruptions,omitempty"`
	CorruptionsFixed   int    `json:"corruptions-fixed,omitempty"`
	CheckErrors        int    `json:"check-errors"`
	Leaks              int    `json:"leaks,omitempty"`
	LeaksFixed         int    `json:"leaks-fixed,omitempty"`
	AllocatedClusters  int64  `json:"allocated-clusters,omitempty"`
	Filename           string `json:"filename"`
	Format             string `json:"format"`
	FragmentedClusters int64  `json:"fragmented-clusters,omitempty"`
}

func toImageCheck(path string, r *qcow2.CheckResult) *imageCheck {
	return &imageCheck{Filename: path, Format: "qcow2", CheckErrors: r.CheckErrors,
		ImageEndOffset: r.ImageEndOffset, Corruptions: r.Corruptions, Leaks: r.Leaks,
		CorruptionsFixed: r.CorruptionsFixed, LeaksFixed: r.LeaksFixed,
		TotalClusters: r.TotalClusters, AllocatedClusters: r.AllocatedClusters,
		FragmentedClusters: r.FragmentedClusters, CompressedClusters: r.CompressedClusters}
}

// checkExitCode is qemu-img check's exit status for a completed check.
func checkExitCode(r *qcow2.CheckResult) int {
	switch {
	case r.CheckErrors > 0:
		return 1
	case r.Corruptions > 0:
		return 2
	case r.Leaks > 0:
		return 3
	}
	return 0
}

// writeCheckHuman is qemu-img's dump_human_image_check, preceded by the
// repair summary when something was fixed.
func writeCheckHuman(w io.Writer, r *qcow2.CheckResult) {
	if r.CorruptionsFixed > 0 || r.LeaksFixed > 0 {
		fmt.Fprintf(w, "The following inconsistencies were found and repaired:\n\n"+
			"    %d leaked clusters\n    %d corruptions\n\nDouble checking the fixed image now...\n",
			r.LeaksFixed, r.CorruptionsFixed)
	}
	if r.Corruptions == 0 && r.Leaks == 0 && r.CheckErrors == 0 {
		fmt.Fprintln(w, "No errors were found on the image.")
	} else {
		if r.Corruptions > 0 {
			fmt.Fprintf(w, "\n%d errors were found on the image.\n"+
				"Data may be corrupted, or further writes to the image may corrupt it.\n", r.Corruptions)
		}
		if r.Leaks > 0 {
			fmt.Fprintf(w, "\n%d leaked clusters were found on the image.\n"+
				"This means waste of disk space, but no harm to data.\n", r.Leaks)
		}
		if r.CheckErrors > 0 {
			fmt.Fprintf(w, "\n%d internal errors have occurred during the check.\n", r.CheckErrors)
		}
	}
	if r.TotalClusters != 0 && r.AllocatedClusters != 0 {
		a := float64(r.AllocatedClusters)
		fmt.Fprintf(w, "%d/%d = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
			r.AllocatedClusters, r.TotalClusters, a*100/float64(r.TotalClusters),
			float64(r.FragmentedClusters)*100/a, float64(r.CompressedClusters)*100/a)
	}
	if r.ImageEndOffset != 0 {
		fmt.Fprintf(w, "Image end offset: %d\n", r.ImageEndOffset)
	}
}

func parseRepair(s string) (qcow2.RepairMode, error) {
	switch s {
	case "":
		return qcow2.RepairNone, nil
	case "leaks":
		return qcow2.RepairLeaks, nil
	case "all":
		return qcow2.RepairAll, nil
	}
	return 0, fmt.Errorf("Unknown option value for -r (expecting 'leaks' or 'all'): %s", s)
}

func runCheck(e *env, args []string) int {
	o, out, err := e.getoptOutput(args, "o:f:r:T:qU", "repair:", "force-share", "object:", "image-opts")
	if err != nil {
		return e.usageErr(err)
	}
	mode, err := parseRepair(o.get("r", o.get("repair", "")))
	if err != nil {
		return e.usageErr(err)
	}
	path, eo, err := oneImage(o)
	if err != nil {
		return e.usageErr(err)
	}
	repair := mode != qcow2.RepairNone
	eo.Repair = repair // the backing chain opens too, as qemu-img check's does
	eo.Check = true    // BDRV_O_CHECK: a header only a check makes sense of opens
	cache, err := o.cacheOpt(true)
	if err != nil {
		return e.errorf(1, "%v", err)
	}
	spec, err := o.imageSpec(path, imgopen.Spec{Format: o.get("f", ""), Cache: cache.imgopen(),
		ReadOnly: !repair, Opts: eo})
	if err != nil {
		return e.usageErr(err)
	}
	given := path // the JSON's "filename", as given (an --image-opts spec too)
	path = spec.Path
	if repair && spec.Format == "" {
		if f, perr := qcow2.Probe(spec.Path); perr == nil && f == "vmdk" {
			spec.Format = f
		}
	}
	if repair && spec.Format == "vmdk" {
		// vmdk_co_check repairs nothing (-ENOTSUP); the image is not
		// opened for writing (that would change its CID).
		return e.errorf(63, "This image format does not support checks")
	}
	img, err := openImage(spec)
	if err != nil {
		return e.errorf(1, "%v", err)
	}
	defer img.Close()
	if repair {
		img.GuardProbed(e.stderr) // a probed raw image opened writable: QEMU's warning
	}
	if img.VMDK != nil {
		return e.checkVMDK(img, given, out, o.has("q"))
	}
	if img.Image == nil {
		return e.errorf(63, "This image format does not support checks")
	}
	// Every detail line, as qemu-img prints them: as the check finds
	// them (the library keeps 1000 by default; a broken image can have
	// millions).
	needRebuild := false
	r, err := img.Image.Check(qcow2.CheckOptions{Repair: mode, Message: func(m string) {
		fmt.Fprintln(e.stderr, m)
		needRebuild = needRebuild || strings.HasPrefix(m, "ERROR need to rebuild refcount structures")
	}, Report: func(m string) {
		// qemu-img's error_report lines, its program name before them.
		fmt.Fprintf(e.stderr, "qimg: %s: %s\n", e.name, m)
	}})
	if cf := (*qcow2.CheckFailedError)(nil); errors.As(err, &cf) {
		// Stopped where it stood (an overlap check): qemu-img's errno.
		return e.errorf(1, "Check failed: %s", cError(cf.Errno))
	}
	if err != nil {
		return e.errorf(1, "Check failed: %v", err)
	}
	if mode == qcow2.RepairLeaks && needRebuild {
		// qemu-img check -r leaks stops there (qcow2_check_refcounts:
		// -EIO), with no summary.
		return e.errorf(1, "Check failed: Input/output error")
	}
	if o.has("q") {
		// -q: no report at all, JSON or not (qemu-img's check prints
		// it only when not quiet).
	} else if out == "json" {
		if err := writeJSON(e.stdout, toImageCheck(given, r)); err != nil {
			return e.errorf(1, "%v", err)
		}
	} else {
		writeCheckHuman(e.stdout, r)
	}
	if r.CheckErrors > 0 {
		return e.errorf(1, "Check failed")
	}
	if err := img.Close(); err != nil {
		return e.errorf(1, "%v", err)
	}
	return checkExitCode(r)
}

// checkVMDK is qemu-img check of a VMDK image (vmdk_co_check): no
// errors, or the ERROR line and "Check failed" with its errno's text.
func (e *env) checkVMDK(img *imgopen.Opened, path, out string, quiet bool) int {
	if err := img.VMDK.Check(); err != nil {
		var ce *vmdk.CheckError
		if errors.As(err, &ce) {
			fmt.Fprintln(e.stderr, ce.Line)
			return e.errorf(1, "Check failed: %s", ce.Errno)
		}
		return e.errorf(1, "Check failed: %v", err)
	}
	r := &qcow2.CheckResult{}
	if quiet {
		// -q: no report, JSON or not.
	} else if out == "json" {
		c := toImageCheck(path, r)
		c.Format = "vmdk"
		if err := writeJSON(e.stdout, c); err != nil {
			return e.errorf(1, "%v", err)
		}
	} else {
		writeCheckHuman(e.stdout, r)
	}
	return 0
}
