package qcow2_test

import (
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/blocktest"
	"github.com/qring/qring/qcow2"
)

// TestConformance_Encrypted runs the block.Device conformance kit on
// LUKS-encrypted images: misaligned requests (sector read-modify-write),
// concurrency (writes that share no sector never wait for each other),
// crash and read-only views, all through the cipher.
func TestConformance_Encrypted(t *testing.T) {
	const size = 16 << 20
	const cluster = 64 << 10
	pass := []byte("conformance")
	opts := qcow2.Options{PreallocSize: 2 << 20, PreallocAlign: 1 << 20, Passphrase: pass}
	co := qcow2.CreateOptions{Size: size, ClusterSize: cluster,
		Encrypt: qcow2.EncryptOptions{Format: "luks", Passphrase: pass, Iterations: 1000}}
	open, cfg := memdevImages(co, opts, block.MediaUnknown)
	blocktest.Run(t, open, engineKitConfig(cfg, cluster))
}
