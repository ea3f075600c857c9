package qcow2

import "github.com/qring/qring/block"

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
