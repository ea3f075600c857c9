#!/bin/bash
# Reads before and after they enter the data gate (Q12): OLD and NEW are
# qbench binaries built from the commit before and the commit that made
# the change. A 1 GiB image on tmpfs, written once, read with 4 KiB
# requests, interleaved: the queue (one goroutine, depth 64) and 16
# synchronous workers.
set -eu
OLD=${OLD:?qbench of the commit before} NEW=${NEW:?qbench of the change}
IMG=${IMG:-/dev/shm/readgate.qcow2}
rm -f "$IMG"
qemu-img create -q -f qcow2 "$IMG" 1G
"$NEW" -q -f qcow2 -n 256K -d 64 -s 4096 -t none -w --pattern 0x5a "$IMG"
for i in 1 2 3 4 5; do
	for b in OLD NEW; do
		/usr/bin/time -f "queue $b %e s %U user %S sys" "${!b}" -q -f qcow2 -n 1M -d 64 -s 4096 -t none "$IMG" 2>&1 | tail -1
	done
done
for i in 1 2 3 4; do
	for b in OLD NEW; do
		/usr/bin/time -f "workers $b %e s %U user %S sys" "${!b}" -q -f qcow2 -n 512K -d 16 --workers -s 4096 -t none "$IMG" 2>&1 | tail -1
	done
done
rm -f "$IMG"
