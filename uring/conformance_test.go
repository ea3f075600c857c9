//go:build linux

package uring

import (
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/blocktest"
)

// TestConformance runs the block.Device conformance kit (block/doc.go
// B1..B7) against every backend and mode: ring and threads, O_DIRECT and
// buffered, merging on and off, hybrid.
func TestConformance(t *testing.T) {
	for _, c := range []config{
		{"ring", Options{Backend: Ring}},
		{"ring-nomerge", Options{Backend: Ring, NoMerge: true}},
		{"ring-direct", Options{Backend: Ring, Direct: true}},
		{"ring-direct-nomerge", Options{Backend: Ring, Direct: true, NoMerge: true}},
		{"ring-direct-hybrid", Options{Backend: Ring, Direct: true, Hybrid: true}},
		{"threads", Options{Backend: Threads}},
		{"threads-direct", Options{Backend: Threads, Direct: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			blocktest.Run(t, func(t *testing.T) block.Device { return openTemp(t, c.opt) }, blocktest.Config{
				ReadOnly: func(t *testing.T, d block.Device) block.Device {
					f := d.(*File)
					ro, err := Opener(c.opt)(f.path, true)
					if err != nil {
						t.Fatal(err)
					}
					return ro
				},
			})
		})
	}
}

// TestFlush_Fdatasync: Flush is one fdatasync (block B6 on the host).
func TestFlush_Fdatasync(t *testing.T) {
	for _, c := range configs() {
		t.Run(c.name, func(t *testing.T) {
			f := openTemp(t, c.opt)
			if err := block.WriteAt(f, fill(4096, 1), 0); err != nil {
				t.Fatal(err)
			}
			before := f.Metrics().Fsyncs
			if err := f.Flush(); err != nil {
				t.Fatal(err)
			}
			if f.Metrics().Fsyncs != before+1 {
				t.Fatal("Flush did not fdatasync")
			}
		})
	}
}

func fill(n int, v byte) []byte {
	b := block.AlignedBuf(n, block.DefaultMemAlign)
	for i := range b {
		b[i] = v
	}
	return b
}
