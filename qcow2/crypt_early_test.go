package qcow2

import (
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/qring/qring/internal/testkit"
)

// An early write (Q10) into an encrypted cluster under allocation: the
// sectors it encrypts take the IV of their method (LUKS: the host
// sector; legacy AES: the guest sector), as every other write does. On
// an encrypted image a cluster is ready only once its whole COW is
// written, a window of a few instructions before the seal, so neither
// the torture suite nor a plain run produced one (EarlyWrites 0):
// readyPause holds the allocator in that window. The host cluster is
// placed away from the guest's, so a wrong IV cannot pass by chance;
// qemu-io and qemu-img read the result.
func TestCrypt_EarlyWrite(t *testing.T) {
	t.Parallel()
	testkit.NeedQemu(t)
	for _, format := range []string{"luks", "aes"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			const cs, size = 64 << 10, 4 << 20
			p := filepath.Join(testkit.Dir(t), "e.qcow2")
			co := CreateOptions{Size: size, ClusterSize: cs, Encrypt: EncryptOptions{Format: format, Passphrase: []byte(cryptPass)}}
			if format == "luks" {
				co.Encrypt.Iterations = 1000
			}
			if err := Create(p, co); err != nil {
				t.Fatal(err)
			}
			im := cryptOpen(t, p, Options{})
			shadow := make([]byte, size)
			// The guest's last cluster first: the next allocation's
			// host cluster is not its guest cluster.
			last := pattern(3000, 1)
			if _, err := im.WriteAt(last, size-cs+100); err != nil {
				t.Fatal(err)
			}
			copy(shadow[size-cs+100:], last)

			arrived, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			im.readyPause = func() { once.Do(func() { close(arrived); <-release }) }
			c := int64(2 * cs)
			a, b := pattern(1000, 2), pattern(5000, 3) // unaligned, partial sectors
			aOff, bOff := c+700, c+30001
			// (A queue sends writes on encrypted images to this same
			// path: queue.go.)
			wa := make(chan error, 1)
			go func() { _, err := im.WriteAt(a, aOff); wa <- err }()
			waitCh(t, arrived, "the allocation's ready window")
			wb := make(chan error, 1)
			go func() { _, err := im.WriteAt(b, bOff); wb <- err }()
			deadline := time.Now().Add(10 * time.Second)
			for im.Metrics().EarlyWrites == 0 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if im.Metrics().EarlyWrites == 0 {
				close(release)
				t.Fatal("the second write did not go early")
			}
			close(release)
			for i, ch := range []chan error{wa, wb} {
				if err, ok := returned(ch, 10*time.Second); !ok || err != nil {
					t.Fatalf("write %d: %v (returned %v)", i, err, ok)
				}
			}
			copy(shadow[aOff:], a)
			copy(shadow[bOff:], b)
			im.readyPause = nil
			testkit.MustEqual(t, testkit.ReadAll(t, im), shadow, "our read back")
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			cryptCheck(t, p)
			testkit.MustEqual(t, qemuCryptRaw(t, p), shadow, "QEMU's read")
		})
	}
}
