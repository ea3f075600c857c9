//go:build !linux

package block

// Open file description locks are Linux's: elsewhere FDLocks.Lock fails
// (fcntl refuses command -1), and Options.NoLock opens without locks.
const (
	fOFDGetLk = -1
	fOFDSetLk = -1
)
