package format

import "fmt"

// SnapshotExtraQEMU is the extra data size QEMU 7.2 writes: the 64-bit VM
// state size, the virtual disk size and the icount.
const SnapshotExtraQEMU = 24

// SnapshotExtra returns QEMU 7.2's extra data for a snapshot: VM state
// size vmState, virtual disk size diskSize, and icount (-1: none).
func SnapshotExtra(vmState, diskSize uint64, icount int64) []byte {
	b := make([]byte, SnapshotExtraQEMU)
	be.PutUint64(b, vmState)
	be.PutUint64(b[8:], diskSize)
	be.PutUint64(b[16:], uint64(icount))
	return b
}

// EncodeSnapshots lays the entries out as a snapshot table (the inverse of
// ParseSnapshots): each entry's fixed part, its extra data, ID and name,
// padded to 8 bytes. DiskSize is not encoded separately: it lives in
// ExtraData.
func EncodeSnapshots(snaps []Snapshot) ([]byte, error) {
	if len(snaps) > MaxSnapshots {
		return nil, fmt.Errorf("qcow2: %d snapshots (at most %d)", len(snaps), MaxSnapshots)
	}
	var out []byte
	for i, s := range snaps {
		if len(s.ID) > 0xffff || len(s.Name) > 0xffff || len(s.ExtraData) > 1024 {
			return nil, fmt.Errorf("qcow2: snapshot %d: ID, name or extra data too long", i)
		}
		var f [40]byte
		be.PutUint64(f[0:], uint64(s.L1TableOffset))
		be.PutUint32(f[8:], s.L1Size)
		be.PutUint16(f[12:], uint16(len(s.ID)))
		be.PutUint16(f[14:], uint16(len(s.Name)))
		be.PutUint32(f[16:], s.DateSec)
		be.PutUint32(f[20:], s.DateNsec)
		be.PutUint64(f[24:], s.VMClockNsec)
		be.PutUint32(f[32:], s.VMStateSize)
		be.PutUint32(f[36:], uint32(len(s.ExtraData)))
		out = append(out, f[:]...)
		out = append(out, s.ExtraData...)
		out = append(out, s.ID...)
		out = append(out, s.Name...)
		for len(out)%8 != 0 {
			out = append(out, 0)
		}
		if len(out) > MaxSnapshotTableBytes {
			// QEMU's qcow2_write_snapshots (EFBIG): QEMU would not open
			// the image any more.
			return nil, fmt.Errorf("%w: the snapshot table would take more than %d bytes", ErrUnsupported, MaxSnapshotTableBytes)
		}
	}
	return out, nil
}
