package main

import (
	"errors"

	"github.com/qring/qring/qcow2"
)

// checkDataFileCreate refuses the data_file and data_file_raw options
// QEMU 7.2's qcow2 driver refuses, in its order and words (qcow2 DF1).
func checkDataFileCreate(o *qcow2.CreateOptions) error {
	switch {
	case o.DataFile != "" && o.Compat == "0.10":
		return errors.New("External data files are only supported with compatibility level 1.1 and above (use version=v3 or greater)")
	case o.DataFileRaw && o.DataFile == "":
		return errors.New("data-file-raw requires data-file")
	case o.DataFileRaw && o.BackingFile != "":
		return errors.New("Backing file and data-file-raw cannot be used at the same time")
	}
	return nil
}

// checkDataFileGiven refuses data_file given empty as QEMU does: it
// tries to create a file of that name.
func checkDataFileGiven(req *createRequest) error {
	if req.given["data_file"] && req.opts.DataFile == "" {
		return errors.New("Could not create '': No such file or directory")
	}
	return nil
}
