#!/usr/bin/env bash
# usage: [LONGREAD=1] ab.sh OUT REPEATS SIZE server...   (server: path to a qnbd binary, or qemu-nbd-prealloc)
# Each server block is rerun (up to 8 times) if another process used the CPU during it.
set -u
OUT=$1 REPEATS=$2 SIZE=$3; shift 3
SRV=("$@")
cd /tmp/ab; source lib.sh
IMG=/mnt/zrn/ab.qcow2
LIMIT=0.4
: > $OUT; : > $OUT.err
n=${#SRV[@]}
clean() { python3 -c "
import json,sys
sys.exit(0 if all(json.loads(l)['other_cpu_s'] <= $LIMIT for l in open('$1') if l.startswith('{')) else 1)"; }
block() { # server rep tmp
  local s=$1 rep=$2 tmp=$3 lab; lab=$(basename $s)
  : > $tmp
  rm -f $IMG; qemu-img create -q -f qcow2 $IMG $SIZE
  start_srv $s $IMG
  for w in "seq-write write" "rand-write-over randwrite" "rand-read randread"; do
    set -- $w; run_fio $lab $1 $2 $SIZE | sed "s/^{/{\"rep\": $rep, /" >> $tmp
  done
  stop_srv
  qemu-img check -q $IMG || echo "CHECK FAILED $lab $rep" >> $OUT.err
  rm -f $IMG; qemu-img create -q -f qcow2 $IMG $SIZE
  start_srv $s $IMG
  run_fio $lab rand-write-new randwrite $SIZE | sed "s/^{/{\"rep\": $rep, /" >> $tmp
  stop_srv
  qemu-img check -q $IMG || echo "CHECK FAILED $lab $rep" >> $OUT.err
}
for ((rep = 0; rep < REPEATS; rep++)); do
  for ((k = 0; k < n; k++)); do
    s=${SRV[(k + rep) % n]}
    for ((try = 0; try < 8; try++)); do
      wait_quiet
      block $s $rep /tmp/ab/block.tmp
      clean /tmp/ab/block.tmp && break
      echo "retry $(basename $s) rep $rep: $(grep -o '"other_cpu_s": [0-9.-]*' /tmp/ab/block.tmp | tr '\n' ' ')" >> $OUT.err
    done
    cat /tmp/ab/block.tmp >> $OUT
  done
done
if [ -n "${LONGREAD:-}" ]; then
  rm -f $IMG; qemu-img create -q -f qcow2 $IMG $SIZE
  start_srv ${SRV[0]} $IMG; run_fio prep seq-write write $SIZE > /dev/null; stop_srv
  for ((rep = 0; rep < REPEATS; rep++)); do
    for ((k = 0; k < n; k++)); do
      s=${SRV[(k + rep) % n]}; lab=$(basename $s)
      for ((try = 0; try < 8; try++)); do
        wait_quiet
        start_srv $s $IMG
        run_fio $lab rand-read-10s randread $SIZE --time_based --runtime=10 | sed "s/^{/{\"rep\": $rep, /" > /tmp/ab/block.tmp
        stop_srv
        clean /tmp/ab/block.tmp && break
        echo "retry long $lab rep $rep" >> $OUT.err
      done
      cat /tmp/ab/block.tmp >> $OUT
    done
  done
  rm -f $IMG
fi
echo DONE >> $OUT.err
