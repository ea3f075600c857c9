package bench

import "github.com/qring/qring/block"

// patternBuf returns an aligned buffer of n bytes, every one set to
// pattern, zero included. qemu-img bench memsets its buffers whatever the
// pattern, and so must we: a buffer never written is backed by the
// kernel's shared zero page, which get_user_pages cannot pin on its fast
// path, so every O_DIRECT write from it would take the slow path (on
// ext4 over zram, the seed's overwrite ran 1.14 s against 0.84 s from
// written pages). Requests from such a buffer are not what a guest sends.
func patternBuf(n int, pattern byte) []byte {
	b := block.AlignedBuf(n, block.DefaultMemAlign)
	for i := range b {
		b[i] = pattern
	}
	return b
}
