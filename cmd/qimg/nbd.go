package main

import (
	"errors"
	"fmt"

	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/internal/protocol"
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

// nbdCreateErr is the error of an image to be created on an NBD name
// (protocol.Path's refusal, err): qemu-img opens the export instead and
// formats it, so an export that does not open is refused in its words;
// one that does is refused as qring does not format exports.
func nbdCreateErr(name string, err error) error {
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Driver != "nbd" {
		return err
	}
	if derr := imgopen.DialNBD(name); derr != nil {
		return fmt.Errorf("Protocol driver 'nbd' does not support image creation, and opening the image failed: %v", derr)
	}
	return err
}
