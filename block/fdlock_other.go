//go:build !linux

package block

// Open file description locks are Linux's: elsewhere FDLocks.Lock takes
// none and succeeds, as QEMU's locking=auto goes without locks where the
// system has no OFD locks.
const (
	ofdLocks  = false
	fOFDGetLk = -1
	fOFDSetLk = -1
)
