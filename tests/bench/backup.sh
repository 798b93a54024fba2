#!/usr/bin/env bash
# offsite backup vs the anchors, side by side in one run, over one private sshd on 127.0.0.1.
#
#   PART=files bash tests/bench/backup.sh   many small files: unchanged nightly run vs rsync --link-dest,
#                                           peak RSS at FILES_SMALL and FILES (default 10,000 and 100,000)
#   PART=mixed bash tests/bench/backup.sh   initial backup of MIXED_MIB (default 2048) of mixed data vs
#                                           rsync -a, restic (sftp), rclone sync to a crypt remote (sftp),
#                                           rsyncrypto + rsync; then bytes on the wire for a night's edits
#
# Times: wall and CPU (user + sys) of the box-side processes: our process; rsync or restic or rclone with
# the ssh client they start. Peak RSS: our process (the server side runs under sshd, not counted).
# Bytes on the wire: the loopback interface's tx counter around each command (all traffic of the run,
# both directions, with TCP and SSH overhead: the same yardstick for every tool).
# BENCH_DIR picks the work folder (a tmpfs avoids ext4's slow inode allocation after mass deletes).
# SKIP lists anchors of PART=mixed to leave out, e.g. SKIP="restic rclone rsyncrypto" (rsyncrypto's staging
# tree needs as much room again as the data; plain rsync always runs: every ratio is against it).
# Needs: rsync, openssh-server, openssh-client, restic, rclone, rsyncrypto, openssl, python3, bc.
set -euo pipefail
cd "$(dirname "$0")/../.."
part=${PART:-files}
cargo build --release --quiet -p offsite
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/offsite
work=$(mktemp -d "${BENCH_DIR:-/tmp}/offsite-bench.XXXXXX")
# A private sshd (sets port, user, ssh_cmd; removes $work on exit).
source tests/bench/sshd.sh
"$bin" keygen --key "$work/master.key" 2>/dev/null


