#!/bin/sh
# gen.sh regenerates the QEMU-made header fixtures in this directory.
# It is documentation: the tests only read the *.hdr / *.snap files and
# never run it. Made with qemu-img 7.2 (Debian 1:7.2+dfsg-7+deb12u18).
#
# Each NAME.hdr holds the first min(cluster size, 64 KiB) bytes of an image
# (the header, its extensions and the backing file name live there).
# snapshot.snap holds the snapshot table of snapshot.qcow2 (nb_snapshots
# entries from snapshots_offset; QEMU does not pad the last entry, so the
# file, and this table, end right after the last name).
set -eu

out=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"

# hdr NAME CLUSTER_SIZE SIZE [qemu-img create options...]
hdr() {
	name=$1 cs=$2 size=$3
	shift 3
	qemu-img create -q -f qcow2 "$@" "$name.qcow2" "$size"
	n=$cs
	[ "$n" -gt 65536 ] && n=65536
	head -c "$n" "$name.qcow2" >"$out/$name.hdr"
}

hdr v2 65536 1G -o compat=0.10
hdr v3 65536 4G
hdr cluster512 512 64M -o cluster_size=512
hdr cluster2m 2097152 16G -o cluster_size=2M
hdr refcount1 65536 1G -o refcount_bits=1
hdr refcount64 65536 1G -o refcount_bits=64
hdr lazy 65536 1G -o lazy_refcounts=on
hdr extl2 65536 1G -o extended_l2=on
hdr zstd 65536 1G -o compression_type=zstd

qemu-img create -q -f qcow2 base.qcow2 1G
hdr backing 65536 1G -b base.qcow2 -F qcow2

hdr snapshot 65536 1G
qemu-io -c "write -P 0x11 0 128k" snapshot.qcow2 >/dev/null
qemu-img snapshot -c s1 snapshot.qcow2
head -c 65536 snapshot.qcow2 >"$out/snapshot.hdr"

# The snapshot table: nb_snapshots (header bytes 60..63) entries at
# snapshots_offset (bytes 64..71). Each entry is a 40-byte fixed part,
# extra data, the id and the name, padded to 8.
python3 - "$tmp/snapshot.qcow2" "$out/snapshot.snap" <<'PY'
import struct, sys
f = open(sys.argv[1], "rb").read()
nb, = struct.unpack(">I", f[60:64])
so, = struct.unpack(">Q", f[64:72])
off = so
for _ in range(nb):
    id_len, name_len = struct.unpack(">HH", f[off+12:off+16])
    extra, = struct.unpack(">I", f[off+36:off+40])
    off += 40 + extra + id_len + name_len
    off = (off + 7) & ~7
open(sys.argv[2], "wb").write(f[so:off])
PY

# luks.qcow2hdr: the first 4 KiB of a LUKS-encrypted image (crypt_method
# 2 and the crypto header extension). Not a *.hdr: the fixture table
# test expects unencrypted images.
qemu-img create -q -f qcow2 --object secret,id=sec0,data=abc \
	-o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10 luks.qcow2 1M
head -c 4096 luks.qcow2 >"$out/luks.qcow2hdr"
