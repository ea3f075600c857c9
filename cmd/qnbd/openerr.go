package main

import "fmt"

// openError is a failure to open the image. As qemu-nbd does
// (error_reportf_err(..., "Failed to blk_new_open '%s': ", argv[optind])),
// it names the image as it was given, a file name or the whole spec of
// --image-opts or json:, in qemu-nbd's words, before qnbd's own reason:
// the reasons name the file that failed, or none at all (a lock, a
// missing key, a file that is no qcow2 image), and a script starting
// several servers, or whoever reads its log, must see which image it was.
type openError struct {
	image string
	err   error
}

func (e *openError) Error() string {
	return fmt.Sprintf("Failed to blk_new_open '%s': %v", e.image, e.err)
}

func (e *openError) Unwrap() error { return e.err }
