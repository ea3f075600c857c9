package block

// The open file description lock commands (Linux, every architecture;
// package syscall predates them).
const (
	ofdLocks  = true
	fOFDGetLk = 36 // F_OFD_GETLK
	fOFDSetLk = 37 // F_OFD_SETLK
)
