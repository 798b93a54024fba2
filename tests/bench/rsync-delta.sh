#!/usr/bin/env bash
# Bytes the real rsync puts on the wire after small edits: plain file vs offsite-sealed vs rsyncrypto.
#
#   bash tests/bench/rsync-delta.sh [SIZES_MIB...]     (default: 64 1024)
#
# For each size, a random base file is copied to a "remote" folder, then edited three ways (1-byte
# insertion at an unaligned offset, 1-byte overwrite, 1 MiB append) and pushed again with
# `rsync -a -I --no-whole-file --stats`, which runs rsync's real delta protocol between two local
# processes. "total" is Total bytes sent + received as rsync reports them (file list, checksums, literal
# data, tokens). The sealed variant is produced with `offsite seal` (compression on; random data stays
# raw); rsyncrypto with its defaults. Where the edit lands relative to chunk and block boundaries matters,
# so single-byte edits are repeated at REPS offsets spread over the file (default 5) and the bytes summed.
# Needs: rsync, rsyncrypto, openssl, bc (Debian packages).
set -euo pipefail
cd "$(dirname "$0")/../.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(64 1024)
for t in rsync rsyncrypto openssl; do command -v $t >/dev/null || { echo "missing $t (apt-get install $t)" >&2; exit 1; }; done

cargo build --release --quiet -p offsite
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/offsite
work=${BENCH_DIR:-$(mktemp -d)}
trap 'rm -rf "$work"' EXIT
cd "$work"
"$bin" keygen --key master.key --suite auto 2>/dev/null
openssl req -x509 -nodes -newkey rsa:2048 -keyout rc.key -out rc.crt -subj /CN=bench -days 2 2>/dev/null

randbytes() { # N bytes of fast pseudo-random data, seed $2
  { openssl enc -aes-128-ctr -nosalt -pass "pass:$2" -in /dev/zero 2>/dev/null || true; } | head -c "$1"
}

reps=${REPS:-5}

edit() { # base edited kind size rep
  local base=$1 out=$2 kind=$3 size=$4 mid=$(( $4 / (reps + 1) * ($5 + 1) + 12345 + 777 * $5 ))
  case $kind in
    insert1)    { head -c "$mid" "$base"; printf 'X'; tail -c +"$((mid + 1))" "$base"; } > "$out" ;;
    overwrite1) cp "$base" "$out"; printf '\x5a' | dd of="$out" bs=1 seek=$((mid + 777)) conv=notrunc status=none ;;
    append1M)   { cat "$base"; randbytes 1048576 append; } > "$out" ;;
  esac
}

variant() { # kind in out
  case $1 in
    plain)      cp "$2" "$3" ;;
    sealed)     "$bin" seal --key master.key --path data/file.bin "$2" "$3" ;;
    rsyncrypto) rsyncrypto "$2" "$3" rc.keyfile rc.crt ;;
  esac
}

push() { # src dst -> "sent received literal"
  rsync -a -I --no-whole-file --stats "$1" "$2" | awk '
    /^Literal data:/ {gsub(",","",$3); lit=$3}
    /^Total bytes sent:/ {gsub(",","",$4); s=$4}
    /^Total bytes received:/ {gsub(",","",$4); r=$4}
    END {print s, r, lit}'
}

printf '%-6s %-11s %-10s %12s %12s %12s %8s\n' size edit variant sent received literal ratio
echo "# sums over $reps edit positions for insert1/overwrite1; append1M is one edit"
for size_mib in "${sizes[@]}"; do
  size=$((size_mib << 20))
  randbytes "$size" "base$size_mib" > base.bin
  for kind in insert1 overwrite1 append1M; do
    n=$reps
    [ "$kind" != append1M ] || n=1
    plain_total=
    for v in plain sealed rsyncrypto; do
      sent=0 recv=0 lit=0
      for ((rep = 0; rep < n; rep++)); do
        edit base.bin edited.bin "$kind" "$size" "$rep"
        rm -rf remote src; mkdir remote src
        variant "$v" base.bin src/file.bin
        rsync -a src/file.bin remote/file.bin
        variant "$v" edited.bin src/file.bin
        read -r s r l < <(push src/file.bin remote/file.bin)
        cmp -s src/file.bin remote/file.bin || { echo "transfer mismatch ($v)" >&2; exit 1; }
        sent=$((sent + s)) recv=$((recv + r)) lit=$((lit + l))
      done
      total=$((sent + recv))
      [ -n "$plain_total" ] || plain_total=$total
      printf '%-6s %-11s %-10s %12d %12d %12d %8.2f\n' "${size_mib}M" "$kind" "$v" "$sent" "$recv" "$lit" \
        "$(echo "$total / $plain_total" | bc -l)"
    done
  done
done
