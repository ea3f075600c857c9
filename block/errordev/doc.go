// Package errordev is a fault-injecting block.Device filter, in the style of
// pebble's vfs/errorfs: every device call becomes an Op, an Injector decides
// whether it fails, and the Dev counts ops so a test can sweep a workload
// with the fault at op 0, 1, 2, ... until a run completes with no fault
// fired (TestDev_Sweep shows the loop).
//
// Invariants:
//
//	E1  Ops are numbered from 0 in the order the calls reach the Dev; every
//	    injector in the chain sees every op (Any does not short-circuit), so
//	    OnIndex(i) and Dev.Ops agree on numbering.
//	E2  An injected failure happens before the child is called: the child is
//	    left untouched. ZeroThenWritev is two ops, Zero then Write; a fault on
//	    the Write op leaves the zeroing done and the data unwritten, which is
//	    what a failed linked write on io_uring leaves.
//	E3  Every injected error matches ErrInjected under errors.Is, and the
//	    errno it carries (ErrInjectedEIO: syscall.EIO, ErrInjectedENOSPC:
//	    syscall.ENOSPC), so a sweep can tell injected failures from real bugs.
//	E4  Size, Caps and Close are not ops: they are never injected or counted.
package errordev
