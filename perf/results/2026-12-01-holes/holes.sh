#!/bin/bash
# alloc pattern: 64Ki 4 KiB writes at a 64 KiB stride, depth 64, into a 4 GiB raw file made by: falloc | trunc
run(){ mnt=$1 mode=$2; f=$mnt/raw; rm -f $f; sync; sleep 0.5
 if [ $mode = falloc ]; then fallocate -l 4G $f; else truncate -s 4G $f; fi
 out=$( { /usr/bin/time -f '%e %U %S' fio --name=f --thread --numjobs=1 --ioengine=io_uring --direct=1 --bs=4096 --iodepth=64 --iodepth_batch_submit=16 --iodepth_batch_complete_min=16 --registerfiles --fixedbufs --zero_buffers --disk_util=0 --fallocate=none --allow_file_create=0 --size=4G --rw=write:61440 --io_size=$((65536*4096)) --filename=$f --output-format=json > /tmp/fio.json; } 2>&1 )
 rt=$(python3 -c 'import json;j=json.load(open("/tmp/fio.json"));print(j["jobs"][0]["job_runtime"]/1000)')
 echo "$mnt $mode runtime=$rt time/user/sys=$out"; }
for r in 1 2 3; do for m in /mnt/x4 /mnt/xx; do for mode in falloc trunc; do run $m $mode; done; done; done
