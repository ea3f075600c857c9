package main

import "github.com/qring/qring/qcow2/format"

// dataFileSpecific fills in the external data file's lines of qemu-img
// info (qcow2_get_specific_info): "data file" whenever the header names
// one (the extension, even without the bit), "data file raw" whenever
// the image has the external data file bit.
func dataFileSpecific(d *qcow2Detail, h format.Header) {
	if h.DataFile != "" {
		name := h.DataFile
		d.DataFile = &name
	}
	if h.IncompatibleFeatures&format.IncompatDataFile != 0 {
		raw := h.AutoclearFeatures&format.AutoclearDataFileRaw != 0
		d.DataFileRaw = &raw
	}
}
