package main

import (
	"fmt"
	"os"

	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/qcow2"
)

// refuseOverwrite returns an error when out is the same file (device and
// inode, os.SameFile: another path, a hard link or a symlink to it) as in
// or as any image of in's backing chain: converting an image onto itself
// would truncate what it reads. An out that does not exist yet is fine.
func refuseOverwrite(in, out string, chain []string) error {
	ofi, err := os.Stat(out)
	if err != nil {
		return nil
	}
	for i, p := range append([]string{in}, chain...) {
		fi, err := os.Stat(p)
		if err != nil || !os.SameFile(fi, ofi) {
			continue
		}
		if i == 0 {
			return fmt.Errorf("output file '%s' is the input file '%s': refusing to overwrite it", out, in)
		}
		return fmt.Errorf("output file '%s' is the backing file '%s' of the input: refusing to overwrite it", out, p)
	}
	return nil
}

// backingChain lists the backing files below an open image, as paths
// (each relative name resolved against the image naming it, as QEMU's
// path_combine). It stops at a raw image or a file it cannot read.
func backingChain(path string, img *imgopen.Opened) []string {
	var chain []string
	if img.Image == nil {
		return nil
	}
	name := img.Image.Header().BackingFile
	for name != "" && len(chain) < 64 {
		p := pathCombine(path, name)
		chain = append(chain, p)
		next, err := imgopen.Open(imgopen.Spec{Path: p, ReadOnly: true, Opts: qcow2.Options{NoBacking: true}})
		if err != nil || next.Image == nil {
			if err == nil {
				next.Close()
			}
			break
		}
		path, name = p, next.Image.Header().BackingFile
		next.Close()
	}
	return chain
}
