// Package bench holds qbench's workloads: Config describes a run the way
// qemu-img bench's flags do, Run executes it against an image opened through
// the io_uring (or threads) backend, and Result carries throughput, an
// HDR-style latency histogram, CPU time and engine counters, with reporters
// for the qemu-style text, JSON and go test -bench lines.
//
// The workload mirrors qemu-img bench (qemu-img.c img_bench, QEMU 7.2):
// Depth workers each issue synchronous requests; request i goes to
// offset Offset + i*Step, wrapped as (offset + step) % image size, handed out
// through one atomic counter so the stream is as sequential as qemu's. The io_uring
// File batches the concurrent callers into shared io_uring_enter calls.
// With Config.Queue (qbench --queue) one goroutine runs the same requests,
// in the same order, through a block.Queue instead (queue.go): it submits
// what fits, waits for a quarter of the depth to complete, and refills,
// as qemu-img bench's single thread does with its AIO context.
//
// Invariants:
//
//	W1  No allocation per request in the worker loop, nor in the queue
//	    runner's (TestRun_AllocsPerRequest).
//	W2  With a flush interval N, the interval flushes come after p
//	    requests for each p in [min(depth, count), count) with
//	    (count-p) % N == 0, as qemu-img bench's (it flushes when the
//	    requests not yet sent are a multiple of N, from its first
//	    completion on); drained, no request i >= p starts before all
//	    requests < p completed and that flush returned.
//	W3  The reported time runs from the first submission to the last
//	    completion; the final flush and close are outside it, as in qemu-img.
//	W4  Work the engine goes on doing after the last completion (the zero
//	    fill of prealloc-fill=zeroes, until Close stops it) is counted in
//	    full, read after Close, and its part after the last completion is
//	    reported apart (TestRun_FillCountedToClose).
package bench
