# Run by TestDifferential_LikeQemuNbd (differential_test.go) with
# /usr/bin/python3 and libnbd's bindings: one connection to qemu-nbd
# (URIS[0]) and one to qnbd (URIS[1]), both serving copies of one image
# with equivalent options, driven with the same random request
# sequence. Every request's outcome is compared: success or the error's
# errno, the data read, and the block status of every metadata context
# negotiated. A divergence is printed as one JSON line starting with
# "DIVERGE "; the last line is "ok N" (N requests), or the sequence
# stops at the first divergence of the data (the images differ from
# then on, and every later comparison would say so again).
import json
import os
import random
import sys

import nbd

cfg = json.loads(os.environ["DIFF_CONFIG"])
rng = random.Random(cfg["seed"])
cl = cfg["cluster"]
contexts = cfg["contexts"]
readonly = cfg["readonly"]
names = ["qemu-nbd", "qnbd"]
diverged = []


def report(kind, op, args, q, s, **more):
    d = {"kind": kind, "op": op, "args": args, "qemu-nbd": q, "qnbd": s}
    d.update(more)
    diverged.append(d)
    print("DIVERGE " + json.dumps(d, default=repr), flush=True)


def connect(uri):
    h = nbd.NBD()
    for c in contexts:
        h.add_meta_context(c)
    # Every request goes to the server, which judges it (bounds, flags,
    # zero lengths, alignment): libnbd would refuse some itself.
    h.set_strict_mode(0)
    h.connect_uri(uri)
    return h


hs = [connect(u) for u in cfg["uris"]]
size = hs[0].get_size()


def info(h):
    return {
        "size": h.get_size(),
        "read_only": h.is_read_only(),
        "flush": h.can_flush(),
        "fua": h.can_fua(),
        "trim": h.can_trim(),
        "zero": h.can_zero(),
        "fast_zero": h.can_fast_zero(),
        "df": h.can_df(),
        "multi_conn": h.can_multi_conn(),
        "cache": h.can_cache(),
        "structured": h.get_structured_replies_negotiated(),
        "block_size": [h.get_block_size(k) for k in (nbd.SIZE_MINIMUM, nbd.SIZE_PREFERRED, nbd.SIZE_MAXIMUM)],
        "contexts": {c: h.can_meta_context(c) for c in contexts},
        # NBD_FLAG_ROTATIONAL is left out: qnbd sets it for an image on
        # a rotational disk, qemu-nbd 7.2 never (README, qnbd).
    }


infos = [info(h) for h in hs]
if infos[0] != infos[1]:
    report("info", "connect", {}, infos[0], infos[1])


def call(h, fn):
    """The outcome of fn(h): ("ok", value) or ("err", errno name)."""
    try:
        return ["ok", fn(h)]
    except nbd.Error as e:
        if h.aio_is_dead() or h.aio_is_closed() or e.errno is None:
            # The connection is gone or the reply broke the protocol:
            # no errno to compare, and nothing more to ask.
            return ["dead", e.string]
        return ["err", e.errno]


def both(fn):
    return [call(h, fn) for h in hs]


