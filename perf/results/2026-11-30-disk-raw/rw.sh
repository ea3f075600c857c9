#!/bin/bash
# rw.sh TOOL N: written raw 4G file, scattered writes
t=$1; n=${2:-262144}; f=/var/tmp/abq/w.raw; S=$((4096*4099)); D=${D:-64}
case $t in
 qemu-native) cmd=(qemu-img bench -f raw -n -c $n -d $D -s 4096 -S $S -t none -w -i native $f);;
 *) cmd=(/tmp/ab/$t -f raw -n $n -d $D -s 4096 -S $S -t none -w $f);;
esac
a=($(cat /sys/block/vda/stat))
/usr/bin/time -f "%e %U %S" -o /tmp/ab/rt "${cmd[@]}" > /tmp/ab/out.$t 2>&1
b=($(cat /sys/block/vda/stat)); read e u s < /tmp/ab/rt
printf "%-12s %s cpu %.2f | w_ios %d lat %.3f ms inflight-avg %.1f busy %d\n" $t "$(grep -o 'completed in [0-9.]*' /tmp/ab/out.$t)" $(echo "$u+$s"|bc) $((b[4]-a[4])) $(echo "$((b[7]-a[7]))/$((b[4]-a[4]))" | bc -l) $(echo "($((b[10]-a[10])))/($((b[9]-a[9]))+1)" | bc -l) $((b[9]-a[9]))
