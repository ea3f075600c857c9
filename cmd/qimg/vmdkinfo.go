package main

import (
	"fmt"
	"io"

	"github.com/qring/qring/vmdk"
)

// vmdkDetail is ImageInfoSpecificVmdk (keys in qemu-img's order).
type vmdkDetail struct {
	CID        uint32           `json:"cid"`
	ParentCID  uint32           `json:"parent-cid"`
	CreateType string           `json:"create-type"`
	Extents    []vmdkExtentInfo `json:"extents"`
}

// vmdkExtentInfo is VmdkExtentInfo (keys in qemu-img's order).
type vmdkExtentInfo struct {
	Compressed  *bool  `json:"compressed,omitempty"`
	VirtualSize int64  `json:"virtual-size"`
	Filename    string `json:"filename"`
	ClusterSize *int64 `json:"cluster-size,omitempty"`
	Format      string `json:"format"`
}

// vmdkInfo fills qemu-img info's fields for a VMDK image: the cluster
// size of vmdk_co_get_info, the extent files' space added to the disk
// size (vmdk_co_get_allocated_file_size), and vmdk_get_specific_info.
func vmdkInfo(inf *imageInfo, path string, d *vmdk.Disk) {
	inf.ClusterSize = d.ClusterSize()
	for _, f := range d.ExtentFiles() {
		*inf.ActualSize += diskUsage(f)
	}
	v := &vmdkDetail{CID: d.CID(), ParentCID: d.ParentCID(), CreateType: d.CreateType(), Extents: []vmdkExtentInfo{}}
	for _, e := range d.Extents() {
		x := vmdkExtentInfo{VirtualSize: e.VirtualSize, Filename: e.Filename, Format: e.Format}
		if e.Compressed {
			t := true
			x.Compressed = &t
		}
		if e.ClusterSize != 0 {
			c := e.ClusterSize
			x.ClusterSize = &c
		}
		if e.Filename == "" {
			x.Filename = path
		}
		v.Extents = append(v.Extents, x)
	}
	inf.FormatSpecific = &formatSpecific{Type: "vmdk", VMDK: v}
	if h := d.ParentHint(); h != "" {
		// vmdk_parent_open: the hint, and vmdk as its format.
		inf.BackingFilename = h
		inf.FullBackingFilename = pathCombine(path, h)
		inf.BackingFilenameFormat = "vmdk"
	}
}

// writeVMDKHuman prints the vmdk block of qemu-img info.
func writeVMDKHuman(w io.Writer, d *vmdkDetail, indent string) {
	fmt.Fprintf(w, "%scid: %d\n", indent, d.CID)
	fmt.Fprintf(w, "%sparent cid: %d\n", indent, d.ParentCID)
	fmt.Fprintf(w, "%screate type: %s\n", indent, d.CreateType)
	fmt.Fprintf(w, "%sextents:\n", indent)
	for i, e := range d.Extents {
		in := indent + "        "
		fmt.Fprintf(w, "%s    [%d]:\n", indent, i)
		if e.Compressed != nil {
			fmt.Fprintf(w, "%scompressed: %t\n", in, *e.Compressed)
		}
		fmt.Fprintf(w, "%svirtual size: %d\n", in, e.VirtualSize)
		fmt.Fprintf(w, "%sfilename: %s\n", in, e.Filename)
		if e.ClusterSize != nil {
			fmt.Fprintf(w, "%scluster size: %d\n", in, *e.ClusterSize)
		}
		fmt.Fprintf(w, "%sformat: %s\n", in, e.Format)
	}
}