lo() { cat /sys/class/net/lo/statistics/tx_bytes; }
measure() { # command... -> "wall cpu maxrss_kib wire_bytes"
  local before after
  before=$(lo)
  /usr/bin/time -f "%e %U %S %M" -o "$work/t" "$@" > /dev/null 2> "$work/err" || { cat "$work/err" >&2; exit 1; }
  after=$(lo)
  awk -v b=$((after - before)) '{printf "%.2f %.2f %d %.0f\n", $1, $2 + $3, $4, b}' "$work/t"
}
ratio() { echo "$1 / $2" | bc -l; }
row() { # label wall cpu rss wire [anchor-wall anchor-cpu]
  if [ $# -gt 5 ]; then
    printf '%-44s %8.2f %8.2f %9d %13.0f %7.2f %7.2f\n' "$1" "$2" "$3" "$4" "$5" "$(ratio "$2" "$6")" "$(ratio "$3" "$7")"
  else
    printf '%-44s %8.2f %8.2f %9d %13.0f\n' "$1" "$2" "$3" "$4" "$5"
  fi
}
header() { printf '%-44s %8s %8s %9s %13s %7s %7s\n' "$1" "wall s" "cpu s" "rss KiB" "wire bytes" "wall x" "cpu x"; }

source tests/bench/trees.sh # small_tree

if [ "$part" = files ]; then
  header "many small files (rsync: -a --link-dest)"
  for n in ${FILES_SMALL:-10000} ${FILES:-100000}; do
    src="$work/tree$n"
    small_tree "$src" "$n"
    cfg=$(config "t$n" "$src" "$work/r-ours")
    read -r w c m b < <(measure "$bin" backup --config "$cfg")
    mkdir -p "$work/r-stock$n"
    read -r sw sc sm sb < <(measure rsync -a -e "$ssh_cmd" "$src/" "$user@127.0.0.1:$work/r-stock$n/s1")
    row "initial, $n files: offsite (sealed)" "$w" "$c" "$m" "$b" "$sw" "$sc"
    row "initial, $n files: rsync -a (plain)" "$sw" "$sc" "$sm" "$sb"
    sleep 1
    read -r w c m b < <(measure "$bin" backup --config "$cfg")
    read -r sw sc sm sb < <(measure rsync -a --link-dest=../s1 -e "$ssh_cmd" "$src/" "$user@127.0.0.1:$work/r-stock$n/s2")
    row "unchanged, $n files: offsite" "$w" "$c" "$m" "$b" "$sw" "$sc"
    row "unchanged, $n files: rsync -a --link-dest" "$sw" "$sc" "$sm" "$sb"
    rm -rf "$work/r-stock$n"
  done
  exit 0
fi

# PART=mixed: 40 % large incompressible files (video), 30 % compressible documents, 30 % photo-sized files.
mib=${MIXED_MIB:-2048}
src="$work/mixed"
mkdir -p "$src/video" "$src/docs" "$src/photos"
randbytes() { { openssl enc -aes-128-ctr -nosalt -pass "pass:$2" -in /dev/zero 2>/dev/null || true; } | head -c "$1"; }
for i in 1 2 3 4; do randbytes $((mib * 1048576 * 10 / 100)) "video$i" > "$src/video/clip$i.mp4"; done
python3 - "$src/docs" $((mib * 1048576 * 30 / 100)) <<'PY'
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
count=$((mib * 1048576 * 30 / 100 / 409600))
for i in $(seq 1 "$count"); do randbytes 409600 "photo$i" > "$src/photos/img$(printf %05d "$i").jpg"; done
du -sh "$src" >&2

skip() { [[ " ${SKIP:-} " == *" $1 "* ]]; }
export RESTIC_PASSWORD=bench
restic_repo="sftp:$user@127.0.0.1:$work/r-restic"
restic_opt=(-o "sftp.command=$ssh_cmd $user@127.0.0.1 -s sftp")
export RCLONE_CONFIG_S_TYPE=sftp RCLONE_CONFIG_S_HOST=127.0.0.1 RCLONE_CONFIG_S_PORT=$port \
  RCLONE_CONFIG_S_USER=$user RCLONE_CONFIG_S_KEY_FILE=$work/clientkey \
  RCLONE_CONFIG_S_KNOWN_HOSTS_FILE=$work/known_hosts
export RCLONE_CONFIG_C_TYPE=crypt RCLONE_CONFIG_C_REMOTE="s:$work/r-rclone"
skip rclone || { RCLONE_CONFIG_C_PASSWORD=$(rclone obscure bench); export RCLONE_CONFIG_C_PASSWORD; }
skip restic || restic -r "$restic_repo" "${restic_opt[@]}" init > /dev/null 2>&1
skip rsyncrypto || openssl req -x509 -nodes -newkey rsa:2048 -keyout "$work/rc.key" -out "$work/rc.crt" -subj /CN=bench -days 2 2>/dev/null
rsyncrypto_push() { # rsyncrypto into a local staging tree (it cannot stream), then rsync it
  rsyncrypto -r "$src" "$work/stage" "$work/rckeys" "$work/rc.crt" &&
  rsync -a -e "$ssh_cmd" "$work/stage/" "$user@127.0.0.1:$work/r-rsyncrypto/"
}
export -f rsyncrypto_push; export src work ssh_cmd user

cfg=$(config mixed "$src" "$work/r-ours")
run_all() { # label-suffix
  local t=$1 ref_w ref_c
  read -r ref_w ref_c rm rb < <(measure rsync -a -e "$ssh_cmd" "$src/" "$user@127.0.0.1:$work/r-plain/")
  read -r w c m b < <(measure "$bin" backup --config "$cfg")
  row "$t: offsite backup (sealed)" "$w" "$c" "$m" "$b" "$ref_w" "$ref_c"
  row "$t: rsync -a (plain)" "$ref_w" "$ref_c" "$rm" "$rb"
  skip restic || {
  read -r w c m b < <(measure restic -r "$restic_repo" "${restic_opt[@]}" backup -q "$src")
  row "$t: restic backup (sftp)" "$w" "$c" "$m" "$b" "$ref_w" "$ref_c"; }
  skip rclone || {
  read -r w c m b < <(measure rclone sync "$src" c:)
  row "$t: rclone sync, crypt remote (sftp)" "$w" "$c" "$m" "$b" "$ref_w" "$ref_c"; }
  skip rsyncrypto || {
  read -r w c m b < <(measure bash -c rsyncrypto_push)
  row "$t: rsyncrypto + rsync -a" "$w" "$c" "$m" "$b" "$ref_w" "$ref_c"; }
}
header "initial backup of $mib MiB mixed data"
cat "$src"/*/* > /dev/null
run_all initial

# A night's edits: an insertion in two videos, appends to two documents, a changed line in 20 documents,
# 10 new photos, 5 deleted.
python3 - "$src" <<'PY'
import os, sys
root = sys.argv[1]
for v in ("clip1.mp4", "clip3.mp4"):
    p = os.path.join(root, "video", v); d = open(p, 'rb').read(); m = len(d) // 2
    open(p, 'wb').write(d[:m] + b'INSERTED-100-BYTES'.ljust(100, b'.') + d[m:])
for i in (1, 2):
    with open(os.path.join(root, "docs", f"doc{i:04d}.txt"), 'a') as f: f.write("appended line\n" * 70000)
for i in range(10, 30):
    p = os.path.join(root, "docs", f"doc{i:04d}.txt"); d = open(p).read(); m = len(d) // 3
    open(p, 'w').write(d[:m] + "an edited line\n" + d[m:])
for i in range(5): os.remove(os.path.join(root, "photos", sorted(os.listdir(os.path.join(root, "photos")))[0]))
for i in range(10): open(os.path.join(root, "photos", f"new{i}.jpg"), 'wb').write(os.urandom(409600))
PY
sleep 1
header "after a night's edits"
run_all nightly
