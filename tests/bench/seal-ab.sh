#!/usr/bin/env bash
# Whole-command sealing speed of two (or more) `offsite` binaries, run in turns on the same 1 GiB of input
# from the page cache into /dev/null: min and median wall time and CPU time (user + sys) per binary.
# Interleaved rounds, because on a shared machine the speed of one run drifts by 20 % from one minute to
# the next; only a side-by-side comparison says which binary is faster.
#
# Usage: bash tests/bench/seal-ab.sh BIN [BIN...]
#   ROUNDS=11 (rounds per binary), THREADS=2 (`offsite seal --threads`), SUITE=aes|chacha,
#   DATA=random|zeros (zeros: every chunk is deflated, so sealing costs far more than reading),
#   BENCH_DIR=/tmp (where the 1 GiB input is written; a tmpfs keeps the disk out of it).
# Example, this tree against the last commit:
#   git worktree add /tmp/before HEAD~1 && (cd /tmp/before && cargo build --release -p offsite)
#   cargo build --release -p offsite
#   bash tests/bench/seal-ab.sh /tmp/before/target/release/offsite target/release/offsite
set -euo pipefail
[ $# -ge 1 ] || { sed -n 2,13p "$0" >&2; exit 2; }
command -v /usr/bin/time >/dev/null || { echo "missing /usr/bin/time (Debian package time)" >&2; exit 1; }
rounds=${ROUNDS:-11}
threads=${THREADS:-2}
suite=${SUITE:-aes}
work=$(mktemp -d "${BENCH_DIR:-/tmp}/seal-ab.XXXXXX")
trap 'rm -rf "$work"' EXIT

data=${DATA:-random}
case $data in
  random) head -c $((1 << 30)) /dev/urandom > "$work/input" ;;
  zeros) head -c $((1 << 30)) /dev/zero > "$work/input" ;;
  *) echo "DATA must be random or zeros" >&2; exit 2 ;;
esac
"$1" keygen --key "$work/key" --suite "$suite" 2>/dev/null
echo "# 1 GiB $data, suite $suite, --threads $threads, $rounds rounds per binary, interleaved"
for ((r = 0; r < rounds; r++)); do
  i=0
  for bin in "$@"; do
    /usr/bin/time -f "%e %U %S" -a -o "$work/times.$i" \
      "$bin" seal --key "$work/key" --path bench/input --threads "$threads" "$work/input" /dev/null
    i=$((i + 1))
  done
done
median() { sort -n | awk '{ v[NR] = $1 } END { printf "%.2f %.2f\n", v[1], v[int((NR + 1) / 2)] }'; }
i=0
for bin in "$@"; do
  read -r wmin wmed < <(awk '{ print $1 }' "$work/times.$i" | median)
  read -r cmin cmed < <(awk '{ print $2 + $3 }' "$work/times.$i" | median)
  printf '%-50s wall min %s s, median %s s (%.0f MiB/s) | cpu min %s s, median %s s\n' \
    "$bin" "$wmin" "$wmed" "$(echo "1024 / $wmed" | bc -l)" "$cmin" "$cmed"
  i=$((i + 1))
done
