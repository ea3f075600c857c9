package format

// External data files (incompatible bit 2, docs/interop/qcow2.txt): guest
// clusters live in a separate file at their guest offset, are not
// refcounted, and every allocated entry carries COPIED. An entry whose
// host offset is 0 is then ambiguous: guest cluster 0, allocated, or no
// cluster at all. QEMU's qcow2_get_cluster_type tells them apart by
// COPIED ("all clusters in external data files always have refcount 1").
// These are the classifications with that rule; external says the image
// has an external data file.

// AllocatedAtZero reports whether e, in an image with an external data
// file when external, names host offset 0: a standard entry without the
// zero flag whose offset field is 0 and that carries COPIED.
func (e L2Entry) AllocatedAtZero(external bool) bool {
	return external && !e.Compressed() && uint64(e)&OflagZero == 0 && e.Offset() == 0 && e.Copied()
}

// TypeIn is Type in an image with an external data file when external:
// an entry AllocatedAtZero is normal.
func (e L2Entry) TypeIn(external bool) ClusterType {
	if e.AllocatedAtZero(external) {
		return ClusterNormal
	}
	return e.Type()
}

// asAllocated is e with a nonzero offset field when it is allocated at
// host offset 0, for the extended-L2 classifications, which tell an
// allocated cluster by its offset field (the offset itself is not used).
func (e L2Entry) asAllocated(external bool) L2Entry {
	if e.AllocatedAtZero(external) {
		return e | L2Entry(1<<9)
	}
	return e
}

// SubclusterRangeTypeIn is SubclusterRangeType in an image with an
// external data file when external.
func SubclusterRangeTypeIn(e L2Entry, bitmap uint64, first uint, external bool) (SubclusterType, uint) {
	return SubclusterRangeType(e.asAllocated(external), bitmap, first)
}

// ValidateBitmapIn is ValidateBitmap in an image with an external data
// file when external.
func ValidateBitmapIn(e L2Entry, bitmap uint64, external bool) error {
	return ValidateBitmap(e.asAllocated(external), bitmap)
}
