#!/usr/bin/env bash
# Sealing speed and memory, with anchors run side by side:
#   1. in-memory seal/unseal throughput per suite, hardware backends (AES-NI/SIMD) and portable backends
#      (what a NAS CPU without AES instructions or SIMD sees);
#   2. the primitives' ceiling on this CPU: `openssl speed` for AES-256-CTR and ChaCha20 on 8 KiB blocks;
#   3. whole-command throughput and peak RSS of `offsite seal` vs `rsyncrypto` on the same 1 GiB file, and
#      `offsite seal` of a 4 GiB sparse file (peak RSS must not grow with file size).
# Usage: bash tests/bench/seal.sh        (SEAL_BENCH_MIB=256 sets the in-memory size)
set -euo pipefail
cd "$(dirname "$0")/../.."
for t in openssl rsyncrypto /usr/bin/time; do command -v $t >/dev/null || { echo "missing $t" >&2; exit 1; }; done

echo "== 1a. cargo bench (hardware backends)"
cargo bench --quiet -p offsite-seal --bench throughput 2>/dev/null
echo "== 1b. cargo bench (portable backends: aes soft, chacha20 soft, BLAKE3 without SIMD)"
CARGO_TARGET_DIR=target/portable RUSTFLAGS='--cfg aes_backend="soft" --cfg chacha20_backend="soft"' \
  cargo bench --quiet -p offsite-seal --features portable --bench throughput 2>/dev/null

echo "== 2. openssl speed, 8 KiB blocks (anchor: hand-written assembly, no MAC)"
for c in aes-256-ctr chacha20; do
  openssl speed -seconds 2 -bytes 8192 -evp $c 2>/dev/null | tail -1 |
    awk -v c=$c '{v=$NF; sub("k","",v); printf "%-12s %8.0f MiB/s\n", c, v*1000/1048576}'
done

echo "== 3. whole commands on files (page cache warm), wall time and peak RSS"
cargo build --release --quiet -p offsite
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/offsite
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
{ openssl enc -aes-128-ctr -nosalt -pass pass:bench -in /dev/zero 2>/dev/null || true; } | head -c $((1 << 30)) > "$work/rand1g"
truncate -s 4G "$work/sparse4g"
"$bin" keygen --key "$work/aes.key" --suite aes 2>/dev/null
"$bin" keygen --key "$work/chacha.key" --suite chacha 2>/dev/null
openssl req -x509 -nodes -newkey rsa:2048 -keyout "$work/rc.key" -out "$work/rc.crt" -subj /CN=b -days 2 2>/dev/null
cat "$work/rand1g" > /dev/null
run() { # label command...
  /usr/bin/time -f "%e %M" -o "$work/t" "${@:2}" > /dev/null
  read -r secs kib < "$work/t"
  printf '%-40s %7.2f s %8.0f MiB/s %8d KiB peak RSS\n' "$1" "$secs" "$(echo "$size_mib / $secs" | bc -l)" "$kib"
}
size_mib=1024
run "offsite seal aes, 1 GiB random, 1 thread" "$bin" seal --threads 1 --key "$work/aes.key" --path r "$work/rand1g" -
run "offsite seal aes, 1 GiB random, 2 threads" "$bin" seal --threads 2 --key "$work/aes.key" --path r "$work/rand1g" -
run "offsite seal chacha, 1 GiB random" "$bin" seal --threads 1 --key "$work/chacha.key" --path r "$work/rand1g" -
run "rsyncrypto, 1 GiB random" rsyncrypto "$work/rand1g" /dev/stdout "$work/rc.keyfile" "$work/rc.crt"
size_mib=4096
run "offsite seal aes, 4 GiB sparse (zeros)" "$bin" seal --threads 1 --key "$work/aes.key" --path s "$work/sparse4g" -
