#!/usr/bin/env bash
# Runs a command and prints the peak resident set (VmHWM) of that process itself, sampled from /proc every
# 50 ms: unlike /usr/bin/time it does not count the children (a local `rsync --server`).
#   bash tests/bench/peak-rss.sh target/release/offsite backup --config FILE
"$@" > /dev/null 2>&1 &
pid=$!
peak=0
while kill -0 "$pid" 2>/dev/null; do
  h=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null)
  [ -n "$h" ] && [ "$h" -gt "$peak" ] && peak=$h
  sleep 0.05
done
wait "$pid"; rc=$?
echo "peak VmHWM: $peak KiB (exit $rc)"
