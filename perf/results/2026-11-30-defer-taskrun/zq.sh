#!/bin/bash
# zq.sh TOOL: fresh qcow2 on /mnt/zr; S/N env; prints wall and cpu (user+sys of the process)
t=$1; shift; img=/mnt/zr/i.qcow2; rm -f $img; qemu-img create -q -f qcow2 $img 4G; sync
S=${S:-64k}; N=${N:-65536}
case $t in
 qemu-prealloc) cmd=(qemu-img bench -n -c $N -d 64 -s 4096 -S $S -t none -w --image-opts "driver=qcow2,file.driver=preallocate,file.file.driver=file,file.file.filename=$img,file.file.aio=native,file.file.cache.direct=on");;
 *) cmd=(/tmp/ab/$t -f qcow2 -n $N -d 64 -s 4096 -S $S -t none -w "$@" $img);;
esac
/usr/bin/time -f "%e %U %S" -o /tmp/ab/zt "${cmd[@]}" > /tmp/ab/zout.$t 2>&1 || { echo FAIL; tail -3 /tmp/ab/zout.$t; }
read e u s < /tmp/ab/zt
printf "%-14s %-18s S=%-6s wall %5.3f cpu %5.3f\n" $t "$*" $S $e $(echo "$u + $s" | bc)
