#!/bin/bash
# zsys.sh TOOL: zram ext4 alloc; process CPU (time) and system-wide busy CPU (/proc/stat) during the run
t=$1; img=/mnt/zr/i.qcow2; rm -f $img; qemu-img create -q -f qcow2 $img 4G; sync; sleep 0.5
case $t in
 qemu-prealloc) cmd=(qemu-img bench -n -c 65536 -d 64 -s 4096 -S 64k -t none -w --image-opts "driver=qcow2,file.driver=preallocate,file.file.driver=file,file.file.filename=$img,file.file.aio=native,file.file.cache.direct=on");;
 *) cmd=(/tmp/ab/$t -f qcow2 -n 65536 -d 64 -s 4096 -S 64k -t none -w $img);;
esac
a=($(head -1 /proc/stat))
/usr/bin/time -f "%e %U %S" -o /tmp/ab/zt "${cmd[@]}" > /dev/null 2>&1
b=($(head -1 /proc/stat))
read e u s < /tmp/ab/zt
busy=$(( (b[1]-a[1]) + (b[2]-a[2]) + (b[3]-a[3]) + (b[6]-a[6]) + (b[7]-a[7]) ))
printf "%-14s wall %5.2f proc %5.2f system-busy %5.2f\n" $t $e $(echo "$u + $s" | bc) $(echo "$busy/100" | bc -l)
