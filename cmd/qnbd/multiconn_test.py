# Run by TestMultiConnCoherence through nbdsh: several connections to
# one writable export that advertises NBD_FLAG_CAN_MULTI_CONN. The spec
# ("Transmission flags") then requires that a read on any connection
# sees every write completed on any other, and that a FLUSH on one
# connection makes the writes completed on all of them durable. The
# expected contents go to OUT; the test kills the server after the
# FLUSH and compares the image with them.
import os
import random

uri, out = os.environ["URI"], os.environ["OUT"]
rng = random.Random(int(os.environ.get("SEED", "1")))


def connect():
    h = nbd.NBD()
    h.connect_uri(uri)
    assert h.can_multi_conn(), "no NBD_FLAG_CAN_MULTI_CONN"
    return h


hs = [connect() for _ in range(4)]
size = hs[0].get_size()
model = bytearray(size)

# Read-after-write across connections, a request at a time: data and
# zeroing, aligned or not, in new clusters and over old data.
for i in range(int(os.environ.get("N", "200"))):
    w, r = rng.sample(hs, 2)
    n = rng.choice([1, 512, 4096, 65536, rng.randrange(1, 200000)])
    off = rng.randrange(0, size - n)
    if rng.random() < 0.2:
        w.zero(n, off)
        data = bytes(n)
    else:
        data = rng.randbytes(n)
        w.pwrite(data, off)
    model[off:off + n] = data
    got = r.pread(n, off)
    assert got == data, "step %d: %d bytes at %d written on one connection read back otherwise on another" % (i, n, off)
    lo, hi = max(0, off - 4096), min(size, off + n + 4096)
    assert rng.choice(hs).pread(hi - lo, lo) == model[lo:hi], "step %d: around %d" % (i, off)

# Writes in flight on every connection at once (distinct 4 KiB blocks),
# each read back on another connection once all completed.
for rnd in range(10):
    blocks = rng.sample(range(size // 4096), 64)
    sent = []
    for k, blk in enumerate(blocks):
        h = hs[k % len(hs)]
        buf = nbd.Buffer.from_bytearray(bytearray(rng.randbytes(4096)))
        h.aio_pwrite(buf, blk * 4096)
        sent.append((k, blk, buf))
    for h in hs:
        while h.aio_in_flight() > 0:
            h.poll(-1)
    for k, blk, buf in sent:
        data = buf.to_bytearray()
        model[blk * 4096:(blk + 1) * 4096] = data
        assert hs[(k + 1) % len(hs)].pread(4096, blk * 4096) == data, "round %d: block %d" % (rnd, blk)

# The whole export, as each connection reads it.
for h in hs:
    assert h.pread(size, 0) == model, "a connection reads other contents"

# Writes on three connections, FLUSH on the fourth.
for k in range(3):
    for _ in range(8):
        n = rng.choice([4096, 65536, 3000])
        off = rng.randrange(0, size - n)
        data = rng.randbytes(n)
        hs[k].pwrite(data, off)
        model[off:off + n] = data
hs[3].flush()
with open(out, "wb") as f:
    f.write(model)
print("nbdsh: ok")
