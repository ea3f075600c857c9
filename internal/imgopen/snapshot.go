package imgopen

import (
	"errors"
	"fmt"
	"strings"

	"github.com/qring/qring/qcow2"
)

// SnapshotParam is the internal snapshot an image is to be read as:
// qemu-img's -l (convert, measure) and qemu-nbd's -l, written
// "snapshot.id=ID,snapshot.name=NAME" (either or both), or an ID or a
// name.
type SnapshotParam struct {
	ID, Name string
	// Either: a bare ID_OR_NAME, looked up by ID first, then by name.
	Either bool
	// emptyKey: snapshot.id= or snapshot.name= given empty, which in
	// QEMU matches no snapshot (where the engine takes "" for any).
	emptyKey bool
}

// ParseSnapshotParam reads a -l argument, refusing keys other than
// snapshot.id and snapshot.name with qemu-img's messages.
func ParseSnapshotParam(s string) (SnapshotParam, error) {
	if !strings.HasPrefix(s, "snapshot.") {
		return SnapshotParam{ID: s, Either: true}, nil
	}
	var p SnapshotParam
	kv, err := qcow2.SplitOptions(s)
	if err != nil {
		return p, fmt.Errorf("%v\nFailed in parsing snapshot param '%s'", err, s)
	}
	for _, o := range kv {
		switch o[0] {
		case "snapshot.id":
			p.ID = o[1]
			p.emptyKey = p.emptyKey || o[1] == ""
		case "snapshot.name":
			p.Name = o[1]
			p.emptyKey = p.emptyKey || o[1] == ""
		default:
			return p, fmt.Errorf("Invalid parameter '%s'\nFailed in parsing snapshot param '%s'", o[0], s)
		}
	}
	return p, nil
}

// LoadSnapshot makes the read-only image read as the snapshot p (QEMU's
// bdrv_snapshot_load_tmp_by_id_or_name), with QEMU's messages.
func (o *Opened) LoadSnapshot(p SnapshotParam) error {
	if o.Image == nil {
		return fmt.Errorf("Failed to load snapshot: Block format '%s' used by device '' does not support temporarily loading internal snapshots", o.Format())
	}
	err := qcow2.ErrNoSnapshot
	if !p.emptyKey {
		err = o.Image.LoadSnapshotTemp(p.ID, p.Name)
	}
	if p.Either && errors.Is(err, qcow2.ErrNoSnapshot) {
		err = o.Image.LoadSnapshotTemp("", p.ID)
	}
	if errors.Is(err, qcow2.ErrNoSnapshot) {
		return errors.New("Failed to load snapshot: Can't find snapshot")
	}
	if err != nil {
		return fmt.Errorf("Failed to load snapshot: %w", err)
	}
	return nil
}
