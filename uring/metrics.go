package uring

import (
	"fmt"
	"sync/atomic"
)

// Metrics is a snapshot of a File's counters (File.Metrics). Counters only
// grow; use Sub to get the activity of an interval.
type Metrics struct {
	Enters          uint64 // io_uring_enter calls (submit and/or wait)
	SQEs            uint64 // SQEs the kernel consumed
	CQEs            uint64 // CQEs reaped
	CQOverflows     uint64 // reaps that found the CQ overflowed (kernel counter delta + flag)
	EAgainResubmits uint64 // -EAGAIN/-EINTR completions resubmitted
	ShortResubmits  uint64 // short reads/writes whose remainder was resubmitted
	Misaligned      uint64 // O_DIRECT requests bounced through aligned buffers (U1)
	RMW             uint64 // of those, writes done as read-modify-write (U1)
	Fallocates      uint64 // fallocate calls (ring or syscall)
	Fsyncs          uint64 // fdatasync calls (ring or syscall)
	Merged          uint64 // data requests that rode on another request's SQE (R8)
	MergeSplits     uint64 // merged SQEs that failed and were resubmitted request by request
	// WriteZeroesFallocates counts fallocate(FALLOC_FL_WRITE_ZEROES)
	// calls (Allocate zeroing, U2; also in Fallocates), WriteZeroesRefused
	// those refused, each followed by a ZERO_RANGE.
	WriteZeroesFallocates uint64
	WriteZeroesRefused    uint64
	// QueueSlow counts requests on a Queue that its ring did not take
	// (or only partly: short transfers) and the File's own path ran.
	QueueSlow uint64
	// Fixed counts SQEs that read or wrote a registered buffer
	// (READ_FIXED/WRITE_FIXED: the shared zero buffer, R9, or a Queue's
	// RegisterBuffers), so the kernel pinned no pages for them.
	Fixed uint64
}

// Sub returns m - o, field by field.
func (m Metrics) Sub(o Metrics) Metrics {
	return Metrics{
		Enters:          m.Enters - o.Enters,
		SQEs:            m.SQEs - o.SQEs,
		CQEs:            m.CQEs - o.CQEs,
		CQOverflows:     m.CQOverflows - o.CQOverflows,
		EAgainResubmits: m.EAgainResubmits - o.EAgainResubmits,
		ShortResubmits:  m.ShortResubmits - o.ShortResubmits,
		Misaligned:      m.Misaligned - o.Misaligned,
		RMW:             m.RMW - o.RMW,
		Fallocates:      m.Fallocates - o.Fallocates,
		Fsyncs:          m.Fsyncs - o.Fsyncs,
		Merged:          m.Merged - o.Merged,
		MergeSplits:     m.MergeSplits - o.MergeSplits,

		WriteZeroesFallocates: m.WriteZeroesFallocates - o.WriteZeroesFallocates,
		WriteZeroesRefused:    m.WriteZeroesRefused - o.WriteZeroesRefused,
		QueueSlow:             m.QueueSlow - o.QueueSlow,
		Fixed:                 m.Fixed - o.Fixed,
	}
}

// SQEsPerEnter is the average submission batch (0 without enters).
func (m Metrics) SQEsPerEnter() float64 {
	if m.Enters == 0 {
		return 0
	}
	return float64(m.SQEs) / float64(m.Enters)
}

// RequestsPerEnter counts merged requests too: the requests each enter
// carried to the kernel on average (0 without enters).
func (m Metrics) RequestsPerEnter() float64 {
	if m.Enters == 0 {
		return 0
	}
	return float64(m.SQEs+m.Merged) / float64(m.Enters)
}

func (m Metrics) String() string {
	return fmt.Sprintf("enters=%d sqes=%d cqes=%d sqes/enter=%.2f merged=%d reqs/enter=%.2f merge_splits=%d cq_overflows=%d eagain=%d short=%d misaligned=%d rmw=%d fallocates=%d write_zeroes=%d write_zeroes_refused=%d fsyncs=%d queue_slow=%d fixed=%d",
		m.Enters, m.SQEs, m.CQEs, m.SQEsPerEnter(), m.Merged, m.RequestsPerEnter(), m.MergeSplits,
		m.CQOverflows, m.EAgainResubmits, m.ShortResubmits, m.Misaligned, m.RMW, m.Fallocates,
		m.WriteZeroesFallocates, m.WriteZeroesRefused, m.Fsyncs, m.QueueSlow, m.Fixed)
}

// counters are the live atomic counters behind Metrics.
type counters struct {
	enters, sqes, cqes, cqOverflows, eagain, short, misaligned, rmw, fallocates, fsyncs, merged, mergeSplits atomic.Uint64

	wzFallocates, wzRefused atomic.Uint64
	queueSlow, fixed        atomic.Uint64
}

func (c *counters) snapshot() Metrics {
	return Metrics{
		Enters:          c.enters.Load(),
		SQEs:            c.sqes.Load(),
		CQEs:            c.cqes.Load(),
		CQOverflows:     c.cqOverflows.Load(),
		EAgainResubmits: c.eagain.Load(),
		ShortResubmits:  c.short.Load(),
		Misaligned:      c.misaligned.Load(),
		RMW:             c.rmw.Load(),
		Fallocates:      c.fallocates.Load(),
		Fsyncs:          c.fsyncs.Load(),
		Merged:          c.merged.Load(),
		MergeSplits:     c.mergeSplits.Load(),

		WriteZeroesFallocates: c.wzFallocates.Load(),
		WriteZeroesRefused:    c.wzRefused.Load(),
		QueueSlow:             c.queueSlow.Load(),
		Fixed:                 c.fixed.Load(),
	}
}
