package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// commit -b into a BASE that cannot grow to the top's size (a VMDK
// image) fails having changed nothing, as qemu-img's commit job, which
// grows BASE before it copies: qimg copied the layers below the longer
// one in first, and another overlay of BASE then read their data (found
// by a backing-chain review).
func TestCommit_BaseCannotGrowUnchangedLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	var outs [2]string
	for i, tool := range []string{"qemu-img", "qimg"} {
		d := testkit.Dir(t)
		base := qemuImage(t, filepath.Join(d, "base.vmdk"), "vmdk", "1M", "write -P 1 0 1M")
		qemuOverlay(t, filepath.Join(d, "l1.qcow2"), "base.vmdk", "vmdk", "write -P 2 0 64k")
		top := filepath.Join(d, "l2.qcow2")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "l1.qcow2", "-F", "qcow2", top, "2M")
		qemuIO(t, top, "qcow2", "write -P 3 64k 64k")
		before, err := os.ReadFile(base)
		if err != nil {
			t.Fatal(err)
		}
		_, errOut, code := runImg(t, tool, "commit", "-b", base, top)
		outs[i] = strings.Replace(errOut, "qimg: commit: ", "qemu-img: ", 1) + "exit " + string(rune('0'+code))
		after, _ := os.ReadFile(base)
		if !bytes.Equal(before, after) {
			t.Errorf("%s: the failed commit changed base.vmdk", tool)
		}
	}
	if outs[0] != outs[1] || !strings.Contains(outs[0], "Operation not supported") {
		t.Errorf("qemu-img: %s\nqimg:     %s", outs[0], outs[1])
	}
}

// commit -b through a layer a json: backing name opens: that layer's
// relative backing name is relative to its own file (qimg joined it to
// the json: string and failed to parse the result).
func TestCommit_JSONLayerRelativeBackingLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	for _, tool := range []string{"qemu-img", "qimg"} {
		d := testkit.Dir(t)
		base := qemuImage(t, filepath.Join(d, "base.qcow2"), "qcow2", "1M", "write -P 1 0 1M")
		l1 := qemuOverlay(t, filepath.Join(d, "l1.qcow2"), "base.qcow2", "qcow2", "write -P 2 0 64k")
		top := filepath.Join(d, "l2.qcow2")
		qemuOverlay(t, top, `json:{"driver":"qcow2","file":{"driver":"file","filename":"`+l1+`"}}`, "qcow2", "write -P 3 128k 64k")
		if _, errOut, code := runImg(t, tool, "commit", "-b", filepath.Join(d, "nonexist.qcow2"), top); code != 1 ||
			!strings.Contains(errOut, "Did not find '"+filepath.Join(d, "nonexist.qcow2")+"' in the backing chain of '"+top+"'") {
			t.Errorf("%s: commit -b nonexist: exit %d: %s", tool, code, errOut)
		}
		if out, errOut, code := runImg(t, tool, "commit", "-b", base, top); code != 0 || out != "Image committed.\n" {
			t.Fatalf("%s: commit -b: exit %d: %s%s", tool, code, out, errOut)
		}
		testkit.MustRun(t, "qemu-io", "-c", "read -P 2 0 64k", "-c", "read -P 1 64k 64k", "-c", "read -P 3 128k 64k", "-c", "read -P 1 192k 832k", base)
		testkit.MustRun(t, "qemu-img", "check", base)
	}
}

// map names a "file:" backing file by its file name, as qemu-img map
// prints it ("base.raw", not "file:base.raw").
func TestMap_FilePrefixBackingLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := testkit.Dir(t)
	base := filepath.Join(d, "base.raw")
	if err := os.WriteFile(base, make([]byte, 1048569), 0o644); err != nil {
		t.Fatal(err)
	}
	qemuIO(t, base, "raw", "write -P 3 64k 64k")
	top := qemuOverlay(t, filepath.Join(d, "l1.qcow2"), "file:"+base, "raw", "write -P 4 0 4k")
	if ours, theirs := qimgAndQemu(t, "map", top); ours != theirs {
		t.Errorf("map:\nqimg: %sqemu: %s", ours, theirs)
	}
}

// commit (no -b) into a VHD base shorter than the image: qemu-img's
// "Operation not supported", the base unchanged (was "Input/output
// error").
func TestCommit_VHDBaseCannotGrowLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	var outs [2]string
	for i, tool := range []string{"qemu-img", "qimg"} {
		d := testkit.Dir(t)
		base := qemuImage(t, filepath.Join(d, "b.vhd"), "vpc", "1M", "write -P 1 0 1M")
		top := filepath.Join(d, "t.qcow2")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "b.vhd", "-F", "vpc", top, "3M")
		qemuIO(t, top, "qcow2", "write -P 3 0 64k")
		before, _ := os.ReadFile(base)
		_, errOut, code := runImg(t, tool, "commit", top)
		outs[i] = strings.Replace(errOut, "qimg: commit: ", "qemu-img: ", 1) + "exit " + string(rune('0'+code))
		if after, _ := os.ReadFile(base); !bytes.Equal(before, after) {
			t.Errorf("%s: the failed commit changed b.vhd", tool)
		}
	}
	if outs[0] != outs[1] || !strings.Contains(outs[0], "Operation not supported") {
		t.Errorf("qemu-img: %s\nqimg:     %s", outs[0], outs[1])
	}
}
