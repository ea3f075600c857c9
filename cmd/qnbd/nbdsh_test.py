# Run by TestNbdsh through nbdsh (libnbd's Python shell): FUA, FAST_ZERO,
# multi-conn and BLOCK_STATUS edge cases against a 16 MiB qcow2 export.
import os
import time

uri = os.environ["URI"]


def connect():
    h = nbd.NBD()
    h.add_meta_context("base:allocation")
    h.add_meta_context("qemu:allocation-depth")
    h.set_strict_mode(0)  # let the server judge bad requests
    h.connect_uri(uri)
    return h


h = connect()
size = h.get_size()
assert size == 16 << 20, size
assert h.can_fua() and h.can_fast_zero() and h.can_multi_conn() and h.can_zero() and h.can_trim()
assert h.can_meta_context("base:allocation") and h.can_meta_context("qemu:allocation-depth")
assert h.get_structured_replies_negotiated()

# FUA write.
h.pwrite(b"\x5a" * 65536, 0, nbd.CMD_FLAG_FUA)

# FAST_ZERO: aligned, the engine zeroes efficiently (Allocate) and fast.
h.pwrite(b"\x33" * (1 << 20), 1 << 20)
t = time.monotonic()
h.zero(1 << 20, 1 << 20, nbd.CMD_FLAG_FAST_ZERO)
assert time.monotonic() - t < 2
assert h.pread(1 << 20, 1 << 20) == bytes(1 << 20)

# FAST_ZERO the engine cannot do efficiently (a range not aligned to
# the host's block size): ENOTSUP, at once, and nothing written.
h.pwrite(b"\x44" * 65536, 3 << 20)
t = time.monotonic()
try:
    h.zero(1000, (3 << 20) + 7, nbd.CMD_FLAG_FAST_ZERO)
    zeroed = True
except nbd.Error as e:
    assert e.errno == "ENOTSUP", e
    zeroed = False
assert time.monotonic() - t < 2
print("unaligned FAST_ZERO:", "zeroed" if zeroed else "ENOTSUP")
got = h.pread(65536, 3 << 20)
if zeroed:
    assert got[7:1007] == bytes(1000) and got[:7] == b"\x44" * 7
else:
    assert got == b"\x44" * 65536, "a refused FAST_ZERO changed data"

# FAST_ZERO over unaligned edges whose clusters read as zeros already:
# done, as qemu-nbd does (they become zero clusters).
h.zero(4096, (8 << 20) + 512, nbd.CMD_FLAG_FAST_ZERO)
assert h.pread(4096, (8 << 20) + 512) == bytes(4096)

# Multi-conn: written on one connection, flushed on another, read on a
# third.
h2 = connect()
h2.pwrite(b"\x11" * 4096, 4 << 20)
h.flush()
h3 = connect()
assert h3.pread(4096, 4 << 20) == b"\x11" * 4096

# BLOCK_STATUS.
got = {}


def cb(meta, off, entries, err):
    got[meta] = (off, list(entries))
    return 0


h.block_status(size, 0, cb)
base = got["base:allocation"][1]
depth = got["qemu:allocation-depth"][1]
assert base[0:2] == [65536, 0], base  # data
assert depth[0:2] == [65536, 1], depth  # allocated in the image
assert sum(base[0::2]) <= size and sum(depth[0::2]) <= size

# REQ_ONE: one descriptor per context, within the request.
h.block_status(3 * 65536, 4096, cb, nbd.CMD_FLAG_REQ_ONE)
for m in ("base:allocation", "qemu:allocation-depth"):
    e = got[m][1]
    assert len(e) == 2 and 0 < e[0] <= 3 * 65536, (m, e)

# The last byte, unaligned.
h.block_status(1, size - 1, cb)
assert got["base:allocation"][1] == [1, 3], got

# Past the end: EINVAL, and the connection goes on.
try:
    h.block_status(2, size - 1, cb)
    raise SystemExit("BLOCK_STATUS past the end succeeded")
except nbd.Error as e:
    assert e.errno == "EINVAL", e
try:
    h.pread(2, size - 1)
    raise SystemExit("READ past the end succeeded")
except nbd.Error as e:
    assert e.errno == "EINVAL", e
try:
    h.pwrite(b"ab", size - 1)
    raise SystemExit("WRITE past the end succeeded")
except nbd.Error as e:
    assert e.errno == "ENOSPC", e
h.flush()
for x in (h, h2, h3):
    x.shutdown()
print("nbdsh: ok")
