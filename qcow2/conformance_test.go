package qcow2_test

import (
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/blocktest"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit/imgcheck"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
)

// TestConformance runs the block.Device conformance kit on *qcow2.Image:
// a fixed-size device (writes past the virtual size are ErrOutOfRange)
// that grows but never shrinks (ErrUnsupported), whose Allocate zeroing
// needs cluster-aligned ranges. Images are created with CreateDevice on a
// memdev (with a Stall and a crash view; unknown medium, and RAM, where
// the engine streams zeros ahead in the background; and LUKS-encrypted)
// and with Create on a temp file (the default OSFile opener, and io_uring
// with O_DIRECT).
func TestConformance(t *testing.T) {
	t.Parallel()
	const size = 16 << 20
	const cluster = 64 << 10
	// Keep the reservation ahead small: the default (128 MiB) would make
	// every memdev that large.
	opts := qcow2.Options{PreallocSize: 2 << 20, PreallocAlign: 1 << 20}

	// run runs the kit with the engine's configuration plus extra.
	run := func(t *testing.T, open func(t *testing.T) block.Device, extra blocktest.Config) {
		blocktest.Run(t, open, engineKitConfig(extra, cluster))
	}

	for _, media := range []block.Media{block.MediaUnknown, block.MediaRAM} {
		t.Run("memdev-"+media.String(), func(t *testing.T) {
			t.Parallel() // each device its own images: the cases pack beside other parallel tests
			open, cfg := memdevImages(qcow2.CreateOptions{Size: size, ClusterSize: cluster}, opts, media)
			run(t, open, cfg)
		})
	}

	// LUKS-encrypted images: misaligned requests (sector
	// read-modify-write), concurrency (writes that share no sector never
	// wait for each other), crash and read-only views, all through the
	// cipher.
	t.Run("memdev-luks", func(t *testing.T) {
		t.Parallel()
		pass := []byte("conformance")
		co := qcow2.CreateOptions{Size: size, ClusterSize: cluster,
			Encrypt: qcow2.EncryptOptions{Format: "luks", Passphrase: pass, Iterations: 1000}}
		o := opts
		o.Passphrase = pass
		open, cfg := memdevImages(co, o, block.MediaUnknown)
		run(t, open, cfg)
	})

	for _, tc := range []struct {
		name   string
		opener qcow2.Opener
	}{
		{"file-osfile", nil},
		{"file-uring-direct", qcow2.Opener(uring.Opener(uring.Options{Direct: true}))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			paths := map[block.Device]string{}
			o := opts
			o.Opener = tc.opener
			run(t, func(t *testing.T) block.Device {
				path := filepath.Join(t.TempDir(), "img.qcow2")
				if err := qcow2.Create(path, qcow2.CreateOptions{Size: size, ClusterSize: cluster, Opener: tc.opener}); err != nil {
					t.Fatal(err)
				}
				im, err := qcow2.Open(path, o)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					im.Close()
					imgcheck.File(t, path, o)
				})
				paths[im] = path
				return im
			}, blocktest.Config{
				ReadOnly: func(t *testing.T, d block.Device) block.Device {
					ro := o
					// A second, read-only view of an image the test
					// still holds open read-write: force-share (-U).
					ro.ReadOnly, ro.ForceShare = true, true
					im, err := qcow2.Open(paths[d], ro)
					if err != nil {
						t.Fatal(err)
					}
					return im
				},
			})
		})
	}
}

// engineKitConfig is extra with the engine's configuration for the kit.
func engineKitConfig(extra blocktest.Config, cluster int64) blocktest.Config {
	cfg := extra
	cfg.FixedSize = true
	cfg.PastEndErr = qcow2.ErrOutOfRange
	cfg.Truncate = blocktest.TruncateGrow
	cfg.TruncateErr = qcow2.ErrUnsupported
	cfg.AllocAlign = cluster
	return cfg
}

// memdevImages returns a kit opener of images created with co on memdevs
// of media and opened with opts, and a kit configuration with a Stall on
// the memdevs, a crash view and a read-only view.
func memdevImages(co qcow2.CreateOptions, opts qcow2.Options, media block.Media) (func(t *testing.T) block.Device, blocktest.Config) {
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
	return func(t *testing.T) block.Device {
			m := memdev.New(memdev.Options{OnWrite: st.Hook, Media: media})
			if err := qcow2.CreateDevice(m, co); err != nil {
				t.Fatal(err)
			}
			// Checked once closed; the crash and read-only views
			// opened below close before it (cleanups run last first).
			t.Cleanup(func() { imgcheck.Mem(t, m, opts) })
			im := open(t, m, opts)
			devs[im] = m
			return im
		}, blocktest.Config{
			Stall: st,
			Crash: func(t *testing.T, d block.Device) block.Device {
				return open(t, devs[d].CrashClone(rand.New(rand.NewPCG(1, 2)), 0), opts)
			},
			ReadOnly: func(t *testing.T, d block.Device) block.Device {
				o := opts
				o.ReadOnly = true
				return open(t, devs[d], o)
			},
		}
}
