package main

import "github.com/qring/qring/internal/imgopen"

// nbdCanonical is an NBD file name as QEMU names the node it opens
// (nbd_refresh_filename: nbd+unix://?socket=PATH for
// nbd+unix:///?socket=PATH, nbd://HOST:PORT for nbd:HOST:PORT), and
// any other name as it is.
func nbdCanonical(name string) string {
	if !imgopen.IsNBDName(name) {
		return name
	}
	a, err := imgopen.ParseNBDName(name)
	if err != nil {
		return name
	}
	return a.URI()
}
