package main

import (
	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/nbd"
)

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

// onExport reports whether d is an NBD export, itself or under the raw
// windows and guards over it (their Unwrap).
func onExport(d block.Device) bool {
	for d != nil {
		if _, ok := d.(*nbd.Client); ok {
			return true
		}
		u, ok := d.(interface{ Unwrap() block.Device })
		if !ok {
			return false
		}
		d = u.Unwrap()
	}
	return false
}
