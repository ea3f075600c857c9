package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/qcow2/format"
)

// snapshotInfo is QEMU's SnapshotInfo, as qemu-img info lists it.
// Its fields are in qemu-img's order (imageInfo's comment).
type snapshotInfo struct {
	Icount      *int64 `json:"icount,omitempty"` // signed, as QEMU prints it
	VMClockNsec int64  `json:"vm-clock-nsec"`
	Name        string `json:"name"`
	DateSec     int64  `json:"date-sec"`
	DateNsec    int64  `json:"date-nsec"`
	VMClockSec  int64  `json:"vm-clock-sec"`
	ID          string `json:"id"`
	VMStateSize int64  `json:"vm-state-size"`
}

// readSnapshots reads and decodes the internal snapshot table of an open
// qcow2 image (format.ParseSnapshots) into qemu-img info's form.
func readSnapshots(im *qcow2.Image) ([]snapshotInfo, error) {
	h := im.Header()
	if h.NbSnapshots == 0 {
		return nil, nil
	}
	dev := im.Device()
	fsize, err := dev.Size()
	if err != nil {
		return nil, err
	}
	// As QEMU (and the read-only open): a table that runs past the end
	// of the file reads as zeros there.
	fsize = max(fsize, qcow2.SnapshotTableEnd(h.SnapshotsOffset))
	b, err := qcow2.ReadSnapshotTable(dev, h.SnapshotsOffset, h.NbSnapshots, fsize)
	if err != nil {
		return nil, fmt.Errorf("reading the snapshot table: %w", err)
	}
	snaps, _, err := format.ParseSnapshots(b, h.NbSnapshots)
	if err != nil {
		return nil, err
	}
	out := make([]snapshotInfo, 0, len(snaps))
	for _, s := range snaps {
		out = append(out, snapshotOf(s))
	}
	return out, nil
}

// snapshotOf is qcow2_snapshot_list's view of one entry: the 64-bit VM
// state size and the icount from the extra data when it holds them
// (icount -1, or no room for it, means none).
func snapshotOf(s format.Snapshot) snapshotInfo {
	// QEMU copies them into QEMUSnapshotInfo's id_str[128] and
	// name[256] (pstrcpy): longer ones are listed cut.
	id, name := s.ID, s.Name
	if len(id) > 127 {
		id = id[:127]
	}
	if len(name) > 255 {
		name = name[:255]
	}
	si := snapshotInfo{ID: id, Name: name, VMStateSize: int64(s.VMStateSize),
		DateSec: int64(s.DateSec), DateNsec: int64(s.DateNsec),
		VMClockSec: int64(s.VMClockNsec / 1e9), VMClockNsec: int64(s.VMClockNsec % 1e9)}
	if len(s.ExtraData) >= 8 {
		si.VMStateSize = int64(binary.BigEndian.Uint64(s.ExtraData))
	}
	if len(s.ExtraData) >= 24 {
		if ic := int64(binary.BigEndian.Uint64(s.ExtraData[16:])); ic != -1 {
			si.Icount = &ic
		}
	}
	return si
}

// writeSnapshotsHuman prints qemu-img info's "Snapshot list:" table
// (QEMU's bdrv_snapshot_dump; the date in local time).
func writeSnapshotsHuman(w io.Writer, snaps []snapshotInfo) {
	fmt.Fprintln(w, "Snapshot list:")
	fmt.Fprintf(w, "%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT")
	for _, s := range snaps {
		date := time.Unix(s.DateSec, 0).Local().Format("2006-01-02 15:04:05")
		ns := s.VMClockSec*1e9 + s.VMClockNsec
		secs := ns / 1e9
		clock := fmt.Sprintf("%02d:%02d:%02d.%03d", secs/3600, (secs/60)%60, secs%60, (ns/1e6)%1000)
		icount := ""
		if s.Icount != nil {
			icount = fmt.Sprint(*s.Icount)
		}
		fmt.Fprintf(w, "%s %s %8s%20s%13s%11s\n", padBytes(s.ID, 9), padBytes(s.Name, 16), sizeToStr(s.VMStateSize), date, clock, icount)
	}
}

// padBytes pads s with spaces to n bytes, as C's %-Ns does (Go's pads
// to n runes: a name with "é" came out a column short).
func padBytes(s string, n int) string {
	if len(s) >= n {
		return s
	}
	return s + strings.Repeat(" ", n-len(s))
}

// snapshotOpt is -l's snapshot (imgopen.SnapshotParam), nil when -l is
// not given.
func (o *opts) snapshotOpt() (*imgopen.SnapshotParam, error) {
	if !o.has("l") {
		return nil, nil
	}
	p, err := imgopen.ParseSnapshotParam(o.get("l", ""))
	if err != nil {
		return nil, err
	}
	return &p, nil
}
