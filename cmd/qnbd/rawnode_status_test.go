package main

import (
	"path/filepath"
	"testing"
)

// TestRawNodeStatusMatchesQemu: block status of a raw node over a
// format node is the child node's own, as qemu-nbd reports it
// (base:allocation and qemu:allocation-depth). qnbd reported a raw node
// over a VMDK as allocated everywhere (its parent's grains at depth 1),
// and over a qcow2 node with a shorter backing file it split QEMU's
// answer at the backing file's end (zero from there), where QEMU decides
// zero once per answer, by its start (an answer runs to the end of an L2
// table).
func TestRawNodeStatusMatchesQemu(t *testing.T) {
	need(t, "qemu-img", "qemu-io", "qemu-nbd", "nbdinfo")
	d := shortDir(t)
	short, shortTop := filepath.Join(d, "s.qcow2"), filepath.Join(d, "st.qcow2")
	sh(t, "qemu-img", "create", "-q", "-f", "qcow2", short, "1M")
	sh(t, "qemu-io", "-c", "write -P 3 0 64k", short)
	sh(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", "-b", short, "-F", "qcow2", shortTop, "4M")
	sh(t, "qemu-io", "-c", "write -P 5 512k 4k", "-c", "write -P 5 2M 64k", shortTop)
	parent, vmdkTop := filepath.Join(d, "p.vmdk"), filepath.Join(d, "c.vmdk")
	sh(t, "qemu-img", "create", "-q", "-f", "vmdk", parent, "1000k")
	sh(t, "qemu-io", "-f", "vmdk", "-c", "write -P 3 0 64k", parent)
	sh(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "backing_file="+parent+",backing_fmt=vmdk", vmdkTop, "4M")
	sh(t, "qemu-io", "-f", "vmdk", "-c", "write -P 7 2M 64k", vmdkTop)
	for _, spec := range []string{
		"driver=raw,file.driver=qcow2,file.file.filename=" + shortTop,
		"driver=raw,file.driver=vmdk,file.file.filename=" + vmdkTop,
		"driver=raw,offset=65536,size=2M,file.driver=vmdk,file.file.filename=" + vmdkTop,
	} {
		sub := shortDir(t)
		q := startQemuNbd(t, sub, "--image-opts", spec)
		s := startUnix(t, sub, "disk", "-r", "-A", "--image-opts", spec)
		for _, ctx := range []string{"--map", "--map=qemu:allocation-depth"} {
			if got, want := sh(t, "nbdinfo", ctx, s.uri), sh(t, "nbdinfo", ctx, q); got != want {
				t.Errorf("%s %s: qnbd\n%s\nqemu-nbd\n%s", spec, ctx, got, want)
			}
		}
		s.stop()
	}
}