def rand_off():
    r = rng.random()
    if r < 0.3:
        return rng.randrange(0, size // cl + 1) * cl
    if r < 0.5:
        return rng.randrange(0, size // 512 + 1) * 512
    if r < 0.6:
        return max(0, size - rng.randrange(0, 2 * cl))
    if r < 0.63:
        return size + rng.randrange(0, 2 * cl)  # at or past the end
    return rng.randrange(0, size)


def rand_len(off):
    r = rng.random()
    if r < 0.3:
        n = rng.randrange(1, 4) * cl
    elif r < 0.5:
        n = rng.randrange(1, 17) * 512
    elif r < 0.6:
        n = max(0, size - off)  # exactly to the end
    elif r < 0.65:
        n = max(0, size - off) + rng.randrange(1, cl + 1)  # across the end
    elif r < 0.67:
        n = 0
    else:
        n = rng.randrange(1, 3 * cl)
    return n


def pattern(n):
    b = rng.randrange(256)
    if rng.random() < 0.2:
        return bytes(n)  # zeros: --detect-zeroes turns them into zeroing
    return bytes((b + i // 512) & 0xFF for i in range(n))


def is_error_pair(op, flags, off, n, res):
    """Whether res, the two outcomes, differ only as documented."""
    q, s = res
    if q == s:
        return True
    # WRITE and WRITE_ZEROES past the end: ENOSPC as the spec says,
    # EINVAL from qemu-nbd (nbd/doc.go "Errors", README qnbd).
    if op in ("pwrite", "zero") and off + n > size and q == ["err", "EINVAL"] and s == ["err", "ENOSPC"]:
        return True
    # WRITE, WRITE_ZEROES and TRIM on a read-only export: EPERM as the
    # spec says, EINVAL from qemu-nbd (it answers EINVAL to whatever
    # its checks refuse; nbd/doc.go "Errors"), ENOSPC past the end.
    if readonly and op in ("pwrite", "zero", "trim") and q == ["err", "EINVAL"] and s[0] == "err" and s[1] in ("EPERM", "ENOSPC"):
        return True
    # CACHE on a read-only export: qemu-nbd's copy-on-read prefetch
    # cannot write what it would copy into the image, and fails with
    # EPERM; qnbd takes CACHE as a hint (README, qnbd), which succeeds.
    if readonly and op == "cache" and q == ["err", "EPERM"] and s == ["ok", None]:
        return True
    # FAST_ZERO over clusters qemu-nbd's CACHE allocated in the image
    # (above): what it can zero fast differs from what qnbd can, whose
    # image still has them unallocated.
    if op == "zero" and flags & nbd.CMD_FLAG_FAST_ZERO and ["err", "ENOTSUP"] in res and \
            any(a < off + n and off < b for a, b in cached):
        return True
    return False


def expand(entries, start):
    """[(start, end, flags)] from a block status reply's entries."""
    out = []
    for i in range(0, len(entries), 2):
        out.append((start, start + entries[i], entries[i + 1]))
        start += entries[i]
    return out


def block_status(h, n, off, flags):
    got = {}

    def cb(meta, o, entries, err):
        got.setdefault(meta, []).append((o, list(entries)))
        return 0

    h.block_status(n, off, cb, flags)
    return got


cached = []  # the ranges CACHE requests covered, in whole clusters


def in_cached(x):
    return any(a <= x < b for a, b in cached)


def flags_at(runs, x):
    for a, b, f in runs:
        if a <= x < b:
            return f
    return None


def compare_status(args, off, req_one, res):
    q, s = res
    if q[0] != "ok" or s[0] != "ok":
        if not is_error_pair("block_status", 0, off, args["n"], res):
            report("error", "block_status", args, q, s)
        return
    for ctx in contexts:
        qr, sr = q[1].get(ctx), s[1].get(ctx)
        if qr is None or sr is None or len(qr) != 1 or len(sr) != 1:
            report("status-chunks", "block_status", dict(args, ctx=ctx), qr, sr)
            continue
        qruns, sruns = expand(qr[0][1], qr[0][0]), expand(sr[0][1], sr[0][0])
        if not qruns or not sruns:
            report("status-empty", "block_status", dict(args, ctx=ctx), qruns, sruns)
            continue
        if req_one and (len(qruns) != 1 or len(sruns) != 1):
            report("status-req-one", "block_status", dict(args, ctx=ctx), qruns, sruns)
            continue
        # The extents are compared over the range both replies cover:
        # the spec lets a server answer less than was asked (past the
        # first extent) or more (the last extent may go past the
        # request), so only the flags of each byte both describe are
        # the semantics; where the two cut their last extent is not.
        end = min(qruns[-1][1], sruns[-1][1], off + args["n"])
        cuts = sorted({a for a, _, _ in qruns + sruns if off <= a < end} | {off} |
                      {x for r in cached for x in r if off < x < end})
        for a in cuts:
            fq, fs = flags_at(qruns, a), flags_at(sruns, a)
            if fq != fs and ctx == "base:allocation" and fq ^ fs == nbd.STATE_ZERO and not (fq | fs) & nbd.STATE_HOLE:
                # Data that qemu-nbd alone says reads as zeros (which
                # the check below confirms): qemu's qcow2 driver looks
                # at the holes of the host file under data clusters
                # when it judges the image metadata-preallocated
                # (qcow2_detect_metadata_preallocation, decided once,
                # at its first block status, an internal one included,
                # such as an unaligned zero write's), which the engine
                # mirrors (qcow2.Image.HostHoles) but judges on the
                # file as it is at its own first query: the answer
                # depends on the host file's holes and the moment, not
                # on the image's layout. The test compares the two
                # exactly on one file after the run (TestDifferential's
                # sameFile).
                continue
            if fq != fs and ctx == "base:allocation" and cfg.get("extended_l2") and \
                    not fq & nbd.STATE_HOLE and fs == nbd.STATE_HOLE | nbd.STATE_ZERO:
                # Zeros qemu-nbd wrote as data where qnbd has zero
                # subclusters (what reads as zeros is checked below):
                # QEMU 7.2 zeroes whole clusters only, and a WRITE_ZEROES
                # (or zeros --detect-zeroes catches) that covers whole
                # subclusters but not whole clusters of an extended-L2
                # image falls back to writing zeros, the whole request's
                # aligned middle included; the engine marks the
                # subclusters zero (as QEMU 9.0's zero_l2_subclusters).
                continue
            if fq != fs and in_cached(a) and (ctx == "qemu:allocation-depth" and fq == 1 or ctx == "base:allocation"):
                # qemu-nbd serves NBD_CMD_CACHE as a copy-on-read
                # prefetch, which allocates the clusters it reads in the
                # top image, as data or, where they read as zeros, as
                # zero clusters; qnbd takes it as a hint (README, qnbd;
                # TestCacheCommand_UnlikeQemuNbd). What either says
                # reads as zeros is still checked below.
                continue
            if fq != fs:
                report("status", "block_status", dict(args, ctx=ctx, at=a), qruns, sruns)
                break
        # A region either server says reads as zeros must read as zeros
        # through both.
        if ctx == "base:allocation":
            for runs in (qruns, sruns):
                for a, b, f in runs:
                    if f & nbd.STATE_ZERO and a < size:
                        b = min(b, size, a + (8 << 20))
                        for i, h in enumerate(hs):
                            if h.pread(b - a, a) != bytes(b - a):
                                report("zero-not-zero", "block_status", dict(args, ctx=ctx, run=[a, b]), qruns, sruns, reader=names[i])
                                return


def compare_reads(op, args, res):
    q, s = res
    if q[0] == "ok" and s[0] == "ok":
        if q[1] != s[1]:
            first = next(i for i in range(min(len(q[1]), len(s[1]))) if q[1][i] != s[1][i])
            report("data", op, args, "%d bytes" % len(q[1]), "%d bytes" % len(s[1]), first_diff=args["off"] + first)
            return False
        return True
    if not is_error_pair(op, 0, args["off"], args["n"], res):
        report("error", op, args, q, s)
    return True


def whole_read(tag):
    """Reads the whole export through both; False if they differ."""
    step = 1 << 20
    for off in range(0, size, step):
        n = min(step, size - off)
        if not compare_reads("pread-all", {"at": tag, "off": off, "n": n}, both(lambda h: h.pread(n, off))):
            return False
    return True


def burst_on(h, reqs):
    """Sends reqs at once on h and waits for them all: their outcomes."""
    cookies, bufs, res = [], [], []
    for kind, off, n, fl, data in reqs:
        b = None
        try:
            if kind == "pread":
                b = nbd.Buffer(n)
                c = h.aio_pread(b, off, flags=fl)
            elif kind == "pwrite":
                b = nbd.Buffer.from_bytearray(bytearray(data))
                c = h.aio_pwrite(b, off, flags=fl)
            elif kind == "zero":
                c = h.aio_zero(n, off, flags=fl)
            else:
                c = h.aio_trim(n, off, flags=fl)
            res.append(None)
        except nbd.Error as e:
            c = None
            res.append(["err", e.errno])
        cookies.append(c)
        bufs.append(b)
    while any(r is None for r in res):
        if h.aio_is_dead() or h.aio_is_closed():
            return [r or ["dead", None] for r in res]
        h.poll(5000)
        for i, c in enumerate(cookies):
            if res[i] is not None:
                continue
            try:
                if h.aio_command_completed(c):
                    res[i] = ["ok", bufs[i].to_bytearray() if reqs[i][0] == "pread" else None]
            except nbd.Error as e:
                res[i] = ["err", e.errno]
    return res


def burst(i):
    """Several requests in flight at once, on ranges that do not overlap
    (so that their outcomes do not depend on the order the server runs
    them in): the replies may come in any order, qnbd runs them
    concurrently."""
    reqs, taken = [], []
    for _ in range(rng.randrange(2, 9)):
        off = rand_off()
        n = min(rand_len(off), 1 << 20)
        if any(a < off + n and off < b for a, b in taken) or n == 0:
            continue
        taken.append((off, off + n))
        kind = rng.choice(["pread", "pread", "pwrite", "pwrite", "zero", "trim"])
        fl, data = 0, None
        if kind == "pwrite":
            data = pattern(n)
            fl = nbd.CMD_FLAG_FUA if rng.random() < 0.3 else 0
        elif kind == "zero":
            fl = rng.choice([0, nbd.CMD_FLAG_NO_HOLE, nbd.CMD_FLAG_FUA])
        reqs.append((kind, off, n, fl, data))
    res = [burst_on(h, reqs) for h in hs]
    for j, (kind, off, n, fl, _) in enumerate(reqs):
        args = {"i": i, "burst": j, "off": off, "n": n, "flags": fl}
        pair = [res[0][j], res[1][j]]
        if kind == "pread":
            if not compare_reads(kind, args, pair):
                return False
        elif not is_error_pair(kind, fl, off, n, pair):
            report("error", kind, args, pair[0], pair[1])
    return True


nops = cfg["ops"]
done = 0
for i in range(nops):
    op = rng.choice(["pread", "pread", "pwrite", "pwrite", "zero", "zero", "trim", "cache", "flush",
                     "block_status", "block_status", "block_status", "burst"])
    if op == "cache" and not cfg.get("cache", True):
        op = "flush"
    off = rand_off()
    n = rand_len(off)
    if op in ("pread", "pwrite"):
        n = min(n, 4 << 20)  # a payload, read and written whole here
    args = {"i": i, "off": off, "n": n}
    if op == "burst":
        if not burst(i):
            break
    elif op == "pread":
        fl = nbd.CMD_FLAG_DF if rng.random() < 0.2 else 0
        args["flags"] = fl
        if not compare_reads(op, args, both(lambda h: h.pread(n, off, fl))):
            break
    elif op == "pwrite":
        fl = nbd.CMD_FLAG_FUA if rng.random() < 0.3 else 0
        buf = pattern(n)
        args.update(flags=fl, zeros=not any(buf[:4096]))
        res = both(lambda h: h.pwrite(buf, off, fl))
        if not is_error_pair(op, fl, off, n, res):
            report("error", op, args, res[0], res[1])
    elif op == "zero":
        fl = 0
        for f in (nbd.CMD_FLAG_NO_HOLE, nbd.CMD_FLAG_FAST_ZERO, nbd.CMD_FLAG_FUA):
            if rng.random() < 0.35:
                fl |= f
        args["flags"] = fl
        res = both(lambda h: h.zero(n, off, fl))
        args["res"] = res
        if not is_error_pair(op, fl, off, n, res):
            report("error", op, args, res[0], res[1])
        if fl & nbd.CMD_FLAG_FAST_ZERO and ["err", "ENOTSUP"] in res:
            # A FAST_ZERO refused leaves the range's contents
            # unspecified: qemu-nbd zeroes the whole clusters at its
            # start before it finds it cannot zero the rest fast, qnbd
            # refuses before it zeroes anything. A client then zeroes
            # the slow way (as qemu-img convert and nbdcopy do): so do
            # both here, which keeps the data comparable.
            args["res"] = res + both(lambda h: h.zero(n, off, fl & ~nbd.CMD_FLAG_FAST_ZERO))
    elif op == "trim":
        fl = nbd.CMD_FLAG_FUA if rng.random() < 0.3 else 0
        args["flags"] = fl
        res = both(lambda h: h.trim(n, off, fl))
        if not is_error_pair(op, fl, off, n, res):
            report("error", op, args, res[0], res[1])
    elif op == "cache":
        res = both(lambda h: h.cache(n, off))
        if off < size:
            # What qemu-nbd's copy-on-read may have allocated: the
            # clusters the range touches (the one at off for a CACHE of
            # 0 bytes, which qemu-nbd rounds out to it), also on a
            # read-only export, where qemu-nbd 7.2 allocates them in
            # its L2 cache (it fails to flush them at exit).
            c = cfg.get("cow_cluster", cl)
            r = [off // c * c, min(size, max(off // c * c + c, -(-min(off + n, size) // c) * c))]
            cached.append(r)
            print("CACHED %d %d" % tuple(r), flush=True)
        if not is_error_pair(op, 0, off, n, res):
            report("error", op, args, res[0], res[1])
    elif op == "flush":
        res = both(lambda h: h.flush())
        if res[0] != res[1]:
            report("error", op, args, res[0], res[1])
    else:
        req_one = rng.random() < 0.4
        args["req_one"] = req_one
        fl = nbd.CMD_FLAG_REQ_ONE if req_one else 0
        compare_status(args, off, req_one, both(lambda h: block_status(h, n, off, fl)))
    if any(h.aio_is_dead() or h.aio_is_closed() for h in hs):
        report("dead", op, args, hs[0].aio_is_dead(), hs[1].aio_is_dead())
        break
    if cfg.get("trace"):
        print("OP", op, json.dumps(args), flush=True)
    done += 1
    if (cfg.get("trace") or done % 25 == 0) and not whole_read(i):
        break
else:
    whole_read("end")

for h in hs:
    if not h.aio_is_dead() and not h.aio_is_closed() and not cfg.get("keep_open"):
        h.shutdown()
print("ok %d" % done, flush=True)
