#!/usr/bin/env bash
# An unchanged nightly run of two (or more) `offsite` binaries and of stock `rsync -a --link-dest`, in turns,
# on one tree of small files over one private sshd on 127.0.0.1: min and median wall time and box-side CPU
# (user + sys; rsync with its ssh process) per command, and each binary's medians against rsync's.
# Interleaved rounds, because on a shared machine a run's speed drifts from one minute to the next; only a
# side-by-side comparison says which binary is faster.
#
# Usage: bash tests/bench/backup-ab.sh BIN [BIN...]
#   FILES=100000 (files in the tree, made like `backup.sh`'s: 100-4,000 random bytes, 500 x 7 folders),
#   ROUNDS=7 (rounds), BENCH_DIR=/tmp (a tmpfs keeps ext4's inode allocation out of it).
# Each binary keeps its own state folder (its own index) and target folder, one snapshot a run.
# Example, this tree against the last commit:
#   git worktree add /tmp/before HEAD && (cd /tmp/before && cargo build --release -p offsite)
#   cargo build --release -p offsite
#   bash tests/bench/backup-ab.sh /tmp/before/target/release/offsite target/release/offsite
# Needs: rsync, openssh-server, openssh-client, python3, bc, /usr/bin/time.
set -euo pipefail
[ $# -ge 1 ] || { sed -n 2,16p "$0" >&2; exit 2; }
command -v /usr/bin/time >/dev/null || { echo "missing /usr/bin/time (Debian package time)" >&2; exit 1; }
cd "$(dirname "$0")/../.."
files=${FILES:-100000}
rounds=${ROUNDS:-7}
work=$(mktemp -d "${BENCH_DIR:-/tmp}/backup-ab.XXXXXX")
# A private sshd (sets port, user, ssh_cmd; removes $work on exit).
source tests/bench/sshd.sh
"$1" keygen --key "$work/master.key" 2>/dev/null

source tests/bench/trees.sh
small_tree "$work/tree" "$files"

# One config per binary: the same share, its own state folder and target folder (each run's previous
# snapshot is then one of the same binary, as on a box).
cfg=$(config share "$work/tree" "$work/target")
i=0
for bin in "$@"; do
  mkdir -p "$work/target.$i"
  sed -e "s#state-share#state-$i#" -e "s#$work/target\"#$work/target.$i\"#" "$cfg" > "$work/cfg.$i"
  # The first run backs everything up, the second makes the index whole (names): neither is timed.
  for _ in 1 2; do
    "$bin" backup --config "$work/cfg.$i" > "$work/out" 2>&1 || { cat "$work/out" >&2; exit 1; }
  done
  i=$((i + 1))
done
mkdir -p "$work/stock"
rsync -a -e "$ssh_cmd" "$work/tree/" "$user@127.0.0.1:$work/stock/s1"

echo "# unchanged run of $files files, $rounds rounds, interleaved"
for ((r = 0; r < rounds; r++)); do
  i=0
  for bin in "$@"; do
    sleep 1 # a new snapshot name (they are per second)
    /usr/bin/time -f "%e %U %S %M" -a -o "$work/times.$i" "$bin" backup --config "$work/cfg.$i" \
      > "$work/out" 2>&1 || { cat "$work/out" >&2; exit 1; }
    i=$((i + 1))
  done
  rm -rf "$work/stock/s2"
  /usr/bin/time -f "%e %U %S %M" -a -o "$work/times.rsync" \
    rsync -a --link-dest=../s1 -e "$ssh_cmd" "$work/tree/" "$user@127.0.0.1:$work/stock/s2"
done
stats() { sort -n | awk '{ v[NR] = $1 } END { printf "%.2f %.2f\n", v[1], v[int((NR + 1) / 2)] }'; }
read -r _ rwall < <(awk '{ print $1 }' "$work/times.rsync" | stats)
read -r _ rcpu < <(awk '{ print $2 + $3 }' "$work/times.rsync" | stats)
show() { # label times-file
  local wmin wmed cmin cmed rss
  read -r wmin wmed < <(awk '{ print $1 }' "$2" | stats)
  read -r cmin cmed < <(awk '{ print $2 + $3 }' "$2" | stats)
  rss=$(awk '{ print $4 }' "$2" | sort -n | tail -1)
  printf '%-44s wall min %s median %s (%.2fx) | cpu min %s median %s (%.2fx) | peak rss %d KiB\n' \
    "$1" "$wmin" "$wmed" "$(echo "$wmed / $rwall" | bc -l)" "$cmin" "$cmed" "$(echo "$cmed / $rcpu" | bc -l)" "$rss"
}
i=0
for bin in "$@"; do
  show "$bin" "$work/times.$i"
  i=$((i + 1))
done
show "rsync -a --link-dest (plain tree)" "$work/times.rsync"
