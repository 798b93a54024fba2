#!/usr/bin/env bash
# offsite's native rsync client vs stock `rsync -a` + ssh, over the same private sshd on 127.0.0.1, same data,
# same run. Prints wall time and client CPU time (user + sys of the client and its children: for stock
# rsync that includes its ssh process) and the ratio offsite / stock, then bytes for a delta push.
#   bash tests/bench/push.sh            (BIG_MIB=1024 SMALL_FILES=20000 to change the data)
# Needs: rsync, openssh-server, openssh-client, bc (Debian packages).
set -euo pipefail
cd "$(dirname "$0")/../.."
big_mib=${BIG_MIB:-1024}
small_files=${SMALL_FILES:-20000}
cargo build --release --quiet -p offsite
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/offsite
work=$(mktemp -d)
# A private sshd (sets port, user, ssh_cmd; removes $work on exit).
source tests/bench/sshd.sh
ours=("$bin" rsync --port "$port" --identity "$work/clientkey" --known-hosts "$work/known_hosts")
stock=(rsync -a -e "$ssh_cmd")

# Data: one tree of big random files, one of many small files.
mkdir -p "$work/big" "$work/small"
for i in $(seq 1 8); do
  { openssl enc -aes-128-ctr -nosalt -pass "pass:big$i" -in /dev/zero 2>/dev/null || true; } | head -c $((big_mib * 1024 * 1024 / 8)) > "$work/big/f$i.bin"
done
source tests/bench/trees.sh
small_tree "$work/small" "$small_files" 200 8000
cat "$work"/big/* > /dev/null

measure() { # label -> prints "wall cpu"
  /usr/bin/time -f "%e %U %S" -o "$work/t" "$@" > /dev/null 2> "$work/err" || { cat "$work/err" >&2; exit 1; }
  awk '{printf "%.2f %.2f\n", $1, $2 + $3}' "$work/t"
}
row() { # what ours_wall ours_cpu stock_wall stock_cpu
  printf '%-34s %8.2f %8.2f %8.2f %8.2f %7.2f %7.2f\n' "$1" "$2" "$3" "$4" "$5" \
    "$(echo "$2 / $4" | bc -l)" "$(echo "$3 / $5" | bc -l)"
}
printf '%-34s %8s %8s %8s %8s %7s %7s\n' "push" "ours s" "ours cpu" "rsync s" "rsync cpu" "wall x" "cpu x"
for set in big small; do
  read -r ow oc < <(measure "${ours[@]}" "$work/$set/" "$user@127.0.0.1:$work/r-ours-$set")
  read -r sw sc < <(measure "${stock[@]}" "$work/$set/" "$user@127.0.0.1:$work/r-stock-$set")
  diff -r "$work/$set" "$work/r-ours-$set" > /dev/null
  label="new: $set ($( [ $set = big ] && echo "${big_mib} MiB in 8 files" || echo "$small_files files"))"
  row "$label" "$ow" "$oc" "$sw" "$sc"
  read -r ow oc < <(measure "${ours[@]}" "$work/$set/" "$user@127.0.0.1:$work/r-ours-$set")
  read -r sw sc < <(measure "${stock[@]}" "$work/$set/" "$user@127.0.0.1:$work/r-stock-$set")
  row "unchanged: $set" "$ow" "$oc" "$sw" "$sc"
done

# Delta push after small edits: literal bytes, ours vs stock (--stats of each).
for f in "$work"/big/f1.bin "$work"/big/f5.bin; do
  printf 'X' | dd of="$f" bs=1 seek=12345677 conv=notrunc status=none
  touch "$f"
done
ours_lit=$("${ours[@]}" --stats "$work/big/" "$user@127.0.0.1:$work/r-ours-big" | awk '/^Literal data:/ {print $3}')
stock_lit=$("${stock[@]}" --stats "$work/big/" "$user@127.0.0.1:$work/r-stock-big" | awk '/^Literal data:/ {gsub(",","",$3); print $3}')
printf '%-34s %12s %12s %7.3f\n' "delta: 2 x 1-byte edits" "$ours_lit" "$stock_lit" "$(echo "$ours_lit / $stock_lit" | bc -l)"
diff -r "$work/big" "$work/r-ours-big" > /dev/null && echo "destination identical"
