package block

// FileHinter is a device over a file whose file system takes allocation
// hints from the file's creator while the file is still empty: QEMU's
// file driver create options nocow and extent_size_hint, which qemu-img
// sets on every file it creates (an extent size hint of 1 MiB unless
// told otherwise). Hints change where the file system puts the bytes,
// never what reads return.
type FileHinter interface {
	// SetNoCOW turns copy-on-write off for the file (FS_NOCOW_FL, which
	// btrfs honours; other file systems ignore it). Best effort, as
	// QEMU's: it reports nothing.
	SetNoCOW()
	// SetExtentSizeHint asks the file system to allocate the file in
	// extents of n bytes (FS_XFLAG_EXTSIZE, which XFS honours). It fails
	// with the kernel's error where the file system refuses it (a size
	// that is not a multiple of its block, a file that has extents).
	SetExtentSizeHint(n uint32) error
}
