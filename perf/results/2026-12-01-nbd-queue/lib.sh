SOCK=/tmp/ab/nbd.sock
TICK=$(getconf CLK_TCK)
start_srv() { # kind img
	local s=$1 img=$2
	rm -f $SOCK
	case $s in
	qemu-nbd) qemu-nbd -k "$SOCK" -x disk -f qcow2 --cache=none --aio=native -t -e 0 "$img" & ;;
	qemu-nbd-prealloc) qemu-nbd -k "$SOCK" -x disk -t -e 0 --image-opts \
			"driver=qcow2,file.driver=preallocate,file.file.driver=file,file.file.filename=$img,file.file.aio=native,file.file.cache.direct=on" & ;;
	*) $s -k "$SOCK" -x disk -f qcow2 --cache=none -e 0 "$img" & ;;
	esac
	SERVER_PID=$!
	for i in $(seq 500); do [ -S $SOCK ] && return 0; sleep 0.01; done
	echo "no socket" >&2; return 1
}
stop_srv() { kill -TERM $SERVER_PID; wait $SERVER_PID 2>/dev/null; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
busy_ticks() { awk 'NR==1{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
# wait_quiet: wait (up to 30 min) until the machine is idle (>= 90% over 2 s), so that
# another user's test run does not land in a measurement.
wait_quiet() {
	local i a b t0 t1
	for ((i = 0; i < 360; i++)); do
		a=$(awk 'NR==1{print $5}' /proc/stat); t0=$(awk 'NR==1{s=0; for(i=2;i<=9;i++) s+=$i; print s}' /proc/stat)
		sleep 2
		b=$(awk 'NR==1{print $5}' /proc/stat); t1=$(awk 'NR==1{s=0; for(i=2;i<=9;i++) s+=$i; print s}' /proc/stat)
		if (( (b - a) * 100 >= 90 * (t1 - t0) )); then return 0; fi
		sleep 3
	done
}
run_fio() { # label wl rw size [extra fio args]
	local label=$1 wl=$2 rw=$3 size=$4; shift 4
	local c0=$(cpu_ticks) b0=$(busy_ticks)
	fio --name="$wl" --ioengine=nbd --uri="nbd+unix:///disk?socket=$SOCK" --rw="$rw" --bs=4k \
		--iodepth=64 --size="$size" --numjobs=1 "$@" --output-format=json --output=/tmp/ab/fio.json >/dev/null 2>&1 || { echo fio failed; cat /tmp/ab/fio.json; return 1; }
	local c1=$(cpu_ticks) b1=$(busy_ticks)
	python3 - "$label" "$wl" "$((c1 - c0))" "$TICK" /tmp/ab/fio.json "$((b1 - b0))" <<'PY'
import json, sys
lab, wl, ticks, tick = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
busy = int(sys.argv[6])
j = json.load(open(sys.argv[5]))["jobs"][0]
side = j["write"] if j["write"]["total_ios"] > 0 else j["read"]
pct = side["clat_ns"]["percentile"]
ios = side["total_ios"]
fio_s = (j["usr_cpu"] + j["sys_cpu"]) / 100 * j["job_runtime"] / 1000
other = busy / tick - ticks / tick - fio_s
print(json.dumps({"server": lab, "workload": wl, "iops": round(side["iops"]), "p50_us": pct["50.000000"] / 1e3, "p99_us": pct["99.000000"] / 1e3, "p999_us": pct["99.900000"] / 1e3, "p9999_us": pct.get("99.990000",0) / 1e3, "max_us": side["clat_ns"]["max"]/1e3,
    "cpu_us_per_req": round(ticks / tick * 1e6 / max(ios, 1),2), "other_cpu_s": round(other, 2), "run_s": round(j["job_runtime"]/1000, 2), "errors": j["error"]}))
PY
}
