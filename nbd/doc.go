// Package nbd is a Network Block Device server and client: the server
// exports any block.Device over the NBD protocol, so that clients nobody
// here wrote (QEMU's NBD client, the kernel's nbd driver, libnbd's tools,
// fio's nbd engine) use the device; the client (Client, Dial) is a
// block.Device over another server's export, as QEMU's nbd driver. The protocol is the one of the NBD project's
// specification (NetworkBlockDevice/nbd, doc/proto.md); comments name its
// sections in quotes.
//
// What the server implements:
//
//   - handshake: fixed newstyle negotiation ("Fixed newstyle
//     negotiation"; a client without NBD_FLAG_C_FIXED_NEWSTYLE gets
//     NBD_OPT_EXPORT_NAME only, as from qemu-nbd), with
//     NBD_OPT_EXPORT_NAME, ABORT, LIST, STARTTLS (when
//     Server.TLS is set, which then requires it: every option before it
//     but ABORT is NBD_REP_ERR_TLS_REQD, EXPORT_NAME closes, as with
//     qemu-nbd; ABORT is acknowledged, as the spec says, where qemu-nbd
//     answers TLS_REQD), INFO, GO,
//     STRUCTURED_REPLY, LIST_META_CONTEXT (also before STRUCTURED_REPLY,
//     as qemu-nbd) and SET_META_CONTEXT (option.go), answered as
//     qemu-nbd 7.2 answers them (the replies, their order and the
//     metadata context ids; qemunbd_test.go compares); any other
//     option is NBD_REP_ERR_UNSUP, a malformed one NBD_REP_ERR_INVALID
//     (also data past a metadata request's last query, which qemu-nbd
//     takes for the next option); an option's data is read as it is
//     parsed (optdata.go), never held whole, so any length up to
//     MaxPayload is answered, as by qemu-nbd, and more closes the
//     connection;
//   - metadata contexts "base:allocation" and, when the export asks for
//     it (AllocationDepth, qemu-nbd's -A), "qemu:allocation-depth"
//     (meta.go), answered from the export's StatusSource, and
//     "qemu:dirty-bitmap:NAME" for each of the export's Bitmaps, from
//     its Source;
//   - transmission: READ (with OFFSET_DATA/OFFSET_HOLE chunks once
//     structured replies are negotiated, and DF), WRITE (FUA), FLUSH, TRIM,
//     CACHE, WRITE_ZEROES (NO_HOLE, FAST_ZERO), BLOCK_STATUS (REQ_ONE) and
//     DISC (conn.go, request.go, reply.go); on an Export.WriteThrough
//     export every WRITE and WRITE_ZEROES is taken as FUA.
//
// Concurrency: the requests of one connection run concurrently on the
// device (at most Server.MaxInFlight at a time and MaxInFlightBytes of
// payloads and block status replies), and their replies may go out in any order, as section
// "Transmission" allows; the replies of one connection are written under
// one lock, each reply whole. On a device with a queue of its own
// (block.Queuer: a qcow2 image, a uring.File), READ and WRITE go through
// one block.Queue per connection, whose owner goroutine submits and reaps
// them in batches, and whose replier writes their replies (queue.go); the other
// requests, and every request on other devices, run on worker
// goroutines. Several connections may share one export
// (NBD_FLAG_CAN_MULTI_CONN when Export.MultiConn): FLUSH on any of them
// calls the device's Flush, which covers every write completed before it
// on any connection, as section "Transmission flags" asks of
// NBD_FLAG_CAN_MULTI_CONN.
//
// Errors: a request the server cannot act on gets an NBD error (section
// "Error values"): EPERM for WRITE, WRITE_ZEROES or TRIM on a read-only
// export; for a range that leaves the export, ENOSPC for WRITE and
// WRITE_ZEROES and EINVAL for READ, TRIM, CACHE and BLOCK_STATUS, as
// the spec says a server SHOULD for each (CACHE is unspecified); EINVAL
// for an unknown command or flag and for a payload over MaxPayload;
// ENOTSUP when FAST_ZERO cannot be honoured; EIO otherwise. qemu-nbd
// 7.2 answers EINVAL to every request refused before it runs, a write
// past the end included (its nbd_trip replies EINVAL whatever the
// check said); a client that tells the two apart sees the spec's
// answer here. FLUSH's offset and length are reserved and ignored, as
// by qemu-nbd, unless they leave the export: EINVAL then, as qemu-nbd's
// range check answers. Once structured replies are negotiated, every error is
// an error chunk with a message, as qemu-nbd sends (for commands other
// than READ and BLOCK_STATUS the spec allows a simple reply too).
//
// Robustness: a connection that has not negotiated costs a few KiB
// (1 KiB buffers; the 64 KiB ones and the request budget come with the
// transmission phase, and option data is taken in as it arrives), for
// at most Server.HandshakeLimit, and at most Server.MaxHandshakes
// connections negotiate at once: one more closes the one negotiating
// longest, so idle connections neither grow the memory nor lock
// clients out. A stream that is not the protocol
// (bad magic, a write longer than MaxPayload, a short read) closes the
// connection after the requests already started have finished, so the
// device never sees half a request. A panic in a request is recovered,
// logged and answered with EIO: on a worker by the worker, on the queued
// path by the device's queue (block A4, *block.PanicError; a qcow2
// image's allocator goroutines are the exception, qcow2 Q16). A panic in
// the queued path itself (the device queue's Submit or Wait, or the
// owner's own code) closes the connection; the owner then drains the
// queue and closes it, so the device's later requests do not wait for
// its requests. Requests still in flight after 5 s are left to a
// goroutine that reaps them and closes the queue after the last (the
// connection ends; Server.Shutdown waits for that goroutine until its
// context ends). Requests a panic leaves counted and never completed
// keep the queue open: a qcow2 image then refuses to close, and its
// discards wait for them.
//
// Client (remote.go, remote_io.go): fixed newstyle negotiation with
// STARTTLS first when ClientOptions.TLS is set, then STRUCTURED_REPLY,
// SET_META_CONTEXT base:allocation and GO (EXPORT_NAME when the server
// lacks GO or fixed newstyle; no oldstyle; NBD_OPT_ABORT after a
// refusal), as QEMU's client asks; then READ, WRITE, FLUSH, TRIM, WRITE_ZEROES
// (NO_HOLE unless MayUnmap, FAST_ZERO for block.Allocate: efficient or
// refused, B3) and BLOCK_STATUS (DataRun, and ZeroRun for NBD_STATE_ZERO). Requests from any goroutine
// share the connection, each written whole under one lock, their
// replies matched by cookie by one reader goroutine, which alone
// completes requests: no request returns while a reply may still fill
// its buffers. An export never grows (Caps.Fixed; writes past its end
// ENOSPC, Truncate refused in QEMU's words); reads past it are zeros
// (B2); a failed flush fails every later one (B6). A server that breaks
// the protocol (a bad magic, a reply to no request, a chunk or an error
// offset outside its request, a READ not filled exactly once, oversized lengths) ends the
// connection with a ProtocolError, which every waiting and later
// request returns; the handshake has a deadline (ClientOptions); memory
// per reply is bounded (block status chunks at 1 MiB, option replies
// and error messages at 4 KiB). GO asks for NBD_INFO_BLOCK_SIZE, and
// every request keeps to the server's minimum (remote_align.go): a
// partial block at an edge is read whole, and for a write patched and
// written back under a lock that orders every write against it. Close
// flushes the writes sent since the last flush (as QEMU's close of an
// NBD node) and is bounded by ClientOptions.CloseTimeout; there is no
// reconnection (QEMU's reconnect-delay, 0 by default). ParseURI reads the NBD URI
// (doc/uri.md) as QEMU 7.2 does. FuzzClient feeds a client arbitrary
// server bytes.
package nbd
