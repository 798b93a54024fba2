#!/usr/bin/env bash
# offsite restore over one private sshd on 127.0.0.1, with plain rsync as the anchor in the same run.
#
#   bash tests/bench/restore.sh      (PART=whole or PART=one: that part only)
#
#   whole share   `offsite restore` of a whole share of FULL_MIB (default 2048) of mixed data (big random
#                 files, text documents, photo-sized files, FULL_FILES small files) against `rsync -a`
#                 pulling the same plaintext tree over the same sshd: wall, CPU, the ratio ours / rsync.
#   one file      `offsite restore --path` of one 1 MiB file out of a share of SMALL_MIB (default 100) and
#                 one of LARGE_GIB (default 10) GiB, both with SHARE_FILES (default 3000) small files besides:
#                 wall, bytes pulled (the report's `bytes_pulled`, received over the rsync protocol) against
#                 the sealed size of that file on the target, and the ratio of the two shares' wall times.
#                 `bytes_pulled` counts the file's pull session only: the manifest comes in a session of its
#                 own (its sealed size is printed); "lo x" (loopback bytes / sealed size) counts everything.
#
# Every figure is the median of REPS (default 3) runs; peak RSS is our process alone (tests/bench/peak-rss.sh,
# separate runs). CPU is user + sys of the restoring side: our process (its SSH client is built in); rsync
# with the ssh process it starts. "lo bytes": the loopback interface's tx counter around the command (both
# directions, TCP and SSH overhead included), in a network namespace of the run's own when `unshare --net`
# is allowed (root), else on the machine's loopback (then counting any other traffic on 127.0.0.1 too).
# Each run restores into a fresh folder; every restore is checked (files_ok, bytes_ok, files identical).
# Disk: the larger of LARGE_GIB × 2 and FULL_MIB × 4 / 1024 GiB in BENCH_DIR (default /tmp; a tmpfs keeps
# ext4's slow inode allocation after mass deletes out of the figures, but needs that much RAM): the whole
# share runs first and is deleted before the large share is built. About 10 minutes with the defaults.
# Needs: rsync, openssh-server, openssh-client, openssl, python3, bc (unshare and ip for the namespace).
set -euo pipefail
cd "$(dirname "$0")/../.."
part=${PART:-all}
reps=${REPS:-3}
full_mib=${FULL_MIB:-2048}
full_files=${FULL_FILES:-10000}
small_mib=${SMALL_MIB:-100}
large_gib=${LARGE_GIB:-10}
share_files=${SHARE_FILES:-3000}
if [ -z "${BENCH_NETNS:-}" ]; then
  cargo build --release --quiet -p offsite
  # A network namespace of its own (root), so that the loopback counter counts this run's traffic only.
  if unshare --net true 2>/dev/null; then
    exec env BENCH_NETNS=1 unshare --net bash -c 'ip link set lo up && exec bash "$0"' "$PWD/tests/bench/restore.sh"
  fi
  echo "no network namespace of our own: lo bytes count all traffic on 127.0.0.1" >&2
fi
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/offsite
rss=$PWD/tests/bench/peak-rss.sh
work=$(mktemp -d "${BENCH_DIR:-/tmp}/offsite-bench.XXXXXX")
# A private sshd (sets port, user, ssh_cmd; removes $work on exit).
source tests/bench/sshd.sh
"$bin" keygen --key "$work/master.key" 2>/dev/null

note() { echo "[${SECONDS} s] $*" >&2; }
backup() { # config
  note "backing up $1"
  "$bin" backup --config "$1" > /dev/null 2> "$work/err" || { cat "$work/err" >&2; exit 1; }
}

