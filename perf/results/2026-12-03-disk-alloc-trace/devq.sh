#!/usr/bin/env bash
# devq.sh REPS OUT: QEMU's best configuration and qbench on the alloc
# workload (64Ki 4 KiB writes, one per new 64 KiB cluster, depth 64) on a
# fresh 4 GiB image on the machine's disk, interleaved, each run under
# devq.bt (as root, bpftrace installed). QBENCH names the qbench binary,
# DIR the directory for the image (on the disk). Prints, per run, the
# device's view: writes, span, mean latency, average writes in flight
# (sum of latencies over the span), time with nothing in flight, and busy
# time per write.
set -euo pipefail
reps=${1:-3} out=${2:-/tmp/devq}
here=$(cd "$(dirname "$0")" && pwd)
QBENCH=${QBENCH:-qbench} DIR=${DIR:-/var/tmp/devq}
mkdir -p "$out" "$DIR"
img=$DIR/i.qcow2
for r in $(seq "$reps"); do
	for t in qemu-prealloc qbench; do
		rm -f "$img"; sync; sleep 1
		qemu-img create -q -f qcow2 "$img" 4G; sync; sleep 0.5
		bpftrace "$here/devq.bt" >"$out/$t.$r.txt" 2>/dev/null &
		bt=$!
		sleep 3
		if [ "$t" = qemu-prealloc ]; then
			qemu-img bench -n -c 65536 -d 64 -s 4k -S 64k -t none -w --image-opts \
				"driver=qcow2,file.driver=preallocate,file.file.driver=file,file.file.filename=$img,file.file.aio=native,file.file.cache.direct=on" | tail -1
		else
			"$QBENCH" -q -f qcow2 -t none -w -n 65536 -d 64 -s 4k -S 64k "$img"
		fi
		sleep 0.5
		kill -INT "$bt"
		wait "$bt" || true
		python3 - "$out/$t.$r.txt" <<'PY'
import re, sys
s = open(sys.argv[1]).read()
def g(k):
    m = re.search(r'@?' + k + r':? (\d+)', s)
    return int(m.group(1)) if m else 0
span, lat, w, idle, n = g('span_ns'), g('lat_sum_ns'), g('writes'), g('idle_ns'), g('idle_n')
print("%-28s writes %d span %.0f ms mean latency %.0f us in flight %.1f idle %.1f ms (%d) busy/write %.2f us" % (
    sys.argv[1].split('/')[-1], w, span / 1e6, lat / w / 1e3, lat / span, idle / 1e6, n, (span - idle) / w / 1e3))
PY
	done
done
