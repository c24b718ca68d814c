#!/bin/bash
DEV=/dev/loop3
I=/sys/kernel/tracing/instances/dm2x
mkdir -p $I; echo 40960 > $I/buffer_size_kb
echo 'dev == 7340035' > $I/events/block/block_rq_complete/filter
echo 1 > $I/events/block/block_rq_complete/enable
echo mono > $I/trace_clock; echo > $I/trace
S0=$(awk '{print $5}' /sys/class/block/loop3/stat)
./diag diag.bpf.o > diag.out 2>&1 & DP=$!
until grep -q attached diag.out; do sleep 0.1; done
fio --name=w --filename=$DEV --size=60m --rw=randwrite --bs=4k --direct=1 --ioengine=psync --numjobs=4 --time_based --runtime=$1 --group_reporting --randseed=$RANDOM > fio.out 2>&1
sync
S1=$(awk '{print $5}' /sys/class/block/loop3/stat)
kill -INT $DP; wait $DP
echo 0 > $I/events/block/block_rq_complete/enable
echo "diskstat writes delta: $((S1-S0))"
grep -v recursion diag.out | head -30
grep -c ' WS ' $I/trace; grep -c . $I/trace; cat $I/per_cpu/cpu*/stats | grep -E "overrun|dropped"
cp $I/trace trace.txt
rmdir $I
