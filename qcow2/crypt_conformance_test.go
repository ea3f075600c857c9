package qcow2_test

import (
	"math/rand/v2"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/blocktest"
	"github.com/qring/qring/block/memdev"
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
	st := blocktest.NewStall()
	devs := map[block.Device]*memdev.Dev{}
	open := func(t *testing.T, m *memdev.Dev, o qcow2.Options) *qcow2.Image {
		im, err := qcow2.OpenDevice(m, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { im.Close() })
		return im
	}
	blocktest.Run(t, func(t *testing.T) block.Device {
		m := memdev.New(memdev.Options{OnWrite: st.Hook})
		co := qcow2.CreateOptions{Size: size, ClusterSize: cluster,
			Encrypt: qcow2.EncryptOptions{Format: "luks", Passphrase: pass, Iterations: 1000}}
		if err := qcow2.CreateDevice(m, co); err != nil {
			t.Fatal(err)
		}
		im := open(t, m, opts)
		devs[im] = m
		return im
	}, blocktest.Config{
		FixedSize: true, PastEndErr: qcow2.ErrOutOfRange,
		Truncate: blocktest.TruncateGrow, TruncateErr: qcow2.ErrUnsupported,
		AllocAlign: cluster,
		Stall:      st,
		Crash: func(t *testing.T, d block.Device) block.Device {
			return open(t, devs[d].CrashClone(rand.New(rand.NewPCG(1, 2)), 0), opts)
		},
		ReadOnly: func(t *testing.T, d block.Device) block.Device {
			o := opts
			o.ReadOnly = true
			return open(t, devs[d], o)
		},
	})
}
