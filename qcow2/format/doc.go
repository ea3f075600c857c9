// Package format holds the pure qcow2 codecs: the header and its
// extensions, feature bits, L1/L2/refcount entries, compressed-cluster
// descriptors, the snapshot table, and the image geometry; and Probe, the
// format QEMU finds in any image's first sector. It does no I/O,
// uses no unsafe casts, and decodes big-endian fields at explicit offsets
// (docs/interop/qcow2.rst in QEMU).
//
// Invariants (cited as FM1..FM7):
//
//	FM1  Parse never panics and never allocates more than the caps below,
//	     whatever the input: L1 <= 32 MiB, refcount table <= 8 MiB
//	     (QEMU's QCOW_MAX_L1_SIZE and QCOW_MAX_REFTABLE_SIZE), header
//	     extensions within cluster 0.
//	FM2  Every rejection is a *FieldError naming the field, wrapping
//	     ErrCorrupt (the image is damaged) or ErrUnsupported (valid, but a
//	     feature we do not implement, e.g. an unknown incompatible bit).
//	FM3  Encode(Parse(b)) preserves unknown header fields (bytes between the
//	     known v3 fields and header_length) and unknown header extensions.
//	FM4  Guest and host offsets are distinct types (GuestOff, HostOff); the
//	     geometry is computed once from cluster_bits, refcount_order and the
//	     extended-L2 bit, and its methods take and return one kind of
//	     offset each. Table entries are encoded and decoded here only
//	     (tables.go).
//	FM5  Entry codecs reject reserved bits and misaligned offsets rather than
//	     masking them away.
//	FM6  A header rewrite planned by PlanHeaderWrite survives a power cut
//	     that tears its writes into any subset of 512-byte sectors: only
//	     the last write changes the first sector, and no write changes a
//	     byte past it that the old header reads; a layout with that
//	     property is chosen (the backing file name moved, the optional
//	     feature name table dropped) where QEMU's own would not have it,
//	     and QEMU's plain rewrite is used only where none fits.
//	FM7  ParseHeader makes the checks QEMU 7.2's qcow2_do_open makes in
//	     QEMU's order, reading a short file's missing header bytes as
//	     zeros as QEMU does, so that of several faults it names the one
//	     QEMU names; their FieldErrors carry QEMU's message (Qemu,
//	     QemuText), which qemu-img-like tools print. Checks of ours that
//	     QEMU does not make come after the QEMU check they refine and
//	     carry no QEMU message.
package format
