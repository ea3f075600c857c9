#!/bin/bash
# fio.sh ENGINE [extra]: randwrite 4k depth 64 on the written raw file, 262144 ios
e=$1; shift
a=($(cat /sys/block/vda/stat))
out=$(fio --name=x --filename=/var/tmp/abq/w.raw --direct=1 --rw=randwrite --bs=4k --iodepth=${D:-64} --ioengine=$e --number_ios=262144 --size=4G --randrepeat=1 --norandommap --output-format=json "$@" 2>/dev/null)
b=($(cat /sys/block/vda/stat))
echo "$out" | python3 -c "
import json,sys; j=json.load(sys.stdin)['jobs'][0]; w=j['write']
print('%-10s %-40s %.3f s iops %d cpu %.2f s' % ('$e', '$*', w['runtime']/1000, w['iops'], (j['usr_cpu']+j['sys_cpu'])/100*w['runtime']/1000))" | tr -d '\n'
printf " | lat %.3f ms inflight %.1f busy %d\n" $(echo "$((b[7]-a[7]))/$((b[4]-a[4]))" | bc -l) $(echo "($((b[10]-a[10])))/($((b[9]-a[9]))+1)" | bc -l) $((b[9]-a[9]))