lo() { awk '$1 == "lo:" {print $10}' /proc/net/dev; } # tx bytes of this namespace's loopback
measure() { # ok-exit-codes command... -> "wall cpu lo_bytes exit"; the command's stdout in $work/out
  local before after rc=0
  before=$(lo)
  /usr/bin/time -f "%e %U %S" -o "$work/t" "${@:2}" > "$work/out" 2> "$work/err" || rc=$?
  after=$(lo)
  [[ " $1 " == *" $rc "* ]] || { echo "failed (exit $rc): ${*:2}" >&2; cat "$work/err" "$work/out" >&2; exit 1; }
  awk -v b=$((after - before)) -v rc=$rc '$1 ~ /^[0-9.]+$/ {printf "%.2f %.2f %.0f %d\n", $1, $2 + $3, b, rc}' "$work/t"
}
# A restore's exit status 3 (something not as the snapshot recorded) does not stop the run when every file
# came back identical: its problems are counted in the table and the first ones printed on stderr.
report() { # -> "files_ok bytes_ok bytes_pulled problem_count" of the JSON report in $work/out
  python3 -c 'import json, sys; r = json.load(open(sys.argv[1]))
print(r["files_ok"], r["bytes_ok"], r["bytes_pulled"], r["problem_count"])
for p in r["problems"][:5]: print("  problem:", p["path"], p["kind"], file=sys.stderr)' "$work/out"
}
peak() { # command... -> peak RSS KiB of the process
  local line
  line=$(bash "$rss" "$@")
  [[ $line =~ \(exit\ [03]\)$ ]] || { echo "failed under peak-rss.sh: $* -> $line" >&2; exit 1; }
  awk '{print $3}' <<< "$line"
}
median() { # numbers... -> the median (no awk: mawk prints integers above 2^31 as 3e+09)
  local s n; mapfile -t s < <(printf '%s\n' "$@" | sort -g); n=${#s[@]}
  if ((n % 2)); then echo "${s[n / 2]}"; else echo "(${s[n / 2 - 1]} + ${s[n / 2]}) / 2" | bc -l; fi
}
warm() { find "$@" -type f -exec cat {} + > /dev/null; }
ratio() { echo "$1 / $2" | bc -l; }
randbytes() { { openssl enc -aes-128-ctr -nosalt -pass "pass:$2" -in /dev/zero 2>/dev/null || true; } | head -c "$1"; }
source tests/bench/trees.sh # small_tree

# --- Whole share: 40 % large random files (video), 30 % text documents, 30 % 400 KiB photos, and
# FULL_FILES small files (backup.sh's mixed data set plus its small-file generator).
if [ "$part" != one ]; then
  src="$work/mixed"
  note "building the whole-share data set ($full_mib MiB + $full_files small files)"
  mkdir -p "$src/video" "$src/docs" "$src/photos"
  for i in 1 2 3 4; do randbytes $((full_mib * 1048576 * 10 / 100)) "video$i" > "$src/video/clip$i.mp4"; done
  python3 - "$src/docs" $((full_mib * 1048576 * 30 / 100)) <<'PY'
import os, sys, random
root, total = sys.argv[1], int(sys.argv[2]); r = random.Random(3)
words = [''.join(r.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(r.randint(2, 9))) for _ in range(5000)]
n = 300
for i in range(n):
    size = total // n
    lines = []
    got = 0
    while got < size:
        line = ' '.join(r.choice(words) for _ in range(12)) + f' {r.randint(0, 10**6)}\n'
        lines.append(line); got += len(line)
    with open(os.path.join(root, f"doc{i:04d}.txt"), 'w') as f:
        f.write(''.join(lines)[:size])
PY
  count=$((full_mib * 1048576 * 30 / 100 / 409600))
  for i in $(seq 1 "$count"); do randbytes 409600 "photo$i" > "$src/photos/img$(printf %05d "$i").jpg"; done
  small_tree "$src/small" "$full_files"
  nfiles=$(find "$src" -type f | wc -l)
  nbytes=$(find "$src" -type f -printf '%s\n' | awk '{s += $1} END {printf "%.0f", s}')
  cfg=$(config mixed "$src" "$work/r-mixed")
  backup "$cfg"
  sealed=$(du -sb "$work/r-mixed/mixed" | awk '{print $1}')
  note "restoring"

  ow=() oc=() ob=() ol=() op=() sw=() sc=() sl=() orss=()
  for r in $(seq 1 "$reps"); do
    rm -rf "$work/dst-ours" "$work/dst-rsync"
    warm "$work/r-mixed" "$src"
    read -r w c l rc < <(measure "0 3" "$bin" restore --config "$cfg" --share mixed --to "$work/dst-ours" --json)
    read -r fok bok pulled probs < <(report)
    [ "$fok" = "$nfiles" ] && [ "$bok" = "$nbytes" ] || {
      echo "whole restore: files_ok $fok (want $nfiles), bytes_ok $bok (want $nbytes)" >&2; exit 1; }
    if [ "$r" = 1 ] || [ "$rc" != 0 ]; then
      diff -r "$src" "$work/dst-ours" > /dev/null || { echo "whole restore: tree differs" >&2; exit 1; }
    fi
    ow+=("$w") oc+=("$c") ob+=("$pulled") ol+=("$l") op+=("$probs")
    read -r w c l rc < <(measure 0 rsync -a -e "$ssh_cmd" "$user@127.0.0.1:$src/" "$work/dst-rsync/")
    sw+=("$w") sc+=("$c") sl+=("$l")
    rm -rf "$work/dst-ours"
    orss+=("$(peak "$bin" restore --config "$cfg" --share mixed --to "$work/dst-ours")")
  done
  w=$(median "${ow[@]}") c=$(median "${oc[@]}") s=$(median "${sw[@]}") t=$(median "${sc[@]}")
  echo "== whole share: $((nbytes / 1048576)) MiB in $nfiles files (sealed on the target: $sealed bytes), median of $reps"
  printf '%-26s %7s %7s %8s %13s %13s %8s %6s %6s\n' "" "wall s" "cpu s" "rss KiB" "bytes pulled" "lo bytes" \
    "problems" "wall x" "cpu x"
  printf '%-26s %7.2f %7.2f %8.0f %13.0f %13.0f %8.0f %6.2f %6.2f\n' "offsite restore (sealed)" "$w" "$c" \
    "$(median "${orss[@]}")" "$(median "${ob[@]}")" "$(median "${ol[@]}")" "$(median "${op[@]}")" "$(ratio "$w" "$s")" \
    "$(ratio "$c" "$t")"
  printf '%-26s %7.2f %7.2f %8s %13s %13.0f\n' "rsync -a pull (plain)" "$s" "$t" "" "" "$(median "${sl[@]}")"
  echo "runs (wall s): offsite ${ow[*]}; rsync ${sw[*]}"
  rm -rf "$src" "$work/r-mixed" "$work/dst-ours" "$work/dst-rsync" "$work/state-mixed"
fi
if [ "$part" = whole ]; then exit 0; fi

# --- One 1 MiB file out of a small and a large share: same SHARE_FILES small files, same 1 MiB file at the
# same path; they differ only in bulk (random files of SMALL_MIB / 4 MiB or 1 GiB).
one=d017/e3/one-mib.bin
randbytes 1048576 one > "$work/one-mib.bin"
make_share() { # dir count size-bytes
  note "building $1 ($2 x $3 bytes + $share_files small files)"
  small_tree "$1" "$share_files"
  mkdir -p "$1/big"
  for i in $(seq 1 "$2"); do randbytes "$3" "big$i-$3" > "$1/big/b$i.bin"; done
  cp "$work/one-mib.bin" "$1/$one"
}
for share in small large; do
  if [ $share = small ]; then make_share "$work/small" 4 $((small_mib * 1048576 / 4))
  else make_share "$work/large" "$large_gib" $((1 << 30)); fi
  backup "$(config "$share" "$work/$share" "$work/r-$share")"
done

note "restoring"
# Runs alternate between the two shares, so that a noisy minute does not land on one of them only.
declare -A tw tc tb tl tr tp
for r in $(seq 1 "$reps"); do
  for share in small large; do
    cfg=$work/$share.toml
    rm -rf "$work/dst-one"
    read -r w c l rc < <(measure "0 3" "$bin" restore --config "$cfg" --share "$share" --path "$one" --to "$work/dst-one" --json)
    read -r fok bok pulled probs < <(report)
    [ "$fok" = 1 ] && [ "$bok" = 1048576 ] && cmp -s "$work/one-mib.bin" "$work/dst-one/$one" || {
      echo "one-file restore from $share: files_ok $fok, bytes_ok $bok, or content differs" >&2; exit 1; }
    [ "$(find "$work/dst-one" -type f | wc -l)" = 1 ] || { echo "one-file restore wrote other files" >&2; exit 1; }
    tw[$share]+=" $w" tc[$share]+=" $c" tb[$share]+=" $pulled" tl[$share]+=" $l" tp[$share]+=" $probs"
    rm -rf "$work/dst-one"
    tr[$share]+=" $(peak "$bin" restore --config "$cfg" --share "$share" --path "$one" --to "$work/dst-one")"
  done
done

echo "== one 1 MiB file ($one) out of a share, median of $reps"
printf '%-6s %6s %6s %6s %6s %8s %9s %12s %11s %8s %10s %5s %8s\n' "share" "files" "MiB" "wall s" "cpu s" \
  "rss KiB" "manifest" "bytes pulled" "sealed size" "pulled x" "lo bytes" "lo x" "problems"
declare -A wall
for share in small large; do
  snap=$(ls "$work/r-$share/$share")
  size=$(stat -c %s "$work/r-$share/$share/$snap/$("$bin" seal-name --key "$work/master.key" "$one")")
  manifest=$(stat -c %s "$work/r-$share/$share/$snap/.offsite-manifest")
  files=$(find "$work/$share" -type f | wc -l)
  mib=$(find "$work/$share" -type f -printf '%s\n' | awk '{s += $1} END {printf "%.0f", s / 1048576}')
  # shellcheck disable=SC2086 # the per-share lists are space-separated on purpose
  wall[$share]=$(median ${tw[$share]})
  # shellcheck disable=SC2086
  b=$(median ${tb[$share]}) l=$(median ${tl[$share]}) c=$(median ${tc[$share]}) m=$(median ${tr[$share]})
  # shellcheck disable=SC2086
  p=$(median ${tp[$share]})
  printf '%-6s %6d %6d %6.2f %6.2f %8.0f %9d %12.0f %11d %8.3f %10.0f %5.2f %8.0f\n' "$share" "$files" "$mib" \
    "${wall[$share]}" "$c" "$m" "$manifest" "$b" "$size" "$(ratio "$b" "$size")" "$l" "$(ratio "$l" "$size")" "$p"
done
for share in small large; do echo "runs (wall s), $share:${tw[$share]}"; done
printf 'wall large / small: %.2f\n' "$(ratio "${wall[large]}" "${wall[small]}")"
