package block

// DataMapper is a device that can say which of its bytes the host stores
// and which lie in holes (SEEK_DATA and SEEK_HOLE on a file): what QEMU's
// file driver answers under block status, and what qemu-img map and
// measure show as "zero" for data whose host space is a hole. It is a
// report, never a promise about contents beyond B2: a hole reads as
// zeros, data may hold anything, zeros included.
type DataMapper interface {
	// DataRun reports whether off lies in data (false: in a hole) and
	// how many bytes from off, at most n, share that state. At or past
	// the end of the device it is a hole of n bytes, and so is a hole
	// that runs to the end.
	DataRun(off, n int64) (data bool, length int64, err error)
	// AllocatedSize is the space the host has allocated to the device in
	// bytes (st_blocks * 512 for a file).
	AllocatedSize() (int64, error)
}
