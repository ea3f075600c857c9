package main

import (
	"fmt"

	"github.com/qring/qring/qcow2"
)

// setCreateOption sets one qcow2 create option. compression_type, which
// qemu-img create echoes with its default, is accepted with the value
// qring writes (zlib) and refused clearly otherwise: the engine creates
// no zstd images. extended_l2 (on, off) creates images with subclusters
// or without.
func setCreateOption(o *qcow2.CreateOptions, k, v string) error {
	switch k {
	case "compression_type":
		switch v {
		case "zlib":
			return nil
		case "zstd":
			return fmt.Errorf("compression_type=zstd is not supported: qring creates zlib images only")
		}
		return fmt.Errorf("invalid compression_type '%s' (zlib)", v)
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
