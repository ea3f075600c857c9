package qcow2

// This file pauses the filler (fill.go) while the guest writes whole
// clusters with large requests: a write that covers its new clusters
// (a run, allocrun.go) leaves no byte of them for the zeros, so zeros
// streamed ahead of it are written and then overwritten in full, and
// its allocations wait for the pieces in flight over their space
// (FillWaits). On ext4 over zram, 384 writes of 2 MiB into a fresh
// image took 1.90 s with the zeros ahead against 0.22 s without them
// (prealloc-fill=unwritten, and qemu-img bench 0.22 s); qimg convert
// of 768 MiB, 2.6 times qemu-img's time.
//
// Every fillJudgeClusters data clusters allocated, the filler looks at
// how many of them were allocated in runs: three quarters or more, and
// it claims no piece until a later window finds fewer. Like the judge's
// pause (fill_adapt.go), this changes only how many pieces are
// claimed, never where (Q11): the reserve ahead stays, and the run's
// clusters are first writes into its unwritten (fresh) space. It applies
// to every filler, auto or zeroes: the guest's own bytes are the fill.

// bulkJudge is the filler's view of the guest's large writes (under
// filler.mu).
type bulkJudge struct {
	on       bool  // the last window was mostly runs: claim nothing
	clusters int64 // clustersAllocated at the last look
	runs     int64 // runClusters at the last look
}

// judgeBulkLocked looks at the window of allocations since the last
// look, once it is fillJudgeClusters long. Called with f.mu held, on
// every takeSpace (claimFill).
func (f *filler) judgeBulkLocked(im *Image) {
	b := &f.bulk
	clusters := im.c.clustersAllocated.Load()
	dc := clusters - b.clusters
	if dc < fillJudgeClusters {
		return
	}
	runs := im.c.runClusters.Load()
	b.on = (runs-b.runs)*4 >= dc*3
	b.clusters, b.runs = clusters, runs
}
