#!/bin/bash
# Runs coturn's turnutils_uclient against a TURN server (PID, PORT) and prints loss, the server's CPU
# seconds and peak RSS. Needs turnutils_peer on 127.0.0.1:34800 and secret s3cret.
# usage: bench.sh PID PORT  -> runs uclient load, prints loss, CPU seconds and peak RSS of PID
PID=$1; PORT=$2; M=$3; N=$4
t0=$(awk '{print $14+$15}' /proc/$PID/stat)
start=$(date +%s.%N)
out=$(timeout 120 turnutils_uclient -W s3cret -u "@a:test.local" -e 127.0.0.1 -r 34800 -m $M -n $N -l 1000 -z 5 -c -p $PORT 127.0.0.1 2>&1)
end=$(date +%s.%N)
t1=$(awk '{print $14+$15}' /proc/$PID/stat)
echo "$out" | grep -E "tot_recv_msgs|lost packets" | tail -2
echo "wall $(echo "$end - $start" | bc) s, cpu $(echo "($t1 - $t0)/100" | bc -l | cut -c1-5) s, $(grep -E 'VmHWM|VmRSS' /proc/$PID/status | tr '\n' ' ')"
