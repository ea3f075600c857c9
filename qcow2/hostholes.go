package qcow2

import "github.com/qring/qring/block"

// HostHoles refines s, a status BlockStatus returned for host data, as
// QEMU's block status does on an image whose metadata was preallocated
// (BDRV_BLOCK_RECURSE, which qemu-nbd's base:allocation shows): s is cut
// to the run of host bytes that share its first byte's state, and reads
// as zeros (data still) where that run is a hole of the host file (or
// of the data file). Other statuses, and every status of an image that
// does not look preallocated (detectMetadataPrealloc, decided at the
// first call), come back as they are; so does s when the host file
// cannot say.
func (im *Image) HostHoles(s Status) Status {
	if !s.Data || s.HostOff < 0 || s.Compressed || im.crypt != nil {
		return s
	}
	im.metaPrealloc.once.Do(func() { im.metaPrealloc.yes = im.detectMetadataPrealloc() })
	if !im.metaPrealloc.yes {
		return s
	}
	d, err := im.dataDev()
	if err != nil {
		return s
	}
	e := MapEntry{Length: s.Len, Offset: &s.HostOff}
	hostRun(d, &e)
	s.Len, s.Zero = e.Length, e.Zero
	return s
}

// hostHoles reports whether Map looks at the holes of im's host file
// under its data clusters: only when the file has clearly fewer clusters
// allocated on the host than the refcounts say are in use, the sign of
// metadata preallocation (qemu's qcow2_detect_metadata_preallocation).
// On other images data is data wherever it lies, as in qemu-img map: a
// cluster zeroed by fallocate is still the image's data. The answer is
// kept for the Map call.
func (m *mapper) hostHoles(im *Image) bool {
	v, ok := m.holes[im]
	if !ok {
		v = im.detectMetadataPrealloc()
		m.holes[im] = v
	}
	return v
}

// detectMetadataPrealloc counts the clusters with a nonzero refcount
// until it reaches the threshold qemu uses: the host's allocation in
// clusters plus a ninth, and at least two more. False on any error.
func (im *Image) detectMetadataPrealloc() bool {
	dm, ok := im.dev.(block.DataMapper)
	if !ok {
		return false
	}
	flen, err := im.dev.Size()
	if err != nil {
		return false
	}
	alloc, err := dm.AllocatedSize()
	if err != nil {
		return false
	}
	cs := int64(im.g.ClusterSize)
	real := alloc / cs
	threshold := max(real*10/9, real+2)
	end := uint64((flen + cs - 1) / cs)
	im.mu.Lock()
	defer im.mu.Unlock()
	var count int64
	for c := uint64(0); c < end && count < threshold; c++ {
		rc, err := im.refcount(c)
		if err != nil {
			return false
		}
		if rc != 0 {
			count++
		}
	}
	return count >= threshold
}
