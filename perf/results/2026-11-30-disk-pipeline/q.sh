#!/bin/bash
# q.sh TOOL [args...]: fresh qcow2 4G, alloc workload (-S 64k, 65536), device stats
t=$1; shift; img=/var/tmp/abq/i.qcow2; rm -f $img; sync; qemu-img create -q -f qcow2 $img 4G; sync; sleep 1
S=${S:-64k}; N=${N:-65536}; D=${D:-64}
case $t in
 qemu-prealloc) cmd=(qemu-img bench -n -c $N -d $D -s 4096 -S $S -t none -w --image-opts "driver=qcow2,file.driver=preallocate,file.file.driver=file,file.file.filename=$img,file.file.aio=native,file.file.cache.direct=on");;
 qemu-default) cmd=(qemu-img bench -n -c $N -d $D -s 4096 -S $S -t none -w -i native -f qcow2 $img);;
 *) cmd=(/tmp/ab/$t -f qcow2 -n $N -d $D -s 4096 -S $S -t none -w "$@" $img);;
esac
a=($(cat /sys/block/vda/stat)); s=$(date +%s.%N)
"${cmd[@]}" > /tmp/ab/out.$t 2>&1 || { echo FAIL; cat /tmp/ab/out.$t; }
e=$(date +%s.%N); b=($(cat /sys/block/vda/stat))
printf "%-14s %-20s wall %.3f | w_ios %d MiB %d lat %.3f ms inflight %.1f flush %d busy %d ms\n" $t "$*" $(echo "$e - $s"|bc) $((b[4]-a[4])) $(((b[6]-a[6])/2048)) $(echo "$((b[7]-a[7]))/$((b[4]-a[4]))" | bc -l) $(echo "($((b[10]-a[10])))/($((b[9]-a[9]))+1)" | bc -l) $((b[14]-a[14])) $((b[9]-a[9]))
