package main

import (
	"fmt"

	"github.com/qring/qring/qcow2"
)

// setCreateOption sets one qcow2 create option. compression_type is zlib
// or zstd; extended_l2, which qemu-img create echoes with its default, is
// accepted with the value qring writes (off) and refused clearly
// otherwise: the engine creates no extended-L2 images.
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
			return nil
		case "on", "true":
			return fmt.Errorf("extended_l2=on is not supported: qring does not create images with subclusters")
		}
		return fmt.Errorf("invalid extended_l2 '%s' (off)", v)
	}
	return o.Set(k, v)
}
