package main

import (
	"fmt"

	"github.com/qring/qring/qcow2"
)

// setCreateOption sets one qcow2 create option. compression_type is zlib
// or zstd; extended_l2 (on, off) creates images with subclusters or
// without.
func setCreateOption(o *qcow2.CreateOptions, k, v string) error {
	switch k {
	case "compression_type":
		switch v {
		case "zlib", "zstd":
			return o.Set(k, v)
		}
		return fmt.Errorf("invalid compression_type '%s' (zlib, zstd)", v)
	case "extended_l2":
		switch v {
		case "off", "false":
			o.ExtendedL2 = false
			return nil
		case "on", "true":
			o.ExtendedL2 = true
			return nil
		}
		return fmt.Errorf("invalid extended_l2 '%s' (on, off)", v)
	}
	return o.Set(k, v)
}
